"""tools/predict.py --timeline and cgnl_video.analysis.timeline: sliding-window
predictions over a long video made of segments of different synthetic actions."""

import json
import math
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from cgnl_video.analysis.timeline import Span, Timeline, clip_offsets
from cgnl_video.analysis.timeline_figure import shown_classes
from cgnl_video.config import load_config
from cgnl_video.data import open_reader
from cgnl_video.data.decode import VideoFileReader
from cgnl_video.data.transforms import val_clip
from cgnl_video.inference import load_model
from cgnl_video.prep.index import IndexEntry, write_index
from cgnl_video.prep.synthetic import SyntheticSpec, encode_mp4, render_video
from data_fixtures import write_frame_folder
from repo_paths import ROOT
from tools_fixtures import CLASSES, run_tool, save_tiny_checkpoint, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

FPS = 8
SEGMENTS = ("disc", "slide_horizontal", "ring")  # 24 frames (3 s) each: 72 frames, 9 s
CLIP = 16  # the config below: DATA.NUM_FRAMES 8 x DATA.SAMPLING_RATE 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("timeline"))
    cfg_path = write_tiny_config(folder, DATA__NUM_FRAMES=8, DATA__SAMPLING_RATE=2, TEST__VIEWS_PER_FORWARD=4)
    checkpoint = save_tiny_checkpoint(cfg_path, os.path.join(folder, "run"))
    spec = SyntheticSpec(num_frames=24, width=96, height=72, fps=FPS)  # frames resized to 85 x 64, centre crop 64
    frames = [render_video(name, spec, np.random.default_rng([7, i])) for i, name in enumerate(SEGMENTS)]
    video = os.path.join(folder, "long video.mp4")
    encode_mp4(video, np.concatenate(frames), FPS)
    broken = os.path.join(folder, "broken.mp4")
    with open(broken, "wb") as handle:
        handle.write(b"this is not a video")
    cfg = load_config(cfg_path)
    return {"cfg_path": cfg_path, "checkpoint": checkpoint, "video": video, "broken": broken, "folder": folder,
            "config": cfg, "model": load_model(cfg, checkpoint)}


def timeline_json(tiny, capsys, *args):
    """Run the tool with --json; (exit status, document, stderr)."""
    png = os.path.join(tiny["folder"], "timeline.png")
    argv = ["--cfg", tiny["cfg_path"], "--checkpoint", tiny["checkpoint"], "--timeline", png, "--json",
            "--top-k", "3", *args]
    status = run_tool("predict", argv)
    out, err = capsys.readouterr()
    return status, json.loads(out), err


def reference_probs(tiny, clip_starts):
    """The model's probabilities of each clip, computed here: the whole video decoded
    at once, DATA.NUM_FRAMES frames every DATA.SAMPLING_RATE from the start, the
    validation transform (short side, centre crop, normalise)."""
    d = tiny["config"].DATA
    with open_reader(tiny["video"], None) as reader:
        frames = reader.read(list(range(reader.num_frames)))
    clips = [val_clip(frames[[s + d.SAMPLING_RATE * k for k in range(d.NUM_FRAMES)]], d.VAL_SHORT_SIDE,
                      d.VAL_CROP_SIZE, d.MEAN, d.STD) for s in clip_starts]
    with torch.no_grad():
        return tiny["model"](torch.stack(clips)).double()


def assert_top_equals(window, probs):
    values, labels = torch.topk(probs, len(CLASSES))
    assert [t["label"] for t in window["top"]] == [CLASSES[c] for c in labels.tolist()]
    assert [t["prob"] for t in window["top"]] == pytest.approx(values.tolist(), abs=2e-6)


def test_windows_in_seconds_are_single_clips_scored_as_the_model_scores_them(tiny, capsys):
    status, document, _ = timeline_json(tiny, capsys, "--window", "2s", "--stride", "1s", tiny["video"])
    assert status == 0 and document["failed"] == []
    [timeline] = document["timelines"]
    assert {k: timeline[k] for k in ("path", "num_frames", "fps", "window_frames", "stride_frames",
                                      "clips_per_window")} == {
        "path": tiny["video"], "num_frames": 72, "fps": 8.0, "window_frames": 16, "stride_frames": 8,
        "clips_per_window": 1}
    windows = timeline["windows"]
    # 2 s = 16 frames every 1 s = 8 frames at 8 fps: starts 0, 8, ..., 56 (the last window ends at frame 72)
    assert [(w["start_frame"], w["end_frame"]) for w in windows] == [(s, s + 16) for s in range(0, 57, 8)]
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(float(i), i + 2.0) for i in range(8)]
    assert set(windows[0]) == {"start_frame", "end_frame", "start_s", "end_s", "top"}
    expected = reference_probs(tiny, range(0, 57, 8))
    for window, probs in zip(windows, expected):
        assert_top_equals(window, probs)
    assert document["figure"] == os.path.join(tiny["folder"], "timeline.png")


