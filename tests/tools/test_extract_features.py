"""tools/extract_features.py and cgnl_video.analysis.feature_extraction: pooled
pre-classifier features per video (test views) and per sliding window."""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch

from cgnl_video.config import load_config
from cgnl_video.data import ManifestEntry, VideoDataset, open_reader, write_manifest
from cgnl_video.data.sampling import clip_indices
from cgnl_video.data.transforms import normalize_uint8, val_clip
from cgnl_video.data.windows import window_starts
from cgnl_video.inference import inference_config, input_entry, load_model
from data_fixtures import write_frame_folder, write_video
from engine_helpers import run_distributed
from tools_fixtures import run_tool, tiny_tool_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tool_run(str(tmp_path_factory.mktemp("features")))


def base_args(tiny, out, *extra):
    return ["--cfg", tiny["cfg"], "--checkpoint", tiny["checkpoint"], "--out", str(out), *extra]


def hooked_features(model, clips, layer=None):
    """The reference: the model's forward on normalised ``clips``, with a hook of the
    test's own on the head's input (or on ``layer``'s output), pooled over T, H, W."""
    taken = []
    if layer is None:
        handle = model.head.register_forward_pre_hook(lambda _m, args: taken.append(args[0]))
    else:
        handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _a, out: taken.append(out))
    with torch.no_grad():
        model(clips)
    handle.remove()
    return taken[0].double().mean(dim=(2, 3, 4))


def load_index(out):
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def test_video_features_are_the_mean_of_the_models_own_features_over_the_test_views(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    argv = base_args(tiny, out, "--root", tiny["inputs"], tiny["video"], tiny["bad"], tiny["frames"], tiny["missing"])
    assert run_tool("extract_features", argv) == 1
    captured = capsys.readouterr()
    assert tiny["bad"] in captured.err and tiny["missing"] in captured.err
    assert "4 inputs: 2 extracted, 0 already complete, 2 failed" in captured.out
    index = load_index(out)
    assert [r["path"] for r in index] == [tiny["video"], tiny["frames"]]
    assert [r["features"] for r in index] == ["clip one.npy", "frames_two.npy"]  # mirrored, extension replaced
    assert not (out / "broken.npy").exists()

    cfg = load_config(tiny["cfg"])
    model = load_model(cfg, tiny["checkpoint"])
    for record, path in zip(index, (tiny["video"], tiny["frames"])):
        dataset = VideoDataset.from_config(inference_config(cfg), "test", [input_entry(path)], ["x"])
        views = normalize_uint8(dataset[0][0], cfg.DATA.MEAN, cfg.DATA.STD)  # 2 clips x 3 crops
        expected = hooked_features(model, views).mean(dim=0)
        saved = np.load(out / record["features"])
        assert saved.dtype == np.float32 and list(saved.shape) == record["shape"] == [expected.numel()]
        assert record["views"] == 6 and expected.abs().mean() > 1e-2
        assert np.allclose(saved, expected.numpy(), rtol=1e-4, atol=1e-5)
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["mode"], settings["layer"], settings["views"], settings["precision"]) == (
        "video", "head input", [2, 3], "fp32")


def test_sliding_windows_are_centre_clips_every_stride_frames_of_the_named_layer(tiny, tmp_path):
    out = tmp_path / "out"
    argv = base_args(tiny, out, "--root", tiny["folder"], "--window-stride", "4", "--layer", "blocks.4",
                     tiny["video"], tiny["frames"])
    assert run_tool("extract_features", argv) == 0
    index = load_index(out)
    # 16-frame windows (16 x 1) every 4 frames: the 20-frame video has 2, the 24-frame folder 3
    assert [r["frames"] for r in index] == [[[0, 16], [4, 20]], [[0, 16], [4, 20], [8, 24]]]
    assert [r["features"] for r in index] == ["inputs/clip one.npy", "inputs/frames_two.npy"]

    cfg = load_config(tiny["cfg"])
    model = load_model(cfg, tiny["checkpoint"])
    d = cfg.DATA
    for record, path in zip(index, (tiny["video"], tiny["frames"])):
        entry = input_entry(path)
        with open_reader(entry.path, entry.num_frames) as reader:
            clips = torch.stack([val_clip(reader.read(clip_indices(start, d.NUM_FRAMES, d.SAMPLING_RATE,
                                                                   reader.num_frames)),
                                          d.VAL_SHORT_SIDE, d.VAL_CROP_SIZE, d.MEAN, d.STD)
                                 for start, _end in record["frames"]])
        expected = hooked_features(model, clips, layer="blocks.4")  # res4: 4 x 16 channels at this width
        saved = np.load(out / record["features"])
        assert saved.shape == tuple(record["shape"]) == (len(record["frames"]), 64)
        assert np.allclose(saved, expected.numpy(), rtol=1e-4, atol=1e-5)
        assert not np.allclose(saved[0], saved[-1], atol=1e-3)  # the windows see different frames


