"""tools/analyze_test.py and cgnl_video.analysis.test_report on hand-made prediction
files: every number below is computed by hand from the ten videos listed."""

import csv
import json
import os
from types import SimpleNamespace

import pytest
import torch

from cgnl_video.analysis.test_report import confusion_matrix, most_confused_classes, read_test_run
from cgnl_video.data import ManifestEntry, write_classes
from cgnl_video.engine.multiview import ViewAggregator, video_metrics, write_test_outputs
from tools_fixtures import run_tool

CLASSES = "abcdef"  # f has no test video in run one
#: (true class, top-1 prediction, label among the top 5) of run one's ten videos
RUN_ONE = [("a", "a", True), ("a", "b", True), ("a", "b", False), ("b", "b", True), ("b", "c", False),
           ("c", "b", True), ("c", "c", True), ("d", "d", True), ("e", "a", False), ("e", "e", True)]
#: run two: videos 1-9 (v10 missing) and v11 of class f; its label is always in its top 5
RUN_TWO = [("a", "a"), ("a", "a"), ("a", "b"), ("b", "a"), ("b", "b"), ("c", "c"), ("c", "c"), ("d", "a"),
           ("e", "e"), None, ("f", "f")]


def ranked(label, first, in_top5):
    """Five labels starting with ``first``; ``label`` among them iff ``in_top5``."""
    rest = [c for c in CLASSES if c != first and (c != label or in_top5)]
    if in_top5 and label != first:
        rest.remove(label)
        rest.insert(0, label)
    return [first, *rest[:4]]


def write_run(folder, videos, data_dir):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        handle.write(f"DATA:\n  PATH_TO_DATA_DIR: {data_dir}\n")
    with open(os.path.join(folder, "test_predictions.jsonl"), "w") as handle:
        for number, video in enumerate(videos, start=1):
            if video is None:
                continue
            label, top = video[0], ranked(*video) if len(video) == 3 else ranked(video[0], video[1], True)
            record = {"path": f"v{number}", "label": label, "label_index": CLASSES.index(label),
                      "top5_labels": top, "top5_scores": [0.5, 0.2, 0.1, 0.1, 0.1]}
            handle.write(json.dumps(record) + "\n")
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    data = tmp_path / "lists"
    write_classes(str(data / "classes.txt"), list(CLASSES))
    return write_run(tmp_path / "one", RUN_ONE, data), write_run(tmp_path / "two", RUN_TWO, data)


