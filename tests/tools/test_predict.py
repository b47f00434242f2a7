"""tools/predict.py and cgnl_video.inference: multi-view scores of arbitrary inputs."""

import json
import os

import pytest
import torch

from cgnl_video.config import load_config
from cgnl_video.data import ManifestEntry, VideoDataset, write_classes, write_manifest
from cgnl_video.data.transforms import normalize_uint8
from cgnl_video.inference import InputError, class_names, inference_config, input_entry, load_model, predict
from tools_fixtures import CLASSES, run_tool, tiny_tool_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tool_run(str(tmp_path_factory.mktemp("predict")))


def direct_scores(cfg, model, entries):
    """The reference: the test views of a manifest dataset (uint8, normalised here as the
    engine does), mean of the model's probabilities."""
    folder = os.path.dirname(entries[0].path)
    lists = os.path.join(folder, "reference_lists")
    write_classes(os.path.join(lists, "classes.txt"), CLASSES)
    write_manifest(os.path.join(lists, "test.txt"), entries)
    dataset = VideoDataset.from_config(inference_config(cfg, PATH_TO_DATA_DIR=lists, PATH_PREFIX=""), "test")
    with torch.no_grad():
        views = [normalize_uint8(dataset[i][0], cfg.DATA.MEAN, cfg.DATA.STD) for i in range(len(entries))]
        return [model(v).double().mean(0) for v in views]


def test_json_output_scores_readable_inputs_and_names_unreadable_ones(tiny, capsys):
    argv = ["--cfg", tiny["cfg"], "--checkpoint", tiny["checkpoint"], "--json",
            tiny["video"], tiny["bad"], tiny["frames"], tiny["missing"]]
    assert run_tool("predict", argv) == 1
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert [p["path"] for p in document["predictions"]] == [tiny["video"], tiny["frames"]]
    assert [f["path"] for f in document["failed"]] == [tiny["bad"], tiny["missing"]]
    assert tiny["bad"] in err and tiny["missing"] in err
    for prediction in document["predictions"]:
        assert prediction["views"] == 6
        assert [t["label"] in CLASSES for t in prediction["top"]] == [True] * 3
        probs = [t["prob"] for t in prediction["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)

    cfg = load_config(tiny["cfg"])
    model = load_model(cfg, tiny["checkpoint"])
    expected = direct_scores(cfg, model, [input_entry(tiny["video"]), input_entry(tiny["frames"])])
    for prediction, reference in zip(document["predictions"], expected):
        values, labels = torch.topk(reference, 3)
        assert [t["label"] for t in prediction["top"]] == [CLASSES[i] for i in labels.tolist()]
        assert [t["prob"] for t in prediction["top"]] == pytest.approx(values.tolist(), abs=1e-5)


def test_text_output_and_checkpoint_weights_are_used(tiny, capsys):
    assert run_tool("predict", ["--cfg", tiny["cfg"], "--checkpoint", tiny["checkpoint"], "--top-k", "2",
                                "--opt", "TEST.NUM_ENSEMBLE_VIEWS", "1", tiny["frames"]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"{tiny['frames']} (3 views)" and len(lines) == 3
    cfg = load_config(tiny["cfg"], ["TEST.NUM_ENSEMBLE_VIEWS", "1"])
    trained, _ = predict(cfg, load_model(cfg, tiny["checkpoint"]), [tiny["frames"]], torch.device("cpu"), CLASSES)
    torch.manual_seed(123)
    fresh, _ = predict(cfg, load_model(cfg), [tiny["frames"]], torch.device("cpu"), CLASSES)
    assert not torch.allclose(trained[0].probs, fresh[0].probs)


def test_frame_folder_entry_counts_jpegs_and_rejects_other_folders(tiny, tmp_path):
    entry = input_entry(tiny["frames"])
    assert entry.num_frames == 24 and os.path.isabs(entry.path)
    assert input_entry(tiny["video"]) == ManifestEntry(os.path.abspath(tiny["video"]), 0, None)
    with pytest.raises(InputError, match=str(tmp_path)):
        input_entry(str(tmp_path))


def test_class_names_fall_back_without_a_class_list(tiny, tmp_path):
    cfg = load_config(tiny["cfg"])
    assert class_names(cfg) == list(CLASSES)
    cfg = load_config(tiny["cfg"], ["DATA.PATH_TO_DATA_DIR", str(tmp_path)])
    assert class_names(cfg) == ["class_0", "class_1", "class_2"]