def test_window_starts():
    assert window_starts(20, 16, 4) == [0, 4]
    assert window_starts(40, 16, 10) == [0, 10, 20]
    assert window_starts(16, 16, 4) == [0]
    assert window_starts(10, 16, 4) == [0]  # shorter than a window: one (looped) window
    with pytest.raises(ValueError, match="stride"):
        window_starts(20, 16, 0)


def test_rerun_skips_complete_outputs_and_refuses_other_settings(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    argv = base_args(tiny, out, "--root", tiny["inputs"], "--opt", "TEST.NUM_ENSEMBLE_VIEWS", "1",
                     tiny["video"], tiny["frames"])
    assert run_tool("extract_features", argv) == 0
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files if p.name not in ("index.jsonl", "settings.json")}
    assert len(stamps) == 4
    capsys.readouterr()
    assert run_tool("extract_features", argv) == 0
    assert "2 inputs: 0 extracted, 2 already complete, 0 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files  # no temporary files left

    (out / "frames_two.json").unlink()  # an interrupted input: features written, record not
    assert run_tool("extract_features", argv) == 0
    assert "1 extracted, 1 already complete" in capsys.readouterr().out
    assert len(load_index(out)) == 2

    other = base_args(tiny, out, "--root", tiny["inputs"], tiny["video"])  # 2 clips now: other settings
    assert run_tool("extract_features", other) == 1
    captured = capsys.readouterr()
    assert "other settings (views: [1, 3] -> [2, 3])" in captured.err and "clip one.json" in captured.err
    assert [r["path"] for r in load_index(out)] == []  # the index lists only outputs of these settings


