"""A small synthetic action dataset, encoded as real mp4 videos, for the demo and tests.

Every video shows one kind of "action" on a noisy background. The classes (the first
``K`` of ``CLASS_NAMES``) are told apart by cues that do not depend on frame order, since
a C2D network sees the frames as a set: ``slide_horizontal`` / ``slide_vertical`` (a
square swinging along a line: only the set of positions over time separates them,
which is what spacetime blocks are for) and shapes drifting slowly (``disc``,
``cross``, ``ring``, ``triangle``, ``two_squares``, ``bar_pair``: decided by one
frame). Nothing else carries the label: colour, size, position, speed, amplitude,
phase, background and noise are random. Generation is deterministic for a seed: video
``i`` of class ``c`` in split ``s`` uses a generator seeded with ``(seed, s, c, i)``.

Writes ``OUT/videos/{train,test}/<class>/<class>_<i:03d>.mp4``,
``OUT/annotations/classes.txt`` and ``{train,test}.txt`` (read by ``build_manifests.py
generic --list-dir OUT/annotations``). Class design: docs/DATA_PREP.md, section 3.
"""

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

from cgnl_video.data.manifest import write_classes
from cgnl_video.utils.io import atomic_write_text

CLASS_NAMES = (
    "slide_horizontal",
    "slide_vertical",
    "disc",
    "cross",
    "two_squares",
    "ring",
    "triangle",
    "bar_pair",
)
SPLIT_IDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of the synthetic set: classes, videos per class and split, frames, pixels."""

    num_classes: int = 6
    train_per_class: int = 24
    test_per_class: int = 8
    num_frames: int = 48
    width: int = 128
    height: int = 96
    fps: int = 12
    seed: int = 0


Mask = Callable[[np.ndarray, np.ndarray, float, float, float], np.ndarray]


def _square(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _ring(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


def _cross(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    return ((dy <= r) & (dx <= 0.35 * r)) | ((dx <= r) & (dy <= 0.35 * r))


def _triangle(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    top = yy - (cy - r)  # 0 at the apex, 2r at the base
    return (top >= 0) & (yy <= cy + r) & (np.abs(xx - cx) <= 0.6 * top)


def _two_squares(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return _square(yy, xx, cy - 0.9 * r, cx - 0.9 * r, 0.5 * r) | _square(yy, xx, cy + 0.9 * r, cx + 0.9 * r, 0.5 * r)


def _bar_pair(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    horizontal = (np.abs(yy - cy + 0.7 * r) <= 0.22 * r) & (np.abs(xx - cx) <= r)
    vertical = (np.abs(xx - cx - 0.7 * r) <= 0.22 * r) & (np.abs(yy - cy) <= r)
    return horizontal | vertical


SHAPES: Dict[str, Mask] = {
    "slide_horizontal": _square,
    "slide_vertical": _square,
    "disc": _disc,
    "cross": _cross,
    "two_squares": _two_squares,
    "ring": _ring,
    "triangle": _triangle,
    "bar_pair": _bar_pair,
}


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A bright colour of random hue (RGB, 0-255)."""
    hue = rng.random() * 6.0
    ramp = np.clip(np.array([abs(hue - 3.0) - 1.0, 2.0 - abs(hue - 2.0), 2.0 - abs(hue - 4.0)]), 0.0, 1.0)
    return 255.0 * (0.35 + 0.65 * ramp) * rng.uniform(0.8, 1.0)


