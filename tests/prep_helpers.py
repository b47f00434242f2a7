"""Helpers for the manifest-builder tests in tests/prep/ (no tests here): the official
split files when present, fabricated data roots and list files, and the data_prep scripts."""

import importlib.util
import os

import pytest

from cgnl_video.data.manifest import read_manifest
from cgnl_video.prep import index as idx
from repo_paths import ROOT

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def shared(*parts: str) -> str:
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"official split files not available ({path})")
    return path


def read_out(out):
    return {s: read_manifest(os.path.join(out, f"{s}.txt")) for s in ("train", "val", "test")}


def missing_rows(out):
    lines = open(os.path.join(out, "missing.txt"), encoding="utf-8").read().splitlines()
    assert lines[0] == "split\tclip\treason"
    return [tuple(line.split("\t")) for line in lines[1:]]


def write_ucf_lists(folder, classind, train, test):
    folder.mkdir(exist_ok=True)
    (folder / "classInd.txt").write_bytes(classind.encode())
    (folder / "trainlist01.txt").write_bytes(train.encode())
    (folder / "testlist01.txt").write_bytes(test.encode())


def write_kinetics(folder, rows, train_ids, val_ids):
    folder.mkdir(exist_ok=True)
    with open(folder / "k400.csv", "w", encoding="utf-8", newline="") as handle:
        handle.write("label,youtube_id,time_start,time_end,split\n")
        handle.writelines(f"{label},{ytid},{s},{e},train\n" for label, ytid, s, e in rows)
    (folder / "train_ytid_list.txt").write_bytes(train_ids.encode())
    (folder / "val_ytid_list.txt").write_bytes(val_ids.encode())


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "data_prep", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def place(root, clips, layout, kind):
    """Put ``(split, class, name)`` clips under ``root`` in ``layout``; returns their paths."""
    paths = []
    for split, label, name in clips:
        folders = {"flat": [], "class": [label], "split_class": [split, label], "split": [split]}[layout]
        stem = "/".join(folders + [name])
        if kind == "video":
            os.makedirs(os.path.dirname(os.path.join(root, stem)) or root, exist_ok=True)
            with open(os.path.join(root, stem + ".mp4"), "wb") as handle:
                handle.write(b"x")  # contents are not read with check_videos=False
            paths.append(stem + ".mp4")
        else:
            os.makedirs(os.path.join(root, stem))
            for k in range(1, 4):
                with open(os.path.join(root, stem, f"{k:06d}.jpg"), "wb") as handle:
                    handle.write(b"x")
            paths.append(stem)
    if kind == "frames_indexed":
        idx.write_index(str(root), {p: idx.IndexEntry(p, 3, 25.0, 340, 256) for p in paths})
    return paths
