"""Kinetics-400 manifests (``build_manifests.py kinetics400``) on the crawler layout
``ROOT/<split>/<class>/<ytid>_<start>_<end>.mp4``, and the annotation rules it shares
with Mini-Kinetics (which is Kinetics-400 filtered by the id lists)."""


import pytest

from cgnl_video.data.manifest import ManifestError, read_classes, read_manifest
from cgnl_video.prep.kinetics import build_kinetics400, build_minikinetics, read_annotations
from prep_helpers import load_script, missing_rows, place, read_out, shared, write_kinetics

FOOTBALL = "passing American football (in game)"
HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"
# (label, youtube_id, start, end); "yoga" is only in validate.csv, "zumba" only in train.csv
TRAIN_ROWS = [("zumba", "z-1_aaaaaa", 0, 10), (FOOTBALL, "f_2bbbbbbbb", 5, 15), ("abseiling", "a3ccccccccc", 7, 17)]
VAL_ROWS = [("yoga", "y4ddddddddd", 1, 11), (FOOTBALL, "-f5eeeeeeee", 30, 40), ("abseiling", "a6fffffffff", 2, 12)]
CLASSES = ["abseiling", FOOTBALL, "yoga", "zumba"]  # sorted by hand: the official order's rule


def csv_text(rows, split):
    """CSV rows as the Kinetics release writes them (labels with a comma or parenthesis quoted)."""
    return HEADER + "".join(f'"{label}",{ytid},{s},{e},{split},0\n' for label, ytid, s, e in rows)


def write_csvs(folder, train_rows=TRAIN_ROWS, val_rows=VAL_ROWS):
    folder.mkdir(exist_ok=True)
    (folder / "train.csv").write_text(csv_text(train_rows, "train"), encoding="utf-8")
    (folder / "validate.csv").write_text(csv_text(val_rows, "val"), encoding="utf-8")
    return [str(folder / "train.csv"), str(folder / "validate.csv")]


def crawler_clips(rows, split):
    return [(split, label, f"{ytid}_{s:06d}_{e:06d}") for label, ytid, s, e in rows]


@pytest.mark.parametrize("kind", ["video", "frames_indexed", "frames"])
@pytest.mark.parametrize("csvs", ["two files", "one file", "folder"])
def test_crawler_layout_all_classes_sorted_missing_listed(tmp_path, kind, csvs):
    annotations = write_csvs(tmp_path / "ann")
    if csvs == "one file":  # the split is the column's, not the file name's
        text = csv_text(TRAIN_ROWS, "train") + csv_text(VAL_ROWS, "val")[len(HEADER):]
        (tmp_path / "all.csv").write_text(text, encoding="utf-8")
        annotations = [str(tmp_path / "all.csv")]
    elif csvs == "folder":
        annotations = [str(tmp_path / "ann")]
    root, out = tmp_path / "root", tmp_path / "out"
    train = crawler_clips(TRAIN_ROWS, "train")
    val = crawler_clips(VAL_ROWS, "val")
    paths = place(root, train[:2] + val, "split_class", kind)  # abseiling's train clip is missing
    assert paths[1] == f"train/{FOOTBALL}/f_2bbbbbbbb_000005_000015" + (".mp4" if kind == "video" else "")
    summary = build_kinetics400(annotations, str(root), str(out), num_classes=4, check_videos=False)

    assert read_classes(str(out / "classes.txt")) == CLASSES
    manifests = read_out(out)
    frames = None if kind == "video" else 3
    assert [(e.path, e.label, e.num_frames) for e in manifests["train"]] == [
        (paths[0], 3, frames), (paths[1], 1, frames)]
    assert [(e.path, e.label) for e in manifests["val"]] == [(paths[2], 2), (paths[3], 1), (paths[4], 0)]
    assert manifests["test"] == manifests["val"]
    assert missing_rows(out) == [("train", "a3ccccccccc_000007_000017", "not found")]
    text = "\n".join(summary)
    assert "4 classes" in text and "train: found 2/3 (1 missing)" in text
    assert "val: found 3/3 (0 missing)" in text and "test: found 3/3" in text


def test_the_script_prints_found_of_expected_and_stops_when_none_is_found(tmp_path, capsys):
    annotations = write_csvs(tmp_path / "ann")
    root = tmp_path / "root"
    place(root, crawler_clips(TRAIN_ROWS, "train") + crawler_clips(VAL_ROWS[:1], "val"), "split_class", "video")
    args = ["kinetics400", "--k400-annotations", *annotations, "--root", str(root), "--out", str(tmp_path / "out"),
            "--num-classes", "4", "--no-check-videos"]
    cli = load_script("build_manifests")
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "train: found 3/3 (0 missing)" in printed and "val: found 1/3 (2 missing)" in printed
    assert len(read_manifest(str(tmp_path / "out" / "val.txt"), num_classes=4)) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    args[args.index("--root") + 1], args[args.index("--out") + 1] = str(empty), str(tmp_path / "out2")
    assert cli.main(args) == 2
    error = capsys.readouterr().err
    assert f"train: found 0 of 3 clips under {empty}" in error
    assert "ROOT/<split>/<class>/<name>.mp4" in error
    assert "Expected names of missing clips: z-1_aaaaaa_000000_000010 or z-1_aaaaaa" in error
    assert not (tmp_path / "out2" / "train.txt").exists()


