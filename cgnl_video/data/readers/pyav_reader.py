"""PyAV, the decoder every installation has and the fallback of the others: the one module
that calls it to read videos (``prep.synthetic`` writes its test videos with it).

``stream_info`` reads a container header; ``SequentialDecoder`` is the training reader
that keeps its place between reads (sliding windows); ``frames_until_error`` and
``to_rgb`` serve frame extraction, which resizes with FFmpeg's swscale (bicubic).
Frames are counted in decoding order (no timestamp arithmetic, so variable frame
rates read exactly), one decoding thread.
"""

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from cgnl_video.data.readers import DecodeError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream (``num_frames`` 0 = unknown)."""

    width: int
    height: int
    fps: float
    num_frames: int


def stream_info(path: str) -> Optional[VideoInfo]:
    """The header of the first video stream of ``path`` (no decoding); None when there
    is no video stream. PyAV's errors (FFmpeg errors, OSError) pass through."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return VideoInfo(
            width=int(stream.codec_context.width or 0),
            height=int(stream.codec_context.height or 0),
            fps=float(rate) if rate else 0.0,
            num_frames=int(stream.frames or 0),
        )


def frames_until_error(path: str) -> Iterator[Any]:
    """The decoded frames (``av.VideoFrame``) of the first video stream, in order; stops
    quietly at the first decoding error (a truncated or corrupt file)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except Exception:  # noqa: BLE001 - truncated data ends the video here
                return
            yield frame


def to_rgb(frame: Any, size: Tuple[int, int]) -> np.ndarray:
    """A frame of ``frames_until_error`` as ``(H, W, 3)`` uint8 RGB of ``size`` (width, height)."""
    return frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC")


class SequentialDecoder:
    """Sequential decoding up to the last frame needed, at the native size.

    The decoder stays open between reads and goes on from where it stopped, so a
    long video read in order (sliding windows: predict --timeline, extract_features
    --window-stride) is decoded once, not from frame 0 for every window. A read
    told by ``keep_from`` where the following read starts keeps the decoded frames
    from there on (not yet converted to RGB), so the two may overlap; a read that
    needs a frame before the decoder's position and not kept starts again from
    frame 0. ``num_frames`` is the stream's ``frames`` field, or when the container
    does not store it (e.g. Matroska) the number of demuxed video packets.
    """

    def __init__(self, path: str) -> None:
        import av

        self.path = path
        self.frames_decoded = 0
        self._av = av
        self._container: Optional[Any] = None
        self._frames: Optional[Iterator[Any]] = None
        self._next = 0  # position of the frame that self._frames yields next
        self._kept: Dict[int, Any] = {}  # position -> av.VideoFrame, for the next read
        self._keep_from: Optional[int] = None
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        except (av.error.FFmpegError, OSError, IndexError, ValueError) as error:
            raise DecodeError(f"cannot open video {path} with PyAV: {error}") from error
        if count <= 0:
            raise DecodeError(f"video {path} has no frames")
        self.num_frames = count

    def keep_from(self, position: Optional[int]) -> None:
        """Say that the read after the next one starts at frame ``position`` (None: none follows)."""
        self._keep_from = position

    def _restart(self) -> None:
        self.close()
        self._container = self._av.open(self.path)
        stream = self._container.streams.video[0]
        stream.thread_count = 1  # one decoding thread per worker process, as with decord
        self._frames = iter(self._container.decode(stream))

    def read_sorted(self, unique: List[int]) -> np.ndarray:
        """Frames ``unique`` (distinct, increasing, within ``num_frames``) as ``(n, H, W, 3)``
        uint8 RGB; DecodeError naming the path when they cannot all be decoded."""
        wanted, last = set(unique), unique[-1]
        keep_from, self._keep_from = self._keep_from, None  # a hint for this read only
        try:
            if self._frames is None or any(i < self._next and i not in self._kept for i in unique):
                self._restart()
            images = {i: self._kept[i].to_ndarray(format="rgb24") for i in unique if i in self._kept}
            kept = {p: f for p, f in self._kept.items() if keep_from is not None and p >= keep_from}
            while self._next <= last:
                frame = next(self._frames, None)  # type: ignore[arg-type]
                if frame is None:
                    break
                position, self._next = self._next, self._next + 1
                self.frames_decoded += 1
                if keep_from is not None and position >= keep_from:
                    kept[position] = frame
                if position in wanted:
                    images[position] = frame.to_ndarray(format="rgb24")
        except (self._av.error.FFmpegError, OSError, ValueError) as error:
            self.close()
            raise DecodeError(f"cannot decode video {self.path} with PyAV: {error}") from error
        missing = [i for i in unique if i not in images]
        if missing:
            self.close()
            raise DecodeError(f"video {self.path} ends before frame {missing[0]} (expected {self.num_frames} frames)")
        self._kept = kept
        return np.stack([images[i] for i in unique])

    def close(self) -> None:
        """Close the container; the next read starts from frame 0."""
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._next, self._kept = None, None, 0, {}
