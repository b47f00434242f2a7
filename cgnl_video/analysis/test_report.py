"""What a run's multi-view test got right and wrong (``tools/analyze_test.py``).

Reads ``OUTPUT_DIR/test_predictions.jsonl`` (written by the engine's
``write_test_outputs``: per scored video its path, true label and the top-5 labels
of its averaged view scores; enough for top-1 / top-5 accuracy and a top-1
confusion matrix) and the class list. Unreadable videos are not in it, so the
numbers are over the scored videos, as in test_metrics.json. Computes top-1 / top-5
(label among the first min(5, classes) predictions), per class (videos, correct,
top-1 / top-5, most frequent wrong prediction; mean class accuracy over the classes
that have videos), the confusion counts[true][predicted] and its off-diagonal
confused pairs, and the per-class top-1 gain of one run over another (points).
Outputs: docs/TOOLS.md, "Test analysis".
"""

import csv
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import simplejson
import yaml

from cgnl_video.data.manifest import read_classes
from cgnl_video.utils.io import atomic_open, atomic_write_text

PREDICTIONS_FILE = "test_predictions.jsonl"  # engine.multiview.PREDICTIONS_FILE
CONFIG_FILE = "config.yaml"  # the full config run_net.py writes to OUTPUT_DIR


@dataclass
class TestRun:
    """One run's scored videos: true label and ranked predictions (class indices)."""

    name: str
    classes: List[str]
    paths: List[str]
    labels: np.ndarray  # (N,)
    ranked: np.ndarray  # (N, k), k = min(5, classes)

    @property
    def top1(self) -> np.ndarray:
        return self.ranked[:, 0]

    def correct(self, k: int = 1) -> np.ndarray:
        """(N,) bool: label among the first k predictions."""
        return (self.ranked[:, :k] == self.labels[:, None]).any(axis=1)


# ----------------------------------------------------------------------------- reading
def classes_file_of(run_dir: str) -> str:
    """DATA.PATH_TO_DATA_DIR/classes.txt of the run's config.yaml."""
    config = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{config} not found: pass the class list with --classes")
    with open(config, encoding="utf-8") as handle:
        data_dir = (yaml.safe_load(handle) or {}).get("DATA", {}).get("PATH_TO_DATA_DIR", "")
    return os.path.join(data_dir, "classes.txt")


def read_test_run(run_dir: str, classes_file: Optional[str] = None, name: Optional[str] = None) -> TestRun:
    """The scored videos of ``run_dir``; class names from ``classes_file`` or the run's
    config. Errors name the file (and line) that does not fit."""
    classes_file = classes_file or classes_file_of(run_dir)
    if not os.path.isfile(classes_file):
        raise FileNotFoundError(f"class list {classes_file} not found: pass it with --classes")
    classes = read_classes(classes_file)
    position = {c: i for i, c in enumerate(classes)}
    path = os.path.join(run_dir, PREDICTIONS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: run_net.py writes it after the multi-view test")
    k = min(5, len(classes))
    paths, labels, ranked = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            record = simplejson.loads(line)
            names = [record["label"], *record["top5_labels"][:k]]
            unknown = sorted({n for n in names if n not in position})
            if unknown or len(names) != k + 1:
                raise ValueError(f"{where}: classes {unknown} not in {classes_file}" if unknown
                                 else f"{where}: expected {k} ranked labels, got {len(names) - 1}")
            if position[record["label"]] != record.get("label_index", position[record["label"]]):
                raise ValueError(f"{where}: label {record['label']!r} is class {position[record['label']]} "
                                 f"in {classes_file}, not {record['label_index']}: another class list?")
            paths.append(record["path"])
            labels.append(position[names[0]])
            ranked.append([position[n] for n in names[1:]])
    if not paths:
        raise ValueError(f"{path}: no scored videos")
    return TestRun(name or os.path.basename(os.path.normpath(run_dir)), classes, paths,
                   np.array(labels, dtype=np.int64), np.array(ranked, dtype=np.int64))


# ----------------------------------------------------------------------------- numbers
def confusion_matrix(run: TestRun) -> np.ndarray:
    """(K, K) int: counts[true, predicted top-1]."""
    counts = np.zeros((len(run.classes),) * 2, dtype=np.int64)
    np.add.at(counts, (run.labels, run.top1), 1)
    return counts


def per_class(run: TestRun) -> List[dict]:
    """One row per class (in class order): videos, correct, top1, top5 (percent, None
    without videos), the class most often predicted instead and how often."""
    counts = confusion_matrix(run)
    top5_hits = np.bincount(run.labels[run.correct(5)], minlength=len(run.classes))
    rows = []
    for c, name in enumerate(run.classes):
        videos = int(counts[c].sum())
        wrong = counts[c].copy()
        wrong[c] = 0
        other = int(wrong.argmax())
        rows.append({"class": name, "videos": videos, "correct": int(counts[c, c]),
                     "top1": 100.0 * counts[c, c] / videos if videos else None,
                     "top5": 100.0 * top5_hits[c] / videos if videos else None,
                     "most_confused_with": run.classes[other] if wrong[other] else "",
                     "confused_videos": int(wrong[other])})
    return rows


def worst_first(rows: Sequence[dict], key: str = "top1") -> List[dict]:
    """Rows by ascending ``key`` (ties: more videos first, then name); rows without a value last."""
    return sorted(rows, key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0.0,
                                       -r.get("videos", 0), r["class"]))


