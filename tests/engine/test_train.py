"""The main job end to end on a tiny data set: train + multi-view test, outputs,
auto-resume equivalence, non-finite loss, test-only mode, clear errors."""

import functools
import hashlib
import json
import os

import pytest
import torch

from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine import train_loop as train_module
from cgnl_video.engine.launch import run
from cgnl_video.engine.train_loop import NonFiniteLossError
from cgnl_video.utils.logging import read_json_stats
from engine_helpers import make_tiny_dataset, tiny_opts
from tools_fixtures import run_tool

main = functools.partial(run_tool, "run_net")  # tools/run_net.py main(argv), in this process


pytestmark = pytest.mark.usefixtures("single_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    make_tiny_dataset(root)
    return root


def _cfg(data_root, out, **overrides):
    return load_config(None, tiny_opts(data_root, str(out), **overrides))


def _final_weights(out):
    return cu.load_checkpoint(cu.list_checkpoints(str(out))[-1])["model"]


def test_train_two_epochs_then_multi_view_test_writes_every_output(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--cfg", "", *tiny_opts(data_root, str(out))]) == 0
    assert "Multi-view test top-1" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["checkpoints", "config.yaml", "json_stats.log", "log.txt",
                                       "test_metrics.json", "test_predictions.jsonl"]
    assert [os.path.basename(p) for p in cu.list_checkpoints(str(out))] == [
        "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    records = read_json_stats(str(out / "json_stats.log"))
    assert [(r["split"], r.get("epoch")) for r in records] == [
        ("train", 1), ("val", 1), ("train", 2), ("val", 2), ("test", 2)]
    for key in ("loss", "lr", "top1_err", "top5_err", "data_time", "iter_time", "eta", "mem_mb"):
        assert key in records[0]
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert (metrics["videos_scored"], metrics["videos_listed"], metrics["views_per_video"]) == (6, 6, 6)
    assert set(metrics["per_class"]) == {"class0", "class1", "class2"}
    predictions = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and len(predictions[0]["top5_labels"]) == 3
    assert predictions[0]["path"] == "test/0_0" and predictions[0]["label"] == "class0"
    assert load_config(str(out / "config.yaml")).MODEL.NUM_CLASSES == 3


def test_killed_and_resumed_run_ends_with_identical_weights(data_root, tmp_path, monkeypatch):
    opts = dict(SOLVER__MAX_EPOCH=3, DETERMINISTIC=True, TEST__ENABLE=False, SOLVER__LR_POLICY="cosine")
    run(_cfg(data_root, tmp_path / "straight", **opts))

    real_save = cu.save_checkpoint

    def save_then_die(output_dir, epoch, state, keep, iteration=0):
        path = real_save(output_dir, epoch, state, keep, iteration)
        if epoch == 1:
            raise KeyboardInterrupt("killed after epoch 1")
        return path

    monkeypatch.setattr(cu, "save_checkpoint", save_then_die)
    killed = _cfg(data_root, tmp_path / "resumed", **opts)
    with pytest.raises(KeyboardInterrupt):
        run(killed)
    assert len(cu.list_checkpoints(killed.OUTPUT_DIR)) == 1
    monkeypatch.setattr(cu, "save_checkpoint", real_save)
    run(killed)  # the same command again: resumes after epoch 1

    straight, resumed = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    epochs = [r["epoch"] for r in read_json_stats(str(tmp_path / "resumed" / "json_stats.log"))
              if r["split"] == "train"]
    assert epochs == [1, 2, 3]


def _digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_non_finite_loss_stops_naming_the_iteration_and_keeps_the_checkpoint(data_root, tmp_path, monkeypatch):
    run(_cfg(data_root, tmp_path, SOLVER__MAX_EPOCH=1, TEST__ENABLE=False))
    good = cu.list_checkpoints(str(tmp_path))
    digest = _digest(good[-1])
    real_ce = train_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, labels):
        calls["n"] += 1
        loss = real_ce(logits, labels)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train_module.F, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 2 .*checkpoint_epoch_00001"):
        run(_cfg(data_root, tmp_path, SOLVER__MAX_EPOCH=2, TEST__ENABLE=False))
    assert cu.list_checkpoints(str(tmp_path)) == good and _digest(good[-1]) == digest


def test_test_only_mode_scores_a_given_checkpoint(data_root, tmp_path):
    run(_cfg(data_root, tmp_path / "train", SOLVER__MAX_EPOCH=1, TEST__ENABLE=False))
    checkpoint = cu.list_checkpoints(str(tmp_path / "train"))[-1]
    metrics = run(_cfg(data_root, tmp_path / "test", TRAIN__ENABLE=False,
                       TEST__CHECKPOINT_FILE_PATH=checkpoint, TEST__NUM_SPATIAL_CROPS=1))
    assert metrics["weights"] == checkpoint and metrics["views_per_video"] == 2
    assert (tmp_path / "test" / "test_metrics.json").is_file()
    assert not (tmp_path / "test" / "checkpoints").exists()


def test_missing_manifest_names_it_and_the_data_prep_command(tmp_path, capsys):
    status = main(["--cfg", "configs/ucf101/R50.yaml", "DATA.PATH_TO_DATA_DIR", str(tmp_path / "ucf101"),
                   "OUTPUT_DIR", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert "ucf101/classes.txt" in err and "data_prep/build_manifests.py ucf101" in err


def test_bad_values_fail_before_any_work_naming_the_key(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--cfg", "", *tiny_opts(data_root, str(out), SOLVER__MOMENTUM=1.5)]) == 2
    assert "SOLVER.MOMENTUM" in capsys.readouterr().err
    assert main(["--cfg", "", *tiny_opts(data_root, str(out), MODEL__NUM_CLASSES=5)]) == 2
    assert "MODEL.NUM_CLASSES" in capsys.readouterr().err
    assert main(["--cfg", "", *tiny_opts(data_root, str(out), RESNET__IMAGENET_WEIGHTS="nope.pth")]) == 2
    assert "RESNET.IMAGENET_WEIGHTS: file not found: nope.pth" in capsys.readouterr().err
    assert main(["--cfg", "", *tiny_opts(data_root, str(out), TRAIN__ENABLE=False)]) == 2
    assert "TEST.CHECKPOINT_FILE_PATH: no weights to test" in capsys.readouterr().err
    assert not out.exists()


def test_the_train_batch_must_divide_over_the_processes_the_test_batch_need_not():
    """check_run refuses, before any work, a global training batch the processes cannot share
    evenly; the test batch only sets how many videos a process scores per step."""
    from cgnl_video.config import ConfigError, load_config
    from cgnl_video.engine.preflight import check_run

    cfg = load_config(None, ["TRAIN.BATCH_SIZE", "6", "TEST.BATCH_SIZE", "4"])
    check_run(cfg, 2)
    check_run(cfg, 3)
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE = 6 is global .* 4 processes"):
        check_run(cfg, 4)
