"""TENSORBOARD.ENABLE on a tiny run, its event files read back with TensorBoard's own
reader (EventAccumulator): per epoch the json_stats.log records, every LOG_PERIOD
iterations the log lines, at the documented steps; a resumed run
hides what the interrupted one logged after its checkpoint; enabling it without
tensorboard installed stops the run at start, naming the key and the pip command;
``python -m cgnl_video.utils.tensorboard`` prints the scalars.

Checked elsewhere: only rank 0 writes (the 2-process run of
tests/engine/test_distributed.py), and a run with the default TENSORBOARD.ENABLE
False writes no tensorboard folder (the OUTPUT_DIR listing in tests/engine/test_train.py).
"""

import functools
import importlib.abc
import json
import re
import sys

import pytest

from cgnl_video.config import ConfigError, load_config
from cgnl_video.engine.launch import run
from cgnl_video.engine.optim import lr_at
from cgnl_video.utils import tensorboard as tb
from cgnl_video.utils.logging import read_json_stats
from engine_helpers import one_thread, tiny_opts
from tools_fixtures import run_tool

ITERS_PER_EPOCH = 3  # 12 training videos, TRAIN.BATCH_SIZE 4
ITER_TAGS = {f"train_iter/{name}" for name in ("loss", "top1_err", "top5_err", "lr", "data_time", "iter_time",
                                               "mem_mb")}
# json_stats.log fields with no curve: the step itself, text, counts fixed by the data
NOT_CURVES = {"split", "epoch", "eta", "iters", "samples", "videos_listed"}

pytestmark = pytest.mark.usefixtures("single_thread")


def _cfg(root, out, **overrides):
    return load_config(None, tiny_opts(root, str(out), TENSORBOARD__ENABLE=True, **overrides))


@pytest.fixture(scope="module")
def tb_run(tiny_data_root, tmp_path_factory):
    """A 2-epoch run with validation and the test, LOG_PERIOD 1: (OUTPUT_DIR, its config, its scalars)."""
    out = tmp_path_factory.mktemp("tb_run") / "run"
    cfg = _cfg(tiny_data_root, out)
    with one_thread():
        run(cfg)
    return out, cfg, tb.read_scalars(str(out / "tensorboard"))


def test_epoch_scalars_are_the_json_stats_records_at_step_epoch(tb_run):
    out, _cfg_, scalars = tb_run
    expected = {}
    for record in read_json_stats(str(out / "json_stats.log")):
        for key, value in record.items():
            if key not in NOT_CURVES:
                expected.setdefault(f"{record['split']}/{key}", []).append((record["epoch"], value))
    assert set(scalars) - ITER_TAGS == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in scalars[tag]] == [step for step, _ in points], tag
        # TensorBoard keeps float32, json_stats.log 6 decimals
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-6), tag
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    assert [step for step, _ in scalars["val/top1_err"]] == [1, 2]
    assert {"train/lr", "train/data_time", "train/iter_time", "train/mem_mb", "train/top5_err", "val/loss",
            "test/top1_acc", "test/top5_acc", "test/loss", "test/mem_mb"} <= set(scalars)
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert scalars["test/mean_class_acc"] == [(2, pytest.approx(metrics["mean_class_acc"], rel=1e-6))]
    assert scalars["test/top1_acc"][0][1] == pytest.approx(metrics["top1_acc"], rel=1e-6)


def _log_lines(out):
    pattern = re.compile(r"epoch (\d+)/\d+ iter (\d+)/\d+ loss (\S+) lr (\S+) data (\S+)s iter (\S+)s")
    return [tuple(map(float, m.groups())) for m in map(pattern.search, (out / "log.txt").read_text().splitlines())
            if m]


