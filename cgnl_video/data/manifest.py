"""The one manifest format, written by data_prep and read by the datasets.

A manifest is a text file with one sample per line, fields separated by spaces:

* frame folder: ``<path relative to root> <num_frames> <label>``
* video file:   ``<path relative to root> <label>``

A frame folder holds its frames as ``000001.jpg``, ``000002.jpg``, ...
(``frame_file_name``; 1-based names, 0-based indices in the code).

Labels are 0-based indices into ``classes.txt`` (one class name per line, label
= line index). Paths may contain spaces: the numeric fields are taken from the
right. Blank lines are ignored; CRLF line ends are accepted.
"""

import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from cgnl_video.utils.io import atomic_write_text


def frame_file_name(index: int) -> str:
    """File name of 0-based frame ``index`` in a frame folder: ``000001.jpg`` is frame 0."""
    return f"{index + 1:06d}.jpg"


class ManifestError(ValueError):
    """A manifest or class list that does not parse; the message names file and line."""


@dataclass(frozen=True)
class ManifestEntry:
    """One sample: ``path`` relative to the data root, its label, and for a frame
    folder its number of frames (``None`` for a video file)."""

    path: str
    label: int
    num_frames: Optional[int] = None

    @property
    def is_frame_folder(self) -> bool:
        return self.num_frames is not None

    def to_line(self) -> str:
        if self.num_frames is None:
            return f"{self.path} {self.label}"
        return f"{self.path} {self.num_frames} {self.label}"


def _parse_int(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None


def parse_manifest_line(line: str, where: str) -> Optional[ManifestEntry]:
    """Parse one line (``None`` for a blank line); ``where`` is "file:line" for errors."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    parts = line.rsplit(" ", 2)
    # ``<path> <num_frames> <label>`` when the two last fields are integers and a path is left.
    if len(parts) == 3 and _parse_int(parts[1]) is not None and _parse_int(parts[2]) is not None:
        path, frames, label = parts[0], int(parts[1]), int(parts[2])
        if frames <= 0:
            raise ManifestError(f"{where}: frame count must be positive, got {frames}: {line!r}")
    else:
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or _parse_int(parts[1]) is None or not parts[0].strip():
            raise ManifestError(
                f"{where}: expected '<path> <label>' or '<path> <num_frames> <label>', got {line!r}"
            )
        path, frames, label = parts[0], None, int(parts[1])
    if label < 0:
        raise ManifestError(f"{where}: label must be >= 0, got {label}: {line!r}")
    return ManifestEntry(path=path.strip(), label=label, num_frames=frames)


def read_manifest(path: str, num_classes: Optional[int] = None) -> List[ManifestEntry]:
    """All entries of a manifest; a bad line or a label >= ``num_classes`` is a ManifestError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest not found: {path}")
    entries: List[ManifestEntry] = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            entry = parse_manifest_line(line, f"{path}:{number}")
            if entry is None:
                continue
            if num_classes is not None and entry.label >= num_classes:
                raise ManifestError(
                    f"{path}:{number}: label {entry.label} is outside the {num_classes} classes"
                )
            entries.append(entry)
    return entries


def write_manifest(path: str, entries: Iterable[ManifestEntry]) -> None:
    """Write entries atomically, one per line, LF line ends."""
    atomic_write_text(path, "".join(entry.to_line() + "\n" for entry in entries))


def read_classes(path: str) -> List[str]:
    """Class names, one per non-blank line (label = index); duplicates are an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class list not found: {path}")
    names: List[str] = []
    seen = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            name = line.strip()
            if not name:
                continue
            if name in seen:
                raise ManifestError(f"{path}:{number}: class {name!r} already on line {seen[name]}")
            seen[name] = number
            names.append(name)
    return names


def write_classes(path: str, names: Sequence[str]) -> None:
    """Write class names atomically, one per line."""
    atomic_write_text(path, "".join(f"{name}\n" for name in names))
