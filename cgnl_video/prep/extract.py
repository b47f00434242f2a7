"""Dense frame extraction: every frame of every video as a JPEG, resumable and crash-safe.

``VIDEOS/a/b.mp4`` becomes ``FRAMES/a/b/000001.jpg, 000002.jpg, ...`` (1-based, six
digits), written into ``FRAMES/a/.b.part`` and renamed to ``FRAMES/a/b`` once every
frame is on disk, so a folder under its final name is complete. Each finished video is
recorded in the extraction index (``cgnl_video.prep.index``); a rerun skips recorded
videos whose folder exists and redoes the others. Videos are decoded with decord (or
torchcodec, ``decoder="torchcodec"``), or with PyAV where that cannot read them or
decord is missing (said once); ``decoder="pyav"`` uses PyAV only.

Problems never stop the run: they are listed in ``FRAMES/failures.txt`` with the
reason. A truncated video keeps the frames that decode, is indexed with the true
count and listed as ``kept``; one with no decodable frame is ``failed``.
docs/DATA_PREP.md, "1. Frame extraction".
"""

import io
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image

from cgnl_video.data.manifest import frame_file_name
from cgnl_video.data.readers import first_decoder
from cgnl_video.data.readers.decord_reader import quiet_decord
from cgnl_video.prep import index as idx
from cgnl_video.prep.video_io import (
    VideoError,
    describe_error,
    frames_with_decord,
    frames_with_pyav,
    frames_with_torchcodec,
    output_size,
    probe,
    resampled_indices,
)
from cgnl_video.prep.workers import WorkerCrash, parallel_map
from cgnl_video.utils.io import read_lines
from cgnl_video.utils.torchcodec_support import load_torchcodec

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
INDEX_REWRITE_SECONDS = 60.0  # how often a long run folds its journal into the index


@dataclass(frozen=True)
class ExtractOptions:
    """How frames are written: short side in pixels (0 = native size), output frame rate
    (``None`` = native), JPEG quality (1-95)."""

    short_side: int = 256
    fps: Optional[float] = None
    quality: int = 90


@dataclass(frozen=True)
class Task:
    """One video to extract: ``rel`` is its path relative to ``src_root``; ``decoder``
    one of DECODING_BACKENDS (None = decord if it imports, else PyAV)."""

    src_root: str
    dst_root: str
    rel: str
    options: ExtractOptions
    decoder: Optional[str] = None


@dataclass(frozen=True)
class Outcome:
    """What happened to one video: its index entry if frames were written, and a
    ``(status, reason)`` problem for the failures file if something went wrong."""

    rel: str
    entry: Optional[idx.IndexEntry] = None
    problem: Optional[Tuple[str, str]] = None


