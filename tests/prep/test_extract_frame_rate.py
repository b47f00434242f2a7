"""Frame extraction keeps the right source frames when it changes the frame rate.

The source video shows a bright bar that moves 1 pixel per frame, so the bar's
position in an extracted JPEG says which source frame it is. Output frame k sits at
time k / fps and shows the source frame on screen then: source frame
floor(k * rate / fps) (frames dropped to lower the rate, repeated to raise it).

Also: a killed re-extraction's journal line wins over the older index line, and
videos whose extension is in upper or mixed case (``.AVI``, ``.Avi``) are found by
the manifest builders as they are by the walk.
"""

import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from cgnl_video.data.manifest import read_manifest
from cgnl_video.prep import extract as ex
from cgnl_video.prep import index as idx
from cgnl_video.prep import tree
from cgnl_video.prep.generic import build_generic
from cgnl_video.prep.synthetic import encode_mp4

SOURCE_FPS, SOURCE_FRAMES, BAR = 30, 30, 4  # the bar covers columns i .. i + 3 in frame i
WIDTH, HEIGHT = 64, 16


def _bar_video(path: str) -> None:
    frames = np.full((SOURCE_FRAMES, HEIGHT, WIDTH, 3), 20, np.uint8)
    for i in range(SOURCE_FRAMES):
        frames[i, :, i:i + BAR] = 235
    encode_mp4(path, frames, SOURCE_FPS, crf=8)


def _bar_position(path: str) -> int:
    """Left column of the bar: the centroid of the brightness above the background."""
    with Image.open(path) as image:
        profile = np.asarray(image.convert("L"), dtype=np.float64).mean(axis=0) - 20.0
    profile = profile.clip(min=0.0)
    centroid = float((profile * np.arange(WIDTH)).sum() / profile.sum())
    return round(centroid - (BAR - 1) / 2)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    src = tmp_path_factory.mktemp("bar")
    _bar_video(str(src / "bar.mp4"))
    return src


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize("fps", [12, 45])
def test_extracted_frames_show_the_source_frame_on_screen_at_their_time(source, tmp_path, monkeypatch,
                                                                        decoder, fps):
    if decoder == "pyav":  # decord unusable: the extraction (in this process) falls back to PyAV
        import decord

        def broken(*args, **kwargs):
            raise RuntimeError("decord cannot open this")

        monkeypatch.setattr(decord, "VideoReader", broken)
    dst = tmp_path / "frames"
    outcome = ex.extract_video(ex.Task(str(source), str(dst), "bar.mp4", ex.ExtractOptions(short_side=0, fps=fps)))
    count = math.ceil(SOURCE_FRAMES * fps / SOURCE_FPS)  # 12 fps: 12 frames; 45 fps: 45
    assert outcome.problem is None and outcome.entry.num_frames == count
    names = sorted(os.listdir(dst / "bar"))
    assert len(names) == count
    positions = [_bar_position(str(dst / "bar" / name)) for name in names]
    # 12 fps: every 2.5 source frames; 45 fps: every 2/3 of a source frame.
    expected = [math.floor(k * SOURCE_FPS / fps + 1e-9) for k in range(count)]
    by_hand = {12: [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27], 45: [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]}
    assert expected[:12] == by_hand[fps]
    assert positions == expected


def test_a_video_whose_frame_folder_was_deleted_is_extracted_again(source, tmp_path):
    dst = tmp_path / "frames"
    options = ex.ExtractOptions(short_side=0, fps=12)
    first = ex.extract_all(str(source), str(dst), options=options, progress=False)
    assert (first.done, first.skipped) == (1, 0)
    shutil.rmtree(dst / "bar")  # still listed in the index
    again = ex.extract_all(str(source), str(dst), options=options, progress=False)
    assert (again.done, again.skipped, again.failed) == (1, 0, 0)
    assert len(os.listdir(dst / "bar")) == 12


