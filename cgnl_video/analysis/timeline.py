"""Sliding-window predictions over long videos (``tools/predict.py --timeline``).

Windows are those of ``cgnl_video.data.windows`` (``[start, end)`` frames every
``stride`` frames from frame 0 while a whole window fits), given in frames (``64f``,
``64``) or seconds (``2.5s``, at the input's frame rate: a video file's container,
a frame folder's ``extraction_index.tsv``, or ``fps`` given by the caller). A
window's score is the mean softmax of ``ceil(window / clip)`` validation clips
(centre crop) spread evenly over it; a window shorter than one clip is refused.
Memory does not grow with the video: windows are decoded and forwarded a chunk at
a time (the whole windows that fit in TEST.VIEWS_PER_FORWARD clips, at least one),
only the chunk's distinct frames are decoded (``window_clips``), and each window
keeps only its class probabilities. Details: docs/TOOLS.md, "Long videos".
"""

import functools
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.data import DecodeError, ManifestEntry, open_reader
from cgnl_video.data.decode import FrameReader
from cgnl_video.data.policies import CentreClip
from cgnl_video.data.sampling import spread_offsets
from cgnl_video.data.windows import FrameRange, chunked_window_clips, window_range, window_starts
from cgnl_video.engine.multiview import forward_views
from cgnl_video.inference import InputError, input_entry
from cgnl_video.utils.logging import progress

_SPAN = re.compile(r"(?P<value>\d+(?:\.\d*)?|\.\d+)(?P<unit>[fs]?)")


@dataclass(frozen=True)
class Span:
    """A length in frames (``unit`` "f") or seconds ("s"): ``64f``, ``64``, ``2.5s``."""

    value: float
    unit: str

    @classmethod
    def parse(cls, text: str) -> "Span":
        """``"64f"`` / ``"64"`` (frames, an integer) or ``"2.5s"`` (seconds); ValueError otherwise."""
        match = _SPAN.fullmatch(text.strip())
        if match is None or float(match["value"]) <= 0:
            raise ValueError(f"{text!r} is not a positive length: write frames as 64f (or 64), seconds as 2.5s")
        unit = match["unit"] or "f"
        if unit == "f" and not float(match["value"]).is_integer():
            raise ValueError(f"{text!r}: a number of frames must be a whole number")
        return cls(float(match["value"]), unit)

    def frames(self, fps: Optional[float]) -> int:
        """The length in frames (seconds times ``fps``, rounded, at least 1);
        ValueError for seconds without a frame rate."""
        if self.unit == "f":
            return int(self.value)
        if not fps:
            raise ValueError(f"{self} is in seconds but the frame rate is unknown: give --fps or frames")
        return max(1, round(self.value * fps))

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"


@dataclass
class Timeline:
    """The windows ``[start, end)`` of one input and their class probabilities (windows x classes)."""

    path: str
    num_frames: int
    fps: Optional[float]
    window: int
    stride: int
    clips_per_window: int
    ranges: List[FrameRange]
    probs: torch.Tensor = field(repr=False)

    def seconds(self, frame: int) -> Optional[float]:
        """The time of ``frame`` in seconds; None without a frame rate."""
        return frame / self.fps if self.fps else None

    def top(self, row: int, classes: Sequence[str], k: int) -> List[Tuple[str, float]]:
        """The ``k`` most probable classes of window ``row``."""
        values, labels = torch.topk(self.probs[row], min(k, self.probs.shape[1]))
        return [(classes[c], float(v)) for v, c in zip(values.tolist(), labels.tolist())]

    def summary(self) -> str:
        """``frames (at fps), windows of W frames every S frames, clips per window``."""
        def length(frames: int) -> str:
            return f"{frames} frames" + (f" ({frames / self.fps:.2f} s)" if self.fps else "")

        rate = f" at {self.fps:g} fps" if self.fps else " (frame rate unknown)"
        clips = "1 clip" if self.clips_per_window == 1 else f"{self.clips_per_window} clips"
        return (f"{length(self.num_frames)}{rate}: {len(self.ranges)} windows of {length(self.window)} "
                f"every {length(self.stride)}, {clips} per window")

    def table(self, classes: Sequence[str], k: int) -> List[str]:
        """The window table: start and end in seconds and frames, the top-``k`` classes."""
        lines = [f"{'start s':>9} {'end s':>9} {'start f':>8} {'end f':>8}  top-{k}"]
        for row, (start, end) in enumerate(self.ranges):
            times = [self.seconds(start), self.seconds(end)]
            cells = [f"{t:9.2f}" if t is not None else f"{'-':>9}" for t in times]
            top = "  ".join(f"{name} {prob:.1%}" for name, prob in self.top(row, classes, k))
            lines.append(f"{cells[0]} {cells[1]} {start:8d} {end:8d}  {top}")
        return lines

    def to_json(self, classes: Sequence[str], k: int) -> dict:
        def rounded(frame: int) -> Optional[float]:
            time = self.seconds(frame)
            return None if time is None else round(time, 6)

        windows = [{"start_frame": start, "end_frame": end, "start_s": rounded(start), "end_s": rounded(end),
                    "top": [{"label": name, "prob": round(prob, 6)} for name, prob in self.top(row, classes, k)]}
                   for row, (start, end) in enumerate(self.ranges)]
        return {"path": self.path, "num_frames": self.num_frames, "fps": self.fps, "window_frames": self.window,
                "stride_frames": self.stride, "clips_per_window": self.clips_per_window, "windows": windows}


