"""Manifest builders on every folder layout of a data root, and what they say when
clips are not found (error, warning, duplicates): the crawler layout of Kinetics
(``ROOT/train/<class>/<ytid>_<start>_<end>.mp4``) included."""

import csv
import logging
import os

import pytest

from cgnl_video.data.manifest import ManifestError, read_classes, read_manifest
from cgnl_video.prep import tree
from cgnl_video.prep.generic import build_generic
from cgnl_video.prep.kinetics import build_minikinetics
from cgnl_video.prep.ucf101 import build_ucf101
from log_capture import Said
from prep_helpers import load_script, place, read_out, shared, write_kinetics, write_ucf_lists

LAYOUTS = ("flat", "class", "split_class", "split")
KINDS = ("video", "frames", "frames_indexed")


KINETICS_ROWS = [("b class", "id1", 1, 11), ("a class", "id2", 0, 10), ("b class", "-d_3", 5, 15)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_minikinetics_any_layout(tmp_path, layout, kind):
    write_kinetics(tmp_path / "ann", KINETICS_ROWS, "id1\nid2\n", "-d_3\n")
    clips = [("train", "b class", "id1_000001_000011"), ("train", "a class", "id2"),
             ("val", "b class", "-d_3_000005_000015")]
    paths = place(tmp_path / "root", clips, layout, kind)
    build_minikinetics([str(tmp_path / "ann")], str(tmp_path / "ann"), str(tmp_path / "root"), str(tmp_path / "out"),
                       num_classes=2, check_videos=False)
    manifests = read_out(tmp_path / "out")
    frames = None if kind == "video" else 3
    assert [(e.path, e.label, e.num_frames) for e in manifests["train"]] == [(paths[0], 1, frames),
                                                                              (paths[1], 0, frames)]
    assert [(e.path, e.label) for e in manifests["val"]] == [(paths[2], 1)] and manifests["test"] == manifests["val"]


UCF_TRAIN = "Archery/v_Archery_g01_c01.avi 1\r\nBiking/v_Biking_g01_c01.avi 2\r\n"
UCF_TEST = "Archery/v_Archery_g02_c01.avi\r\nBiking/v_Biking_g02_c01.avi\r\n"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ucf101_any_layout(tmp_path, layout, kind):
    write_ucf_lists(tmp_path / "lists", "1 Archery\r\n2 Biking\r\n", UCF_TRAIN, UCF_TEST)
    clips = [(split, line.split("/")[0], line.split("/")[1].split(".")[0])
             for split, text in (("train", UCF_TRAIN), ("test", UCF_TEST))
             for line in text.split()[::2 if split == "train" else 1]]
    paths = place(tmp_path / "root", clips, layout, kind)
    build_ucf101(str(tmp_path / "lists"), 1, str(tmp_path / "root"), str(tmp_path / "out"), check_videos=False)
    manifests = read_out(tmp_path / "out")
    assert [(e.path, e.label) for e in manifests["train"]] == [(paths[0], 0), (paths[1], 1)]
    assert [(e.path, e.label) for e in manifests["test"]] == [(paths[2], 0), (paths[3], 1)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_generic_lists_of_names_any_layout(tmp_path, layout, kind):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("a.mp4 jump\nb.mp4 run\n", encoding="utf-8")
    (lists / "test.txt").write_text("c.mp4 run\n", encoding="utf-8")
    paths = place(tmp_path / "root", [("train", "jump", "a"), ("train", "run", "b"), ("test", "run", "c")],
                  layout, kind)
    build_generic(str(lists), str(tmp_path / "root"), str(tmp_path / "out"), check_videos=False)
    manifests = read_out(tmp_path / "out")
    assert [(e.path, e.label) for e in manifests["train"]] == [(paths[0], 0), (paths[1], 1)]
    assert [(e.path, e.label) for e in manifests["test"]] == [(paths[2], 1)]


def test_generic_names_repeated_across_folders_are_never_swapped(tmp_path):
    """The synthetic set has train/disc/disc_000 and test/disc/disc_000: a train clip
    missing from the root must not be replaced by the test clip of the same name."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("train/disc/disc_000.mp4 disc\ntrain/disc/disc_001.mp4 disc\n")
    (lists / "test.txt").write_text("test/disc/disc_000.mp4 disc\n")
    root = tmp_path / "root"
    place(root, [("train", "disc", "disc_001"), ("test", "disc", "disc_000")], "split_class", "video")
    build_generic(str(lists), str(root), str(tmp_path / "out"), check_videos=False)
    manifests = read_out(tmp_path / "out")
    assert [e.path for e in manifests["train"]] == ["train/disc/disc_001.mp4"]
    missing = open(tmp_path / "out" / "missing.txt").read().splitlines()[1:]
    assert missing == ["train\ttrain/disc/disc_000.mp4\tnot found; test/disc/disc_000.mp4 has its name "
                       "but lies in other folders than the list says"]
    # A root one level up (the list is relative to videos/) or a flat one agrees with the list from the end.
    os.rename(root, tmp_path / "videos")
    os.makedirs(root)
    os.rename(tmp_path / "videos", root / "videos")
    (lists / "train.txt").write_text("train/disc/disc_001.mp4 disc\n")
    build_generic(str(lists), str(root), str(tmp_path / "out"), check_videos=False)
    assert [e.path for e in read_out(tmp_path / "out")["train"]] == ["videos/train/disc/disc_001.mp4"]


def test_kinetics_crawler_layout_with_the_official_val_list(tmp_path):
    """``ROOT/val/<class>/<ytid>_<start>_<end>.mp4`` (and its extracted-frames twin):
    every clip found, at three folders' depth."""
    csv_file = shared("minikinetics200", "kinetics400_val_subset_k200.csv")
    lists = shared("minikinetics200")
    with open(csv_file, encoding="utf-8") as handle:
        rows = {row["youtube_id"]: row for row in csv.DictReader(handle)}
    with open(os.path.join(lists, "val_ytid_list.txt"), encoding="utf-8") as handle:
        val_ids = [line.strip() for line in handle if line.strip()]
    clips = [("val", rows[y]["label"], f"{y}_{int(rows[y]['time_start']):06d}_{int(rows[y]['time_end']):06d}")
             for y in val_ids]
    for kind in ("video", "frames_indexed"):
        root, out = tmp_path / kind, tmp_path / f"out_{kind}"
        paths = place(root, clips[:-1], "split_class", kind)  # the last clip is missing
        summary = build_minikinetics([csv_file], lists, str(root), str(out), splits=["val"], check_videos=False)
        val = read_manifest(str(out / "val.txt"), num_classes=200)
        assert [e.path for e in val] == paths and len(paths) == 4999
        classes = read_classes(str(out / "classes.txt"))
        assert all(classes[e.label] == p.split("/")[1] for e, p in zip(val, paths))
        assert "val: found 4999/5000" in "\n".join(summary)


def test_ucf101_split_folders_with_the_official_split1(tmp_path):
    annotations = shared("ucf101")
    clips = []
    for split, name in (("train", "trainlist01.txt"), ("test", "testlist01.txt")):
        with open(os.path.join(annotations, name), encoding="utf-8") as handle:
            clips += [(split, *line.split()[0].split(".")[0].split("/")) for line in handle if line.strip()]
    paths = place(tmp_path / "root", clips, "split_class", "video")
    build_ucf101(annotations, 1, str(tmp_path / "root"), str(tmp_path / "out"), check_videos=False)
    manifests = read_out(tmp_path / "out")
    assert [e.path for e in manifests["train"]] == paths[:9537]
    assert [e.path for e in manifests["test"]] == paths[9537:] and len(paths) == 9537 + 3783


def kinetics_cli(tmp_path, root):
    return ["minikinetics", "--k400-annotations", str(tmp_path / "ann"), "--ytid-lists", str(tmp_path / "ann"),
            "--root", str(root), "--out", str(tmp_path / "out"), "--num-classes", "2", "--no-check-videos"]


def test_no_clip_found_is_an_error_that_explains(tmp_path, capsys):
    write_kinetics(tmp_path / "ann", KINETICS_ROWS, "id1\nid2\n", "-d_3\n")
    root = tmp_path / "root"
    place(root, [("train", "b class", "id1-renamed")], "split_class", "video")
    cli = load_script("build_manifests")
    assert cli.main(kinetics_cli(tmp_path, root)) == 2
    error = capsys.readouterr().err
    assert f"train: found 0 of 2 clips under {root}" in error
    assert f"Searched 3 folder(s) under {root}: 1 video file(s) and frame folder(s) such as " \
           "train/b class/id1-renamed.mp4" in error
    assert "ROOT/<split>/<class>/<name>.mp4" in error and "ROOT/<class>/<name>.mp4" in error
    assert "Expected names of missing clips: id1_000001_000011 or id1, id2_000000_000010 or id2" in error
    assert not os.path.exists(tmp_path / "out" / "train.txt")  # no empty manifest


def test_a_list_without_clips_is_an_error(tmp_path):
    write_kinetics(tmp_path / "ann", KINETICS_ROWS, "id1\n", "")
    place(tmp_path / "root", [("train", "b class", "id1")], "flat", "video")
    with pytest.raises(ManifestError, match="val: the list holds no clip"):
        build_minikinetics([str(tmp_path / "ann")], str(tmp_path / "ann"), str(tmp_path / "root"),
                           str(tmp_path / "out"), num_classes=0, check_videos=False)
    assert not os.path.exists(tmp_path / "out" / "val.txt")


def test_fewer_than_half_found_is_a_warning_with_the_same_help(tmp_path):
    ids = [f"id{k}" for k in range(5)]
    rows = [("a class", y, 0, 10) for y in ids]
    write_kinetics(tmp_path / "ann", rows, "\n".join(ids) + "\n", "")
    root = tmp_path / "root"
    place(root, [("train", "a class", "id0_000000_000010"), ("train", "a class", "id1")], "flat", "frames")
    build = lambda: build_minikinetics([str(tmp_path / "ann")], str(tmp_path / "ann"), str(root),  # noqa: E731
                                       str(tmp_path / "out"), splits=["train"], num_classes=1, check_videos=False)
    with Said.on_package_logger() as said:
        build()
    assert len(read_manifest(str(tmp_path / "out" / "train.txt"))) == 2
    warnings = [message for level, message in said.messages if level == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"train: found 2 of 5 clips under {root}")
    assert "ROOT/<split>/<name>.mp4" in warnings[0] and "id2_000000_000010 or id2, id3" in warnings[0]
    place(root, [("train", "a class", "id2")], "flat", "frames")  # half or more found: no warning
    with Said.on_package_logger() as said:
        build()
    assert not [message for level, message in said.messages if level == logging.WARNING]


def test_the_same_clip_at_two_paths_is_an_error_naming_both(tmp_path, capsys):
    write_kinetics(tmp_path / "ann", KINETICS_ROWS, "id1\nid2\n", "-d_3\n")
    root = tmp_path / "root"
    place(root, [("train", "b class", "id1_000001_000011"), ("train", "a class", "id2"),
                 ("val", "b class", "-d_3")], "split_class", "video")
    place(root, [("val", "b class", "id1_000001_000011")], "split_class", "video")  # downloaded twice
    cli = load_script("build_manifests")
    assert cli.main(kinetics_cli(tmp_path, root)) == 2
    error = capsys.readouterr().err
    assert "clip 'id1_000001_000011' is under" in error
    assert "train/b class/id1_000001_000011.mp4" in error and "val/b class/id1_000001_000011.mp4" in error


def test_walk_stops_at_frame_folders_skips_hidden_and_loops(tmp_path, monkeypatch):
    root = tmp_path / "root"
    place(root, [("train", "c", "wanted"), ("train", "c", "unwanted")], "split_class", "frames")
    for k in range(4, 60):
        (root / "train" / "c" / "unwanted" / f"{k:06d}.jpg").write_bytes(b"x")
    (root / "train" / "c" / ".x.part").mkdir()  # an unfinished extraction
    (root / "train" / "c" / ".x.part" / "x.mp4").write_bytes(b"x")
    (root / "train" / "c" / "v.MP4").write_bytes(b"x")
    os.symlink(root, root / "train" / "loop")
    os.symlink(tmp_path / "nowhere", root / "broken")
    listed = {}
    real_scandir = os.scandir

    class Counting:
        def __init__(self, path):
            self.entries, self.path = real_scandir(path), os.path.relpath(path, root)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.entries.close()

        def __iter__(self):
            for entry in self.entries:
                listed[self.path] = listed.get(self.path, 0) + 1
                yield entry

    monkeypatch.setattr(os, "scandir", Counting)
    catalog = tree.walk(str(root), {"wanted"})
    monkeypatch.undo()
    assert catalog.paths == {"wanted": ["train/c/wanted"], "unwanted": ["train/c/unwanted"], "v": ["train/c/v.MP4"]}
    assert listed[os.path.join("train", "c", "unwanted")] == 1  # stopped at its first JPEG
    assert os.path.join("train", "c", "wanted") not in listed  # a wanted name: not entered
    assert catalog.searched == f"4 folder(s) under {root}"  # root, train, train/c, train/c/unwanted


def test_crawler_videos_then_their_frames_through_the_scripts(tmp_path, capsys):
    """What a user does: Kinetics crawled into train/<class>/ and val/<class>/, frames
    extracted (the tree mirrored), manifests built from either root by the scripts."""
    import numpy as np

    from cgnl_video.prep.synthetic import encode_mp4

    write_kinetics(tmp_path / "ann", KINETICS_ROWS, "id1\nid2\n", "-d_3\n")
    videos, frames = tmp_path / "kinetics" / "videos", tmp_path / "kinetics" / "frames"
    clips = [("train", "b class", "id1_000001_000011"), ("train", "a class", "id2_000000_000010"),
             ("val", "b class", "-d_3_000005_000015")]
    for k, (split, label, name) in enumerate(clips):
        os.makedirs(videos / split / label, exist_ok=True)
        encode_mp4(str(videos / split / label / f"{name}.mp4"), np.full((5, 32, 32, 3), 50 * k, np.uint8), 25)
    assert load_script("extract_frames").main(["--src", str(videos), "--dst", str(frames), "--workers", "1",
                                               "--short-side", "32", "--no-progress"]) == 0
    cli = load_script("build_manifests")
    for root, out in ((videos, "from_videos"), (frames, "from_frames")):
        args = kinetics_cli(tmp_path, root)
        args[args.index("--out") + 1] = str(tmp_path / out)
        assert cli.main(args[:-1]) == 0  # the videos are opened and checked
        assert "train: found 2/2" in capsys.readouterr().out
        manifests = read_out(tmp_path / out)
        suffix = ".mp4" if root == videos else ""
        assert [(e.path, e.label) for e in manifests["train"]] == [
            (f"train/b class/id1_000001_000011{suffix}", 1), (f"train/a class/id2_000000_000010{suffix}", 0)]
        assert [e.path for e in manifests["val"]] == [f"val/b class/-d_3_000005_000015{suffix}"]
        assert all(e.num_frames == (None if suffix else 5) for e in manifests["train"])