def _trajectory(name: str, spec: SyntheticSpec, r: float, rng: np.random.Generator) -> np.ndarray:
    """``(num_frames, 2)`` object centres (y, x) for class ``name``."""
    t = np.arange(spec.num_frames, dtype=np.float64)
    h, w = spec.height, spec.width
    if name.startswith("slide_"):
        axis = 1 if name == "slide_horizontal" else 0
        extent = (h, w)[axis]
        amplitude = rng.uniform(0.18, 0.27) * extent
        period = rng.uniform(24, 40)
        swing = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        centre = np.array([rng.uniform(r + 1, h - r - 1), rng.uniform(r + 1, w - r - 1)])
        centre[axis] = rng.uniform(r + amplitude + 1, extent - r - amplitude - 1)
        path = np.repeat(centre[None, :], spec.num_frames, axis=0)
        path[:, axis] += swing
        return path
    margin = 1.2 * r + 1
    start = np.array([rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)])
    velocity = rng.uniform(-0.4, 0.4, size=2)
    low, high = np.array([margin, margin]), np.array([h - margin, w - margin])
    # Drift that bounces off the borders: fold the straight path back into [low, high].
    span = high - low
    folded = np.mod(start - low + velocity * t[:, None], 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def render_video(name: str, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of one video of class ``name``."""
    h, w = spec.height, spec.width
    r = rng.uniform(0.14, 0.18) * min(h, w)
    if name == "two_squares":
        r *= 1.2
    path = _trajectory(name, spec, r, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    level = rng.uniform(30, 110)
    tilt = rng.uniform(-25, 25, size=2)
    background = level + tilt[0] * (yy / h - 0.5) + tilt[1] * (xx / w - 0.5)
    background = np.repeat(background[..., None], 3, axis=2) + rng.uniform(-15, 15, size=3)
    colour = _random_colour(rng)
    noise = rng.standard_normal((spec.num_frames, h, w, 1), dtype=np.float32) * rng.uniform(3, 7)
    frames = background.astype(np.float32) + noise
    for k, (cy, cx) in enumerate(path):
        frames[k][SHAPES[name](yy, xx, cy, cx, r)] = colour
    return np.clip(frames, 0, 255).astype(np.uint8)


def encode_mp4(
    path: str, frames: np.ndarray, fps: int, faststart: bool = False, preset: str = "ultrafast", crf: int = 23
) -> None:
    """Encode frames as H.264 mp4 with PyAV; the file appears under ``path`` only when complete.

    ``faststart`` puts the index (moov atom) before the frames, as web videos have it;
    ``preset`` and ``crf`` are x264's speed / quality settings.
    """
    import av

    temp = path + ".part"
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(temp, "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.thread_count = 1  # one thread: byte-identical output for a seed
        stream.options = {"crf": str(crf), "preset": preset}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    os.replace(temp, path)


def make_synthetic(out: str, spec: SyntheticSpec = SyntheticSpec()) -> Dict[str, int]:
    """Write the videos and annotations under ``out``; return the number of videos per split."""
    if not 2 <= spec.num_classes <= len(CLASS_NAMES):
        raise ValueError(f"--classes must be in 2..{len(CLASS_NAMES)}, got {spec.num_classes}")
    if spec.width % 2 or spec.height % 2:
        raise ValueError("width and height must be even (H.264 with 4:2:0 chroma)")
    classes = CLASS_NAMES[: spec.num_classes]
    counts = {"train": spec.train_per_class, "test": spec.test_per_class}
    lists: Dict[str, List[Tuple[str, str]]] = {}
    for split, per_class in counts.items():
        lists[split] = []
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(out, "videos", split, name), exist_ok=True)
            for i in range(per_class):
                rel = f"{split}/{name}/{name}_{i:03d}.mp4"
                rng = np.random.default_rng([spec.seed, SPLIT_IDS[split], label, i])
                encode_mp4(os.path.join(out, "videos", rel), render_video(name, spec, rng), spec.fps)
                lists[split].append((rel, name))
    annotations = os.path.join(out, "annotations")
    write_classes(os.path.join(annotations, "classes.txt"), classes)
    for split, rows in lists.items():
        atomic_write_text(os.path.join(annotations, f"{split}.txt"), "".join(f"{p} {c}\n" for p, c in rows))
    return {split: len(rows) for split, rows in lists.items()}
