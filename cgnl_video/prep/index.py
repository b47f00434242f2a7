"""The files ``extract_frames`` leaves in the frames folder, next to the frame folders.

``extraction_index.tsv``: one finished video per line, tab-separated, after the header
``path num_frames fps width height``: the frame folder relative to the frames root
(the video's relative path without its extension), the number of JPEGs in it, the
frame rate and size of the extracted frames. ``failures.txt``: header ``path status
reason``, one problem per line: the video relative to the source root, ``failed`` (no
frame folder was written) or ``kept`` (frames written, but something is off).

Both are rewritten atomically. While a run is going, each finished video is also
appended to ``.extraction_index.journal`` so that a killed run loses nothing; the next
run (and ``read_index``) merge the journal, ignoring a torn last line. Examples:
docs/DATA_PREP.md, "Files written next to the frame folders".
"""

import os
from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

from cgnl_video.utils.io import atomic_write_text

INDEX_NAME = "extraction_index.tsv"
JOURNAL_NAME = ".extraction_index.journal"
FAILURES_NAME = "failures.txt"
INDEX_HEADER = "path\tnum_frames\tfps\twidth\theight"
FAILURES_HEADER = "path\tstatus\treason"


class IndexFileError(ValueError):
    """An index or failures file that does not parse; the message names file and line."""


@dataclass(frozen=True)
class IndexEntry:
    """One extracted video."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int

    def to_line(self) -> str:
        return f"{self.path}\t{self.num_frames}\t{self.fps:g}\t{self.width}\t{self.height}"


def _index_line(line: str, where: str) -> IndexEntry:
    fields = line.split("\t")
    try:
        if len(fields) != 5:
            raise ValueError("expected 5 tab-separated fields")
        path, frames, fps, width, height = fields
        return IndexEntry(path, int(frames), float(fps), int(width), int(height))
    except ValueError as error:
        raise IndexFileError(f"{where}: {error}: {line!r}") from error


def _read_lines(path: str, header: str, tolerate_torn_tail: bool = False) -> Iterable[Tuple[str, str]]:
    """(``file:line``, text) of each data line; skips the header and blank lines.

    With ``tolerate_torn_tail`` a last line without its newline (a write cut short by a
    kill) is dropped.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\n")
    # A complete file ends with "\n", so the last piece is "" unless the tail is torn.
    if lines and lines[-1] and tolerate_torn_tail:
        lines[-1] = ""
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if line and line != header:
            yield f"{path}:{number}", line


def read_index(frames_root: str) -> Dict[str, IndexEntry]:
    """Index entries of ``frames_root`` by path (index file plus journal); {} when there are none."""
    entries: Dict[str, IndexEntry] = {}
    for name, torn_ok in ((INDEX_NAME, False), (JOURNAL_NAME, True)):
        path = os.path.join(frames_root, name)
        if os.path.isfile(path):
            for where, line in _read_lines(path, INDEX_HEADER, torn_ok):
                entry = _index_line(line, where)
                entries[entry.path] = entry
    return entries


def has_index(frames_root: str) -> bool:
    """Whether ``frames_root`` holds an extraction index (or a journal of a killed run)."""
    return any(os.path.isfile(os.path.join(frames_root, n)) for n in (INDEX_NAME, JOURNAL_NAME))


def write_index(frames_root: str, entries: Dict[str, IndexEntry]) -> None:
    """Rewrite the index atomically (sorted by path) and drop the journal it now contains."""
    lines = [INDEX_HEADER] + [entries[key].to_line() for key in sorted(entries)]
    atomic_write_text(os.path.join(frames_root, INDEX_NAME), "\n".join(lines) + "\n")
    journal = os.path.join(frames_root, JOURNAL_NAME)
    if os.path.exists(journal):
        os.remove(journal)


def append_journal(frames_root: str, entry: IndexEntry) -> None:
    """Record one finished video at once (survives a kill of the run)."""
    with open(os.path.join(frames_root, JOURNAL_NAME), "a", encoding="utf-8") as handle:
        handle.write(entry.to_line() + "\n")


def read_failures(frames_root: str) -> Dict[str, Tuple[str, str]]:
    """``{video path: (status, reason)}`` from the failures file; {} when there is none."""
    path = os.path.join(frames_root, FAILURES_NAME)
    failures: Dict[str, Tuple[str, str]] = {}
    if os.path.isfile(path):
        for where, line in _read_lines(path, FAILURES_HEADER):
            fields = line.split("\t")
            if len(fields) != 3:
                raise IndexFileError(f"{where}: expected 3 tab-separated fields: {line!r}")
            failures[fields[0]] = (fields[1], fields[2])
    return failures


def write_failures(frames_root: str, failures: Dict[str, Tuple[str, str]]) -> None:
    """Rewrite the failures file atomically (sorted by path)."""
    lines = [FAILURES_HEADER] + [f"{p}\t{s}\t{r}" for p, (s, r) in sorted(failures.items())]
    atomic_write_text(os.path.join(frames_root, FAILURES_NAME), "\n".join(lines) + "\n")
