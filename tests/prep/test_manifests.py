"""Manifest builders: official split files over a fabricated root, and the edge cases."""

import csv
import os

import numpy as np
import pytest

from cgnl_video.data.manifest import ManifestError, read_classes, read_manifest
from cgnl_video.prep import index as idx
from cgnl_video.prep.generic import build_generic
from cgnl_video.prep.kinetics import build_minikinetics
from cgnl_video.prep.synthetic import encode_mp4
from cgnl_video.prep.ucf101 import build_ucf101
from prep_helpers import load_script, missing_rows, read_out, shared, write_kinetics, write_ucf_lists
from repo_paths import ROOT

REPO = ROOT
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")


def fabricate_frames_root(root, stems, frames_of=lambda i: 10 + i % 7):
    """Empty frame folders plus an extraction index: a frames root without any JPEG."""
    entries = {}
    for i, stem in enumerate(stems):
        os.makedirs(os.path.join(root, stem), exist_ok=True)
        entries[stem] = idx.IndexEntry(stem, frames_of(i), 25.0, 340, 256)
    idx.write_index(str(root), entries)
    return entries


def test_ucf101_official_split1(tmp_path):
    annotations = shared("ucf101")
    clips = []
    for name in ("trainlist01.txt", "testlist01.txt"):
        with open(os.path.join(annotations, name), encoding="utf-8") as handle:
            clips += [line.split()[0] for line in handle if line.strip()]
    root = tmp_path / "frames"
    entries = fabricate_frames_root(root, [os.path.splitext(c)[0] for c in clips[:-2]])
    out = tmp_path / "out"
    summary = build_ucf101(annotations, 1, str(root), str(out))
    classes = read_classes(str(out / "classes.txt"))
    manifests = read_out(out)
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    assert len(manifests["train"]) == 9537
    assert len(manifests["test"]) == 3783 - 2 and manifests["val"] == manifests["test"]
    assert [row[:2] for row in missing_rows(out)] == [("test", c) for c in clips[-2:]]
    first = manifests["train"][0]
    assert (first.path, first.label, first.num_frames) == (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", 0, entries["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"].num_frames)
    assert {e.label for e in manifests["test"]} == set(range(101))
    assert "train: found 9537/9537" in "\n".join(summary)


CLASSIND = "1 Archery\r\n2 Biking\r\n\r\n"


def test_ucf101_video_root_edge_cases(tmp_path):
    lists, root = tmp_path / "lists", tmp_path / "videos"
    write_ucf_lists(
        lists, CLASSIND,
        "Archery/v_Archery_g01_c01.avi 1\r\n\r\nBiking/v_Biking_g01_c01.avi 2\r\nBiking/v_Biking_g01_c02.avi 2\r\n",
        "Archery/v_Archery_g02_c01.avi\r\nBiking/v_Biking_g02_c01.avi\r\nBiking/v_Biking_g02_c02.avi\r\n",
    )
    (root / "Archery").mkdir(parents=True)
    (root / "Biking").mkdir()
    clip = np.zeros((4, 32, 32, 3), np.uint8)
    encode_mp4(str(root / "Archery" / "v_Archery_g01_c01.mp4"), clip, 25)  # other extension: found
    (root / "Biking" / "v_Biking_g01_c01.avi").write_bytes(b"")  # empty
    (root / "Biking" / "v_Biking_g01_c02.avi").write_text("not a video")  # unreadable
    (root / "Archery" / "v_Archery_g02_c01").mkdir()  # frame folder without index: counted
    for k in range(1, 4):
        (root / "Archery" / "v_Archery_g02_c01" / f"{k:06d}.jpg").write_bytes(b"jpeg")
    (root / "Biking" / "v_Biking_g02_c01").mkdir()  # empty frame folder
    (root / "Biking" / ".v_Biking_g02_c02.part").mkdir()  # an unfinished extraction
    out = tmp_path / "out"
    build_ucf101(str(lists), 1, str(root), str(out))
    manifests = read_out(out)
    assert [(e.path, e.num_frames, e.label) for e in manifests["train"]] == [("Archery/v_Archery_g01_c01.mp4", None, 0)]
    assert [(e.path, e.num_frames, e.label) for e in manifests["test"]] == [("Archery/v_Archery_g02_c01", 3, 0)]
    reasons = {clip: reason for _, clip, reason in missing_rows(out)}
    assert reasons["Biking/v_Biking_g01_c01.avi"] == "empty file Biking/v_Biking_g01_c01.avi (0 bytes)"
    assert "unreadable" in reasons["Biking/v_Biking_g01_c02.avi"]
    assert reasons["Biking/v_Biking_g02_c01.avi"] == "empty frame folder Biking/v_Biking_g02_c01"
    assert reasons["Biking/v_Biking_g02_c02.avi"] == "not found"


@pytest.mark.parametrize(
    "classind, train, test, message",
    [
        (CLASSIND, "Archery/a.avi 1\nArchery/a.avi 1\n", "", "trainlist01.txt:2: duplicate clip 'Archery/a.avi'"),
        (CLASSIND, "Archery/a.avi 2\n", "", "trainlist01.txt:1: id 2 (Biking) does not match"),
        (CLASSIND, "Archery/a.avi 3\n", "", "trainlist01.txt:1: class id must be 1..2"),
        (CLASSIND, "", "\r\nRowing/b.avi\r\n", "testlist01.txt:2: unknown class folder 'Rowing'"),
        ("1 Archery\n1 Biking\n", "", "", "classInd.txt:2: class id 1 given twice"),
        ("1 Archery\n3 Biking\n", "", "", "class ids must be 1..2"),
        (CLASSIND, "Archery/a.avi 1\n", "Archery/a.avi\n", "in both the train and the test list"),
    ],
)
def test_ucf101_bad_lists_name_the_line(tmp_path, classind, train, test, message):
    write_ucf_lists(tmp_path / "lists", classind, train, test)
    (tmp_path / "root").mkdir()
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_ucf101(str(tmp_path / "lists"), 1, str(tmp_path / "root"), str(tmp_path / "out"))


def test_minikinetics_val_join_and_name_variants(tmp_path):
    csv_file = shared("minikinetics200", "kinetics400_val_subset_k200.csv")
    lists = shared("minikinetics200")
    with open(csv_file, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(os.path.join(lists, "val_ytid_list.txt"), encoding="utf-8") as handle:
        val_ids = [line.strip() for line in handle if line.strip()]
    assert len(val_ids) == 5000
    row_of = {row["youtube_id"]: row for row in rows}
    root = tmp_path / "root"
    stems, videos = [], []
    for i, ytid in enumerate(val_ids[:-3]):  # the last three are missing
        row = row_of[ytid]
        full = f"{ytid}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
        if i % 3 == 0:
            stems.append(os.path.join(row["label"], full))  # class folder, frame folder
        elif i % 3 == 1:
            stems.append(ytid)  # flat, bare id, frame folder
        else:
            videos.append(os.path.join(row["label"].replace(" ", "_"), full + ".mp4"))  # video file
    fabricate_frames_root(root, stems)
    os.remove(root / idx.INDEX_NAME)  # no index: the frame folders are found by scanning
    for k, stem in enumerate(stems[:50]):
        (root / stem / "000001.jpg").write_bytes(b"x")
    for video in videos:
        os.makedirs(root / os.path.dirname(video), exist_ok=True)
        (root / video).write_bytes(b"x")  # contents are not checked with check_videos=False
    out = tmp_path / "out"
    build_minikinetics([csv_file], lists, str(root), str(out), splits=["val"], check_videos=False)
    classes = read_classes(str(out / "classes.txt"))
    assert len(classes) == 200 and classes == sorted(classes) and classes[0] == "abseiling"
    val = read_manifest(str(out / "val.txt"), num_classes=200)
    assert len(val) == 5000 - 3 - (len(stems) - 50)  # frame folders without JPEGs are empty
    assert read_manifest(str(out / "test.txt")) == val and not (out / "train.txt").exists()
    by_name = {os.path.basename(e.path).split(".")[0]: e for e in val}
    first = val_ids[0]
    entry = by_name[f"{first}_{int(row_of[first]['time_start']):06d}_{int(row_of[first]['time_end']):06d}"]
    assert classes[entry.label] == row_of[first]["label"] and entry.num_frames == 1
    assert any(e.path.endswith(".mp4") for e in val) and any(e.path == val_ids[1] for e in val)
    missing = missing_rows(out)
    assert [m[1].split("_")[0] for m in missing[-3:]] == [y.split("_")[0] for y in val_ids[-3:]]


ROWS = [("b class", "id1", 1, 11), ("a class", "id2", 0, 10), ("b class", "-d_3", 5, 15)]


def test_minikinetics_small_lists(tmp_path):
    write_kinetics(tmp_path / "ann", ROWS, "id1\r\n\r\nid2\r\n", "-d_3\r\n")
    root = tmp_path / "root"
    fabricate_frames_root(root, ["b class/id1_000001_000011", "-d_3"])
    idx.write_failures(str(root), {"a class/id2_000000_000010.mp4": ("failed", "unreadable: bad data")})
    build_minikinetics([str(tmp_path / "ann")], str(tmp_path / "ann"), str(root), str(tmp_path / "out"),
                       num_classes=2)
    assert read_classes(str(tmp_path / "out" / "classes.txt")) == ["a class", "b class"]
    manifests = read_out(tmp_path / "out")
    assert [(e.path, e.label) for e in manifests["train"]] == [("b class/id1_000001_000011", 1)]
    assert [(e.path, e.label) for e in manifests["val"]] == [("-d_3", 1)] and manifests["test"] == manifests["val"]
    assert missing_rows(tmp_path / "out") == [
        ("train", "id2_000000_000010", "frame extraction failed: unreadable: bad data")]


@pytest.mark.parametrize(
    "rows, train, val, message",
    [
        (ROWS, "id1\nid9\n", "", "train_ytid_list.txt:2: YouTube id 'id9' is not in the annotation CSVs"),
        (ROWS, "id1\r\nid1\r\n", "", "train_ytid_list.txt:2: duplicate YouTube id 'id1'"),
        (ROWS, "id1\n", "id1\n", "duplicate YouTube id in two splits 'id1'"),
        (ROWS + [("c class", "id1", 1, 11)], "id1\n", "", "k400.csv:5: id1 labelled 'c class', but 'b class' on"),
        (ROWS, "id1\n", "-d_3\n", "the listed videos have 1 classes, expected 200"),
    ],
)
def test_minikinetics_bad_input_names_the_line(tmp_path, rows, train, val, message):
    write_kinetics(tmp_path / "ann", rows, train, val)
    (tmp_path / "root").mkdir()
    with pytest.raises(ManifestError, match=message):
        build_minikinetics([str(tmp_path / "ann" / "k400.csv")], str(tmp_path / "ann"), str(tmp_path / "root"),
                           str(tmp_path / "out"))


def test_generic_lists(tmp_path):
    lists, root = tmp_path / "lists", tmp_path / "root"
    lists.mkdir()
    (lists / "train.txt").write_text("my videos/clip 1.mp4\tjump\nother.mp4 run\n\n", encoding="utf-8")
    (lists / "test.txt").write_text("ünï.mp4 run\r\n", encoding="utf-8")
    fabricate_frames_root(root, ["my videos/clip 1", "other", "ünï"])
    build_generic(str(lists), str(root), str(tmp_path / "out"))
    assert read_classes(str(tmp_path / "out" / "classes.txt")) == ["jump", "run"]
    manifests = read_out(tmp_path / "out")
    assert [(e.path, e.label) for e in manifests["train"]] == [("my videos/clip 1", 0), ("other", 1)]
    assert manifests["val"] == manifests["test"] == [manifests["test"][0]] and manifests["test"][0].path == "ünï"

    (lists / "classes.txt").write_text("run\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="train.txt:1: unknown class 'jump'"):
        build_generic(str(lists), str(root), str(tmp_path / "out"))


def test_cli_help_and_error_exit(tmp_path, capsys):
    cli = load_script("build_manifests")
    assert cli.main(["generic", "--list-dir", str(tmp_path), "--root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no train.txt, val.txt or test.txt" in capsys.readouterr().err
    for command in ("ucf101", "minikinetics", "generic"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert "--root" in text and "--out" in text
