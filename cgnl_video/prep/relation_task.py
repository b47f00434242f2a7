"""A synthetic relation task for testing the CGNL paper's claim (Sec. 1, 3) on a CPU.

Each clip holds, on a noisy background, object A (grey stripes: its TEXTURE kind) in
one frame, object B (a flat patch: its COLOUR kind) in another frame, and distractors
(coloured stripes: a texture and a colour, drawn like A's and B's). The label is 1
when B's colour kind is the partner of A's texture kind (kind k with kind k), else 0.
A's texture, B's colour and each distractor are uniform and independent of the label,
so no object, no frame and no average of the clip tells the label: only the relation
between two positions in different frames does. Textures are zero-mean, so A leaves
every average unchanged. Clips are float tensors made in memory, deterministic for
(seed, split, index). Why a frame-wise C2D cannot solve it: docs/MODELS.md.
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

#: RGB of the colour kinds, in the normalised range the model sees
PALETTE = np.array([[0.9, -0.6, -0.6], [-0.6, 0.9, -0.6], [-0.6, -0.6, 0.9], [0.9, 0.9, -0.6]], np.float32)
TEXTURES = ("horizontal", "vertical", "diagonal", "checker")
SPLIT_IDS = {"train": 0, "test": 1}
Cell = Tuple[int, int, int]  # (frame, grid row, grid column)


@dataclass(frozen=True)
class RelationSpec:
    """Clip layout and difficulty: A and B are ``frame_gap`` frames and at least
    ``min_distance`` grid cells apart; ``distractors`` more objects anywhere."""

    num_frames: int = 2
    size: int = 64  # frame side in pixels
    grid: int = 4  # objects sit in cells of a grid x grid layout (one cell per res4 position)
    kinds: int = 2  # texture kinds = colour kinds (at most 4)
    frame_gap: int = 1
    min_distance: float = 0.0
    distractors: int = 2
    noise: float = 0.15

    def check(self) -> None:
        """ValueError naming the field that cannot make a clip."""
        cell = self.size // self.grid
        checks = [(2 <= self.kinds <= len(TEXTURES), "kinds", f"must be in 2..{len(TEXTURES)}"),
                  (1 <= self.frame_gap < self.num_frames, "frame_gap", "must be in 1..num_frames - 1"),
                  (self.size % self.grid == 0 and cell >= 8, "size", "must be a multiple of grid, cells >= 8 px"),
                  (self.min_distance <= (self.grid - 1) * 2 ** 0.5, "min_distance", "no two cells are that far apart"),
                  (0 <= self.distractors <= self.num_frames * self.grid ** 2 - 2, "distractors", "too many")]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"RelationSpec.{name}: {why}, got {getattr(self, name)}")


@dataclass
class RelationBatch:
    """``clips`` (N, 3, T, H, W) float32, ``labels`` (N,) int64; per clip: A's and B's
    cells, A's texture kind and B's colour kind; ``distractor_kinds`` (texture, colour)."""

    clips: torch.Tensor
    labels: torch.Tensor
    a_cells: List[Cell]
    b_cells: List[Cell]
    a_texture: List[int]
    b_colour: List[int]
    distractor_kinds: List[List[Tuple[int, int]]]


def texture(kind: int, side: int) -> np.ndarray:
    """(side, side) pattern of +-1 with period 4 px; zero mean when side is a multiple of 4."""
    yy, xx = np.mgrid[0:side, 0:side]
    phase = (yy, xx, yy + xx, yy // 2 * 2 + xx)[kind] // 2
    return np.where(phase % 2 == 0, 1.0, -1.0).astype(np.float32)


def _partner_colour(a_texture: int, label: int, kinds: int, rng: np.random.Generator) -> int:
    """B's colour: the partner kind (= a_texture) for label 1, another kind uniformly for 0."""
    if label:
        return a_texture
    return int((a_texture + rng.integers(1, kinds)) % kinds)


