"""Sliding windows over a long video, read chunk by chunk as validation clips.

A window is ``[start, end)`` (0-based frames, end excluded); windows start at
``0, stride, 2 stride, ...`` as long as a whole window fits, so frames after the
last full window are not covered; a video shorter than one window gives one
window over all its frames. A clip inside a window is read as the validation
clip (``CentreClip``: DATA.NUM_FRAMES frames every DATA.SAMPLING_RATE, short
side DATA.VAL_SHORT_SIDE, centre crop DATA.VAL_CROP_SIZE; frames loop when the
video is shorter than the clip).

Callers read the clips of a few windows at a time (``chunked_window_clips``):
only the distinct frames of those clips are decoded and held, so memory does not
grow with the video's length (``tools/extract_features.py --window-stride``,
``tools/predict.py --timeline``).
"""

from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from cgnl_video.data.decode import FrameReader
from cgnl_video.data.policies import CentreClip
from cgnl_video.data.sampling import frame_union
from cgnl_video.data.transforms import val_pixels

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


def window_clips(reader: FrameReader, policy: CentreClip, starts: Sequence[int],
                 next_start: Optional[int] = None) -> torch.Tensor:
    """The validation clips (uint8, ``len(starts) x 3 x T x S x S``) starting at
    ``starts``: the distinct frames decoded once, resized to the short side, centre-cropped.
    ``next_start``: where the next read starts (``FrameReader.keep_from``)."""
    total = reader.num_frames
    union, positions = frame_union([policy.clip_frames(start, total) for start in starts])
    reader.keep_from(next_start)
    frames = val_pixels(reader.read(union), policy.short_side, policy.crop_size)
    index = torch.tensor(positions, dtype=torch.long)  # clips x T
    return frames[index].permute(0, 2, 1, 3, 4)  # clips x C x T x S x S


def chunked_window_clips(reader: FrameReader, policy: CentreClip, starts: Sequence[int],
                         chunk: int) -> Iterator[torch.Tensor]:
    """``window_clips`` of ``chunk`` clip starts at a time, in order; each read tells the
    reader where the next one starts, so a sequential decoder keeps only the overlap."""
    for first in range(0, len(starts), chunk):
        following = starts[first + chunk] if first + chunk < len(starts) else None
        yield window_clips(reader, policy, starts[first:first + chunk], following)
