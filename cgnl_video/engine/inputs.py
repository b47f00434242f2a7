"""A loader's clips as the model's input on the device: the one place where
clips are moved, normalised (uint8 test views) and given the memory format.

Used by the training loop, validation, the multi-view test and the benchmarks.
"""

import torch
from fvcore.common.config import CfgNode

from cgnl_video.data.transforms import normalize_uint8


def to_device(clips: torch.Tensor, device: torch.device, cfg: CfgNode) -> torch.Tensor:
    """``clips`` (N x C x T x H x W) on ``device`` as the model's float32 input
    (channels-last with MODEL.CHANNELS_LAST).

    uint8 clips (the multi-view test views: raw 0-255 pixels) are moved as uint8 and
    normalised there, in float32, ``(x / 255 - DATA.MEAN) / DATA.STD``
    (``transforms.normalize_uint8``); float clips (train / val) are already normalised.
    Call it before entering autocast.
    """
    clips = clips.to(device, non_blocking=True)
    memory_format = torch.channels_last_3d if cfg.MODEL.CHANNELS_LAST else torch.contiguous_format
    if clips.dtype == torch.uint8:
        return normalize_uint8(clips, cfg.DATA.MEAN, cfg.DATA.STD, memory_format)
    if cfg.MODEL.CHANNELS_LAST:
        clips = clips.contiguous(memory_format=memory_format)
    return clips