def test_a_killed_re_extraction_s_journal_line_wins_over_the_older_index_line(source, tmp_path):
    """Run 1 extracts the bar video at 12 fps (indexed: 12 frames). Its frame folder is
    deleted and run 2 extracts it again at 45 fps, journals it, and is killed before it
    folds the journal into the index (``extract_video`` then the journal line, as
    ``extract_all`` does per video). The index still says 12 frames, the journal 45:
    the journal is newer, and every reader must take it."""
    dst = tmp_path / "frames"
    first = ex.extract_all(str(source), str(dst), options=ex.ExtractOptions(short_side=0, fps=12), progress=False)
    assert first.done == 1 and idx.read_index(str(dst))["bar"].num_frames == 12
    shutil.rmtree(dst / "bar")
    outcome = ex.extract_video(ex.Task(str(source), str(dst), "bar.mp4", ex.ExtractOptions(short_side=0, fps=45)))
    idx.append_journal(str(dst), outcome.entry)  # ... and the run is killed here
    assert len(os.listdir(dst / "bar")) == 45

    assert idx.read_index(str(dst))["bar"].num_frames == 45
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("bar.mp4 bar\n", encoding="utf-8")
    build_generic(str(lists), str(dst), str(tmp_path / "manifests"), check_videos=False)
    assert [(e.path, e.num_frames) for e in read_manifest(str(tmp_path / "manifests" / "train.txt"))] == [("bar", 45)]
    rerun = ex.extract_all(str(source), str(dst), options=ex.ExtractOptions(short_side=0, fps=45), progress=False)
    assert (rerun.done, rerun.skipped) == (0, 1)
    with open(dst / idx.INDEX_NAME, encoding="utf-8") as handle:  # the journal folded in
        assert handle.read().splitlines()[1].split("\t")[:2] == ["bar", "45"]


def test_videos_are_found_whatever_the_case_of_their_extension(tmp_path):
    """The walk lists ``.AVI``, ``.Avi`` and ``.Mp4`` files as videos, so the builders must
    find them too: at the list's path and by name in another folder."""
    root, lists = tmp_path / "root", tmp_path / "lists"
    (root / "elsewhere").mkdir(parents=True)
    lists.mkdir()
    for path in ("a.AVI", "elsewhere/b.Avi", "c.Mp4", "elsewhere/d.MOV"):
        (root / path).write_bytes(b"x")  # contents are not read with check_videos=False
    catalog = tree.walk(str(root), set())
    assert sorted(catalog.paths) == ["a", "b", "c", "d"]
    (lists / "train.txt").write_text("a.avi jump\nb.avi run\nc.mp4 run\nd.mov jump\n", encoding="utf-8")
    build_generic(str(lists), str(root), str(tmp_path / "out"), check_videos=False)
    found = [(e.path, e.label) for e in read_manifest(str(tmp_path / "out" / "train.txt"))]
    assert found == [("a.AVI", 0), ("elsewhere/b.Avi", 1), ("c.Mp4", 1), ("elsewhere/d.MOV", 0)]
    assert (tmp_path / "out" / "missing.txt").read_text().splitlines()[1:] == []


def test_a_video_that_failed_and_is_then_replaced_leaves_the_failures_file(source, tmp_path):
    """A corrupt download is listed as failed; once a good copy replaces it, the rerun
    extracts it and failures.txt no longer lists it (the manifest builders read it)."""
    src, dst = tmp_path / "videos", tmp_path / "frames"
    src.mkdir()
    (src / "bar.mp4").write_bytes(b"not a video")
    options = ex.ExtractOptions(short_side=0, fps=12)
    first = ex.extract_all(str(src), str(dst), options=options, progress=False)
    assert first.failed == 1 and set(idx.read_failures(str(dst))) == {"bar.mp4"}
    shutil.copy(source / "bar.mp4", src / "bar.mp4")
    again = ex.extract_all(str(src), str(dst), options=options, progress=False)
    assert (again.done, again.failed) == (1, 0)
    assert idx.read_failures(str(dst)) == {}
    assert idx.read_index(str(dst))["bar"].num_frames == 12
