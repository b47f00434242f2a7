"""The timeline figure of ``tools/predict.py --timeline``: per input, the probability
of its most likely classes over time, one point per window at the window's centre."""

from typing import List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cgnl_video.analysis.timeline import Timeline  # noqa: E402


def shown_classes(timeline: Timeline, count: int) -> List[int]:
    """``count`` classes: those that are the top-1 of the most windows first, ties (and
    classes that never are) by their peak probability over the windows."""
    wins = torch.bincount(timeline.probs.argmax(dim=1), minlength=timeline.probs.shape[1])
    peaks = timeline.probs.max(dim=0).values
    order = sorted(range(len(peaks)), key=lambda c: (-int(wins[c]), -float(peaks[c])))
    return order[:count]


def timeline_figure(timelines: Sequence[Timeline], classes: Sequence[str], count: int) -> Figure:
    """One panel per timeline: the probability of its ``count`` top classes
    (``shown_classes``) against time in seconds (frames when the frame rate is unknown).
    A class has the same colour in every panel."""
    palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, axes = plt.subplots(len(timelines), 1, figsize=(10, 2.6 * len(timelines) + 0.4), squeeze=False)
    for ax, timeline in zip(axes[:, 0], timelines):
        scale = timeline.fps or 1.0
        centres = np.array([(start + end) / 2 for start, end in timeline.ranges]) / scale
        marker = "o" if len(centres) <= 60 else None
        for label in shown_classes(timeline, count):
            ax.plot(centres, timeline.probs[:, label].numpy(), marker=marker, markersize=3, linewidth=1.4,
                    color=palette(label % palette.N), label=classes[label])
        ax.set_xlim(0, timeline.num_frames / scale)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("time (s)" if timeline.fps else "frame")
        ax.set_ylabel("probability")
        window = f"{timeline.window / scale:.2f} s" if timeline.fps else f"{timeline.window} frames"
        stride = f"{timeline.stride / scale:.2f} s" if timeline.fps else f"{timeline.stride} frames"
        ax.set_title(f"{timeline.path}: windows of {window} every {stride}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
