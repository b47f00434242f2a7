"""What the manifest builders share: finding clips under a data root and writing the outputs.

A data root holds either video files or frame folders made by ``extract_frames``
(or both; a frame folder wins over a video of the same name). Frame counts come
from the extraction index when the root has one, else the JPEGs are counted.
Clips that are missing, empty or unreadable are left out of the manifests and
listed in ``OUT/missing.txt`` (``split<TAB>clip<TAB>reason`` after a header).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from cgnl_video.data.manifest import ManifestEntry, ManifestError, write_classes, write_manifest
from cgnl_video.prep import index as idx
from cgnl_video.prep.extract import VIDEO_EXTENSIONS, frame_folder
from cgnl_video.prep.video_io import VideoError, probe
from cgnl_video.utils.io import atomic_write_text, read_lines  # noqa: F401 (read_lines: used by the builders)

MISSING_NAME = "missing.txt"
MISSING_HEADER = "split\tclip\treason"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Found:
    """A clip on disk: path relative to the root, frame count for a frame folder."""

    path: str
    num_frames: Optional[int] = None


@dataclass(frozen=True)
class Wanted:
    """A clip a split asks for: ``clip`` names it in missing.txt; ``stems`` are the
    paths (relative to the root, without extension) it may have, best first."""

    clip: str
    label: int
    stems: Tuple[str, ...]


class ClipFinder:
    """Looks clips up under ``root`` by relative path, or by name anywhere up to two
    folders deep (``root/name`` or ``root/<class>/name``)."""

    def __init__(self, root: str) -> None:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"data root not found: {root}")
        self.root = root
        self.index: Optional[Dict[str, idx.IndexEntry]] = idx.read_index(root) if idx.has_index(root) else None
        # Why extract_frames could not extract a video, by frame folder.
        self.extract_failures = {
            frame_folder(path): reason
            for path, (status, reason) in idx.read_failures(root).items()
            if status == "failed"
        }
        self.by_name: Dict[str, List[str]] = {}

    def catalog(self, names: Set[str]) -> None:
        """Record where each of ``names`` (stems) lies, scanning the root once."""
        if self.index is not None:
            paths: Iterable[str] = self.index
        else:
            paths = _scan_two_levels(self.root, names)
        # Videos that failed extraction have no folder, but a reason for missing.txt.
        for path in sorted(set(paths) | set(self.extract_failures)):
            name = os.path.basename(path)
            if name in names:
                self.by_name.setdefault(name, []).append(path)

    def locate(self, stems: Sequence[str], by_name: bool = False) -> Union[Found, str]:
        """The first of ``stems`` on disk, or the reason none is usable.

        With ``by_name`` the stems are bare names looked up in the catalog.
        """
        paths = [path for stem in stems for path in (self.by_name.get(stem, []) if by_name else [stem])]
        reasons = []
        for path in paths:
            found = self._check(path)
            if isinstance(found, Found):
                return found
            if found:
                reasons.append(found)
        reasons += [f"frame extraction failed: {self.extract_failures[p]}" for p in paths if p in self.extract_failures]
        return "; ".join(dict.fromkeys(reasons)) or "not found"

    def _check(self, stem: str) -> Union[Found, str]:
        """Found for a usable frame folder or video at ``stem``; a reason, or "" if absent."""
        folder = os.path.join(self.root, stem)
        if os.path.isdir(folder):
            if self.index is not None and stem in self.index:
                return Found(stem, self.index[stem].num_frames)
            count = count_frames(folder)
            return Found(stem, count) if count else f"empty frame folder {stem}"
        for ext in VIDEO_EXTENSIONS + tuple(e.upper() for e in VIDEO_EXTENSIONS):
            if os.path.isfile(folder + ext):
                if os.path.getsize(folder + ext) == 0:
                    return f"empty file {stem + ext} (0 bytes)"
                return Found(stem + ext)
        return ""


def count_frames(folder: str) -> int:
    """Number of JPEG frames in a frame folder."""
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.lower().endswith((".jpg", ".jpeg")) and not e.name.startswith("."))


def _scan_two_levels(root: str, names: Set[str]) -> List[str]:
    """Stems (relative, without extension) of the videos and wanted folders at depth 1 and 2.

    A folder at depth 1 whose name is not wanted is taken for a class folder and
    entered; frame folders are never listed (that would touch every frame).
    """
    found: List[str] = []

    def visit(folder: str, rel: str, depth: int) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                stem = os.path.join(rel, entry.name) if rel else entry.name
                if entry.is_dir():
                    if entry.name in names:
                        found.append(stem)
                    elif depth == 1:
                        visit(entry.path, stem, 2)
                elif entry.name.lower().endswith(VIDEO_EXTENSIONS):
                    found.append(os.path.splitext(stem)[0])

    visit(root, "", 1)
    return found


def resolve_split(
    finder: ClipFinder,
    split: str,
    wanted: Sequence[Wanted],
    by_name: bool = False,
    check_videos: bool = True,
) -> Tuple[List[ManifestEntry], List[Tuple[str, str, str]]]:
    """Manifest entries of the clips found and ``(split, clip, reason)`` of the others.

    With ``check_videos`` each video file's header is read (in threads) and an
    unreadable one counts as missing.
    """
    located = [finder.locate(w.stems, by_name) for w in wanted]
    if check_videos:
        videos = [f.path for f in located if isinstance(f, Found) and f.num_frames is None]
        with ThreadPoolExecutor(max_workers=8) as pool:
            problems = dict(zip(videos, pool.map(lambda p: _video_problem(finder.root, p), videos)))
        located = [problems.get(f.path) or f if isinstance(f, Found) else f for f in located]
    entries, missing = [], []
    for clip, found in zip(wanted, located):
        if isinstance(found, Found):
            entries.append(ManifestEntry(found.path, clip.label, found.num_frames))
        else:
            missing.append((split, clip.clip, found))
    return entries, missing


def _video_problem(root: str, path: str) -> Optional[str]:
    try:
        info = probe(os.path.join(root, path))
    except VideoError as error:
        return f"{path}: {error}"
    return None if info.width > 0 else f"{path}: video stream has no frame size"


def write_outputs(
    out: str,
    classes: Sequence[str],
    splits: Dict[str, List[ManifestEntry]],
    expected: Dict[str, int],
    missing: List[Tuple[str, str, str]],
) -> List[str]:
    """Write ``OUT/<split>.txt``, ``classes.txt`` and ``missing.txt``; return summary lines."""
    os.makedirs(out, exist_ok=True)
    write_classes(os.path.join(out, "classes.txt"), classes)
    for split, entries in splits.items():
        write_manifest(os.path.join(out, f"{split}.txt"), entries)
    lines = [MISSING_HEADER] + ["\t".join(row) for row in missing]
    atomic_write_text(os.path.join(out, MISSING_NAME), "\n".join(lines) + "\n")
    summary = [f"{len(classes)} classes -> {os.path.join(out, 'classes.txt')}"]
    for split, entries in splits.items():
        summary.append(
            f"{split}: found {len(entries)}/{expected[split]}"
            f" ({expected[split] - len(entries)} missing) -> {os.path.join(out, split + '.txt')}"
        )
    if missing:
        summary.append(f"{len(missing)} missing clip(s) listed with the reason in {os.path.join(out, MISSING_NAME)}")
    return summary


def check_unique(items: Iterable[Tuple[str, str]], what: str) -> None:
    """ManifestError naming both lines when a key appears twice in ``(where, key)`` pairs."""
    seen: Dict[str, str] = {}
    for where, key in items:
        if key in seen:
            raise ManifestError(f"{where}: duplicate {what} {key!r} (first on {seen[key]})")
        seen[key] = where
