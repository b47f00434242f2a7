"""What the manifest builders share: finding clips under a data root and writing the outputs.

A data root holds either video files or frame folders made by ``extract_frames``
(or both; a frame folder wins over a video of the same path), in any of the folder
layouts of ``LAYOUTS``. A clip is taken at the path its list gives when it is there,
and otherwise looked up by name in a catalog of the whole root (``prep.tree``: one
walk, or the extraction index when the root has one). Frame counts come from the
extraction index when the root has one, else the JPEGs are counted.

Clips that are missing, empty or unreadable are left out of the manifests and listed
in ``OUT/missing.txt`` (``split<TAB>clip<TAB>reason`` after a header). A split with no
clip found is an error, one with fewer than half found a warning, both explaining
where the clips were looked for; a clip name found at two paths is an error.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from cgnl_video.data.manifest import ManifestEntry, ManifestError, write_classes, write_manifest
from cgnl_video.prep import index as idx
from cgnl_video.prep import tree
from cgnl_video.prep.extract import VIDEO_EXTENSIONS, frame_folder
from cgnl_video.prep.video_io import VideoError, probe
from cgnl_video.utils.io import atomic_write_text, read_lines  # noqa: F401 (read_lines: used by the builders)

logger = logging.getLogger(__name__)

MISSING_NAME = "missing.txt"
MISSING_HEADER = "split\tclip\treason"
SPLITS = ("train", "val", "test")
LAYOUTS = (
    "ROOT/<name>.mp4                   flat",
    "ROOT/<class>/<name>.mp4           a folder per class",
    "ROOT/<split>/<class>/<name>.mp4   a folder per split and class (Kinetics crawlers: train/, val/)",
    "ROOT/<split>/<name>.mp4           a folder per split",
)


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


@dataclass(frozen=True)
class Lookup:
    """How a dataset's clips are looked up.

    ``at_path``: first at the list's path (``stems``) under the root. Then by name
    anywhere in the root; with ``same_folders`` a path found by name must agree with
    the list's path from the end (a tree may add folders above the list's path, or
    lack its folders, but not put the clip in another folder), for datasets whose
    clip names repeat across folders.
    """

    at_path: bool
    same_folders: bool = False


BY_NAME = Lookup(at_path=False)  # Kinetics: the file name identifies the clip
PATH_OR_NAME = Lookup(at_path=True)  # UCF-101: names are unique (v_<Class>_gXX_cYY)
PATH_OR_SUFFIX = Lookup(at_path=True, same_folders=True)  # any list: names may repeat


class ClipFinder:
    """Looks clips up under ``root`` (see ``Lookup``); the catalog of the root is made
    once, on the first lookup by name. ``clip_names`` are the names looked for."""

    def __init__(self, root: str, clip_names: Iterable[str] = ()) -> None:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"data root not found: {root}")
        self.root = root
        self.clip_names = set(clip_names)
        self.index: Optional[Dict[str, idx.IndexEntry]] = idx.read_index(root) if idx.has_index(root) else None
        # Why extract_frames could not extract a video, by frame folder.
        self.extract_failures = {
            frame_folder(path): reason
            for path, (status, reason) in idx.read_failures(root).items()
            if status == "failed"
        }
        self.failed = tree.from_paths("", self.extract_failures)
        self._catalog: Optional[tree.Catalog] = None

    @property
    def catalog(self) -> tree.Catalog:
        """Every clip of the root by name: the extraction index's folders, or one walk."""
        if self._catalog is None:
            if self.index is not None:
                searched = f"the extraction index {os.path.join(self.root, idx.INDEX_NAME)} (not the folders)"
                self._catalog = tree.from_paths(searched, self.index)
            else:
                self._catalog = tree.walk(self.root, self.clip_names)
        return self._catalog

    def locate(self, wanted: Wanted, lookup: Lookup) -> Union[Found, str]:
        """The clip on disk, or the reason it is not usable ("not found" when absent).

        ManifestError when its name is found at two paths (which one is meant?).
        """
        if lookup.at_path:
            results = [result for stem in wanted.stems for result in self._at(stem)]
            if results:
                return _found_or_reasons(results)
        elsewhere: List[str] = []
        for stem in wanted.stems:
            named = self._named(stem)
            agreeing = [s for s in named if not lookup.same_folders or _agree(s, stem)]
            if len(agreeing) > 1:
                raise ManifestError(
                    f"clip {wanted.clip!r} is under {self.root} twice: {named[agreeing[0]]} and "
                    f"{named[agreeing[1]]}; remove one, or give --root the folder that holds the right one"
                )
            if agreeing:
                return _found_or_reasons(self._at(agreeing[0], named[agreeing[0]])) or "not found"
            elsewhere += named.values()
        if elsewhere:
            return f"not found; {elsewhere[0]} has its name but lies in other folders than the list says"
        return "not found"

    def _named(self, stem: str) -> Dict[str, str]:
        """{clip path without extension: a path of it} for the clips named like ``stem``;
        the failed extractions of that name only when nothing else has it."""
        name = os.path.basename(stem)
        for catalog in (self.catalog, self.failed):
            named: Dict[str, str] = {}
            for path in catalog.paths.get(name, []):
                named.setdefault(tree.clip_stem(path), path)
            if named:
                return named
        return {}

    def _at(self, stem: str, seen: str = "") -> List[Union[Found, str]]:
        """[Found] for a usable frame folder or video at ``stem``, [reasons] for an
        unusable one or a failed extraction, [] if nothing is there. ``seen``: the
        catalog's path of the clip (a video's extension in any case, e.g. ``.Avi``)."""
        found = self._check(stem, seen)
        if isinstance(found, Found):
            return [found]
        reasons = [found] if found else []
        if stem in self.extract_failures:
            reasons.append(f"frame extraction failed: {self.extract_failures[stem]}")
        return reasons

    def _check(self, stem: str, seen: str = "") -> Union[Found, str]:
        """Found for a usable frame folder or video at ``stem`` (or ``seen``, see ``_at``);
        a reason, or "" if absent."""
        folder = os.path.join(self.root, stem)
        if os.path.isdir(folder):
            if self.index is not None and stem in self.index:
                return Found(stem, self.index[stem].num_frames)
            count = count_frames(folder)
            return Found(stem, count) if count else f"empty frame folder {stem}"
        names = [stem + ext for ext in VIDEO_EXTENSIONS + tuple(e.upper() for e in VIDEO_EXTENSIONS)]
        for name in names + ([seen] if seen != stem and tree.clip_stem(seen) == stem else []):
            if os.path.isfile(os.path.join(self.root, name)):
                if os.path.getsize(os.path.join(self.root, name)) == 0:
                    return f"empty file {name} (0 bytes)"
                return Found(name)
        return ""


