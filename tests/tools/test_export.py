"""tools/export.py and cgnl_video.export: ONNX, torch.export and TorchScript files of a C2D
R-50 + 1 CGNL and + 1 NL block (reduced width) compared with PyTorch on random and real
clips, at batch sizes other than the one exported; per-window logits vs probabilities,
computed by hand; failures leave no file."""

import copy
import os
import runpy
import sys
import warnings

import pytest
import torch

from cgnl_video import export as ex
from cgnl_video.config import load_config
from cgnl_video.data import write_manifest
from cgnl_video.data.manifest import ManifestEntry
from cgnl_video.inference import load_model
from tools_fixtures import CLASSES, ROOT, make_inputs, run_tool, save_tiny_checkpoint, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

TOLERANCE = 1e-4
SUFFIX = {"onnx": "onnx", "export": "pt2", "torchscript": "pt"}


def trained_like(model: torch.nn.Module, clips: torch.Tensor, seed: int = 0) -> None:
    """Give the model trained-model magnitudes where the tiny checkpoint has none.

    The inserted blocks: theta / phi / g / W_z of std 0.05 and the (zero-initialised) norm
    the statistics of its input on ``clips``, a weight of 0.5-1.5 and a bias, so the block's
    branch is of the order of its input. The fc: scaled and centred so that the logits of
    ``clips`` (training size: one window) have mean 0 and std 2 per class. A random fc on
    the ReLU features gives logits of about +-10 with one offset shared by every clip, so
    the softmax is 1 for one class on every clip and no change of the features (such as
    dropping a block) would show in the scores.
    """
    generator = torch.Generator().manual_seed(seed)
    blocks = {name: m for name, m in model.named_modules() if name.split(".")[-2:-1] == ["inserted"]}
    taken = {}
    hooks = [b.z.register_forward_hook(lambda m, _a, out, name=name: taken.__setitem__(name, out))
             for name, b in blocks.items()]
    with torch.no_grad():
        for block in blocks.values():
            for conv in (getattr(block, key) for key in ("theta", "phi", "g", "z")):
                conv.weight.copy_(0.05 * torch.randn(conv.weight.shape, generator=generator))
        model.eval()(clips)
        for name, block in blocks.items():
            norm, z = block.norm, taken[name]
            norm.running_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
            norm.running_var.copy_(z.var(dim=(0, 2, 3, 4)))
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=generator))
        for hook in hooks:
            hook.remove()
        hooks = [model.head.register_forward_pre_hook(lambda _m, args: taken.__setitem__("head", args[0]))]
        model(clips)
        features = taken["head"].mean(dim=(2, 3, 4))
        fc = model.head.proj
        centred = (features - features.mean(dim=0)) @ fc.weight.T
        fc.weight.mul_(2.0 / centred.std(dim=0)[:, None])
        fc.bias.copy_(-features.mean(dim=0) @ fc.weight.T)
    for hook in hooks:
        hook.remove()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Configs and checkpoints (bare state dicts) of the + CGNL and + NL models, and inputs."""
    folder = str(tmp_path_factory.mktemp("export"))
    found = {**make_inputs(os.path.join(folder, "inputs")), "folder": folder}
    for block in ("cgnl", "nl"):
        cfg_path = write_tiny_config(folder, block)
        cfg = load_config(cfg_path)
        model = load_model(cfg, save_tiny_checkpoint(cfg_path, os.path.join(folder, block)))
        shape = ex.clip_shape(cfg)
        trained_like(model, torch.cat([ex.real_clip(cfg, found["video"], shape)[None],
                                       ex.random_clips(3, shape, seed=5)]))
        found[block] = (cfg_path, os.path.join(folder, f"{block}_trained.pyth"))
        torch.save(model.state_dict(), found[block][1])
    return found


def export_argv(tiny, block, fmt, out, *extra):
    cfg_path, checkpoint = tiny[block]
    return ["--cfg", cfg_path, "--checkpoint", checkpoint, "--format", fmt, "--out", out, *extra]


def reported_differences(out: str):
    return [float(line.split("max abs diff ")[1].split()[0]) for line in out.splitlines() if line.startswith("  ")]


@pytest.mark.parametrize("block", ["cgnl", "nl"])
@pytest.mark.parametrize("fmt", ["onnx", "export", "torchscript"])
def test_exported_file_matches_pytorch_on_random_and_real_clips(tiny, block, fmt, tmp_path, capfd):
    out = str(tmp_path / f"model.{SUFFIX[fmt]}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_tool("export", export_argv(tiny, block, fmt, out, "--verify", "--verify-video", tiny["video"])) == 0
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]  # nothing traced as a constant
    printed, errors = capfd.readouterr()
    if fmt == "export":  # torch.export replaces the deprecated TorchScript: no deprecation, nothing logged
        assert not [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] and errors == ""
    differences = reported_differences(printed)
    assert len(differences) == 3 and max(differences) <= TOLERANCE, printed
    assert f"{tiny['video']} (batch 1)" in printed and f"wrote {out}" in printed
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(out)]  # no temporary file left

    # Independently of the tool's own checks: the file on a batch of 3 (real clip, and two
    # random ones) equals the PyTorch model, whose CGNL / NL block changes the scores.
    cfg_path, checkpoint = tiny[block]
    cfg = load_config(cfg_path)
    model = load_model(cfg, checkpoint)
    shape = ex.clip_shape(cfg)
    clips = torch.cat([ex.real_clip(cfg, tiny["frames"], shape)[None], ex.random_clips(2, shape, seed=9)])
    with torch.no_grad():
        exported = ex.load_exported(fmt, out)(clips)
        expected = model(clips)
        inserted = model.get_submodule("blocks.4.inserted.4")
        inserted.norm.weight.zero_()
        inserted.norm.bias.zero_()
        without_block = model(clips)
    assert exported.shape == (3, len(CLASSES))
    assert (exported - expected).abs().max() <= TOLERANCE
    assert (without_block - expected).abs().max() > 30 * TOLERANCE  # a file without the block would fail
    metadata = ex.read_metadata(fmt, out)
    assert metadata["output"] == "probs" and metadata["classes"] == list(CLASSES)
    assert metadata["input_shape"] == ["batch", 3, 16, 64, 64] and metadata["mean"] == list(cfg.DATA.MEAN)
    assert metadata["output_shape"] == ["batch", len(CLASSES)]


def hand_window_logits(features: torch.Tensor, fc: torch.nn.Linear, window) -> torch.Tensor:
    """(B, T', H', W', K): the fc of the mean of every ``window``-sized box of ``features``
    (B, C, T, H, W), stride 1, written out box by box."""
    t_win, h_win, w_win = window
    _b, _c, t_size, h_size, w_size = features.shape
    boxes = [[[features[:, :, t:t + t_win, h:h + h_win, w:w + w_win].mean(dim=(2, 3, 4))
               for w in range(w_size - w_win + 1)]
              for h in range(h_size - h_win + 1)]
             for t in range(t_size - t_win + 1)]
    pooled = torch.stack([torch.stack([torch.stack(row, dim=1) for row in plane], dim=1) for plane in boxes], dim=1)
    return torch.einsum("bthwc,kc->bthwk", pooled, fc.weight.double()) + fc.bias.double()


@pytest.mark.parametrize("fmt", ["onnx", "export"])
def test_logits_are_the_fc_of_every_window_and_probs_their_mean_softmax(tiny, fmt, tmp_path, capsys):
    cfg_path, checkpoint = tiny["cgnl"]
    out = str(tmp_path / f"logits.{SUFFIX[fmt]}")
    argv = export_argv(tiny, "cgnl", fmt, out, "--logits", "--frames", "24", "--size", "96")
    assert run_tool("export", argv) == 0
    assert "exporting logits (batch, 2, 2, 2, 3) for clips (batch, 3, 24, 96, 96)" in capsys.readouterr().out

    model = load_model(load_config(cfg_path), checkpoint)
    assert model.head.window == (2, 2, 2)  # the last feature map of a 16 x 64 x 64 training clip
    features = {}
    model.head.register_forward_pre_hook(lambda _m, args: features.__setitem__("x", args[0]))
    clips = ex.random_clips(3, (3, 24, 96, 96), seed=4)  # a 3 x 3 x 3 last feature map: 2 x 2 x 2 windows
    with torch.no_grad():
        probs = model(clips).double()
        per_window = hand_window_logits(features["x"].double(), model.head.proj, (2, 2, 2))
    logits = ex.load_exported(fmt, out)(clips).double()
    assert logits.shape == per_window.shape == (3, 2, 2, 2, len(CLASSES))
    assert torch.allclose(logits, per_window, atol=TOLERANCE, rtol=0)
    assert torch.allclose(probs, per_window.softmax(-1).mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
    # what the docs tell a user to do with the logits gives the probabilities predict averages ...
    assert torch.allclose(logits.softmax(-1).mean(dim=(1, 2, 3)), probs, atol=TOLERANCE, rtol=0)
    # ... and the softmax of the averaged logits does not: the windows differ
    assert not torch.allclose(logits.mean(dim=(1, 2, 3)).softmax(-1), probs, atol=1e-3)
    metadata = ex.read_metadata(fmt, out)
    assert metadata["output"] == "logits" and metadata["output_shape"] == ["batch", 2, 2, 2, len(CLASSES)]
    assert metadata["input_shape"] == ["batch", 3, 24, 96, 96]
    # only the batch is dynamic: another clip size is refused
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(out, providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape == ["batch", 3, 24, 96, 96]
    with pytest.raises(Exception, match=r"(?i)dimension|Guard failed: clip\.size\(\)\[2\] == 24"):
        ex.load_exported(fmt, out)(ex.random_clips(1, (3, 16, 96, 96)))


def test_default_real_clip_is_the_first_video_of_the_test_manifest(tiny, tmp_path, capsys):
    cfg_path, _ = tiny["cgnl"]
    lists = os.path.join(os.path.dirname(cfg_path), "lists")
    write_manifest(os.path.join(lists, "test.txt"), [ManifestEntry(tiny["frames"], 0, 24)])
    try:
        out = str(tmp_path / "model.pt")
        assert run_tool("export", export_argv(tiny, "cgnl", "torchscript", out, "--verify")) == 0
        assert f"{tiny['frames']} (batch 1)" in capsys.readouterr().out
    finally:
        os.remove(os.path.join(lists, "test.txt"))
    assert run_tool("export", export_argv(tiny, "cgnl", "torchscript", out, "--verify")) == 2
    err = capsys.readouterr().err
    assert os.path.join(lists, "test.txt") in err and "--verify-video" in err


def corrupted(write):
    """The writer ``write``, exporting a copy of the model with one CGNL weight changed."""
    def write_corrupted(module, example, path, metadata):
        bad = copy.deepcopy(module)
        with torch.no_grad():
            bad.model.get_submodule("blocks.4.inserted.4").z.weight.mul_(1.5)
        write(bad, example, path, metadata)
    return write_corrupted


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_failed_verification_exits_1_and_leaves_out_untouched(tiny, fmt, tmp_path, capsys, monkeypatch):
    out = tmp_path / f"model.{SUFFIX[fmt]}"
    out.write_text("an earlier export")
    monkeypatch.setitem(ex.WRITERS, fmt, corrupted(ex.WRITERS[fmt]))
    argv = export_argv(tiny, "cgnl", fmt, str(out), "--verify", "--verify-video", tiny["video"])
    assert run_tool("export", argv) == 1
    captured = capsys.readouterr()
    assert captured.out.count("FAILED") == 3 and min(reported_differences(captured.out)) > TOLERANCE
    assert f"error: verification failed, {out} not written: 3 of 3 checks differ by more than the tolerance 0.0001" \
        in captured.err
    assert out.read_text() == "an earlier export" and sorted(os.listdir(tmp_path)) == [out.name]


def test_missing_onnx_extra_is_named_with_the_install_command(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    assert run_tool("export", export_argv(tiny, "cgnl", "onnx", str(tmp_path / "m.onnx"))) == 2
    err = capsys.readouterr().err
    assert "missing: onnxruntime" in err and 'pip install -e ".[export]"' in err
    with pytest.raises(ex.MissingExtraError):
        ex.export_model(ex.ExportedClassifier(torch.nn.Identity()), "onnx", str(tmp_path / "m.onnx"),
                        (3, 1, 1, 1), ex.Metadata("probs", [], [], 1, [], [], []))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change, message", [
    (["--checkpoint", "nowhere.pyth"], "checkpoint not found: nowhere.pyth"),
    (["--checkpoint", "NL"], "nl_trained.pyth"),  # the + NL weights do not fit the + CGNL model
    (["--verify", "--verify-video", "MISSING"], "no such file or folder"),
    (["--frames", "1"], "cannot take clips of (3, 1, 64, 64)"),
    (["--opt", "MODEL.NUM_CLASSES", "0"], "MODEL.NUM_CLASSES"),
])
def test_bad_inputs_are_named_with_exit_status_2(tiny, tmp_path, capsys, change, message):
    out = str(tmp_path / "model.pt")
    change = [tiny["nl"][1] if c == "NL" else tiny["missing"] if c == "MISSING" else c for c in change]
    message = tiny["missing"] if message == "no such file or folder" else message
    assert run_tool("export", export_argv(tiny, "cgnl", "torchscript", out) + change) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite"], "invalid choice: 'tflite'"),
    (["--format", "onnx", "--tolerance", "1e-3"], "--tolerance needs --verify"),
    (["--format", "onnx", "--verify-video", "v.mp4"], "--verify-video needs --verify"),
    (["--format", "onnx", "--frames", "0"], "--frames must be positive"),
    (["--format", "onnx", "--verify", "--tolerance", "-1"], "--tolerance must be >= 0"),
])
def test_bad_arguments_exit_2(tiny, capsys, argv, message):
    assert runpy.run_path(os.path.join(ROOT, "tools", "export.py"))["FORMATS"] == ex.FORMATS
    with pytest.raises(SystemExit) as exit_info:
        run_tool("export", ["--cfg", tiny["cgnl"][0], "--checkpoint", "c.pyth", "--out", "m", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
