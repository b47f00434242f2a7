"""Kinetics-400 and Mini-Kinetics-200 manifests from the Kinetics-400 annotation CSVs.

The CSVs have the columns ``label,youtube_id,time_start,time_end,split`` (and ``is_cc``
in later releases; ``split`` is ``train`` in train.csv, ``val`` in validate.csv); a
folder argument means every CSV in it that has a ``label`` column (the unlabelled
test CSV is passed over). Mini-Kinetics-200 is Kinetics-400 filtered by the lists
``train_ytid_list.txt`` and ``val_ytid_list.txt`` (one YouTube id a line), which also
give each clip's split; Kinetics-400 takes it from the CSVs' ``split`` column.

Classes are the labels used, sorted alphabetically (label = index): all labels of
the CSVs for Kinetics-400 (the official models' order, "abseiling" = 0), those of
the listed videos for Mini-Kinetics. A clip is found by name at any depth of the
root (``prep.manifests.LAYOUTS``), ``{youtube_id}_{start:06d}_{end:06d}`` or
``{youtube_id}``, as a video file or a frame folder. ``test.txt`` repeats the val
videos (scored with the multi-view test).
"""

import csv
import glob
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from cgnl_video.data.manifest import ManifestError
from cgnl_video.prep.manifests import BY_NAME, Wanted, check_unique, find_clips, read_lines, write_outputs

REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
LIST_NAMES = {"train": "train_ytid_list.txt", "val": "val_ytid_list.txt"}
CSV_SPLITS = ("train", "val", "test")  # the values of the split column


@dataclass(frozen=True)
class Annotation:
    """One Kinetics clip; ``where`` is its CSV file and line, ``split`` its CSV split
    (read only where the split column counts, else "")."""

    label: str
    start: int
    end: int
    where: str
    split: str = ""

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


def read_annotations(paths: Sequence[str], with_split: bool = False) -> Dict[str, Annotation]:
    """``{youtube_id: Annotation}`` from the Kinetics-400 CSVs.

    A CSV without a ``label`` column is skipped when it came from a folder and an
    error when named directly. A YouTube id annotated twice with different labels is
    an error naming both lines; of two rows with the same label the first is kept
    (the later one is ignored, whatever its times).

    Args:
        paths: CSV files, or folders of them.
        with_split: read each row's ``split`` (Kinetics-400): a column that is absent,
            a value not in ``CSV_SPLITS`` or an id in two splits is an error naming the line.
    """
    table: Dict[str, Annotation] = {}
    for path in annotation_files(paths):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "label" not in columns and path not in paths:
                continue
            required = REQUIRED_COLUMNS + (("split",) if with_split else ())
            absent = [c for c in required if c not in columns]
            if absent:
                raise ManifestError(f"{path}:1: missing column(s) {absent}; header is {columns}")
            for number, row in enumerate(reader, start=2):
                youtube_id, annotation = _annotation(row, f"{path}:{number}", with_split)
                old = table.get(youtube_id)
                if old is None:
                    table[youtube_id] = annotation
                elif old.label != annotation.label:
                    raise ManifestError(f"{annotation.where}: {youtube_id} labelled {annotation.label!r}, "
                                        f"but {old.label!r} on {old.where}")
                elif old.split != annotation.split:
                    raise ManifestError(f"{annotation.where}: {youtube_id} in split {annotation.split!r}, "
                                        f"but {old.split!r} on {old.where}")
    return table


def _annotation(row: Dict[str, str], where: str, with_split: bool) -> Tuple[str, Annotation]:
    """The YouTube id and Annotation of a CSV row (ManifestError naming ``where`` for a bad field)."""
    youtube_id, label = (row["youtube_id"] or "").strip(), (row["label"] or "").strip()
    if not youtube_id or not label:
        raise ManifestError(f"{where}: empty label or youtube_id")
    try:
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
    except (TypeError, ValueError) as error:
        raise ManifestError(f"{where}: bad time_start/time_end: {error}") from error
    split = (row["split"] or "").strip() if with_split else ""
    if with_split and split not in CSV_SPLITS:
        raise ManifestError(f"{where}: split {split!r} is not one of {list(CSV_SPLITS)}")
    return youtube_id, Annotation(label, start, end, where, split)


