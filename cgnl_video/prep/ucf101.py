"""UCF-101 manifests from the official split files.

Reads ``classInd.txt`` ("1 ApplyEyeMakeup": 1-based ids), ``trainlistNN.txt``
("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") and ``testlistNN.txt`` (path only),
CRLF line ends accepted. Labels become 0-based (id - 1), classes stay in classInd
order. The split has no validation set, so ``val.txt`` is the test list (its
missing clips are listed once, under ``test``).

A clip ``Class/v_x.avi`` is looked for under the root as the frame folder
``Class/v_x`` or the video ``Class/v_x.<any video extension>``, and else by its
name ``v_x`` at any depth (a flat root, split folders: see ``prep.manifests.LAYOUTS``).
"""

import os
from typing import Dict, List, Tuple

from cgnl_video.data.manifest import ManifestError
from cgnl_video.prep.manifests import PATH_OR_NAME, Wanted, check_unique, find_clips, read_lines, write_outputs


def read_class_index(path: str) -> List[str]:
    """Class names in id order from classInd.txt; ids must be 1..N, each once."""
    by_id: Dict[int, str] = {}
    rows = []
    for where, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ManifestError(f"{where}: expected '<id> <ClassName>', got {line!r}")
        class_id, name = int(parts[0]), parts[1]
        if class_id in by_id:
            raise ManifestError(f"{where}: class id {class_id} given twice")
        by_id[class_id] = name
        rows.append((where, name))
    check_unique(rows, "class name")
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise ManifestError(f"{path}: class ids must be 1..{len(by_id)}, got {sorted(by_id)[:5]}...")
    return [by_id[i] for i in range(1, len(by_id) + 1)]


def read_split_list(path: str, classes: List[str]) -> List[Tuple[str, int]]:
    """``(clip path, 0-based label)`` of a train or test list.

    The label is the class folder of the path; a given id (train lists) must agree
    with it. Unknown classes, bad ids and duplicate paths are errors naming the line.
    """
    label_of = {name: i for i, name in enumerate(classes)}
    clips: List[Tuple[str, int]] = []
    rows = []
    for where, line in read_lines(path):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise ManifestError(f"{where}: expected '<Class/clip.avi> [<id>]', got {line!r}")
        clip = parts[0].replace("\\", "/")
        folder = clip.split("/")[0] if "/" in clip else None
        if folder not in label_of:
            raise ManifestError(f"{where}: unknown class folder {folder!r} in {clip!r}")
        label = label_of[folder]
        if len(parts) == 2:
            given = _class_id(parts[1], len(classes), where)
            if given - 1 != label:
                raise ManifestError(
                    f"{where}: id {given} ({classes[given - 1]}) does not match the folder {folder!r}"
                )
        clips.append((clip, label))
        rows.append((where, clip))
    check_unique(rows, "clip")
    return clips


def _class_id(text: str, num_classes: int, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= num_classes:
        raise ManifestError(f"{where}: class id must be 1..{num_classes}, got {text!r}")
    return int(text)


def build_ucf101(
    annotations: str, split: int, root: str, out: str, check_videos: bool = True
) -> List[str]:
    """Write train/val/test manifests and classes.txt for UCF-101 split ``split``; return the summary."""
    if split not in (1, 2, 3):
        raise ValueError(f"UCF-101 has splits 1, 2, 3, not {split}")
    classes = read_class_index(os.path.join(annotations, "classInd.txt"))
    lists = {
        "train": read_split_list(os.path.join(annotations, f"trainlist{split:02d}.txt"), classes),
        "test": read_split_list(os.path.join(annotations, f"testlist{split:02d}.txt"), classes),
    }
    overlap = {c for c, _ in lists["train"]} & {c for c, _ in lists["test"]}
    if overlap:
        raise ManifestError(f"{len(overlap)} clip(s) in both the train and the test list, e.g. {min(overlap)}")
    wanted = {
        name: [Wanted(clip, label, (os.path.splitext(clip)[0],)) for clip, label in clips]
        for name, clips in lists.items()
    }
    splits, missing = find_clips(root, wanted, PATH_OR_NAME, check_videos)
    expected = {name: len(clips) for name, clips in lists.items()}
    splits["val"], expected["val"] = splits["test"], expected["test"]
    ordered = {name: splits[name] for name in ("train", "val", "test")}
    return write_outputs(out, classes, ordered, expected, missing)
