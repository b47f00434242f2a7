"""Spatial operations on clips, with the functional API of torchvision.transforms.v2.

Inputs are decoded frames: uint8 RGB tensors ``T x 3 x H x W`` (channels-last
strides from the readers). All geometry runs on uint8 — torchvision's uint8
antialiased resize is several times faster than on floats. Train / val clips are
converted to float once, at the end, together with the change to the network layout
``C x T x H x W`` and the normalisation ``(x / 255 - mean) / std``; multi-view test
views stay uint8 (``gather_views``) and are normalised by the engine on the device,
with the same ``normalize_uint8``.
"""

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torchvision.transforms.v2.functional as F

from cgnl_video.data.sampling import Box, center_crop_box, short_side_size


def normalize_uint8(
    pixels: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 ``... x C x T x H x W`` -> float32 of the same shape, ``(x / 255 - mean) / std``.

    The one implementation of the normalisation, on any device (the dataset runs it
    on train / val clips in the worker, the engine on test views after moving them
    to the accelerator: ``engine.inputs.to_device``). Computed as
    ``(x - 255 mean) / (255 std)`` on the 0-255 floats: one conversion pass (which
    also lays the result out in ``memory_format``) and the two passes of normalize.
    """
    clip = pixels.to(torch.float32, memory_format=memory_format)
    scaled_mean, scaled_std = [255.0 * m for m in mean], [255.0 * s for s in std]
    F.normalize(clip.transpose(-4, -3), scaled_mean, scaled_std, inplace=True)
    return clip


def normalize_clip(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``T x 3 x H x W`` -> float32 ``3 x T x H x W`` equal to ``(x / 255 - mean) / std``
    (``normalize_uint8`` of the frames reordered to C x T x H x W)."""
    return normalize_uint8(frames.permute(1, 0, 2, 3), mean, std)


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize (antialiased bilinear) so the shorter side is ``short_side``."""
    height, width = frames.shape[-2:]
    size = short_side_size(height, width, short_side)
    if size == (height, width):
        return frames
    return F.resize(frames, list(size), antialias=True)


def train_pixels(frames: torch.Tensor, box: Box, crop_size: int, flip: bool) -> torch.Tensor:
    """uint8 ``T x 3 x H x W`` -> uint8 ``T x 3 x S x S``: crop ``box`` resized to ``crop_size``
    squared (antialiased bilinear), optional horizontal flip."""
    top, left, height, width = box
    frames = F.resized_crop(frames, top, left, height, width, [crop_size, crop_size], antialias=True)
    return F.horizontal_flip(frames) if flip else frames


def val_pixels(frames: torch.Tensor, short_side: int, crop_size: int) -> torch.Tensor:
    """uint8 ``T x 3 x H x W`` -> uint8: short side to ``short_side``, centre crop of ``crop_size``."""
    frames = resize_short_side(frames, short_side)
    return F.crop(frames, *center_crop_box(frames.shape[-2], frames.shape[-1], crop_size))


def train_clip(
    frames: torch.Tensor,
    box: Box,
    crop_size: int,
    flip: bool,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Crop ``box`` resized to ``crop_size`` squared, optional horizontal flip, normalise."""
    return normalize_clip(train_pixels(frames, box, crop_size, flip), mean, std)


def val_clip(
    frames: torch.Tensor,
    short_side: int,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Short side to ``short_side``, centre crop of ``crop_size``, normalise."""
    return normalize_clip(val_pixels(frames, short_side, crop_size), mean, std)


def gather_views(
    clip: torch.Tensor,
    clip_positions: Sequence[Sequence[int]],
    boxes: Optional[List[Box]],
    allocate: Callable[[Tuple[int, ...], torch.dtype], torch.Tensor] = torch.empty,
) -> torch.Tensor:
    """Views ``V x C x T x h x w`` cut from one ``C x U x H x W`` tensor, in its dtype
    (uint8 pixels for the test split).

    ``clip`` holds the distinct frames of all temporal clips (see
    ``sampling.frame_union``); view ``k`` is temporal clip ``k // len(boxes)`` (frames
    ``clip_positions[...]``) cropped to box ``k % len(boxes)``. ``boxes=None`` keeps
    the whole frame (one view per temporal clip). Boxes must share one size.
    ``allocate(shape, dtype=...)`` makes the output tensor.
    """
    channels, _, height, width = clip.shape
    boxes = boxes or [(0, 0, height, width)]
    box_h, box_w = boxes[0][2], boxes[0][3]
    frames_per_clip = len(clip_positions[0]) if clip_positions else 0
    views = allocate((len(clip_positions) * len(boxes), channels, frames_per_clip, box_h, box_w), dtype=clip.dtype)
    view = 0
    for positions in clip_positions:
        for top, left, _, _ in boxes:
            region = clip[:, :, top:top + box_h, left:left + box_w]
            for step, position in enumerate(positions):  # plain strided copies: the fastest here
                views[view, :, step].copy_(region[:, position])
            view += 1
    return views