@dataclass
class Summary:
    """Counts of one run of ``extract_all``."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    kept_with_problem: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: Dict[str, Tuple[str, str]] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"done {self.done}, skipped {self.skipped} (already extracted), failed {self.failed}"
            f" ({self.kept_with_problem} more kept with a problem); {self.frames} frames"
            f" in {self.seconds:.1f} s ({rate:.0f} frames/s)"
        )


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def frame_folder(rel: str) -> str:
    """The frame folder of a video: its relative path without the extension."""
    return os.path.splitext(rel)[0]


def temp_folder(folder: str) -> str:
    """The hidden name a frame folder has while it is being written."""
    head, tail = os.path.split(folder)
    return os.path.join(head, f".{tail}.part")


def find_videos(src_root: str, skip: Iterable[str] = ()) -> List[str]:
    """Relative paths of the videos below ``src_root``, sorted; hidden names and the
    folders in ``skip`` (such as the frames folder) are not entered."""
    skip_real = {os.path.realpath(path) for path in skip}
    found: List[str] = []
    for folder, dirs, files in os.walk(src_root):
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) not in skip_real
        )
        for name in files:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, name), src_root))
    return sorted(found)


def read_video_list(list_file: str) -> List[str]:
    """Relative video paths from a list file, one per line (blank lines and CRLF ignored)."""
    return [os.path.normpath(path) for _where, path in read_lines(list_file)]


def extract_video(task: Task) -> Outcome:
    """Extract one video into its frame folder; never raises for a bad video."""
    rel, options = task.rel, task.options
    src = os.path.join(task.src_root, rel)
    final = os.path.join(task.dst_root, frame_folder(rel))
    temp = temp_folder(final)
    try:
        _check_file(rel, src)
        info = probe(src)
        if info.width <= 0 or info.height <= 0:
            raise VideoError("video stream has no frame size")
        size = output_size(info.width, info.height, options.short_side)
        shutil.rmtree(temp, ignore_errors=True)
        count, note = 0, ""
        decoder = task.decoder or default_decoder()
        if decoder != "pyav":
            frames = frames_with_torchcodec if decoder == "torchcodec" else frames_with_decord
            try:
                count = _write_frames(frames(src, size, options.fps, info.fps), temp, options.quality)
            except Exception as error:  # noqa: BLE001 - it cannot read this video: try PyAV
                note = f" ({decoder}: {describe_error(error)}; decoded with PyAV)"
            note = note or ("" if count else f" ({decoder}: no frame; decoded with PyAV)")
        if count == 0:
            shutil.rmtree(temp, ignore_errors=True)
            count = _write_frames(frames_with_pyav(src, size, options.fps, info.fps), temp, options.quality)
        if count == 0:
            raise VideoError("empty: no decodable frame" + note)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(temp, final)
    except Exception as error:  # noqa: BLE001 - one bad video never stops the run
        shutil.rmtree(temp, ignore_errors=True)
        reason = str(error) if isinstance(error, VideoError) else f"error: {describe_error(error)}"
        return Outcome(rel, problem=("failed", reason))
    fps = options.fps or info.fps
    entry = idx.IndexEntry(frame_folder(rel), count, round(fps, 6), size[0], size[1])
    expected = expected_frames(info.num_frames, info.fps, options.fps)
    problem = None
    if expected and count != expected:
        kind = "truncated" if count < expected else "frame count mismatch"
        problem = ("kept", f"{kind}: the container reports {info.num_frames} frames ({expected} to write),"
                           f" {count} decoded and kept{note}")
    return Outcome(rel, entry=entry, problem=problem)


def default_decoder() -> str:
    """decord where it imports, else PyAV (said once by ``load_decord``)."""
    return first_decoder("decord")


def expected_frames(num_frames: int, src_fps: float, dst_fps: Optional[float]) -> int:
    """Frames an extraction should write for a video of ``num_frames`` (0 = unknown)."""
    if num_frames <= 0:
        return 0
    count = 0
    for source in resampled_indices(src_fps, dst_fps):
        if source >= num_frames:
            return count
        count += 1
    return count  # pragma: no cover - resampled_indices never ends


def _check_file(rel: str, src: str) -> None:
    if any(c in rel for c in "\t\n\r"):
        raise VideoError("the path contains a tab or line break (not supported by the index)")
    if not os.path.isfile(src):
        raise VideoError("not found")
    if os.path.getsize(src) == 0:
        raise VideoError("empty file (0 bytes)")


def _write_frames(chunks: Iterable[np.ndarray], folder: str, quality: int) -> int:
    """Write the frames of ``chunks`` as ``000001.jpg``... into ``folder``; return their number."""
    os.makedirs(folder, exist_ok=True)
    count = 0
    buffer = io.BytesIO()
    for chunk in chunks:
        for frame in chunk:
            count += 1
            buffer.seek(0)
            buffer.truncate()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
            with open(os.path.join(folder, frame_file_name(count - 1)), "wb") as handle:
                handle.write(buffer.getbuffer())
    return count


def _extract_in_worker(task: Task) -> Outcome:
    if task.decoder == "decord":  # keep decoder messages off the terminal (the reasons go to the failures file)
        quiet_decord()
    if task.decoder == "torchcodec":
        import torch

        # One video per process: torch's idle OpenMP threads would spin after each of
        # torchcodec's tensor ops (3x the CPU time on 2 cores, benchmarks/bench_extract.py).
        torch.set_num_threads(1)
    return extract_video(task)


def extract_all(
    src_root: str,
    dst_root: str,
    videos: Optional[List[str]] = None,
    options: ExtractOptions = ExtractOptions(),
    workers: int = 1,
    progress: bool = True,
    decoder: str = "decord",
) -> Summary:
    """Extract ``videos`` (default: all below ``src_root``) into ``dst_root`` with
    ``decoder`` first (one of DECODING_BACKENDS); see the module doc. TorchCodecUnavailable
    before any work when it is "torchcodec" and torchcodec or FFmpeg is missing."""
    from cgnl_video.config.choices import DECODING_BACKENDS  # not at the top: workers import this module

    if decoder not in DECODING_BACKENDS:
        raise ValueError(f"decoder must be one of {list(DECODING_BACKENDS)}, got {decoder!r}")
    if decoder == "torchcodec":
        load_torchcodec()
    elif decoder == "decord":
        decoder = default_decoder()  # decided (and said) here, not in each worker
    from tqdm import tqdm

    start = time.perf_counter()
    os.makedirs(dst_root, exist_ok=True)
    entries = idx.read_index(dst_root)
    failures = idx.read_failures(dst_root)
    idx.write_index(dst_root, entries)  # fold a killed run's journal into the index
    if videos is None:
        videos = find_videos(src_root, skip=[dst_root])
    summary = Summary()
    todo = []
    for rel in videos:
        key = frame_folder(rel)
        if key in entries and os.path.isdir(os.path.join(dst_root, key)):
            summary.skipped += 1
        else:
            entries.pop(key, None)
            failures.pop(rel, None)
            todo.append(Task(src_root, dst_root, rel, options, decoder))
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True)
    last_rewrite = time.monotonic()
    try:
        for task, outcome in parallel_map(_extract_in_worker, todo, workers):
            if isinstance(outcome, WorkerCrash):
                outcome = Outcome(task.rel, problem=("failed", outcome.reason))
            _record(outcome, dst_root, entries, failures, summary)
            bar.update(1)
            bar.set_postfix(failed=summary.failed, refresh=False)
            if time.monotonic() - last_rewrite > INDEX_REWRITE_SECONDS:
                idx.write_index(dst_root, entries)
                last_rewrite = time.monotonic()
    finally:
        bar.close()
        idx.write_index(dst_root, entries)
        idx.write_failures(dst_root, failures)
    summary.seconds = time.perf_counter() - start
    summary.failures = failures
    return summary


def _record(
    outcome: Outcome,
    dst_root: str,
    entries: Dict[str, idx.IndexEntry],
    failures: Dict[str, Tuple[str, str]],
    summary: Summary,
) -> None:
    """Fold one video's outcome into the index, the failures and the counts."""
    if outcome.entry is not None:
        entries[outcome.entry.path] = outcome.entry
        idx.append_journal(dst_root, outcome.entry)
        summary.done += 1
        summary.frames += outcome.entry.num_frames
    else:
        summary.failed += 1
    if outcome.problem is not None:
        failures[outcome.rel] = outcome.problem
        summary.kept_with_problem += outcome.entry is not None