def summary(run: TestRun) -> dict:
    """top1, top5, mean_class_acc (percent), videos and classes."""
    present = [r["top1"] for r in per_class(run) if r["top1"] is not None]
    return {"run": run.name, "videos": len(run.paths), "classes": len(run.classes),
            "classes_with_videos": len(present), "top1": 100.0 * run.correct(1).mean(),
            "top5": 100.0 * run.correct(5).mean(), "mean_class_acc": float(np.mean(present))}


def _confused_cells(counts: np.ndarray) -> List[Tuple[int, int]]:
    """Off-diagonal (true, predicted) cells with videos: most videos first (ties: larger
    share of the true class, then class order)."""
    shares = counts / np.maximum(counts.sum(axis=1), 1)[:, None]
    cells = [(int(t), int(p)) for t, p in zip(*np.nonzero(counts)) if t != p]
    return sorted(cells, key=lambda cell: (-counts[cell], -shares[cell], cell))


def confused_pairs(run: TestRun) -> List[dict]:
    """Every (true, predicted) pair with videos off the diagonal, in ``_confused_cells`` order."""
    counts = confusion_matrix(run)
    videos = counts.sum(axis=1)
    return [{"true": run.classes[t], "predicted": run.classes[p], "videos": int(counts[t, p]),
             "percent_of_true": 100.0 * counts[t, p] / videos[t]} for t, p in _confused_cells(counts)]


def most_confused_classes(counts: np.ndarray, limit: int) -> List[int]:
    """Up to ``limit`` classes, in class order: those of the most confused pairs, taken
    pair by pair (most videos first) so that the largest confusions are all shown; all
    classes when there are no more than ``limit``."""
    if len(counts) <= limit:
        return list(range(len(counts)))
    chosen: List[int] = []
    for t, p in _confused_cells(counts):
        for c in (t, p):
            if c not in chosen and len(chosen) < limit:
                chosen.append(int(c))
    return sorted(chosen)


def compare(run: TestRun, other: TestRun) -> Tuple[dict, List[dict]]:
    """The comparison summary and per-class rows (gain = this run - other, in points),
    largest gain first. Runs must share the class list."""
    if run.classes != other.classes:
        raise ValueError(f"{run.name} and {other.name} have different class lists: cannot compare per class")
    rows = []
    for mine, theirs in zip(per_class(run), per_class(other)):
        gain = mine["top1"] - theirs["top1"] if None not in (mine["top1"], theirs["top1"]) else None
        rows.append({"class": mine["class"], "videos": mine["videos"], "other_videos": theirs["videos"],
                     "top1": mine["top1"], "other_top1": theirs["top1"], "gain": gain})
    rows.sort(key=lambda r: (r["gain"] is None, -(r["gain"] or 0.0), r["class"]))
    mine, theirs = summary(run), summary(other)
    where = {p: i for i, p in enumerate(other.paths)}
    common = [(i, where[p]) for i, p in enumerate(run.paths) if p in where]
    right = run.correct(1)[[i for i, _ in common]]
    other_right = other.correct(1)[[j for _, j in common]]
    paired = {"common_videos": len(common), "both_right": int((right & other_right).sum()),
              "only_this_right": int((right & ~other_right).sum()),
              "only_other_right": int((~right & other_right).sum()), "both_wrong": int((~right & ~other_right).sum())}
    result = {"other": other.name, **{f"{k}_gain": mine[k] - theirs[k] for k in ("top1", "top5", "mean_class_acc")},
              **paired}
    return result, rows


# ----------------------------------------------------------------------------- files
def _cell(value: object) -> object:
    return "" if value is None else round(value, 2) if isinstance(value, float) else value


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """``rows`` as CSV with a header; floats rounded to 2 decimals, None blank."""
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row[c]) for c in columns] for row in rows])


def write_confusion_csv(path: str, run: TestRun) -> None:
    """The full K x K count matrix: rows true classes, columns predicted."""
    counts = confusion_matrix(run)
    write_csv(path, [{"true \\ predicted": name, **dict(zip(run.classes, row.tolist()))}
                     for name, row in zip(run.classes, counts)], ["true \\ predicted", *run.classes])


