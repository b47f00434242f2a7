"""Frame extraction on real (tiny) videos: layout, sizes, frame rates, bad input, resuming."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from cgnl_video.data.manifest import frame_file_name
from cgnl_video.prep import extract as ex
from cgnl_video.prep import index as idx
from cgnl_video.prep.synthetic import encode_mp4
from cgnl_video.prep.video_io import output_size, resampled_indices
from repo_paths import ROOT

REPO = ROOT


def frames(n: int, w: int = 64, h: int = 48) -> np.ndarray:
    """A moving bar on a gradient: ``(n, h, w, 3)`` uint8."""
    out = np.zeros((n, h, w, 3), np.uint8)
    out[..., 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, None, :]
    for k in range(n):
        out[k, :, (3 * k) % w : (3 * k) % w + 6, 0] = 255
    return out


def write_avi(path: str, n: int, w: int = 64, h: int = 48, fps: int = 25) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for array in frames(n, w, h):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def cut(path: str, fraction: float) -> None:
    """Drop the end of a file, as an interrupted download does."""
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])


def jpegs(folder: str):
    return sorted(name for name in os.listdir(folder) if name.endswith(".jpg"))


@pytest.fixture()
def videos(tmp_path):
    """A source tree with good videos and every kind of bad input."""
    src = tmp_path / "videos"
    (src / "class a" / "ünïcode dir").mkdir(parents=True)
    (src / "bad").mkdir()
    encode_mp4(str(src / "class a" / "ünïcode dir" / "clip one.mp4"), frames(30), 25)
    encode_mp4(str(src / "plain.mp4"), frames(20, 80, 60), 10)
    (src / "bad" / "zero.mp4").write_bytes(b"")
    (src / "bad" / "text.mp4").write_text("this is not a video\n")
    encode_mp4(str(src / "bad" / "no_index.mp4"), frames(30), 25)
    cut(str(src / "bad" / "no_index.mp4"), 0.5)  # moov atom at the end: unreadable
    encode_mp4(str(src / "bad" / "truncated.mp4"), frames(60), 25, faststart=True)
    cut(str(src / "bad" / "truncated.mp4"), 0.5)  # index says 60 frames, fewer decode
    write_avi(str(src / "bad" / "wrong_count.avi"), 60)
    cut(str(src / "bad" / "wrong_count.avi"), 0.7)  # header says 60 frames
    (src / "notes.txt").write_text("not a video extension: ignored")
    (src / ".hidden.mp4").write_bytes(b"")
    return src


def test_extract_tree_with_bad_input(videos, tmp_path):
    dst = tmp_path / "frames"
    summary = ex.extract_all(str(videos), str(dst), options=ex.ExtractOptions(short_side=32), workers=2,
                             progress=False)
    entries = idx.read_index(str(dst))
    failures = idx.read_failures(str(dst))
    assert set(entries) == {"class a/ünïcode dir/clip one", "plain", "bad/truncated", "bad/wrong_count"}
    for key, entry in entries.items():
        names = jpegs(str(dst / key))
        assert names == [frame_file_name(k) for k in range(entry.num_frames)]
        with Image.open(dst / key / names[-1]) as image:
            assert image.size == (entry.width, entry.height)
    assert entries["class a/ünïcode dir/clip one"].num_frames == 30
    assert (entries["plain"].width, entries["plain"].height, entries["plain"].fps) == (43, 32, 10)
    assert 0 < entries["bad/truncated"].num_frames < 60
    assert 0 < entries["bad/wrong_count"].num_frames < 60
    assert failures["bad/zero.mp4"] == ("failed", "empty file (0 bytes)")
    assert failures["bad/text.mp4"][0] == failures["bad/no_index.mp4"][0] == "failed"
    assert failures["bad/text.mp4"][1].startswith("unreadable")
    assert failures["bad/truncated.mp4"][0] == failures["bad/wrong_count.avi"][0] == "kept"
    assert "truncated" in failures["bad/truncated.mp4"][1]
    assert (summary.done, summary.skipped, summary.failed, summary.kept_with_problem) == (4, 0, 3, 2)
    assert not [n for n in os.listdir(dst / "bad") if n.startswith(".")]  # no temp folder left

    again = ex.extract_all(str(videos), str(dst), workers=1, progress=False)
    assert (again.done, again.skipped, again.failed) == (0, 4, 3)  # failed ones are retried
    assert idx.read_index(str(dst)) == entries
    assert idx.read_failures(str(dst)) == failures  # kept-with-problem notes survive the rerun


def test_resize_and_frame_rate(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    encode_mp4(str(src / "v.mp4"), frames(50, 64, 48), 25)
    for fps, short_side, expected, size in [(None, 0, 50, (64, 48)), (10, 24, 20, (32, 24)), (50, 96, 100, (128, 96))]:
        dst = tmp_path / f"out{fps}"
        ex.extract_all(str(src), str(dst), options=ex.ExtractOptions(short_side=short_side, fps=fps), progress=False)
        entry = idx.read_index(str(dst))["v"]
        assert (entry.num_frames, (entry.width, entry.height)) == (expected, size)
        assert len(jpegs(str(dst / "v"))) == expected
        assert entry.fps == (fps or 25)


def test_index_math():
    assert output_size(340, 256, 128) == (170, 128)
    assert output_size(240, 320, 120) == (120, 160)
    assert output_size(340, 256, 0) == (340, 256)
    take = lambda src, dst, n: [i for _, i in zip(range(n), resampled_indices(src, dst))]  # noqa: E731
    assert take(30, None, 4) == [0, 1, 2, 3]
    assert take(30, 10, 4) == [0, 3, 6, 9]
    assert take(25, 10, 4) == [0, 2, 5, 7]
    assert take(10, 20, 6) == [0, 0, 1, 1, 2, 2]  # frames repeat to raise the rate
    assert ex.expected_frames(50, 25, 10) == 20 and ex.expected_frames(0, 25, None) == 0


@pytest.mark.parametrize("decord_fails", ["raises", "no frame"])
def test_decord_failure_falls_back_to_pyav(tmp_path, monkeypatch, decord_fails):
    encode_mp4(str(tmp_path / "v.mp4"), frames(12), 25)

    def broken(*args, **kwargs):
        if decord_fails == "raises":
            raise RuntimeError("decord cannot read this")
        yield from ()

    monkeypatch.setattr(ex, "frames_with_decord", broken)
    task = ex.Task(str(tmp_path), str(tmp_path / "frames"), "v.mp4", ex.ExtractOptions(32), decoder="decord")
    outcome = ex.extract_video(task)
    assert outcome.problem is None and outcome.entry.num_frames == 12
    assert len(jpegs(str(tmp_path / "frames" / "v"))) == 12


def test_killed_run_leaves_nothing_taken_for_complete(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "frames"
    src.mkdir()
    for name in ("a", "b", "c"):
        encode_mp4(str(src / f"{name}.mp4"), frames(10), 25)
    ex.extract_all(str(src), str(dst), options=ex.ExtractOptions(32), progress=False)
    entries = idx.read_index(str(dst))
    # Simulate a kill: a's frames half written under the temporary name, b's folder
    # renamed but not yet recorded, c recorded in the journal only, with a torn line.
    os.rename(dst / "a", dst / ".a.part")
    os.remove(dst / ".a.part" / "000010.jpg")
    idx.write_index(str(dst), {"c": entries["c"]})
    os.remove(dst / idx.INDEX_NAME)
    idx.append_journal(str(dst), entries["c"])
    with open(dst / idx.JOURNAL_NAME, "a", encoding="utf-8") as journal:
        journal.write("b\t1")  # torn: no newline
    assert set(idx.read_index(str(dst))) == {"c"}

    from cgnl_video.prep.generic import build_generic

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("a.mp4 x\nb.mp4 x\nc.mp4 y\n")
    build_generic(str(lists), str(dst), str(tmp_path / "manifests"))
    assert "a.mp4\tnot found" in (tmp_path / "manifests" / "missing.txt").read_text()

    summary = ex.extract_all(str(src), str(dst), options=ex.ExtractOptions(32), progress=False)
    assert (summary.done, summary.skipped) == (2, 1)
    assert idx.read_index(str(dst)) == entries
    assert not os.path.exists(dst / ".a.part") and not os.path.exists(dst / idx.JOURNAL_NAME)
    assert len(jpegs(str(dst / "a"))) == 10


def test_cli_with_list(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        encode_mp4(str(src / f"{name}.mp4"), frames(8), 25)
    (tmp_path / "list.txt").write_bytes(b"b.mp4\r\n\r\n")
    script = os.path.join(REPO, "data_prep", "extract_frames.py")
    run = subprocess.run(
        [sys.executable, script, "--src", str(src), "--dst", str(tmp_path / "f"), "--list", str(tmp_path / "list.txt"),
         "--short-side", "16", "--quality", "80", "--workers", "1", "--no-progress"],
        capture_output=True, text=True, check=True,
    )
    assert "done 1, skipped 0" in run.stdout
    assert sorted(os.listdir(tmp_path / "f")) == ["b", idx.INDEX_NAME, idx.FAILURES_NAME]
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--short-side" in help_text and "--workers" in help_text


def test_real_kill_then_rerun(tmp_path):
    """SIGKILL the command mid-run: every folder under its final name is complete, a rerun finishes."""
    src, dst = tmp_path / "src", tmp_path / "frames"
    src.mkdir()
    for v in range(6):
        encode_mp4(str(src / f"v{v}.mp4"), frames(150), 25)
    script = os.path.join(REPO, "data_prep", "extract_frames.py")
    command = [sys.executable, script, "--src", str(src), "--dst", str(dst), "--short-side", "96", "--workers", "2",
               "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = dst / idx.JOURNAL_NAME
    deadline = time.monotonic() + 30
    while process.poll() is None and not journal.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    time.sleep(0.2)  # the workers die with their parent
    for name in os.listdir(dst):
        if os.path.isdir(dst / name) and not name.startswith("."):
            assert len(jpegs(str(dst / name))) == 150, name
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    entries = idx.read_index(str(dst))
    assert sorted(entries) == [f"v{v}" for v in range(6)] and {e.num_frames for e in entries.values()} == {150}
    assert sorted(n for n in os.listdir(dst) if n.startswith(".")) == []
