"""Video decoding for frame extraction: decord (or torchcodec, when asked) first, PyAV
when that cannot read (or decord is not installed), over the reading layer
``cgnl_video.data.readers`` that training uses too.

Frames come out as RGB ``uint8`` arrays of shape ``(H, W, 3)``, already resized
to the requested short side, in chunks so that a long video never sits in
memory whole. decord and PyAV resize with FFmpeg's swscale (bicubic), like the
``ffmpeg -vf scale`` command line does; torchcodec offers bilinear resizing only
(its decoder-side ``Resize``, FFmpeg's swscale too), so its resized frames differ
slightly from the others' (docs/DATA_PREP.md); at the native size all three agree.

Frame-rate conversion: output frame ``k`` sits at time ``k / fps`` and shows the
source frame on screen at that time (source frame ``i`` covers ``[i / rate, (i + 1) /
rate)``), so frames are dropped to lower the rate and repeated to raise it, and a
video of ``N`` frames gives ``ceil(N * fps / rate)``.
"""

import itertools
import math
import re
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from cgnl_video.data.readers.decord_reader import DecordVideo
from cgnl_video.data.readers.pyav_reader import VideoInfo, frames_until_error, stream_info, to_rgb
from cgnl_video.data.readers.torchcodec_reader import TorchCodecVideo

CHUNK_FRAMES = 32  # frames decoded per batch: bounds memory for long videos


class VideoError(Exception):
    """A video that cannot be extracted; the message is the reason written to the failures file."""


def probe(path: str) -> VideoInfo:
    """Read the header of ``path`` with PyAV (no decoding); VideoError when it is no video."""
    try:
        info = stream_info(path)
    except Exception as error:  # PyAV raises many FFmpeg error types
        # FFmpeg errors carry the file name too; strerror is the reason alone.
        raise VideoError(f"unreadable: {getattr(error, 'strerror', None) or describe_error(error)}") from error
    if info is None:
        raise VideoError("no video stream")
    return info


def output_size(width: int, height: int, short_side: int) -> Tuple[int, int]:
    """``(width, height)`` with the short side scaled to ``short_side`` (0 keeps the size)."""
    if short_side <= 0 or width <= 0 or height <= 0:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def resampled_indices(src_fps: float, dst_fps: Optional[float]) -> Iterator[int]:
    """Source frame index of each output frame, without end (the caller stops at the last frame).

    With ``dst_fps`` unset (or equal to the source rate) every frame is kept in order.
    """
    if not dst_fps or not src_fps or math.isclose(src_fps, dst_fps):
        return itertools.count()
    ratio = src_fps / dst_fps
    return (int(math.floor(k * ratio + 1e-9)) for k in itertools.count())


def _in_chunks(
    read: Callable[[List[int]], np.ndarray], total: int, src_fps: float, dst_fps: Optional[float]
) -> Iterator[np.ndarray]:
    """The output frames of a random-access reader of ``total`` frames, CHUNK_FRAMES at a time:
    ``read(indices)`` returns the source frames ``indices`` as ``(n, H, W, 3)``."""
    wanted: List[int] = list(itertools.takewhile(lambda i: i < total, resampled_indices(src_fps, dst_fps)))
    for start in range(0, len(wanted), CHUNK_FRAMES):
        yield read(wanted[start : start + CHUNK_FRAMES])


def frames_with_decord(
    path: str, size: Tuple[int, int], dst_fps: Optional[float], src_fps: float
) -> Iterator[np.ndarray]:
    """Yield chunks ``(n, H, W, 3)`` decoded by decord (resizing inside the decoder);
    ImportError when decord is not installed."""
    video = DecordVideo(path, size)
    if video.num_frames > 0:
        yield from _in_chunks(video.frames, video.num_frames, src_fps or video.fps, dst_fps)


def frames_with_torchcodec(
    path: str, size: Tuple[int, int], dst_fps: Optional[float], src_fps: float
) -> Iterator[np.ndarray]:
    """Yield chunks ``(n, H, W, 3)`` decoded by torchcodec (one FFmpeg thread, bilinear
    resizing inside the decoder); TorchCodecUnavailable when torchcodec or FFmpeg is missing."""
    video = TorchCodecVideo(path, size)  # the same size: frames unchanged
    yield from _in_chunks(lambda wanted: video.frames(wanted).numpy(), video.num_frames,
                          src_fps or video.fps, dst_fps)


def frames_with_pyav(
    path: str, size: Tuple[int, int], dst_fps: Optional[float], src_fps: float
) -> Iterator[np.ndarray]:
    """Yield chunks decoded by PyAV, reading the stream in order.

    Decoding stops quietly at the first error (a truncated or corrupt file): the
    frames before it are kept and the caller compares the count with the header.
    """
    wanted = resampled_indices(src_fps, dst_fps)
    next_index = next(wanted)
    chunk: List[np.ndarray] = []
    for index, frame in enumerate(frames_until_error(path)):
        if next_index != index:
            continue
        array = to_rgb(frame, size)
        while next_index == index:
            chunk.append(array)
            next_index = next(wanted)
        if len(chunk) >= CHUNK_FRAMES:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def describe_error(error: BaseException) -> str:
    """One-line description of an exception for the failures file."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", text)  # decord's log prefix
    return text[:300]
