"""tools/plot_curves.py and cgnl_video.analysis.curves on json_stats.log files
written with the engine's own JsonStatsWriter."""

import os

import pytest
from PIL import Image

from cgnl_video.analysis.curves import plot_curves, read_run, run_names
from cgnl_video.utils.logging import JsonStatsWriter
from tools_fixtures import run_tool


def write_run(folder, epochs, resumed_at=None, test_top1=None):
    """json_stats.log as the engine writes it: train (+ val every other epoch),
    an epoch logged twice when the run was resumed, then the test record."""
    writer = JsonStatsWriter(folder)
    for epoch in range(1, epochs + 1):
        repeats = 2 if epoch == resumed_at else 1
        for attempt in range(repeats):
            loss = 2.0 / epoch + (0.5 if attempt < repeats - 1 else 0.0)  # the first attempt is superseded
            writer.write({"split": "train", "epoch": epoch, "loss": loss, "top1_err": 50.0, "lr": 0.1 / epoch})
        if epoch % 2 == 0:
            writer.write({"split": "val", "epoch": epoch, "loss": 1.0, "top1_err": 60.0 - 10 * epoch})
    if test_top1 is not None:
        writer.write({"split": "test", "top1_err": 100 - test_top1, "top1_acc": test_top1, "top5_acc": 99.0})


def test_read_run_keeps_the_last_record_of_each_epoch(tmp_path):
    write_run(str(tmp_path), 4, resumed_at=3, test_top1=81.25)
    run = read_run(str(tmp_path))
    assert run.epochs("train") == [1, 2, 3, 4] and run.epochs("val") == [2, 4]
    assert run.values("train", "loss") == pytest.approx([2.0, 1.0, 2 / 3, 0.5], abs=1e-6)
    assert run.values("train", "lr") == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025], abs=1e-6)
    assert run.val_top1() == [60.0, 80.0]
    assert run.test["top1_acc"] == 81.25


def test_plot_overlays_runs_in_three_panels(tmp_path, capsys):
    write_run(str(tmp_path / "a" / "R50"), 4, test_top1=70.0)
    write_run(str(tmp_path / "b" / "R50"), 6)
    runs = [read_run(str(tmp_path / p / "R50"), n)
            for p, n in zip("ab", run_names([str(tmp_path / "a" / "R50"), str(tmp_path / "b" / "R50")]))]
    assert [r.name for r in runs] == ["a/R50", "b/R50"]
    figure = plot_curves(runs)
    loss, lr, val = figure.axes
    assert [ax.get_title() for ax in figure.axes] == ["train loss", "learning rate (end of epoch)",
                                                      "val top-1 (%), single clip"]
    assert [len(ax.lines) for ax in figure.axes] == [2, 2, 2]
    assert list(val.lines[1].get_xdata()) == [2, 4, 6] and list(val.lines[1].get_ydata()) == [60.0, 80.0, 100.0]
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["a/R50 (test top-1 70.0%)", "b/R50"]

    out = str(tmp_path / "curves.png")
    assert run_tool("plot_curves", [str(tmp_path / "a" / "R50"), str(tmp_path / "b" / "R50"), "--out", out]) == 0
    assert Image.open(out).size == (1200, 320)
    printed = capsys.readouterr().out
    assert "a/R50: 4 epochs, last train loss 0.5000, val top-1 best 80.00% last 80.00%, test top-1 70.00%" in printed


def test_missing_stats_file_is_an_error(tmp_path, capsys):
    assert run_tool("plot_curves", [str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "json_stats.log not found" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.png")
