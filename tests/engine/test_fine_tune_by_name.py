"""Fine-tuning (TRAIN.CHECKPOINT_FILE_PATH) from a 400-class checkpoint, official
(Caffe2 pickle, its classes named by TRAIN.CHECKPOINT_CLASSES) or ours (classes stored):
a run whose classes are among the checkpoint's takes the classifier rows by class name,
inserted blocks the file lacks keep their identity init, and the log says both."""

import logging
import re

import numpy as np
import pytest
import torch

from caffe2_fixtures import KINETICS_LIKE_CLASSES, official_blobs, write_official
from cgnl_video.config import ConfigError, load_config
from cgnl_video.data import write_classes
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.preflight import check_files
from cgnl_video.engine.resume import fine_tune_from
from cgnl_video.models import build_model
from cgnl_video.utils.logging import get_logger

SUBSET = ["class 397", "class 004", "class 123", "class 250", "class 000"]  # this run's classes, its order
CGNL_AT_RES4 = ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [1], []]"]
INSERTED = "blocks.4.inserted.1."
HEAD = "blocks.6.proj."


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A narrow (width 8) C2D R-50 in the official layout with 400 classes, and its classes.txt."""
    folder = tmp_path_factory.mktemp("official")
    blobs = official_blobs(width=8)
    path, classes = str(folder / "c2d.pkl"), str(folder / "classes.txt")
    write_official(path, blobs)
    write_classes(classes, KINETICS_LIKE_CLASSES)
    return path, classes, blobs


def _cfg(tmp_path, checkpoint, classes=SUBSET, *opts):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_classes(str(data / "classes.txt"), classes)
    return load_config(None, ["DATA.PATH_TO_DATA_DIR", str(data), "MODEL.NUM_CLASSES", str(len(classes)),
                              "RESNET.WIDTH_PER_GROUP", "8", "RESNET.IMAGENET_WEIGHTS", "",
                              "TRAIN.CHECKPOINT_FILE_PATH", checkpoint, *CGNL_AT_RES4, *opts])


def _fine_tune(cfg):
    """The fresh model (same seed as the run), the fine-tuned one and the log lines."""
    torch.manual_seed(0)
    fresh = build_model(cfg)
    model = build_model(cfg)
    model.load_state_dict(fresh.state_dict())
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = get_logger()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        fine_tune_from(cfg, model)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return fresh.state_dict(), model, lines


def _check(fresh, model, pred_w, pred_b, lines, path):
    state = model.state_dict()
    rows = [KINETICS_LIKE_CLASSES.index(name) for name in SUBSET]
    assert np.array_equal(state[HEAD + "weight"].numpy(), pred_w[rows])
    assert np.array_equal(state[HEAD + "bias"].numpy(), pred_b[rows])
    inserted = [k for k in state if k.startswith(INSERTED)]
    assert inserted and all(torch.equal(state[k], fresh[k]) for k in inserted)
    block = model.stages[2].inserted["1"].eval()
    x = torch.randn(1, 128, 2, 4, 4)
    assert torch.equal(block(x), x)  # the identity, as inserted
    assert f"took 5 classifier rows of {path} by class name (every class of this run is one of its classes)" in lines
    assert f"not in {path}, keeping their initialisation (the identity): blocks.4.inserted.1" in lines


def test_an_official_file_gives_its_rows_by_class_name(official, tmp_path):
    path, classes, blobs = official
    cfg = _cfg(tmp_path, path, SUBSET, "TRAIN.CHECKPOINT_CLASSES", classes)
    fresh, model, lines = _fine_tune(cfg)
    _check(fresh, model, blobs["pred_w"], blobs["pred_b"], lines, path)
    assert np.array_equal(model.state_dict()["blocks.0.conv.weight"].numpy(), blobs["conv1_w"])


def test_our_checkpoint_gives_its_rows_by_its_stored_class_names(official, tmp_path):
    path, _, blobs = official
    weights = cu.read_checkpoint(path)["model"]
    ours = str(tmp_path / "ours.pyth")
    torch.save({"model": dict(weights), "classes": KINETICS_LIKE_CLASSES, "epoch": 80}, ours)
    fresh, model, lines = _fine_tune(_cfg(tmp_path, ours))
    _check(fresh, model, blobs["pred_w"], blobs["pred_b"], lines, ours)


def test_without_class_names_or_with_a_class_not_in_the_file_the_classifier_starts_afresh(official, tmp_path):
    path, classes, _ = official
    for cfg in (_cfg(tmp_path, path), _cfg(tmp_path, path, SUBSET[:4] + ["not a kinetics class"],
                                             "TRAIN.CHECKPOINT_CLASSES", classes)):
        fresh, model, lines = _fine_tune(cfg)
        assert all(torch.equal(model.state_dict()[k], fresh[k]) for k in fresh if k.startswith(HEAD))
        assert not any(line.startswith("took") for line in lines)
        assert any(line.startswith(f"not loaded from {path} (another number of classes") for line in lines)


def test_a_class_list_of_another_length_is_an_error_naming_the_key(official, tmp_path):
    path, _, _ = official
    short = str(tmp_path / "399.txt")
    write_classes(short, KINETICS_LIKE_CLASSES[:399])
    cfg = _cfg(tmp_path, path, SUBSET, "TRAIN.CHECKPOINT_CLASSES", short)
    with pytest.raises(ConfigError, match=rf"^TRAIN\.CHECKPOINT_CLASSES: {re.escape(short)} lists 399 classes, "
                                          rf"but the classifier of {re.escape(path)} \(blocks\.6\.proj\.weight\) "
                                          r"has 400 rows"):
        fine_tune_from(cfg, build_model(cfg))


def test_stored_class_names_of_another_length_are_an_error_naming_the_file(official, tmp_path):
    path, _, _ = official
    ours = str(tmp_path / "ours.pyth")
    torch.save({"model": dict(cu.read_checkpoint(path)["model"]), "classes": SUBSET}, ours)
    cfg = _cfg(tmp_path, ours)
    with pytest.raises(ConfigError, match=rf"^TRAIN\.CHECKPOINT_FILE_PATH: {re.escape(ours)} stores 5 class names "
                                          r"for the 400 rows of its classifier"):
        fine_tune_from(cfg, build_model(cfg))


def test_a_missing_class_list_stops_the_run_before_any_work(official, tmp_path):
    path, _, _ = official
    missing = str(tmp_path / "nowhere.txt")
    with pytest.raises(ConfigError, match=rf"^TRAIN\.CHECKPOINT_CLASSES: file not found: {re.escape(missing)}"):
        check_files(_cfg(tmp_path, path, SUBSET, "TRAIN.CHECKPOINT_CLASSES", missing))


def test_a_class_list_without_a_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^TRAIN\.CHECKPOINT_CLASSES: names the classes of "
                                          r"TRAIN\.CHECKPOINT_FILE_PATH's classifier"):
        load_config(None, ["TRAIN.CHECKPOINT_CLASSES", str(tmp_path / "classes.txt")])
