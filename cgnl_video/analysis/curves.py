"""Training curves from OUTPUT_DIR/json_stats.log: train loss, learning rate and
validation top-1 per epoch, several runs overlaid.

Records (written by the engine, one JSON object per line): ``split`` "train"
(``epoch``, ``loss``, ``lr`` = the rate at the end of the epoch, ``top1_err``),
"val" (``epoch``, ``loss``, ``top1_err``) and "test" (``top1_acc``). A resumed
run may log an epoch twice; the last record of an epoch wins.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cgnl_video.utils.logging import JSON_STATS_FILE, read_json_stats  # noqa: E402


@dataclass
class RunStats:
    """The per-epoch records of one run (epoch -> record) and its test record."""

    name: str
    train: Dict[int, dict]
    val: Dict[int, dict]
    test: Optional[dict]

    def epochs(self, split: str) -> List[int]:
        return sorted(getattr(self, split))

    def values(self, split: str, key: str) -> List[float]:
        records = getattr(self, split)
        return [records[epoch][key] for epoch in sorted(records)]

    def val_top1(self) -> List[float]:
        return [100.0 - err for err in self.values("val", "top1_err")]


def read_run(output_dir: str, name: Optional[str] = None) -> RunStats:
    """The stats of the run in ``output_dir`` (FileNotFoundError without json_stats.log)."""
    path = os.path.join(output_dir, JSON_STATS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {output_dir} a run's OUTPUT_DIR?")
    by_split: Dict[str, Dict[int, dict]] = {"train": {}, "val": {}}
    test = None
    for record in read_json_stats(path):
        split = record.get("split")
        if split in by_split and "epoch" in record:
            by_split[split][int(record["epoch"])] = record
        elif split == "test":
            test = record
    return RunStats(name or os.path.basename(os.path.normpath(output_dir)), by_split["train"],
                    by_split["val"], test)


def run_names(output_dirs: Sequence[str]) -> List[str]:
    """Legend names: the folder name, with as many parent folders as make them distinct."""
    parts = [os.path.abspath(d).split(os.sep) for d in output_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [os.path.normpath(d) for d in output_dirs]


def plot_curves(runs: Sequence[RunStats], panel_size: float = 4.0) -> Figure:
    """Three panels over epochs: train loss, learning rate, val top-1 (%).
    The legend gives each run's multi-view test top-1 when it has one."""
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_size, panel_size * 0.8))
    loss_ax, lr_ax, val_ax = axes
    for run in runs:
        label = run.name
        if run.test and "top1_acc" in run.test:
            label += f" (test top-1 {run.test['top1_acc']:.1f}%)"
        line, = loss_ax.plot(run.epochs("train"), run.values("train", "loss"), marker=".", label=label)
        lr_ax.plot(run.epochs("train"), run.values("train", "lr"), marker=".", color=line.get_color())
        val_ax.plot(run.epochs("val"), run.val_top1(), marker="o", color=line.get_color())
    for ax, title in ((loss_ax, "train loss"), (lr_ax, "learning rate (end of epoch)"),
                      (val_ax, "val top-1 (%), single clip")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=min(len(runs), 3), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(runs) - 1) // 3), 1, 1))
    return fig


def summary_lines(runs: Sequence[RunStats]) -> List[str]:
    """One line per run: epochs, last train loss, best and last val top-1, test top-1."""
    lines = []
    for run in runs:
        train, val = run.values("train", "loss"), run.val_top1()
        text = f"{run.name}: {len(train)} epochs"
        if train:
            text += f", last train loss {train[-1]:.4f}"
        if val:
            text += f", val top-1 best {max(val):.2f}% last {val[-1]:.2f}%"
        if run.test and "top1_acc" in run.test:
            text += f", test top-1 {run.test['top1_acc']:.2f}%"
        lines.append(text)
    return lines