def test_only_the_val_csv_builds_val_with_its_classes(tmp_path):
    annotations = write_csvs(tmp_path / "ann")
    place(tmp_path / "root", crawler_clips(VAL_ROWS, "val"), "split_class", "video")
    build_kinetics400(annotations[1:], str(tmp_path / "root"), str(tmp_path / "out"), splits=["val"],
                      num_classes=0, check_videos=False)
    assert read_classes(str(tmp_path / "out" / "classes.txt")) == ["abseiling", FOOTBALL, "yoga"]
    assert not (tmp_path / "out" / "train.txt").exists()
    with pytest.raises(ManifestError, match=r"no row of the annotation CSVs has split 'train' \(they have \['val'\]\)"):
        build_kinetics400(annotations[1:], str(tmp_path / "root"), str(tmp_path / "out"), num_classes=0)


@pytest.mark.parametrize(
    "train_text, message",
    [
        ("label,youtube_id,time_start,time_end\nzumba,z1,0,10\n", r"train.csv:1: missing column\(s\) \['split'\]"),
        (HEADER + "zumba,z1,0,10,validate,0\n",
         r"train.csv:2: split 'validate' is not one of \['train', 'val', 'test'\]"),
        (HEADER + "zumba,z1,0,10,train,0\nzumba,a6fffffffff,2,12,train,0\n",
         r"validate.csv:4: a6fffffffff labelled 'abseiling', but 'zumba' on .*train.csv:3"),
        (HEADER + "abseiling,a6fffffffff,2,12,train,0\n",
         r"validate.csv:4: a6fffffffff in split 'val', but 'train' on .*train.csv:2"),
        (HEADER + "zumba,z1,0,10,train,0\n", "the annotation CSVs have 4 classes, expected 400"),
    ],
)
def test_bad_annotations_name_the_line(tmp_path, train_text, message):
    annotations = write_csvs(tmp_path / "ann")
    (tmp_path / "ann" / "train.csv").write_text(train_text, encoding="utf-8")
    (tmp_path / "root").mkdir()
    with pytest.raises(ManifestError, match=message):
        build_kinetics400(annotations, str(tmp_path / "root"), str(tmp_path / "out"))


def test_an_id_annotated_twice_keeps_its_first_row(tmp_path):
    """The documented rule (read_annotations): of two rows of one YouTube id with the same
    label, the first is kept, so the clip is looked for under the first row's times."""
    rows = [("a class", "id1", 0, 10), ("a class", "id1", 30, 40), ("b class", "id2", 0, 10)]
    write_kinetics(tmp_path / "ann", rows, "id1\n", "id2\n")
    table = read_annotations([str(tmp_path / "ann" / "k400.csv")])
    assert (table["id1"].start, table["id1"].end, table["id1"].where.rsplit(":", 1)[1]) == (0, 10, "2")
    root = tmp_path / "root"
    place(root, [("train", "a class", "id1_000000_000010"), ("train", "a class", "id1_000030_000040"),
                 ("val", "b class", "id2_000000_000010")], "split_class", "video")
    build_minikinetics([str(tmp_path / "ann")], str(tmp_path / "ann"), str(root), str(tmp_path / "out"),
                       num_classes=2, check_videos=False)
    assert [e.path for e in read_out(tmp_path / "out")["train"]] == ["train/a class/id1_000000_000010.mp4"]


def test_minikinetics_is_kinetics400_filtered_by_the_id_lists(tmp_path):
    """On the official Mini-Kinetics val rows (the shared Kinetics-400 sample) both builders
    give the same clips, labels and class order."""
    csv_file = shared("minikinetics200", "kinetics400_val_subset_k200.csv")
    lists = shared("minikinetics200")
    table = read_annotations([csv_file], with_split=True)
    assert {a.split for a in table.values()} == {"val"} and len(table) == 5000
    root = tmp_path / "root"
    place(root, [("val", a.label, a.names(y)[0]) for y, a in list(table.items())[:-2]], "split_class", "video")
    build_kinetics400([csv_file], str(root), str(tmp_path / "k400"), splits=["val"], num_classes=0, check_videos=False)
    build_minikinetics([csv_file], lists, str(root), str(tmp_path / "mini"), splits=["val"], check_videos=False)
    k400_classes = read_classes(str(tmp_path / "k400" / "classes.txt"))
    assert k400_classes == read_classes(str(tmp_path / "mini" / "classes.txt")) == sorted(k400_classes)
    assert k400_classes[0] == "abseiling"
    k400, mini = (read_manifest(str(tmp_path / name / "val.txt"), num_classes=200) for name in ("k400", "mini"))
    assert len(k400) == 4998 and sorted(k400, key=lambda e: e.path) == sorted(mini, key=lambda e: e.path)
    assert sorted(missing_rows(tmp_path / "k400")) == sorted(missing_rows(tmp_path / "mini"))
