"""Figures of the test analysis: a top-1 confusion matrix of chosen classes and
the per-class gains of one run over another (``cgnl_video.analysis.test_report``)."""

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: cells get their count written in them up to this many classes
ANNOTATE_UP_TO = 40


def confusion_figure(counts: np.ndarray, videos: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """counts[true, predicted] of the shown classes, coloured by the share of the true
    class's ``videos`` (all its test videos, also those predicted as classes not shown)."""
    size = len(names)
    share = counts / np.maximum(videos, 1)[:, None]
    side = max(4.5, 0.28 * size + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(size)
    font = 8 if size <= ANNOTATE_UP_TO else 6
    ax.set_xticks(ticks, names, rotation=90, fontsize=font)
    ax.set_yticks(ticks, names, fontsize=font)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if size <= ANNOTATE_UP_TO:
        for t, p in zip(*np.nonzero(counts)):
            ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=font,
                    color="white" if share[t, p] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's videos")
    fig.tight_layout()
    return fig


def gain_figure(names: Sequence[str], gains: Sequence[float], title: str) -> Figure:
    """Horizontal bars of per-class top-1 gains (points), in the given order, top to bottom."""
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.3 * len(names) + 1.2)))
    positions = np.arange(len(names))[::-1]
    ax.barh(positions, gains, color=["tab:green" if g >= 0 else "tab:red" for g in gains])
    ax.set_yticks(positions, names, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("top-1 gain (percentage points)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
