"""Where each clip of a data root lies, by name: one walk of the whole tree.

A data root holds video files and/or frame folders (made by ``extract_frames``) in
any folder layout: flat, a folder per class, a folder per split and class (what the
Kinetics crawlers write: ``train/<class>/<ytid>_<start>_<end>.mp4``), a folder per
split. ``walk`` lists the tree once with ``os.scandir`` and returns a ``Catalog``:
clip name (file name without the video extension, or folder name) -> the paths
relative to the root that carry it.

A folder is a clip (a frame folder, not entered) when its name is one of the names
looked for, or when the first thing listed in it is a JPEG file, so that the frames
of a folder nobody asked for are not all listed. Names starting with a dot (such as
the ``.b.part`` folders of an unfinished extraction) are passed over. Symbolic links
to folders are followed, except those that point back into the walk (a loop).
"""

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from cgnl_video.prep.extract import VIDEO_EXTENSIONS

FRAME_EXTENSIONS = (".jpg", ".jpeg")


def clip_stem(path: str) -> str:
    """A clip's path without its video extension (a frame folder's path is unchanged)."""
    stem, ext = os.path.splitext(path)
    return stem if ext.lower() in VIDEO_EXTENSIONS else path


@dataclass
class Catalog:
    """Clip name -> relative paths (videos with their extension, frame folders);
    ``searched`` says where the paths came from, for messages."""

    searched: str
    paths: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, path: str, name: str = "") -> None:
        """Record ``path`` (relative, "/"-separated) under ``name`` (default: its clip name)."""
        path = path.replace(os.sep, "/")
        self.paths.setdefault(name or os.path.basename(clip_stem(path)), []).append(path)

    def __len__(self) -> int:
        return sum(len(paths) for paths in self.paths.values())

    def examples(self, count: int = 3) -> List[str]:
        """A few of the paths (sorted), to show what the root holds."""
        names = sorted(self.paths)[:count]
        return [self.paths[name][0] for name in names]


def from_paths(searched: str, paths: Iterable[str]) -> Catalog:
    """A catalog of known paths (the frame folders an extraction index lists)."""
    catalog = Catalog(searched)
    for path in paths:
        catalog.add(path)
    return catalog


def walk(root: str, clip_names: Set[str]) -> Catalog:
    """The videos and frame folders below ``root``, found in one walk (see the module doc)."""
    catalog = Catalog("")
    root_real = os.path.realpath(root)
    links_entered: Set[str] = set()
    stack: List[Tuple[str, str]] = [(root, "")]
    folders = 0
    while stack:
        folder, rel = stack.pop()
        folders += 1
        listing = _list_folder(folder)
        if listing is None:  # JPEGs: a frame folder whose name nobody asked for
            if rel:
                catalog.add(rel)
            continue
        videos, subfolders = listing
        for name in videos:
            catalog.add(f"{rel}/{name}" if rel else name, os.path.splitext(name)[0])
        for entry in subfolders:
            sub_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name in clip_names:
                catalog.add(sub_rel, entry.name)
            elif _may_enter(entry, folder, root_real, links_entered):
                stack.append((entry.path, sub_rel))
    catalog.searched = f"{folders} folder(s) under {root}"
    return catalog


def _list_folder(folder: str) -> Optional[Tuple[List[str], List[os.DirEntry]]]:
    """(video file names, subfolder entries) of ``folder``; None for a frame folder
    (a JPEG listed before any video or subfolder: the listing stops there)."""
    videos: List[str] = []
    subfolders: List[os.DirEntry] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_folder = entry.is_dir()
                except OSError:  # a broken link
                    continue
                lower = entry.name.lower()
                if is_folder:
                    subfolders.append(entry)
                elif lower.endswith(VIDEO_EXTENSIONS):
                    videos.append(entry.name)
                elif lower.endswith(FRAME_EXTENSIONS) and not videos and not subfolders:
                    return None
    except PermissionError:
        return [], []
    return videos, subfolders


def _may_enter(entry: os.DirEntry, parent: str, root_real: str, links_entered: Set[str]) -> bool:
    """False for a link to a folder the walk enters anyway or is inside of (a loop)."""
    if not entry.is_symlink():
        return True
    target = os.path.realpath(entry.path)
    inside = os.path.realpath(parent)
    walked_anyway = target == root_real or target.startswith(root_real + os.sep)
    if walked_anyway or target in links_entered or inside == target or inside.startswith(target + os.sep):
        return False
    links_entered.add(target)
    return True
