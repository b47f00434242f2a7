"""Manifests for any labelled set of videos (the synthetic demo set, a user's own videos).

A list folder holds ``train.txt``, ``val.txt`` and/or ``test.txt``, one clip a line::

    <path relative to the root, with its extension> <class name>

separated by a tab, or else by the last space (so a path may hold spaces when the
class name does not). ``classes.txt`` (one name a line, label = line index) fixes
the classes and their order; without it the classes are the names in the lists,
sorted. A missing ``val.txt`` is the test list and a missing ``test.txt`` the val
list, so that train, val and test manifests always come out. A clip ``a/b.mp4`` is
found under the root as the frame folder ``a/b`` or the video ``a/b.<ext>``, and else
by its name ``b`` at any depth where the folders agree with the list's from the end
(``x/a/b``, or ``b`` in a flat root; not ``c/b``: names may repeat across folders).
"""

import os
from typing import Dict, List, Tuple

from cgnl_video.data.manifest import ManifestError, read_classes
from cgnl_video.prep.manifests import (
    PATH_OR_SUFFIX,
    SPLITS,
    Wanted,
    check_unique,
    find_clips,
    read_lines,
    write_outputs,
)


def read_labelled_list(path: str) -> List[Tuple[str, str, str]]:
    """``(where, clip path, class name)`` of each line of a list file."""
    rows = []
    for where, line in read_lines(path):
        clip, sep, name = line.rpartition("\t") if "\t" in line else line.rpartition(" ")
        if not sep or not clip.strip() or not name.strip():
            raise ManifestError(f"{where}: expected '<relative path> <class name>', got {line!r}")
        rows.append((where, clip.strip(), name.strip()))
    check_unique(((where, clip) for where, clip, _ in rows), "clip")
    return rows


def build_generic(list_dir: str, root: str, out: str, check_videos: bool = True) -> List[str]:
    """Write train/val/test manifests and classes.txt from a list folder; return the summary."""
    lists: Dict[str, List[Tuple[str, str, str]]] = {
        split: read_labelled_list(os.path.join(list_dir, f"{split}.txt"))
        for split in SPLITS
        if os.path.isfile(os.path.join(list_dir, f"{split}.txt"))
    }
    if not lists:
        raise FileNotFoundError(f"no train.txt, val.txt or test.txt in {list_dir}")
    classes_file = os.path.join(list_dir, "classes.txt")
    if os.path.isfile(classes_file):
        classes = read_classes(classes_file)
    else:
        classes = sorted({name for rows in lists.values() for _, _, name in rows})
    label_of = {name: i for i, name in enumerate(classes)}
    wanted: Dict[str, List[Wanted]] = {}
    for split, rows in lists.items():
        wanted[split] = []
        for where, clip, name in rows:
            if name not in label_of:
                raise ManifestError(f"{where}: unknown class {name!r} (not in {classes_file})")
            wanted[split].append(Wanted(clip, label_of[name], (os.path.splitext(clip)[0],)))
    manifests, missing = find_clips(root, wanted, PATH_OR_SUFFIX, check_videos)
    expected = {split: len(clips) for split, clips in wanted.items()}
    for split, stand_in in (("val", "test"), ("test", "val")):
        if split not in manifests and stand_in in manifests:
            manifests[split], expected[split] = manifests[stand_in], expected[stand_in]
    ordered = {split: manifests[split] for split in SPLITS if split in manifests}
    return write_outputs(out, classes, ordered, expected, missing)