def test_bf16_autocast_features_are_close_to_fp32(tiny, tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        argv = base_args(tiny, out, "--root", tiny["inputs"], "--precision", precision,
                         "--opt", "TEST.NUM_ENSEMBLE_VIEWS", "1", tiny["frames"])
        assert run_tool("extract_features", argv) == 0
        runs[precision] = np.load(out / "frames_two.npy")
        assert json.loads((out / "settings.json").read_text())["precision"] == precision
    assert runs["bf16"].dtype == np.float32
    assert not np.array_equal(runs["bf16"], runs["fp32"])  # autocast did run in bf16
    assert np.allclose(runs["bf16"], runs["fp32"], rtol=5e-2, atol=5e-2 * np.abs(runs["fp32"]).mean())


@pytest.mark.parametrize("gpu, native, expected", [("NVIDIA A100-SXM4-80GB", True, "bf16"),
                                                    ("Tesla V100-SXM2-32GB", False, "fp32"),
                                                    ("Tesla T4", False, "fp32")])
def test_auto_precision_is_bf16_only_on_a_gpu_with_native_bf16(gpu, native, expected, monkeypatch):
    """As training (engine.precision.native_bf16): a GPU that only emulates bf16 (torch
    reports it as supported there, including emulation) would run bf16 3D convolutions
    on slow kernels, so "auto" is fp32 there; an explicit bf16 is kept."""
    from cgnl_video.analysis.features import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    cuda = torch.device("cuda", 0)
    assert resolve_precision("auto", cuda) == expected
    assert resolve_precision("bf16", cuda) == "bf16" and resolve_precision("fp32", cuda) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_bad_arguments_are_named(tiny, tmp_path, capsys):
    twin = os.path.join(tiny["inputs"], "clip one.avi")
    shutil.copy(tiny["video"], twin)
    assert run_tool("extract_features", base_args(tiny, tmp_path, "--root", tiny["inputs"],
                                                  tiny["video"], twin)) == 2
    assert "would both write clip one.npy" in capsys.readouterr().err
    assert run_tool("extract_features", base_args(tiny, tmp_path, "--root", tiny["inputs"], tiny["cfg"])) == 2
    assert f"{tiny['cfg']} (root {tiny['inputs']}) is not inside the root" in capsys.readouterr().err
    assert run_tool("extract_features", base_args(tiny, tmp_path, "--root", tiny["inputs"], "--layer", "blocks.99",
                                                  tiny["video"])) == 2
    assert "layer 'blocks.99' is not a module" in capsys.readouterr().err
    missing = base_args(tiny, tmp_path, "--root", tiny["inputs"], tiny["video"])
    missing[3] = str(tmp_path / "no_checkpoint.pyth")
    assert run_tool("extract_features", missing) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_tool("extract_features", base_args(tiny, tmp_path, "--split", "test", tiny["video"]))
    assert exit_info.value.code == 2 and "exactly one of --split" in capsys.readouterr().err


def _extract_in_rank(rank, argv, summary):
    """Every rank exits 1 (one input failed on one of them); rank 0 prints the totals."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_tool("extract_features", argv) == 1
    assert printed.getvalue() == (summary if rank == 0 else "")


def test_two_gloo_ranks_write_the_same_files_as_one_process(tiny, tmp_path):
    """A manifest split (labels in the index), one unreadable entry, 4 readable ones; a test
    batch that the 2 ranks do not divide (the test loader gives each rank its share)."""
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    for i in range(2):
        write_video(str(data / "videos" / f"v{i}.mkv"), 18 + 2 * i)
        write_frame_folder(str(data / "frames" / f"f{i}"), 17 + 3 * i)
    (data / "videos" / "broken.mkv").write_bytes(b"not a video")
    manifests = tmp_path / "lists"
    shutil.copytree(load_config(tiny["cfg"]).DATA.PATH_TO_DATA_DIR, manifests)  # classes.txt
    write_manifest(str(manifests / "test.txt"), [
        ManifestEntry("videos/v0.mkv", 0), ManifestEntry("frames/f0", 1, 17), ManifestEntry("videos/broken.mkv", 2),
        ManifestEntry("videos/v1.mkv", 2), ManifestEntry("frames/f1", 0, 20)])
    opts = ["--opt", "DATA.PATH_TO_DATA_DIR", str(manifests), "--opt", "DATA.PATH_PREFIX", str(data),
            "--opt", "TEST.NUM_ENSEMBLE_VIEWS", "1", "--opt", "TEST.BATCH_SIZE", "3", "--split", "test"]
    assert run_tool("extract_features", base_args(tiny, tmp_path / "one", *opts)) == 1
    # each input on one rank only: 4 extracted in all, the broken one failed once
    summary = f"5 inputs: 4 extracted, 0 already complete, 1 failed; index {tmp_path / 'two' / 'index.jsonl'}\n"
    run_distributed(_extract_in_rank, 2, base_args(tiny, tmp_path / "two", *opts), summary)

    def files(out):
        return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())

    assert files(tmp_path / "one") == files(tmp_path / "two")
    assert len(files(tmp_path / "one")) == 2 * 4 + 2
    index = load_index(tmp_path / "one")
    assert index == load_index(tmp_path / "two")
    assert [(r["path"], r["label"]) for r in index] == [
        ("videos/v0.mkv", "walk"), ("frames/f0", "run"), ("videos/v1.mkv", "jump"), ("frames/f1", "walk")]
    for record in index:
        one, two = np.load(tmp_path / "one" / record["features"]), np.load(tmp_path / "two" / record["features"])
        assert np.allclose(one, two, rtol=1e-5, atol=1e-6)
