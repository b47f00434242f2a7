"""decord, the default video decoder where it is installed: the one module that calls it.

``DecordVideo`` opens a video with one decoding thread, resized by the decoder when
asked (FFmpeg's swscale, bicubic). Its errors are decord's own (``DECORDError`` and
plain RuntimeErrors); the callers say what they mean.
"""

from typing import Optional, Sequence, Tuple

import numpy as np

from cgnl_video.utils.decord_support import load_decord


class DecordVideo:
    """One decord ``VideoReader`` (one thread); ImportError when decord is not installed.

    Args:
        path: the video file.
        size: ``(width, height)`` to resize the frames to in the decoder; None: native.
    """

    def __init__(self, path: str, size: Optional[Tuple[int, int]] = None) -> None:
        decord = load_decord()
        if decord is None:
            raise ImportError("decord is not installed")
        resize = {} if size is None else {"width": size[0], "height": size[1]}
        self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, **resize)

    @property
    def num_frames(self) -> int:
        """The frame count decord finds."""
        return len(self._reader)

    @property
    def fps(self) -> float:
        """The average frame rate of the stream."""
        return float(self._reader.get_avg_fps())

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (in that order, repeats allowed) as ``(n, H, W, 3)`` uint8 RGB."""
        return self._reader.get_batch(list(indices)).asnumpy()

    def close(self) -> None:
        """Release the reader."""
        self._reader = None


def quiet_decord() -> None:
    """Keep decord's own log messages off the terminal (where it is installed)."""
    decord = load_decord()
    if decord is not None:
        decord.logging.set_level(decord.logging.QUIET)
