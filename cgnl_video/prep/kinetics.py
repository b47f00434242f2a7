"""Mini-Kinetics-200 manifests: Kinetics-400 annotations joined with the YouTube id lists.

The Kinetics-400 CSVs have the columns ``label,youtube_id,time_start,time_end,split``
(and ``is_cc`` in later releases); a folder argument means every CSV in it that has a
``label`` column (the unlabelled test CSV is passed over). The Mini-Kinetics-200
lists ``train_ytid_list.txt`` and ``val_ytid_list.txt`` hold one YouTube id a line.

Classes are the labels of the listed videos, sorted alphabetically (label = index).
A clip is found by name at any depth of the root (see ``prep.manifests.LAYOUTS``),
named ``{youtube_id}_{start:06d}_{end:06d}`` or ``{youtube_id}``, as a video file or
a frame folder. ``test.txt`` repeats the val videos (scored with the multi-view test).
"""

import csv
import glob
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from cgnl_video.data.manifest import ManifestError
from cgnl_video.prep.manifests import BY_NAME, Wanted, check_unique, find_clips, read_lines, write_outputs

REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
LIST_NAMES = {"train": "train_ytid_list.txt", "val": "val_ytid_list.txt"}


@dataclass(frozen=True)
class Annotation:
    """One Kinetics clip; ``where`` is its CSV file and line."""

    label: str
    start: int
    end: int
    where: str

    def names(self, youtube_id: str) -> Tuple[str, str]:
        """File or folder names (without extension) the clip is usually saved under."""
        return (f"{youtube_id}_{self.start:06d}_{self.end:06d}", youtube_id)


def annotation_files(paths: Sequence[str]) -> List[str]:
    """The CSV files named by ``paths`` (files, or folders whose ``*.csv`` are taken)."""
    files: List[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(glob.glob(os.path.join(path, "*.csv")))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"annotation file or folder not found: {path}")
    if not files:
        raise FileNotFoundError(f"no annotation CSV in {list(paths)}")
    return files


def read_annotations(paths: Sequence[str]) -> Dict[str, Annotation]:
    """``{youtube_id: Annotation}`` from the Kinetics-400 CSVs.

    A CSV without a ``label`` column is skipped when it came from a folder and an
    error when named directly. A YouTube id annotated twice with different labels is
    an error naming both lines; the first of identical duplicates is kept.
    """
    table: Dict[str, Annotation] = {}
    for path in annotation_files(paths):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "label" not in columns and path not in paths:
                continue
            absent = [c for c in REQUIRED_COLUMNS if c not in columns]
            if absent:
                raise ManifestError(f"{path}:1: missing column(s) {absent}; header is {columns}")
            for number, row in enumerate(reader, start=2):
                where = f"{path}:{number}"
                youtube_id, label = (row["youtube_id"] or "").strip(), (row["label"] or "").strip()
                if not youtube_id or not label:
                    raise ManifestError(f"{where}: empty label or youtube_id")
                try:
                    start, end = int(float(row["time_start"])), int(float(row["time_end"]))
                except (TypeError, ValueError) as error:
                    raise ManifestError(f"{where}: bad time_start/time_end: {error}") from error
                old = table.get(youtube_id)
                if old is not None and old.label != label:
                    raise ManifestError(
                        f"{where}: {youtube_id} labelled {label!r}, but {old.label!r} on {old.where}"
                    )
                if old is None:
                    table[youtube_id] = Annotation(label, start, end, where)
    return table


def read_ytid_list(path: str, table: Dict[str, Annotation]) -> List[str]:
    """YouTube ids of a list file; duplicates and ids without annotation are errors naming the line."""
    rows = read_lines(path)
    check_unique(rows, "YouTube id")
    for where, youtube_id in rows:
        if youtube_id not in table:
            raise ManifestError(f"{where}: YouTube id {youtube_id!r} is not in the annotation CSVs")
    return [youtube_id for _, youtube_id in rows]


def build_minikinetics(
    annotations: Sequence[str],
    ytid_lists: str,
    root: str,
    out: str,
    splits: Sequence[str] = ("train", "val"),
    num_classes: int = 200,
    check_videos: bool = True,
) -> List[str]:
    """Write the Mini-Kinetics-200 manifests (``splits`` of train/val; test = val); return the summary."""
    table = read_annotations(annotations)
    ids = {split: read_ytid_list(os.path.join(ytid_lists, LIST_NAMES[split]), table) for split in splits}
    check_unique(((s, y) for s in splits for y in ids[s]), "YouTube id in two splits")
    classes = sorted({table[y].label for split in splits for y in ids[split]})
    if num_classes and len(classes) != num_classes:
        raise ManifestError(f"the listed videos have {len(classes)} classes, expected {num_classes}")
    label_of = {name: i for i, name in enumerate(classes)}
    wanted = {
        split: [Wanted(table[y].names(y)[0], label_of[table[y].label], table[y].names(y)) for y in ids[split]]
        for split in splits
    }
    manifests, missing = find_clips(root, wanted, BY_NAME, check_videos)
    expected = {split: len(clips) for split, clips in wanted.items()}
    if "val" in manifests:
        manifests["test"], expected["test"] = manifests["val"], expected["val"]
    return write_outputs(out, classes, manifests, expected, missing)
