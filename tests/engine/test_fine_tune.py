"""Fine-tuning (TRAIN.CHECKPOINT_FILE_PATH) from a run with another number of classes:
every other weight is loaded, the classifier starts afresh (as build_model made it) and
the log names the keys not loaded, or, when the checkpoint names its classes and this
run's are among them, takes its rows by class name (tests/engine/test_fine_tune_by_name.py);
any other mismatch stops run_net with exit status 2 and a message naming the keys. Also
the shipped config that fine-tunes UCF-101 from Mini-Kinetics."""

import logging
import os
import re

import pytest
import torch

from cgnl_video.config import ConfigError, load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.launch import run
from cgnl_video.engine.multiview import load_test_weights
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer
from cgnl_video.engine.precision import build_grad_scaler
from cgnl_video.engine.resume import resume_or_initialise
from cgnl_video.models import build_model
from cgnl_video.utils.logging import get_logger
from engine_helpers import make_tiny_dataset, one_thread, tiny_opts
from tools_fixtures import ROOT, run_tool

CLASSIFIER = ["blocks.6.proj.weight", "blocks.6.proj.bias"]


pytestmark = pytest.mark.usefixtures("single_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished 5-class run (one epoch): its checkpoint, and the 3-class data to fine-tune on."""
    base = tmp_path_factory.mktemp("fine_tune")
    five, three = str(base / "five"), str(base / "three")
    make_tiny_dataset(five, num_classes=5, per_class=2)
    make_tiny_dataset(three, num_classes=3, per_class=2)
    out = str(base / "source_run")
    with one_thread():
        run(load_config(None, tiny_opts(five, out, MODEL__NUM_CLASSES=5, SOLVER__MAX_EPOCH=1,
                                        TRAIN__EVAL_PERIOD=0, TEST__ENABLE=False)))
    return cu.list_checkpoints(out)[-1], three


def _target_cfg(three, out, checkpoint, **overrides):
    """A 3-class run starting from ``checkpoint``; its config still names ImageNet weights,
    which must not be read (the cache is empty and offline)."""
    return load_config(None, tiny_opts(three, str(out), TRAIN__CHECKPOINT_FILE_PATH=checkpoint,
                                       RESNET__IMAGENET_WEIGHTS="IMAGENET1K_V1", **overrides))


def _fresh(cfg):
    """The model the run builds (same seed): its classifier is what fine-tuning must keep."""
    torch.manual_seed(cfg.RNG_SEED)
    return build_model(cfg)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("layout", ["ours", "pytorchvideo", "bare"])
def test_the_start_of_a_fine_tuned_run(source, layout, tmp_path, torch_home):
    """Before any iteration: every tensor but the classifier is the checkpoint's (norm
    statistics included), the classifier is the fresh one, and the log names the skipped keys."""
    ours, three = source
    weights = cu.load_checkpoint(ours)["model"]
    path = str(tmp_path / f"{layout}.pyth")
    torch.save({"ours": {"model": weights, "epoch": 1}, "pytorchvideo": {"model_state": weights},
                "bare": weights}[layout], path)
    cfg = _target_cfg(three, tmp_path / "run", path)
    model = _fresh(cfg)
    fresh = {k: model.state_dict()[k].clone() for k in CLASSIFIER}
    optimizer = build_optimizer(model, cfg)
    records = _Records()
    get_logger().addHandler(records)
    try:
        assert resume_or_initialise(cfg, model, optimizer, EpochLRScheduler(optimizer, cfg),
                                    build_grad_scaler(cfg, torch.device("cpu"))) is None
    finally:
        get_logger().removeHandler(records)
    state = model.state_dict()
    assert set(state) == set(weights)
    for key, value in weights.items():
        assert torch.equal(state[key], fresh[key] if key in CLASSIFIER else value), key
    assert weights["blocks.6.proj.weight"].shape[0] == 5 and state["blocks.6.proj.weight"].shape[0] == 3
    skipped = [line for line in records.lines if line.startswith("not loaded from")]
    assert len(skipped) == 1 and skipped[0].endswith(": blocks.6.proj.weight, blocks.6.proj.bias")


def test_run_net_fine_tunes_and_takes_the_classifier_rows_by_class_name(source, tmp_path, torch_home, capsys):
    """Through tools/run_net.py, one epoch at LR 0: the parameters at the end are those at
    the start. The 5-class checkpoint stores its class names (class0..class4), this run's
    classes are class0..class2, so every parameter is the checkpoint's, the classifier its
    first 3 rows (fine-tuning by name; a checkpoint without names: the test above)."""
    checkpoint, three = source
    out = tmp_path / "run"
    lr_zero = dict(SOLVER__MAX_EPOCH=1, SOLVER__STEPS="[0]", SOLVER__LRS="[0.0]", SOLVER__WARMUP_EPOCHS=0.0,
                   TRAIN__EVAL_PERIOD=0, TEST__ENABLE=False)
    opts = tiny_opts(three, str(out), TRAIN__CHECKPOINT_FILE_PATH=checkpoint,
                     RESNET__IMAGENET_WEIGHTS="IMAGENET1K_V1", **lr_zero)
    assert run_tool("run_net", ["--cfg", "", *opts]) == 0
    start = cu.load_checkpoint(checkpoint)
    assert start["classes"] == [f"class{c}" for c in range(5)]
    end = cu.load_checkpoint(cu.list_checkpoints(str(out))[-1])
    assert end["classes"] == [f"class{c}" for c in range(3)]
    for name, _ in build_model(load_config(None, opts)).named_parameters():
        expected = start["model"][name][:3] if name in CLASSIFIER else start["model"][name]
        assert torch.equal(end["model"][name], expected), name
    log = (out / "log.txt").read_text()
    assert f"took 3 classifier rows of {checkpoint} by class name (every class of this run is one of its " \
           "classes)" in log
    assert "not loaded from" not in log
    assert "IMAGENET_WEIGHTS" not in log  # the checkpoint's weights win


def test_another_mismatch_exits_2_naming_the_keys(source, tmp_path, capsys):
    checkpoint, three = source
    opts = tiny_opts(three, str(tmp_path / "wider"), TRAIN__CHECKPOINT_FILE_PATH=checkpoint,
                     RESNET__WIDTH_PER_GROUP=8)
    assert run_tool("run_net", ["--cfg", "", *opts]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: TRAIN.CHECKPOINT_FILE_PATH: {checkpoint} does not fit the model: ")
    assert "of another shape: blocks.0.conv.weight (4, 3, 1, 7, 7) in the file, (8, 3, 1, 7, 7) in the model" in err
    assert "Traceback" not in err


def test_testing_a_checkpoint_stays_strict(source, tmp_path):
    checkpoint, three = source
    cfg = load_config(None, tiny_opts(three, str(tmp_path / "test"), TRAIN__ENABLE=False,
                                      TEST__CHECKPOINT_FILE_PATH=checkpoint))
    with pytest.raises(ConfigError, match=rf"^TEST\.CHECKPOINT_FILE_PATH: {re.escape(checkpoint)} does not fit "
                                          r"the model: 2 of another shape: blocks\.6\.proj\.weight \(5, 128\)"):
        load_test_weights(cfg, build_model(cfg), trained=False)


def test_the_ucf101_config_fine_tunes_the_minikinetics_run_of_the_same_architecture():
    """configs/ucf101/R50_CGNL1_from_minikinetics.yaml starts from the last checkpoint of
    configs/minikinetics/R50_CGNL1.yaml, whose weights fit it but for the classifier."""
    target = load_config(os.path.join(ROOT, "configs", "ucf101", "R50_CGNL1_from_minikinetics.yaml"))
    origin = load_config(os.path.join(ROOT, "configs", "minikinetics", "R50_CGNL1.yaml"))
    expected = cu.checkpoint_path(origin.OUTPUT_DIR, origin.SOLVER.MAX_EPOCH)
    assert os.path.normpath(target.TRAIN.CHECKPOINT_FILE_PATH) == os.path.normpath(expected)
    with torch.device("meta"):
        mine, theirs = build_model(target).state_dict(), build_model(origin).state_dict()
    assert set(mine) == set(theirs)
    differ = sorted(k for k in mine if mine[k].shape != theirs[k].shape)
    assert differ == sorted(CLASSIFIER) and (mine[CLASSIFIER[0]].shape[0], theirs[CLASSIFIER[0]].shape[0]) == (101, 200)
