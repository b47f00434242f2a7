"""An optional input path that decodes and augments clips on the GPU, in batches.

The default pipeline (``VideoDataset``) decodes the JPEG frames and crops,
resizes and normalises every clip in the DataLoader's worker processes. With
a fast-path model on a GPU those CPU workers can become the bottleneck (about
32 JPEG decodes and one 32-frame resize per training clip). This module moves
that work to the device:

1. A worker only reads the frame files (``read_encoded_clip``: bytes, no
   decoding) and draws the clip's randomness with the function the worker path
   uses, ``policies.RandomClip.draw`` (``train_clip_plan``: frame indices, crop box,
   flip; the box needs only the frame size, read from the first JPEG's header).
2. The training process decodes all frames of the batch at once
   (``decode_frames``: ``torchvision.io.decode_jpeg`` with ``device="cuda"``,
   nvJPEG) and runs ``train_batch``: per clip, crop, bilinear antialiased resize,
   flip, then one batched normalisation into the network layout (B, 3, T, S, S).
   ``test_views`` does the multi-view test's resize / crops / normalisation.

Everything also runs on CPU tensors (``device="cpu"``), which is how the tests
check it against the CPU pipeline. Resizing runs on floats here (no rounding to
uint8 after the resize, unlike the CPU path), so values differ from the CPU
path by at most about one grey level before normalisation.

Not wired into the loader: a dataset mode returning ``(encoded frames, box, flip,
label)`` plus a collate that keeps lists, and a call to ``decode_frames`` +
``train_batch`` in ``engine.train_loop`` before the forward, would do it
(``benchmarks/bench_end_to_end.py --input gpu`` runs exactly that loop).
"""

import os
import warnings
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from cgnl_video.data import sampling
from cgnl_video.data.manifest import frame_file_name
from cgnl_video.data.transforms import normalize_uint8

Box = Tuple[int, int, int, int]


def jpeg_size(path: str) -> Tuple[int, int]:
    """(height, width) of a JPEG from its header (no decoding)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    return height, width


def read_encoded_clip(folder: str, indices: Sequence[int]) -> List[bytes]:
    """The JPEG bytes of frames ``indices`` of a frame folder. Plain ``bytes``: a worker
    passes them to the training process by pickling, without one shared-memory file
    descriptor per frame (which torch tensors would need)."""
    encoded = []
    for index in indices:
        with open(os.path.join(folder, frame_file_name(index)), "rb") as handle:
            encoded.append(handle.read())
    return encoded


def train_clip_plan(dataset, index: int) -> Tuple[List[int], Box, bool]:
    """Frame indices, crop box and flip of training sample ``index`` of a frame-folder
    ``VideoDataset`` (``RandomClip`` policy) in its current epoch: drawn by
    ``RandomClip.draw`` from the item's generator, as in the worker path, so both
    paths see the same clips. The frame size comes from the first frame's JPEG header."""
    folder = dataset.path_of(index)

    def frame_size(frames: List[int]) -> Tuple[int, int]:
        return jpeg_size(os.path.join(folder, frame_file_name(frames[0])))

    choice = dataset.policy.draw(dataset.generator(index), dataset.entries[index].num_frames, frame_size)
    return choice.frames, choice.box, choice.flip


def decode_frames(encoded: Sequence[Union[bytes, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Decode JPEGs (bytes or 1-D uint8 tensors) of one size into a uint8 (N, 3, H, W)
    tensor on ``device``; on CUDA all in one batched nvJPEG call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(e), dtype=torch.uint8) if isinstance(e, (bytes, bytearray)) else e
               for e in encoded]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.")
        if torch.device(device).type == "cuda":
            frames = decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device)
        else:
            frames = [decode_jpeg(e, mode=ImageReadMode.RGB) for e in encoded]
    return torch.stack(frames)


def resized_crop(frames: torch.Tensor, box: Box, size: Tuple[int, int], flip: bool = False) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> float (T, 3, h, w) 0-255: crop ``box``, antialiased bilinear resize, flip."""
    top, left, height, width = box
    crop = frames[:, :, top:top + height, left:left + width].float()
    if (height, width) != tuple(size):
        crop = F.interpolate(crop, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return crop.flip(-1) if flip else crop


def train_batch(clips: Sequence[torch.Tensor], boxes: Sequence[Box], flips: Sequence[bool], crop_size: int,
                mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Training clips (each uint8 (T, 3, H, W), any frame size) -> float (B, 3, T, S, S)."""
    out = torch.stack([resized_crop(c, box, (crop_size, crop_size), flip)
                       for c, box, flip in zip(clips, boxes, flips)])  # (B, T, 3, S, S)
    return normalize_uint8(out.transpose(1, 2), mean, std)


def test_views(frames: torch.Tensor, positions: Sequence[Sequence[int]], short_side: int, num_crops: int,
               mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The multi-view test views of one video: uint8 (U, 3, H, W) distinct frames ->
    float (V, 3, T, s, s), V = clips x crops, view k = clip k // num_crops in crop
    k % num_crops (as ``policies.MultiView`` orders them)."""
    height, width = sampling.short_side_size(frames.shape[-2], frames.shape[-1], short_side)
    resized = resized_crop(frames, (0, 0, frames.shape[-2], frames.shape[-1]), (height, width))
    boxes = sampling.spatial_crop_boxes(height, width, num_crops)
    index = torch.as_tensor(positions, device=frames.device)  # (clips, T)
    views = []
    for clip in index:
        selected = resized.index_select(0, clip)  # (T, 3, h, w)
        for top, left, box_h, box_w in boxes:
            views.append(selected[:, :, top:top + box_h, left:left + box_w])
    return normalize_uint8(torch.stack(views).transpose(1, 2), mean, std)