def _rate(rows: Sequence[dict]) -> str:
    return ", ".join(f"{r['class']} {r['top1']:.2f}% ({r['correct']}/{r['videos']})" for r in rows)


def _gains(rows: Sequence[dict]) -> str:
    return ", ".join(f"{r['class']} {r['gain']:+.2f}" for r in rows) or "none"


def summary_lines(run: TestRun, worst: int = 5, pairs: int = 10) -> List[str]:
    """The run's accuracies, its ``worst`` classes and ``pairs`` most confused pairs."""
    s = summary(run)
    lines = [f"{run.name}: {s['videos']} videos, {s['classes']} classes: top-1 {s['top1']:.2f}%, "
             f"top-5 {s['top5']:.2f}%, mean class accuracy {s['mean_class_acc']:.2f}%",
             f"worst classes: {_rate([r for r in worst_first(per_class(run)) if r['videos']][:worst])}",
             "most confused pairs (true -> predicted):"]
    lines += [f"  {p['true']} -> {p['predicted']}: {p['videos']} videos ({p['percent_of_true']:.2f}% of {p['true']})"
              for p in confused_pairs(run)[:pairs]] or ["  none"]
    return lines


def comparison_lines(run: TestRun, result: dict, rows: Sequence[dict], count: int = 5) -> List[str]:
    """The comparison: overall gains, paired counts, largest per-class gains and losses."""
    other = result["other"]
    rated = [r for r in rows if r["gain"] is not None]
    return [f"compared with {other} (gain = {run.name} - {other}, in points): top-1 {result['top1_gain']:+.2f}, "
            f"top-5 {result['top5_gain']:+.2f}, mean class accuracy {result['mean_class_acc_gain']:+.2f}",
            f"  {result['common_videos']} videos scored by both: {result['both_right']} right in both, "
            f"{result['only_this_right']} only in {run.name}, {result['only_other_right']} only in {other}, "
            f"{result['both_wrong']} in neither",
            f"  largest gains: {_gains([r for r in rated if r['gain'] > 0][:count])}",
            f"  largest losses: {_gains(sorted((r for r in rated if r['gain'] < 0), key=lambda r: r['gain'])[:count])}"]


# ----------------------------------------------------------------------------- the report
PER_CLASS_COLUMNS = ("class", "videos", "correct", "top1", "top5", "most_confused_with", "confused_videos")
PAIR_COLUMNS = ("true", "predicted", "videos", "percent_of_true")
GAIN_COLUMNS = ("class", "videos", "other_videos", "top1", "other_top1", "gain")


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def write_report(run: TestRun, out_dir: str, top_classes: int = 30, other: Optional[TestRun] = None) -> List[str]:
    """Write the analysis files of ``run`` (and of its comparison with ``other``) to
    ``out_dir``; returns their names. ``top_classes``: classes in the figures."""
    from cgnl_video.analysis.confusion_figure import confusion_figure, gain_figure

    os.makedirs(out_dir, exist_ok=True)
    counts = confusion_matrix(run)
    shown = most_confused_classes(counts, top_classes)
    which = f"the {len(shown)} of {len(run.classes)} classes of the most confused pairs" \
        if len(shown) < len(run.classes) else f"all {len(shown)} classes"
    _save(confusion_figure(counts[np.ix_(shown, shown)], counts.sum(axis=1)[shown],
                           [run.classes[c] for c in shown], f"{run.name}: top-1 confusion, {which}"),
          os.path.join(out_dir, "confusion.png"))
    write_confusion_csv(os.path.join(out_dir, "confusion.csv"), run)
    write_csv(os.path.join(out_dir, "per_class.csv"), worst_first(per_class(run)), PER_CLASS_COLUMNS)
    write_csv(os.path.join(out_dir, "confused_pairs.csv"), confused_pairs(run), PAIR_COLUMNS)
    document = summary(run)
    written = ["confusion.png", "confusion.csv", "per_class.csv", "confused_pairs.csv", "summary.json"]
    if other is not None:
        document["comparison"], rows = compare(run, other)
        write_csv(os.path.join(out_dir, "per_class_gain.csv"), rows, GAIN_COLUMNS)
        rated = [r for r in rows if r["gain"] is not None]
        shown_rows = sorted(rated, key=lambda r: -abs(r["gain"]))[:top_classes]
        shown_rows.sort(key=lambda r: -r["gain"])
        _save(gain_figure([r["class"] for r in shown_rows], [r["gain"] for r in shown_rows],
                          f"per-class top-1 gain: {run.name} - {other.name} ({len(shown_rows)} classes)"),
              os.path.join(out_dir, "per_class_gain.png"))
        written += ["per_class_gain.csv", "per_class_gain.png"]
    atomic_write_text(os.path.join(out_dir, "summary.json"), simplejson.dumps(document, indent=2) + "\n")
    return written