def read_ytid_list(path: str, table: Dict[str, Annotation]) -> List[str]:
    """YouTube ids of a list file; duplicates and ids without annotation are errors naming the line."""
    rows = read_lines(path)
    check_unique(rows, "YouTube id")
    for where, youtube_id in rows:
        if youtube_id not in table:
            raise ManifestError(f"{where}: YouTube id {youtube_id!r} is not in the annotation CSVs")
    return [youtube_id for _, youtube_id in rows]


def select_clips(
    table: Dict[str, Annotation],
    splits: Sequence[str],
    ids: Optional[Dict[str, List[str]]] = None,
) -> Tuple[List[str], Dict[str, List[Wanted]]]:
    """The classes and each split's wanted clips, for Kinetics-400 or a subset of it.

    Args:
        table: the annotations (``read_annotations``).
        splits: the splits to select (of ``train``, ``val``).
        ids: the id filter, ``{split: YouTube ids}`` (Mini-Kinetics: the lists give the
            clips and their split, the classes are the labels of the listed clips);
            None for all clips in the split of their CSV row, with all labels as classes.

    Returns:
        The class names sorted alphabetically, and ``{split: [Wanted]}`` in list or CSV order.
    """
    if ids is None:
        ids = {split: [y for y, a in table.items() if a.split == split] for split in splits}
        labels = {a.label for a in table.values()}
    else:
        labels = {table[y].label for split in splits for y in ids[split]}
    classes = sorted(labels)
    label_of = {name: i for i, name in enumerate(classes)}
    wanted = {
        split: [Wanted(table[y].names(y)[0], label_of[table[y].label], table[y].names(y)) for y in ids[split]]
        for split in splits
    }
    return classes, wanted


def write_kinetics_manifests(
    classes: List[str], wanted: Dict[str, List[Wanted]], root: str, out: str, check_videos: bool
) -> List[str]:
    """Find the ``wanted`` clips under ``root`` and write the manifests (test = val) to ``out``; the summary."""
    manifests, missing = find_clips(root, wanted, BY_NAME, check_videos)
    expected = {split: len(clips) for split, clips in wanted.items()}
    if "val" in manifests:
        manifests["test"], expected["test"] = manifests["val"], expected["val"]
    return write_outputs(out, classes, manifests, expected, missing)


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
    classes, wanted = select_clips(table, splits, ids)
    if num_classes and len(classes) != num_classes:
        raise ManifestError(f"the listed videos have {len(classes)} classes, expected {num_classes}")
    return write_kinetics_manifests(classes, wanted, root, out, check_videos)


def build_kinetics400(
    annotations: Sequence[str],
    root: str,
    out: str,
    splits: Sequence[str] = ("train", "val"),
    num_classes: int = 400,
    check_videos: bool = True,
) -> List[str]:
    """Write the Kinetics-400 manifests of ``splits`` (test = val); return the summary.

    Args:
        annotations: the CSV files (train.csv, validate.csv), or folders of them.
        root: the videos or frame folders, searched at any depth.
        out: folder of the outputs (``write_outputs``).
        splits: the CSV splits to build (of ``train``, ``val``).
        num_classes: the number of labels the CSVs must have (0: any).
        check_videos: open each video file's header.
    """
    table = read_annotations(annotations, with_split=True)
    classes, wanted = select_clips(table, splits)
    if num_classes and len(classes) != num_classes:
        raise ManifestError(f"the annotation CSVs have {len(classes)} classes, expected {num_classes}")
    for split, clips in wanted.items():
        if not clips:
            seen = sorted({a.split for a in table.values()})
            raise ManifestError(f"no row of the annotation CSVs has split {split!r} (they have {seen}); "
                                f"pass the CSV of that split, or build the others only (--splits)")
    return write_kinetics_manifests(classes, wanted, root, out, check_videos)