def _found_or_reasons(results: List[Union[Found, str]]) -> Union[Found, str]:
    """The Found among ``results``, else their reasons joined ("" when there are none)."""
    for result in results:
        if isinstance(result, Found):
            return result
    return "; ".join(dict.fromkeys(str(r) for r in results))


def _agree(path: str, stem: str) -> bool:
    """Whether two relative paths agree folder by folder from the end."""
    a, b = path.split("/"), stem.replace(os.sep, "/").split("/")
    n = min(len(a), len(b))
    return a[-n:] == b[-n:]


def count_frames(folder: str) -> int:
    """Number of JPEG frames in a frame folder."""
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.lower().endswith(tree.FRAME_EXTENSIONS) and not e.name.startswith("."))


def find_clips(
    root: str,
    wanted: Dict[str, List[Wanted]],
    lookup: Lookup,
    check_videos: bool = True,
) -> Tuple[Dict[str, List[ManifestEntry]], List[Tuple[str, str, str]]]:
    """Manifest entries of each split and ``(split, clip, reason)`` of the clips left out.

    ManifestError when a split has no clip found (or lists none), naming where the
    clips were looked for; a logged warning when fewer than half are found.
    """
    finder = ClipFinder(root, {os.path.basename(s) for clips in wanted.values() for w in clips for s in w.stems})
    manifests, missing = {}, []
    for split, clips in wanted.items():
        entries, lost = resolve_split(finder, split, clips, lookup, check_videos)
        if not entries:
            raise ManifestError(_not_found_help(finder, split, clips, lost, lookup, "error"))
        if len(entries) < len(clips) / 2:
            logger.warning(_not_found_help(finder, split, clips, lost, lookup, "warning"))
        manifests[split] = entries
        missing += lost
    return manifests, missing


def _not_found_help(
    finder: ClipFinder,
    split: str,
    clips: List[Wanted],
    lost: List[Tuple[str, str, str]],
    lookup: Lookup,
    level: str,
) -> str:
    """What went wrong with a split, where the clips were looked for and how they may lie."""
    if not clips:
        return f"{split}: the list holds no clip"
    found = len(clips) - len(lost)
    catalog = finder.catalog
    holds = f"{len(catalog)} video file(s) and frame folder(s)"
    if len(catalog):
        holds += " such as " + ", ".join(catalog.examples())
    lines = [
        f"{split}: found {found} of {len(clips)} clips under {finder.root}"
        + (" (the others are listed in missing.txt)" if level == "warning" else ""),
        f"Searched {catalog.searched}: {holds}.",
        "A clip is looked for " + ("at the path of its list, then " if lookup.at_path else "")
        + "by name at any depth under --root, as a video file (" + " ".join(VIDEO_EXTENSIONS)
        + ") or a frame folder of JPEGs (data_prep/extract_frames.py), in any of these layouts:",
        *(f"  {layout}" for layout in LAYOUTS),
    ]
    missing_wanted = {clip for _, clip, _ in lost}
    examples = [w for w in clips if w.clip in missing_wanted][:3]
    shown = (" or ".join(w.stems) if not lookup.at_path else w.clip for w in examples)
    lines.append("Expected names of missing clips: " + ", ".join(shown))
    problems = [f"{clip}: {reason}" for _, clip, reason in lost if reason != "not found"][:3]
    if problems:
        lines.append("Other reasons: " + "; ".join(problems))
    return "\n".join(lines)


def resolve_split(
    finder: ClipFinder,
    split: str,
    wanted: Sequence[Wanted],
    lookup: Lookup,
    check_videos: bool = True,
) -> Tuple[List[ManifestEntry], List[Tuple[str, str, str]]]:
    """Manifest entries of the clips found and ``(split, clip, reason)`` of the others.

    With ``check_videos`` each video file's header is read (in threads) and an
    unreadable one counts as missing.
    """
    located = [finder.locate(w, lookup) for w in wanted]
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
