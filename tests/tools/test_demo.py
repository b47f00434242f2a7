"""The built-in demo: its config, its data preparation (the data_prep library,
skipping what exists) and a shortened run of the demo config end to end."""

import functools
import json
import os

import pytest

from cgnl_video.config import ConfigError, load_config
from cgnl_video.engine import demo_data
from engine_helpers import one_thread
from repo_paths import ROOT
from tools_fixtures import run_tool

main = functools.partial(run_tool, "run_net")  # tools/run_net.py main(argv), in this process

DEMO_CFG = os.path.join(ROOT,
                        "configs", "demo", "C2D_CGNL_synthetic.yaml")


def test_demo_config_is_valid_and_small():
    cfg = load_config(DEMO_CFG)
    assert cfg.DATA.PREPARE_SYNTHETIC and cfg.NONLOCAL.TYPE == "cgnl" and cfg.MODEL.NUM_CLASSES >= 5
    assert not cfg.RESNET.IMAGENET_WEIGHTS
    assert demo_data.demo_root(cfg) == os.path.join("demo_data", "synthetic")


def test_layout_mismatch_names_the_key(tmp_path):
    cfg = load_config(DEMO_CFG, ["DATA.PATH_PREFIX", str(tmp_path / "elsewhere")])
    with pytest.raises(ConfigError, match="DATA.PATH_PREFIX"):
        demo_data.prepare_demo_data(cfg)


def _opts(root, out):
    return ["DATA.PATH_TO_DATA_DIR", os.path.join(root, "manifests"),
            "DATA.PATH_PREFIX", os.path.join(root, "frames"), "OUTPUT_DIR", out,
            "RESNET.WIDTH_PER_GROUP", "4", "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "4",
            "TRAIN.EVAL_PERIOD", "0", "DATA_LOADER.NUM_WORKERS", "0",
            "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1", "TEST.BATCH_SIZE", "6"]


def test_demo_prepares_its_data_then_trains_and_tests(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_data, "DEMO_TRAIN_PER_CLASS", 1)
    monkeypatch.setattr(demo_data, "DEMO_TEST_PER_CLASS", 1)
    root, out = str(tmp_path / "synthetic"), str(tmp_path / "out")
    with one_thread():
        assert main(["--cfg", DEMO_CFG, *_opts(root, out)]) == 0
    assert "Multi-view test top-1" in capsys.readouterr().out
    assert sorted(os.listdir(root)) == ["annotations", "frames", "manifests", "videos"]
    metrics = json.loads(open(os.path.join(out, "test_metrics.json")).read())
    assert (metrics["videos_scored"], metrics["videos_listed"]) == (6, 6)

    video = os.path.join(root, "videos", "train", "disc", "disc_000.mp4")
    stamp = os.stat(video).st_mtime_ns
    cfg = load_config(DEMO_CFG, _opts(root, out))
    demo_data.prepare_demo_data(cfg)  # everything exists: nothing is made again
    assert os.stat(video).st_mtime_ns == stamp