def test_a_window_of_several_clips_scores_the_mean_of_its_clips(tiny, capsys):
    status, document, _ = timeline_json(tiny, capsys, "--window", "24f", "--stride", "12", tiny["video"])
    assert status == 0
    [timeline] = document["timelines"]
    assert timeline["clips_per_window"] == 2
    windows = timeline["windows"]
    assert [(w["start_frame"], w["end_frame"]) for w in windows] == [(0, 24), (12, 36), (24, 48), (36, 60),
                                                                      (48, 72)]
    assert windows[-1]["start_s"] == 6.0 and windows[-1]["end_s"] == 9.0
    # two clips of 16 frames per 24-frame window: at its first frame and 8 frames later
    clips = reference_probs(tiny, [s + offset for s in range(0, 49, 12) for offset in (0, 8)])
    for window, pair in zip(windows, clips.view(5, 2, -1)):
        assert_top_equals(window, pair.mean(dim=0))


def test_text_table_and_figure(tiny, capsys, monkeypatch):
    saved = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))[1])
    png = os.path.join(tiny["folder"], "table.png")
    argv = ["--cfg", tiny["cfg_path"], "--checkpoint", tiny["checkpoint"], "--timeline", png, "--top-k", "2",
            "--timeline-classes", "3", tiny["video"]]
    assert run_tool("predict", argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"{tiny['video']}: 72 frames (9.00 s) at 8 fps: 8 windows of 16 frames (2.00 s) "
                        "every 8 frames (1.00 s), 1 clip per window")
    assert lines[1].split() == ["start", "s", "end", "s", "start", "f", "end", "f", "top-2"]
    row = lines[2].split()
    assert row[:4] == ["0.00", "2.00", "0", "16"] and row[4] in CLASSES and row[5].endswith("%")
    assert lines[9].split()[:4] == ["7.00", "9.00", "56", "72"]
    assert lines[-1] == f"timeline figure: {png}"
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.width > 600 and image.height > 200
    [axes] = saved[0].axes
    assert sorted(axes.get_legend_handles_labels()[1]) == sorted(CLASSES)  # 3 classes drawn, 2 in the table
    assert [len(line.get_xdata()) for line in axes.get_lines()] == [8, 8, 8]  # a point per window


def test_only_one_chunk_of_frames_is_decoded_and_held_at_a_time(tiny, capsys, monkeypatch):
    """29 windows, TEST.VIEWS_PER_FORWARD = 4 clips per chunk: one read per chunk of at
    most 4 x 8 frames, and every frame tensor read before is freed when the next read starts."""
    reads, alive_at_read = [], []
    returned = []
    original = VideoFileReader.read

    def counting_read(self, indices):
        alive_at_read.append(sum(ref() is not None for ref in returned))
        frames = original(self, indices)
        reads.append(len(set(indices)))
        returned.append(weakref.ref(frames))
        return frames

    monkeypatch.setattr(VideoFileReader, "read", counting_read)
    status, document, _ = timeline_json(tiny, capsys, "--window", "16f", "--stride", "2f", tiny["video"])
    assert status == 0
    assert len(document["timelines"][0]["windows"]) == 29  # (72 - 16) / 2 + 1
    assert len(reads) == math.ceil(29 / 4)
    assert max(reads) <= 4 * 8 and sum(reads) < 29 * 8  # overlapping windows share their frames
    assert alive_at_read == [0] * len(reads)


def test_pyav_decodes_each_frame_of_the_long_video_once(tiny, monkeypatch):
    """Without decord (PyAV, e.g. macOS on Apple silicon), overlapping chunks of windows
    go on decoding where the previous chunk stopped: frames 0..70 (the last window's
    last sampled frame) decoded once each for the 29 windows, not the video from its first
    frame again for every chunk (quadratic in an hour-long video). The scores equal those
    of a fresh reader for every chunk."""
    from cgnl_video.analysis.timeline import timeline
    from cgnl_video.data import decode

    cfg = load_config(tiny["cfg_path"], ["DATA.DECODING_BACKEND", "pyav"])
    decoded = []
    original_close = decode.VideoFileReader.close

    def counting_close(self):
        decoded.append(self.frames_decoded)
        original_close(self)

    monkeypatch.setattr(decode.VideoFileReader, "close", counting_close)
    window, stride = Span.parse("16f"), Span.parse("2f")
    kept = timeline(cfg, tiny["model"], tiny["video"], torch.device("cpu"), window, stride)
    assert len(kept.ranges) == 29 and decoded == [71]  # the old reader: 386
    original_read = decode.PyAVReader.read

    def fresh_read(self, indices):  # every chunk from a reader of its own: from frame 0
        with decode.PyAVReader(self.path) as reader:
            return original_read(reader, indices)

    monkeypatch.setattr(decode.PyAVReader, "read", fresh_read)
    fresh = timeline(cfg, tiny["model"], tiny["video"], torch.device("cpu"), window, stride)
    assert torch.equal(kept.probs, fresh.probs)


