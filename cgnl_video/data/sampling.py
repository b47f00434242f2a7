"""Pure index math of the data pipeline: which frames, which crop box.

Nothing here touches files, so every rule can be tested exhaustively. Frame
indices are 0-based positions in the video (frame file ``000001.jpg`` is index
0). A crop box is ``(top, left, height, width)`` in pixels.

Randomness comes only from the ``torch.Generator`` passed in; ``item_seed``
derives that generator's seed from (seed, epoch, index), so a sample's clip
does not depend on which worker process or rank loads it.
"""

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch

Box = Tuple[int, int, int, int]  # top, left, height, width


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit seed for one sample of one epoch."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)
    return int(state[0]) ^ (int(state[1]) >> 1)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded with ``item_seed(seed, epoch, index)``."""
    return torch.Generator().manual_seed(item_seed(seed, epoch, index))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (both inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


# ----------------------------------------------------------------------------- temporal


def clip_indices(start: int, num_frames: int, sampling_rate: int, video_frames: int) -> List[int]:
    """Frames ``start + k * sampling_rate`` for ``k < num_frames``, modulo ``video_frames``.

    The clip spans a window of ``num_frames * sampling_rate`` consecutive frames and
    keeps every ``sampling_rate``-th one; a video shorter than the window wraps around.
    """
    if video_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got {video_frames}")
    return [(start + k * sampling_rate) % video_frames for k in range(num_frames)]


def train_clip_start(video_frames: int, window: int, generator: torch.Generator) -> int:
    """A uniformly random window start.

    A video with at least ``window`` frames: start in ``[0, video_frames - window]`` so
    the window lies inside the video. A shorter video is treated as a loop: start in
    ``[0, video_frames - 1]`` and the window wraps around (see ``clip_indices``).
    """
    last = video_frames - window if video_frames >= window else video_frames - 1
    return _randint(0, last, generator)


def test_clip_starts(video_frames: int, window: int, num_clips: int) -> List[int]:
    """``num_clips`` window starts spread uniformly from the first to the last window.

    Starts are ``round(k * (video_frames - window) / (num_clips - 1))``; one clip is the
    centre window. A video shorter than the window gives start 0 for every clip.
    """
    return spread_offsets(max(video_frames - window, 0), num_clips)


def spread_offsets(slack: int, count: int) -> List[int]:
    """``count`` offsets in ``[0, slack]`` evenly spaced from 0 to ``slack`` (rounded
    half up); a single offset is the middle ``slack // 2``."""
    if count == 1:
        return [slack // 2]
    span = count - 1
    return [(2 * k * slack + span) // (2 * span) for k in range(count)]


def frame_union(clips: Sequence[Sequence[int]]) -> Tuple[List[int], List[List[int]]]:
    """The sorted distinct frames of several clips, and each clip as positions in that list.

    Decoding the union once gives every clip: ``clip[k] == union[positions[k]]``.
    """
    union = sorted({index for clip in clips for index in clip})
    where = {index: position for position, index in enumerate(union)}
    return union, [[where[index] for index in clip] for clip in clips]


# ----------------------------------------------------------------------------- spatial


def short_side_size(height: int, width: int, short_side: int) -> Tuple[int, int]:
    """(height, width) after resizing so the shorter side is ``short_side`` (aspect kept)."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def random_crop_box(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
) -> Box:
    """A random box of ``scale`` x the frame area and aspect ratio (w / h) in ``ratio``.

    The area fraction is uniform in ``scale``, the ratio log-uniform in ``ratio``, and
    ``w = sqrt(area * ratio)``, ``h = sqrt(area / ratio)``. Scale may exceed 1 (the
    paper uses 0.08-1.25): a side that comes out longer than the frame is clipped to
    the frame, so the box covers the frame completely along that side and its area is
    smaller than drawn (at most the whole frame). The box position is uniform over the
    places where it fits. Unlike torchvision's RandomResizedCrop there is no retry
    loop and no fallback to a centre crop: one box per call.
    """
    area = height * width * _uniform(scale[0], scale[1], generator)
    aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
    box_w = min(max(1, round(math.sqrt(area * aspect))), width)
    box_h = min(max(1, round(math.sqrt(area / aspect))), height)
    top = _randint(0, height - box_h, generator)
    left = _randint(0, width - box_w, generator)
    return top, left, box_h, box_w


def center_crop_box(height: int, width: int, size: int) -> Box:
    """The centred ``size`` x ``size`` box (clipped to the frame)."""
    box_h, box_w = min(size, height), min(size, width)
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def spatial_crop_boxes(height: int, width: int, num_crops: int) -> List[Box]:
    """``num_crops`` squares with the short side, spread over the longer side.

    Three crops are left / centre / right for a landscape frame and top / centre /
    bottom for a portrait one, the first and last touching the frame borders; one
    crop is the centre square.
    """
    side = min(height, width)
    offsets = spread_offsets(max(height, width) - side, num_crops)
    if width >= height:
        return [(0, offset, side, side) for offset in offsets]
    return [(offset, 0, side, side) for offset in offsets]