def test_iteration_scalars_are_the_log_lines_at_step_global_iteration(tb_run):
    out, cfg, scalars = tb_run
    assert ITER_TAGS <= set(scalars)
    steps = list(range(1, 2 * ITERS_PER_EPOCH + 1))
    for tag in ITER_TAGS:
        assert [step for step, _ in scalars[tag]] == steps, tag
    lines = _log_lines(out)
    assert [(int(e) - 1) * ITERS_PER_EPOCH + int(i) for e, i, *_ in lines] == steps
    for name, column, decimals in (("loss", 2, 4), ("data_time", 4, 3), ("iter_time", 5, 3)):
        values = [round(v, decimals) for _, v in scalars[f"train_iter/{name}"]]
        assert values == pytest.approx([line[column] for line in lines], abs=1.1 * 10 ** -decimals), name
    # the LR of each iteration, from the schedule's own formula at the iteration's fractional epoch
    for step, value in scalars["train_iter/lr"]:
        assert value == pytest.approx(lr_at(cfg, (step - 1) / ITERS_PER_EPOCH), rel=1e-6)
    # one process, equal batches: an epoch's loss and errors are the mean of its iterations'
    for epoch in (1, 2):
        for name in ("loss", "top1_err", "top5_err"):
            per_iter = [v for step, v in scalars[f"train_iter/{name}"]
                        if (step - 1) // ITERS_PER_EPOCH == epoch - 1]
            epoch_value = dict(scalars[f"train/{name}"])[epoch]
            assert sum(per_iter) / len(per_iter) == pytest.approx(epoch_value, rel=1e-5, abs=1e-5), name


def test_the_scalar_table_lists_every_tag(tb_run, tmp_path, capsys):
    out, _cfg_, scalars = tb_run
    assert tb.main([str(out / "tensorboard")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == tb.scalar_lines(scalars)
    assert lines[0].split() == ["tag", "points", "steps", "last", "value"]
    assert [line.split()[0] for line in lines[1:]] == sorted(scalars)
    row = dict((line.split()[0], line.split()[1:]) for line in lines[1:])
    assert row["train_iter/loss"][:2] == [str(2 * ITERS_PER_EPOCH), f"1..{2 * ITERS_PER_EPOCH}"]
    assert float(row["train/loss"][2]) == pytest.approx(scalars["train/loss"][-1][1], rel=1e-5)
    assert tb.main([str(tmp_path / "nothing")]) == 2
    assert f"no TensorBoard log folder {tmp_path / 'nothing'}" in capsys.readouterr().err


def test_a_resumed_run_hides_the_points_logged_after_its_checkpoint(tiny_data_root, tmp_path, monkeypatch):
    out, log_dir = tmp_path / "resumed", str(tmp_path / "elsewhere")  # TENSORBOARD.LOG_DIR set
    real_add = tb.ScalarWriter.add_scalars

    def add_then_die(self, prefix, values, step):
        real_add(self, prefix, values, step)
        if prefix == "train_iter" and step == ITERS_PER_EPOCH + 2:  # the 2nd iteration of epoch 2
            raise KeyboardInterrupt("killed in epoch 2")

    monkeypatch.setattr(tb.ScalarWriter, "add_scalars", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tiny_data_root, out, TEST__ENABLE=False, TENSORBOARD__LOG_DIR=log_dir))
    before = tb.read_scalars(log_dir)
    assert [step for step, _ in before["train_iter/loss"]] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(tb.ScalarWriter, "add_scalars", real_add)
    run(_cfg(tiny_data_root, out, TEST__ENABLE=False, TENSORBOARD__LOG_DIR=log_dir))  # resumes after epoch 1
    after = tb.read_scalars(log_dir)
    assert [step for step, _ in after["train_iter/loss"]] == [1, 2, 3, 4, 5, 6]
    assert after["train_iter/loss"][:3] == before["train_iter/loss"][:3]  # epoch 1 as first logged
    assert [step for step, _ in after["train/loss"]] == [1, 2]
    assert [step for step, _ in after["val/loss"]] == [1, 2]
    assert not (out / "tensorboard").exists()


class _HideTensorBoard(importlib.abc.MetaPathFinder):
    """An environment without tensorboard: importing it (or torch's wrapper) fails."""

    @staticmethod
    def hidden(name):
        return name.split(".")[0] == "tensorboard" or name.startswith("torch.utils.tensorboard")

    def find_spec(self, name, path=None, target=None):
        if self.hidden(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_enabled_without_tensorboard_stops_at_start_naming_the_key_and_the_pip_command(
        tiny_data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "meta_path", [_HideTensorBoard(), *sys.meta_path])
    for name in [name for name in sys.modules if _HideTensorBoard.hidden(name)]:
        monkeypatch.delitem(sys.modules, name)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape('TENSORBOARD.ENABLE: True, but tensorboard cannot be imported')):
        tb.check_tensorboard(_cfg(tiny_data_root, out))
    main = functools.partial(run_tool, "run_net")
    assert main(["--cfg", "", *tiny_opts(tiny_data_root, str(out), TENSORBOARD__ENABLE=True)]) == 2
    err = capsys.readouterr().err
    assert "TENSORBOARD.ENABLE" in err and 'pip install -e ".[tensorboard]"' in err
    assert not out.exists()  # stopped before any work: no log, no checkpoint
    # off (the default), the same environment trains
    tb.check_tensorboard(load_config(None, tiny_opts(tiny_data_root, str(out))))