# ----------------------------------------------------------------------------- frame rates
@functools.lru_cache(maxsize=16)
def _indexed_rates(frames_root: str) -> Dict[str, float]:
    from cgnl_video.prep.index import read_index

    return {path: entry.fps for path, entry in read_index(frames_root).items()}


def frame_folder_rate(folder: str) -> Optional[float]:
    """The rate of a frame folder from the extraction index of the nearest enclosing
    folder that has one (``data_prep/extract_frames.py``); None when no index lists it."""
    from cgnl_video.prep.index import has_index

    folder = os.path.abspath(folder)
    root = os.path.dirname(folder)
    while True:
        if has_index(root):
            rate = _indexed_rates(root).get(os.path.relpath(folder, root).replace(os.sep, "/"))
            return rate or None
        parent = os.path.dirname(root)
        if parent == root:
            return None
        root = parent


def frame_rate(entry: ManifestEntry) -> Optional[float]:
    """The frame rate of a video file (its container's) or of a frame folder (its
    extraction index); None when unknown."""
    if entry.num_frames is not None:
        return frame_folder_rate(entry.path)
    from cgnl_video.prep.video_io import VideoError, probe

    try:
        return probe(entry.path).fps or None
    except VideoError:
        return None


# ----------------------------------------------------------------------------- scoring
def clip_offsets(window: int, clip: int) -> List[int]:
    """Where the ``ceil(window / clip)`` clips of a window start, relative to it:
    evenly from 0 to ``window - clip`` (0 for a window no longer than a clip)."""
    return spread_offsets(max(window - clip, 0), max(1, math.ceil(window / clip)))


@torch.no_grad()
def window_probabilities(model: nn.Module, reader: FrameReader, cfg: CfgNode, window: int, stride: int,
                         device: torch.device) -> Tuple[List[FrameRange], torch.Tensor, int]:
    """The windows of the video ``reader`` reads, their mean clip probabilities
    (windows x classes) and the number of clips per window, streamed chunk by chunk."""
    policy = CentreClip.from_config(cfg)
    total = reader.num_frames
    ranges = [window_range(start, window, total) for start in window_starts(total, window, stride)]
    offsets = clip_offsets(ranges[0][1] - ranges[0][0], policy.window)  # every window has this length
    starts = [start + offset for start, _end in ranges for offset in offsets]
    chunk = max(1, cfg.TEST.VIEWS_PER_FORWARD // len(offsets)) * len(offsets)
    rows = []
    for clips in progress(chunked_window_clips(reader, policy, starts, chunk), math.ceil(len(starts) / chunk),
                          os.path.basename(reader.path), True):
        rows.append(forward_views(model, clips, cfg.TEST.VIEWS_PER_FORWARD, device, cfg))
        del clips  # before the next chunk is decoded
    probs = torch.cat(rows).double().view(len(ranges), len(offsets), -1).mean(dim=1).float()
    return ranges, probs, len(offsets)


def check_window(window: int, cfg: CfgNode) -> None:
    """ValueError for a window shorter than one clip of the model."""
    clip = cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE
    if window < clip:
        raise ValueError(f"a window of {window} frames is shorter than one clip (DATA.NUM_FRAMES x "
                         f"DATA.SAMPLING_RATE = {clip} frames); lower DATA.SAMPLING_RATE for shorter windows")


def timeline(cfg: CfgNode, model: nn.Module, path: str, device: torch.device, window: Optional[Span] = None,
             stride: Optional[Span] = None, fps: Optional[float] = None) -> Timeline:
    """The sliding-window predictions of one video file or frame folder. ``window``
    defaults to one clip, ``stride`` to half the window, ``fps`` to the input's own
    rate. InputError (naming ``path``) when it cannot be read or the lengths do not fit."""
    entry = input_entry(path)
    try:
        with open_reader(entry.path, entry.num_frames, cfg.DATA.DECODING_BACKEND, cfg.DATA.JPEG_DECODER) as reader:
            rate = fps or frame_rate(entry)
            try:
                window_frames = window.frames(rate) if window else cfg.DATA.NUM_FRAMES * cfg.DATA.SAMPLING_RATE
                check_window(window_frames, cfg)
                stride_frames = stride.frames(rate) if stride else max(1, window_frames // 2)
            except ValueError as error:
                raise InputError(f"{path}: {error}") from error
            ranges, probs, clips = window_probabilities(model, reader, cfg, window_frames, stride_frames, device)
            return Timeline(path, reader.num_frames, rate, window_frames, stride_frames, clips, ranges, probs)
    except DecodeError as error:
        raise InputError(str(error)) from error


def timelines(cfg: CfgNode, model: nn.Module, paths: Sequence[str], device: torch.device,
              window: Optional[Span] = None, stride: Optional[Span] = None,
              fps: Optional[float] = None) -> Tuple[List[Timeline], List[Tuple[str, str]]]:
    """``timeline`` of every path; the readable ones in input order and ``(path, reason)``
    of the others."""
    done, failures = [], []
    for path in paths:
        try:
            done.append(timeline(cfg, model, path, device, window, stride, fps))
        except InputError as error:
            failures.append((path, str(error)))
    return done, failures
