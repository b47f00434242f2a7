"""A loader's clips as the model's input on the device: the one place where
clips are moved, decoded (DATA.DECODE_ON device), normalised (uint8 pixels) and
given the memory format.

Used by the training loop, validation, the multi-view test and the benchmarks.
"""

from typing import List, Tuple, Union

import torch
from fvcore.common.config import CfgNode

from cgnl_video.data.gpu_augment import EncodedBatch, decode_batch
from cgnl_video.data.transforms import normalize_uint8

#: a loader batch: (clips or an EncodedBatch or a list of test views, labels, indices)
Batch = Tuple[Union[torch.Tensor, EncodedBatch, List[torch.Tensor]], torch.Tensor, torch.Tensor]


def to_device(clips: torch.Tensor, device: torch.device, cfg: CfgNode) -> torch.Tensor:
    """``clips`` (N x C x T x H x W) on ``device`` as the model's float32 input
    (channels-last with MODEL.CHANNELS_LAST).

    uint8 clips (the multi-view test views, and every split with DATA.DECODE_ON
    device: raw 0-255 pixels) are moved as uint8 and normalised there, in float32,
    ``(x / 255 - DATA.MEAN) / DATA.STD`` (``transforms.normalize_uint8``); float
    clips (train / val from the workers) are already normalised.
    Call it before entering autocast.
    """
    if not isinstance(clips, torch.Tensor):
        raise TypeError(f"to_device takes a tensor of clips, got {type(clips).__name__}: decode a batch of "
                        "DATA.DECODE_ON device with batch_to_device or decode_on_device first")
    clips = clips.to(device, non_blocking=True)
    memory_format = torch.channels_last_3d if cfg.MODEL.CHANNELS_LAST else torch.contiguous_format
    if clips.dtype == torch.uint8:
        return normalize_uint8(clips, cfg.DATA.MEAN, cfg.DATA.STD, memory_format)
    if cfg.MODEL.CHANNELS_LAST:
        clips = clips.contiguous(memory_format=memory_format)
    return clips


def decode_on_device(batch: Batch, dataset, device: torch.device) -> Batch:
    """A loader batch of ``dataset`` with its JPEG bytes decoded on ``device`` when it
    comes from a DATA.DECODE_ON device loader: (list of uint8 pixels per item, labels,
    indices; a sample the device decoder rejected is redone on the worker path, which
    may replace it: labels and indices are those of the samples returned). Other
    batches are returned as they are."""
    clips, labels, indices = batch
    if isinstance(clips, EncodedBatch):
        return decode_batch(clips, labels, indices, dataset, device)
    return batch


def batch_to_device(batch: Batch, dataset, device: torch.device,
                    cfg: CfgNode) -> Tuple[torch.Tensor, torch.Tensor]:
    """A train / val loader batch of ``dataset`` as the model's input and the labels,
    both on ``device`` (``decode_on_device``, then ``to_device``)."""
    clips, labels, _indices = decode_on_device(batch, dataset, device)
    if isinstance(clips, list):
        clips = torch.stack(clips)
    return to_device(clips, device, cfg), labels.to(device, non_blocking=True)
