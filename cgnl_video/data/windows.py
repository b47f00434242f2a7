"""Sliding windows over a long video, read chunk by chunk as validation clips.

A window is ``[start, end)`` (0-based frames, end excluded); windows start at
``0, stride, 2 stride, ...`` as long as a whole window fits, so frames after the
last full window are not covered; a video shorter than one window gives one
window over all its frames. A clip inside a window is read as the validation
clip (``CentreClip``: DATA.NUM_FRAMES frames every DATA.SAMPLING_RATE, short
side DATA.VAL_SHORT_SIDE, centre crop DATA.VAL_CROP_SIZE; frames loop when the
video is shorter than the clip).

Callers read the clips of a few windows at a time with ``window_clips``: only
the distinct frames of those clips are decoded and held, so memory does not
grow with the video's length (``tools/extract_features.py --window-stride``,
``tools/predict.py --timeline``).
"""

from typing import List, Sequence, Tuple

import torch
import torchvision.transforms.v2.functional as F

from cgnl_video.data.decode import FrameReader
from cgnl_video.data.policies import CentreClip
from cgnl_video.data.sampling import center_crop_box, frame_union
from cgnl_video.data.transforms import resize_short_side

FrameRange = Tuple[int, int]


def window_starts(video_frames: int, window: int, stride: int) -> List[int]:
    """Starts ``0, stride, 2 stride, ...`` of the windows that fit in the video;
    ``[0]`` for a video shorter than one window."""
    if stride <= 0:
        raise ValueError(f"the window stride must be a positive number of frames, got {stride}")
    if video_frames <= window:
        return [0]
    return list(range(0, video_frames - window + 1, stride))


def window_range(start: int, window: int, video_frames: int) -> FrameRange:
    """The frames ``[start, end)`` a window covers."""
    return start, min(start + window, video_frames)


def window_clips(reader: FrameReader, policy: CentreClip, starts: Sequence[int]) -> torch.Tensor:
    """The validation clips (uint8, ``len(starts) x 3 x T x S x S``) starting at
    ``starts``: the distinct frames decoded once, resized to the short side, centre-cropped."""
    total = reader.num_frames
    union, positions = frame_union([policy.clip_frames(start, total) for start in starts])
    frames = resize_short_side(reader.read(union), policy.short_side)
    frames = F.crop(frames, *center_crop_box(frames.shape[-2], frames.shape[-1], policy.crop_size))
    index = torch.tensor(positions, dtype=torch.long)  # clips x T
    return frames[index].permute(0, 2, 1, 3, 4)  # clips x C x T x S x S
