"""The attention figure: one row per shown frame; columns: the input frame with
the reference cell (green), then one heatmap per map (NL, CGNL group 1..G)."""

from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cgnl_video.analysis.attention import AttentionMaps, Position, normalize_maps  # noqa: E402


def display_frames(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised clip (3, T, H, W) -> RGB frames (T, H, W, 3) in [0, 1]."""
    mean_t = torch.tensor(mean).view(3, 1, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1, 1)
    return (clip.cpu() * std_t + mean_t).clamp(0, 1).permute(1, 2, 3, 0).numpy()


def default_frames(num_frames: int, steps: int, ref_frame: int) -> List[int]:
    """One input frame per block time step: the reference frame for its own
    step, the middle frame of the step's span for the others."""
    frames = []
    for step in range(steps):
        first, last = step * num_frames // steps, (step + 1) * num_frames // steps
        frames.append(ref_frame if first <= ref_frame < last else (first + last - 1) // 2)
    return frames


def _cell(ax, cell: Sequence[int], grid: Sequence[int], size: Sequence[int], colour: str) -> None:
    """Outline grid cell (y, x) of a (H, W) grid on an image of ``size`` (H, W)."""
    height, width = size[0] / grid[0], size[1] / grid[1]
    ax.add_patch(Rectangle((cell[1] * width, cell[0] * height), width, height,
                           fill=False, edgecolor=colour, linewidth=1.5))


def attention_figure(
    frames: np.ndarray,
    ref: Position,
    map_sets: Sequence[AttentionMaps],
    shown: Optional[Sequence[int]] = None,
    threshold: Optional[float] = None,
    title: str = "",
    panel_size: float = 2.0,
) -> Figure:
    """Draw ``map_sets`` over ``frames`` (T, H, W, 3) for the reference ``ref``
    = (frame, row, column) of the clip.

    Each map is scaled to [0, 1] over all frames (``normalize_maps``); with
    ``threshold`` (the paper uses 0.7) only the positions at or above it are
    coloured. Row ``i`` shows input frame ``shown[i]`` and, for every map, the
    block time step that frame falls in.
    """
    num_frames, height, width = frames.shape[:3]
    columns = [(i, k) for i, s in enumerate(map_sets) for k in range(s.maps.shape[0])]
    if shown is None:
        shown = default_frames(num_frames, map_sets[0].grid[0], ref[0])
    fig, axes = plt.subplots(len(shown), 1 + len(columns), squeeze=False,
                             figsize=(panel_size * (1 + len(columns)), panel_size * len(shown) + 0.6))
    extent = (0, width, height, 0)  # pixel edges, so grid cells and rectangles line up
    normalized = [normalize_maps(s.maps).numpy() for s in map_sets]
    for row, frame in enumerate(shown):
        if not 0 <= frame < num_frames:
            raise ValueError(f"frame {frame} is outside the clip's {num_frames} frames")
        ax = axes[row, 0]
        ax.imshow(frames[frame], extent=extent)
        ax.set_ylabel(f"frame {frame}")
        if frame == ref[0]:
            ax.plot(ref[2] + 0.5, ref[1] + 0.5, marker="+", color="lime", markersize=10, markeredgewidth=2)
            _cell(ax, map_sets[0].ref[1:], map_sets[0].grid[1:], (height, width), "lime")
        for column, (i, k) in enumerate(columns, start=1):
            ax, maps = axes[row, column], map_sets[i]
            grid = maps.grid
            step = frame * grid[0] // num_frames
            heat = normalized[i][k, step]
            if threshold is not None:
                heat = np.ma.masked_less(heat, threshold)
            ax.imshow(frames[frame].mean(axis=-1), cmap="gray", vmin=0, vmax=1, extent=extent)
            ax.imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0.55, interpolation="nearest", extent=extent)
            if step == maps.ref[0]:
                _cell(ax, maps.ref[1:], grid[1:], (height, width), "lime")
            if row == 0:
                ax.set_title(maps.labels[k], fontsize=9)
    axes[0, 0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