def _place(spec: RelationSpec, rng: np.random.Generator) -> Tuple[Cell, Cell]:
    """A's and B's cells: frames ``frame_gap`` apart (either order), cells ``min_distance`` apart."""
    first = int(rng.integers(0, spec.num_frames - spec.frame_gap))
    frames = [first, first + spec.frame_gap]
    rng.shuffle(frames)
    cells = [(y, x) for y in range(spec.grid) for x in range(spec.grid)]
    partners = {a: [b for b in cells if np.hypot(b[0] - a[0], b[1] - a[1]) >= spec.min_distance] for a in cells}
    starts = [a for a in cells if partners[a]]
    a = starts[rng.integers(len(starts))]
    b = partners[a][rng.integers(len(partners[a]))]
    return (frames[0], *a), (frames[1], *b)


def _paint(clip: np.ndarray, cell: Cell, patch: np.ndarray, spec: RelationSpec, rng: np.random.Generator) -> None:
    """Put a (3, s, s) patch inside ``cell`` of ``clip`` (3, T, H, W), at a random offset."""
    step = spec.size // spec.grid
    side = patch.shape[-1]
    oy, ox = rng.integers(0, step - side + 1, size=2)
    t, y, x = cell
    clip[:, t, y * step + oy:y * step + oy + side, x * step + ox:x * step + ox + side] = patch


def make_clip(spec: RelationSpec, rng: np.random.Generator):
    """One clip (3, T, H, W), its label and its layout (A cell, B cell, A texture, B colour, distractors)."""
    side = (spec.size // spec.grid) // 4 * 4 - 4  # a multiple of 4: zero-mean textures, a margin to move in
    label = int(rng.integers(0, 2))
    a_tex = int(rng.integers(0, spec.kinds))
    b_col = _partner_colour(a_tex, label, spec.kinds, rng)
    a_cell, b_cell = _place(spec, rng)
    clip = rng.standard_normal((3, spec.num_frames, spec.size, spec.size), dtype=np.float32) * spec.noise
    grey = np.full((3, 1, 1), 0.8, np.float32)
    _paint(clip, a_cell, grey * texture(a_tex, side), spec, rng)
    _paint(clip, b_cell, np.broadcast_to(PALETTE[b_col][:, None, None], (3, side, side)), spec, rng)
    taken = {a_cell, b_cell}
    free = [(t, y, x) for t in range(spec.num_frames) for y in range(spec.grid) for x in range(spec.grid)]
    free = [c for c in free if c not in taken]
    chosen = rng.choice(len(free), size=spec.distractors, replace=False)
    distractors = []
    for i in chosen:
        kinds = (int(rng.integers(0, spec.kinds)), int(rng.integers(0, spec.kinds)))
        _paint(clip, free[i], PALETTE[kinds[1]][:, None, None] * texture(kinds[0], side), spec, rng)
        distractors.append(kinds)
    return clip, label, (a_cell, b_cell, a_tex, b_col, distractors)


def make_batch(spec: RelationSpec, seed: int, split: str, indices: Sequence[int]) -> RelationBatch:
    """Clips ``indices`` of ``split``; clip i uses a generator seeded with (seed, split, i).

    Args:
        spec: layout and difficulty.
        seed: data seed.
        split: "train" or "test" (different clips for the same index).
        indices: which clips.
    """
    spec.check()
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {list(SPLIT_IDS)}, got {split!r}")
    clips, labels, layouts = [], [], []
    for i in indices:
        clip, label, layout = make_clip(spec, np.random.default_rng([seed, SPLIT_IDS[split], int(i)]))
        clips.append(clip)
        labels.append(label)
        layouts.append(layout)
    a_cells, b_cells, a_tex, b_col, distractors = (list(column) for column in zip(*layouts))
    return RelationBatch(torch.from_numpy(np.stack(clips)), torch.tensor(labels, dtype=torch.int64),
                         a_cells, b_cells, a_tex, b_col, distractors)