def test_accuracies_per_class_table_and_confused_pairs(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_tool("analyze_test", [runs[0], "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    # top-1: videos 1, 4, 7, 8, 10; top-5: also 2 and 6; classes: (1/3 + 1/2 + 1/2 + 1 + 1/2) / 5
    assert printed[0] == "one: 10 videos, 6 classes: top-1 50.00%, top-5 70.00%, mean class accuracy 56.67%"
    assert printed[1] == ("worst classes: a 33.33% (1/3), b 50.00% (1/2), c 50.00% (1/2), e 50.00% (1/2), "
                          "d 100.00% (1/1)")
    assert printed[2:7] == ["most confused pairs (true -> predicted):",
                            "  a -> b: 2 videos (66.67% of a)", "  b -> c: 1 videos (50.00% of b)",
                            "  c -> b: 1 videos (50.00% of c)", "  e -> a: 1 videos (50.00% of e)"]
    assert (out / "per_class.csv").read_text() == (
        "class,videos,correct,top1,top5,most_confused_with,confused_videos\n"
        "a,3,1,33.33,66.67,b,2\n"
        "b,2,1,50.0,50.0,c,1\n"
        "c,2,1,50.0,100.0,b,1\n"
        "e,2,1,50.0,50.0,a,1\n"
        "d,1,1,100.0,100.0,,0\n"
        "f,0,0,,,,0\n")
    assert (out / "confused_pairs.csv").read_text() == (
        "true,predicted,videos,percent_of_true\na,b,2,66.67\nb,c,1,50.0\nc,b,1,50.0\ne,a,1,50.0\n")
    assert (out / "confusion.csv").read_text().splitlines() == [
        "true \\ predicted,a,b,c,d,e,f", "a,1,2,0,0,0,0", "b,0,1,1,0,0,0", "c,0,1,1,0,0,0",
        "d,0,0,0,1,0,0", "e,1,0,0,0,1,0", "f,0,0,0,0,0,0"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == pytest.approx({"run": "one", "videos": 10, "classes": 6, "classes_with_videos": 5,
                                     "top1": 50.0, "top5": 70.0, "mean_class_acc": 170 / 3})
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_classes_are_those_of_the_most_confused_pairs(runs):
    counts = confusion_matrix(read_test_run(runs[0]))
    # pairs in order a->b (2), b->c, c->b, e->a (1 each, 50 %, class order)
    assert most_confused_classes(counts, 3) == [0, 1, 2]
    assert most_confused_classes(counts, 4) == [0, 1, 2, 4]
    assert most_confused_classes(counts, 6) == [0, 1, 2, 3, 4, 5]  # all classes fit


def test_comparison_gains_per_class_and_paired_counts(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_tool("analyze_test", [runs[0], "--compare", runs[1], "--out", str(out), "--pairs", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    # run two: top-1 7/10, top-5 10/10, classes (2/3 + 1/2 + 1 + 0 + 1 + 1) / 6
    assert printed[4:8] == [
        "compared with two (gain = one - two, in points): top-1 -20.00, top-5 -30.00, mean class accuracy -12.78",
        "  9 videos scored by both: 2 right in both, 2 only in one, 4 only in two, 1 in neither",
        "  largest gains: d +100.00",
        "  largest losses: c -50.00, e -50.00, a -33.33"]
    assert (out / "per_class_gain.csv").read_text() == (
        "class,videos,other_videos,top1,other_top1,gain\n"
        "d,1,1,100.0,0.0,100.0\n"
        "b,2,2,50.0,50.0,0.0\n"
        "a,3,3,33.33,66.67,-33.33\n"
        "c,2,2,50.0,100.0,-50.0\n"
        "e,2,1,50.0,100.0,-50.0\n"
        "f,0,1,,100.0,\n")
    comparison = json.loads((out / "summary.json").read_text())["comparison"]
    assert comparison == pytest.approx({"other": "two", "top1_gain": -20.0, "top5_gain": -30.0,
                                        "mean_class_acc_gain": 170 / 3 - 125 / 1.8, "common_videos": 9,
                                        "both_right": 2, "only_this_right": 2, "only_other_right": 4,
                                        "both_wrong": 1})
    assert (out / "per_class_gain.png").is_file()


def test_numbers_equal_the_engines_test_metrics_for_engine_written_predictions(tmp_path):
    """The reader and the engine's writer agree: test_metrics.json has the same accuracies."""
    names = [f"class {i}" for i in range(7)]
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 7, (40,), generator=generator).tolist()
    merged = ViewAggregator()
    for index, label in enumerate(labels):
        logits = torch.randn(3, 7, generator=generator)
        logits[:, label] += 1.0  # better than chance, not perfect
        merged.add(index, logits.softmax(dim=1))
    dataset = SimpleNamespace(entries=[ManifestEntry(f"v{i}", label) for i, label in enumerate(labels)],
                              classes=names)
    metrics = video_metrics(merged.scores(), labels, names)
    write_test_outputs(str(tmp_path), metrics, merged, dataset)
    write_classes(str(tmp_path / "classes.txt"), names)
    assert run_tool("analyze_test", [str(tmp_path), "--classes", str(tmp_path / "classes.txt"),
                                     "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    for ours, engine in (("top1", "top1_acc"), ("top5", "top5_acc"), ("mean_class_acc", "mean_class_acc")):
        assert summary[ours] == pytest.approx(metrics[engine])
    assert 0 < metrics["top1_acc"] < 100 and metrics["top5_acc"] > metrics["top1_acc"]
    with open(tmp_path / "report" / "per_class.csv") as handle:
        rows = {r["class"]: r for r in csv.DictReader(handle)}
    for name, engine_row in metrics["per_class"].items():
        assert int(rows[name]["correct"]) == engine_row["correct"]
        assert int(rows[name]["videos"]) == engine_row["videos"]


def test_bad_inputs_are_named(runs, tmp_path, capsys):
    assert run_tool("analyze_test", [str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert f"{tmp_path / 'config.yaml'} not found" in capsys.readouterr().err
    other_classes = tmp_path / "other.txt"
    write_classes(str(other_classes), ["a", "b", "c", "d", "e", "g"])
    assert run_tool("analyze_test", [runs[1], "--classes", str(other_classes), "--out", str(tmp_path / "r")]) == 2
    assert f"{os.path.join(runs[1], 'test_predictions.jsonl')}:10: classes ['f'] not in" in capsys.readouterr().err
    assert run_tool("analyze_test", [runs[0], "--compare", str(tmp_path / "lists"), "--out", str(tmp_path / "r")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