def test_unreadable_inputs_are_named_and_the_others_scored(tiny, capsys, tmp_path):
    frames = str(tmp_path / "frames" / "clip")
    write_frame_folder(frames, 20, height=64, width=80)
    missing = str(tmp_path / "nowhere.mp4")
    status, document, err = timeline_json(tiny, capsys, tiny["broken"], frames, missing, tiny["video"])
    assert status == 1
    assert [t["path"] for t in document["timelines"]] == [frames, tiny["video"]]
    assert [f["path"] for f in document["failed"]] == [tiny["broken"], missing]
    assert tiny["broken"] in err and missing in err
    folder = document["timelines"][0]  # no frame rate known: frames only, default stride half the window
    assert folder["fps"] is None and folder["window_frames"] == CLIP and folder["stride_frames"] == CLIP // 2
    assert [(w["start_frame"], w["end_frame"], w["start_s"]) for w in folder["windows"]] == [(0, 16, None)]

    # seconds need a frame rate: the folder fails (named), the video goes on
    status, document, err = timeline_json(tiny, capsys, "--window", "2s", frames, tiny["video"])
    assert status == 1 and [t["path"] for t in document["timelines"]] == [tiny["video"]]
    assert document["failed"][0]["path"] == frames and f"{frames}: 2s is in seconds" in err

    # ... which an extraction index next to the frame folders gives (or --fps)
    write_index(str(tmp_path / "frames"), {"clip": IndexEntry("clip", 20, 5.0, 80, 64)})
    status, document, _ = timeline_json(tiny, capsys, "--window", "3.2s", "--stride", "0.4s", frames)
    assert status == 0
    windows = document["timelines"][0]["windows"]
    assert [(w["start_frame"], w["end_frame"], w["end_s"]) for w in windows] == [(0, 16, 3.2), (2, 18, 3.6),
                                                                                (4, 20, 4.0)]
    status, document, _ = timeline_json(tiny, capsys, "--fps", "4", frames)
    assert document["timelines"][0]["windows"][0]["end_s"] == 4.0


def test_a_reader_that_stops_early_ends_the_output_quietly(tiny):
    """``predict.py ... --json | head -n 24`` (docs/TOOLS.md): when stdout's reader has gone,
    the rest of the output is dropped without a BrokenPipeError and the exit status stays
    the run's (0: every input was read), so the pipeline does not fail."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has stopped before the tool writes
    tool = os.path.join(ROOT, "tools", "predict.py")
    argv = ["--cfg", tiny["cfg_path"], "--checkpoint", tiny["checkpoint"], "--json",
            "--timeline", os.path.join(tiny["folder"], "closed.png"), tiny["video"]]
    try:
        result = subprocess.run([sys.executable, tool, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "BrokenPipeError" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--window", "2m"], "not a positive length"),
    (["--stride", "0s"], "not a positive length"),
    (["--window", "16.5f"], "whole number"),
    (["--fps", "-3"], "--fps must be positive"),
    (["--timeline-classes", "0"], "--timeline-classes must be positive"),
])
def test_bad_lengths_are_refused_before_loading(tiny, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_tool("predict", ["--cfg", "x.yaml", "--checkpoint", "x.pyth", "--timeline", "t.png", *args, "v.mp4"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_window_options_need_timeline_and_a_window_holds_a_clip(tiny, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tool("predict", ["--cfg", "x.yaml", "--checkpoint", "x.pyth", "--stride", "8f", "v.mp4"])
    assert exit_info.value.code == 2 and "--stride needs --timeline" in capsys.readouterr().err
    status = run_tool("predict", ["--cfg", tiny["cfg_path"], "--checkpoint", tiny["checkpoint"], "--timeline",
                                  os.path.join(tiny["folder"], "short.png"), "--window", "8f", tiny["video"]])
    err = capsys.readouterr().err
    assert status == 2 and "a window of 8 frames is shorter than one clip" in err and "= 16 frames" in err


def test_lengths_and_clip_offsets():
    assert Span.parse("64f").frames(None) == 64 and Span.parse("64").frames(None) == 64
    assert Span.parse("2.5s").frames(30.0) == 75 and Span.parse(".5s").frames(25.0) == 12  # 12.5 rounds to even
    assert Span.parse("0.01s").frames(25.0) == 1
    with pytest.raises(ValueError, match="frame rate is unknown"):
        Span.parse("1s").frames(None)
    assert clip_offsets(32, 32) == [0]
    assert clip_offsets(75, 32) == [0, 22, 43]  # 3 clips from the first frame to the last
    assert clip_offsets(20, 32) == [0]  # a short video's only window: one (looped) clip


def test_figure_shows_the_classes_that_win_windows_first():
    probs = torch.tensor([[0.1, 0.3, 0.6, 0.0], [0.2, 0.5, 0.3, 0.0], [0.1, 0.6, 0.3, 0.0], [0.95, 0.05, 0.0, 0.0]])
    timeline = Timeline("v", 40, None, 16, 8, 1, [(0, 16), (8, 24), (16, 32), (24, 40)], probs)
    # class 1 is top-1 twice, classes 0 and 2 once (0 has the higher peak), class 3 never
    assert shown_classes(timeline, 3) == [1, 0, 2]
