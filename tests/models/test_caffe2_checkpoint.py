"""The official non-local Kinetics-400 checkpoints (Caffe2 pickles; docs/MODELS.md,
"Official non-local models"), with stand-ins built from the official naming rules
(tests/caffe2_fixtures.py): strict loading, numerical equivalence with torchvision's
ResNet-50 plus a non-local block written out here, errors naming blobs, and the
restricted unpickler refusing a pickle that would run a command."""

import os
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from caffe2_fixtures import NL_BLOCKS, official_blobs, torchvision_key, with_training_state, write_official
from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.models import CheckpointError, build_model, load_state, read_state_dict
from repo_paths import ROOT

C2D, NL5 = "C2D_R50_32x2", "C2D_R50_NL5_32x2"  # configs/kinetics400: the released models' layouts


def official_model(config=C2D):
    """The model of configs/kinetics400/<config>.yaml (400 classes, pool1 unpadded), random weights."""
    return build_model(load_config(os.path.join(ROOT, "configs", "kinetics400", f"{config}.yaml"),
                                   ["RESNET.IMAGENET_WEIGHTS", ""]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (path, blobs) of the C2D and the 5-NL stand-ins (optimizer blobs included)."""
    folder = tmp_path_factory.mktemp("caffe2")
    out = {}
    for name, nl in (("c2d", False), ("nl5", True)):
        blobs = official_blobs(nonlocal_blocks=nl, seed=int(nl))
        path = str(folder / f"{name}.pkl")
        write_official(path, with_training_state(blobs))
        out[name] = path, blobs
    return out


@pytest.mark.parametrize("name, config", [("c2d", C2D), ("nl5", NL5)])
def test_every_blob_loads_strictly(files, name, config):
    path, blobs = files[name]
    model = official_model(config)
    report = cu.load_model_weights(model, path)[1]
    state = model.state_dict()
    assert len(report.loaded) == len(state)  # every key of the model, nothing skipped
    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(weights) == len(blobs)  # one tensor per blob, momentum / lr / model_iter left out
    values = sorted(v.numpy().tobytes() for v in weights.values())
    assert values == sorted(b.tobytes() for b in blobs.values())
    stage3 = model.stages[1]
    assert sorted(stage3.inserted) == (["1", "3"] if name == "nl5" else [])
    if name == "nl5":
        nl = stage3.inserted["3"]
        assert np.array_equal(nl.z.weight.detach().numpy(), blobs["nonlocal_conv3_3_out_w"])
        assert np.array_equal(nl.norm.running_var.numpy(), blobs["nonlocal_conv3_3_bn_riv"])


class NonLocal2d(nn.Module):
    """The embedded Gaussian non-local block, 2D, written out from the non-local paper
    (Sec. 3.2, Fig. 2): theta / phi / g 1x1 convs, phi and g on the input max-pooled 2x2,
    softmax(theta^T phi * C'^-0.5) over the pooled positions, y, out conv, BN, residual."""

    def __init__(self, blobs, prefix):
        super().__init__()
        for name, value in blobs.items():  # buffers "theta_w", ..., "bn_riv"; 2D kernels
            if name.startswith(prefix + "_"):
                self.register_buffer(name[len(prefix) + 1:], torch.from_numpy(value.squeeze((2, 3, 4)) if
                                                                              value.ndim == 5 else value))

    def conv(self, op, x):
        return F.conv2d(x, self.get_buffer(f"{op}_w")[:, :, None, None], self.get_buffer(f"{op}_b"))

    def forward(self, x):
        b, c, h, w = x.shape
        pooled = F.max_pool2d(x, 2, 2)
        theta = self.conv("theta", x).flatten(2)  # (B, C', N)
        phi, g = self.conv("phi", pooled).flatten(2), self.conv("g", pooled).flatten(2)  # (B, C', M)
        attention = torch.softmax(theta.transpose(1, 2) @ phi * theta.shape[1] ** -0.5, dim=-1)  # (B, N, M)
        y = (attention @ g.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
        out = self.conv("out", y)
        return x + F.batch_norm(out, self.bn_rm, self.bn_riv, self.bn_s, self.bn_b, training=False, eps=1e-5)


def torchvision_reference(blobs):
    """torchvision's ResNet-50 holding ``blobs`` by the test's own table, pool1 unpadded, and
    the NL blocks of ``blobs`` after their residual blocks; eval mode."""
    net = torchvision.models.resnet50(num_classes=blobs["pred_w"].shape[0])
    net.maxpool.padding = 0
    state = {torchvision_key(k): torch.from_numpy(v) for k, v in blobs.items() if torchvision_key(k)}
    state = {k: (v[:, :, 0] if v.dim() == 5 else v) for k, v in state.items()}  # (O, I, 1, k, k) -> 2D
    state.update({k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")})
    net.load_state_dict(state)
    for stage, indices in NL_BLOCKS.items():
        layer = getattr(net, f"layer{stage - 1}")
        for i in indices:
            if f"nonlocal_conv{stage}_{i}_theta_w" in blobs:
                layer[i] = nn.Sequential(layer[i], NonLocal2d(blobs, f"nonlocal_conv{stage}_{i}"))
    return net.eval()


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("name, config", [("c2d", C2D), ("nl5", NL5)])
@pytest.mark.parametrize("size", [224, 256])
def test_a_clip_of_identical_frames_gives_the_2d_networks_features_and_scores(files, name, config, size):
    """8 identical frames (the smallest clip of the 32x2 model's temporal strides): every
    time step of res5 equals torchvision's layer4 on the frame (pool1 unpadded: 224 -> res5
    7x7, 256 -> 8x8), and the eval-mode output is the softmax of torchvision's fc on each
    7x7 window (stride 1) of layer4, averaged: softmax(torchvision's logits) at 224, four
    windows at 256. In float64: float32 rounding differs between the two (1e-4 of the
    largest feature after 5 NL blocks)."""
    path, blobs = files[name]
    model = official_model(config).eval()
    cu.load_model_weights(model, path)
    model, reference = model.double(), torchvision_reference(blobs).double()
    frame = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size), dtype=torch.float64) * 2
    clip = frame.unsqueeze(2).expand(-1, -1, 8, -1, -1).contiguous()
    with torch.no_grad():
        scores = model(clip)
        ours = clip
        for block in model.blocks[:-1]:
            ours = block(ours)
        theirs = nn.Sequential(*list(reference.children())[:-2])(frame)
        windows = F.avg_pool2d(theirs, 7, stride=1).permute(0, 2, 3, 1)  # (1, size/32 - 6, size/32 - 6, 2048)
        expected = reference.fc(windows).softmax(dim=-1).mean(dim=(1, 2))
        logits = reference(frame)
    assert ours.shape[-2:] == theirs.shape[-2:] == (size // 32,) * 2
    assert theirs.abs().mean() > 0.1  # a live network, not a vanished one
    scale = theirs.abs().max()
    for t in range(ours.shape[2]):
        torch.testing.assert_close(ours[:, :, t] / scale, theirs / scale, atol=1e-10, rtol=0)
    torch.testing.assert_close(scores, expected, atol=1e-12, rtol=1e-9)
    if size == 224:
        torch.testing.assert_close(scores, logits.softmax(dim=-1), atol=1e-12, rtol=1e-9)
    assert scores.max() > 2 / 400  # not a uniform distribution


def _rewrite(tmp_path, blobs, **change):
    path = str(tmp_path / "edited.pkl")
    edited = {k: v for k, v in blobs.items() if change.get(k, 0) is not None}
    edited.update({k: v for k, v in change.items() if v is not None})
    write_official(path, edited)
    return path


def test_a_missing_blob_is_named(files, tmp_path):
    _, blobs = files["nl5"]
    path = _rewrite(tmp_path, blobs, res4_2_branch2b_bn_riv=None, nonlocal_conv4_5_phi_b=None)
    with pytest.raises(CheckpointError, match=r"does not fit the model: 2 missing from the file: "
                                              r"res4_2_branch2b_bn_riv, nonlocal_conv4_5_phi_b$"):
        cu.load_model_weights(official_model(NL5), path)


def test_a_blob_of_no_rule_is_named(files, tmp_path):
    _, blobs = files["c2d"]
    path = _rewrite(tmp_path, blobs, res4_0_branch2d_w=np.zeros(3, np.float32), pred_extra=np.zeros(1))
    with pytest.raises(CheckpointError, match=r"2 Caffe2 blobs that are no weight of our models .*: "
                                              r"pred_extra, res4_0_branch2d_w$"):
        read_state_dict(path)


def test_nl_blobs_into_a_model_without_them_are_named(files):
    path, _ = files["nl5"]
    with pytest.raises(CheckpointError, match=r"60 not in the model: nonlocal_conv3_1_theta_w, "):
        cu.load_model_weights(official_model(), path)


def test_a_blob_of_another_shape_names_both_shapes(files, tmp_path):
    _, blobs = files["c2d"]
    path = _rewrite(tmp_path, blobs, res3_0_branch2b_w=np.zeros((128, 128, 3, 3, 3), np.float32))
    with pytest.raises(CheckpointError, match=re.escape("1 of another shape: res3_0_branch2b_w (128, 128, 3, 3, 3) "
                                                        "in the file, (128, 128, 1, 3, 3) in the model")):
        cu.load_model_weights(official_model(), path)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_that_would_run_a_command_is_refused(tmp_path, protocol):
    """In the layout of the official files, but one blob unpickles by calling os.system."""
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pkl")
    with open(path, "wb") as handle:
        pickle.dump({"blobs": {"conv1_w": _RunsACommand(marker)}}, handle, protocol=protocol)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(path)}: refused to load (posix|os)\.system: a Caffe2 "
                                              r"checkpoint holds only dicts, lists, strings, numbers and numpy arrays"):
        read_state_dict(path)
    assert not marker.exists()
    pickle.load(open(path, "rb"))  # the same file through the plain unpickler: it would run
    assert marker.exists()


def test_our_checkpoints_are_still_read_weights_only(tmp_path):
    """A torch file (zip) goes to torch's weights-only unpickler, which refuses the same trick."""
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.pyth")
    torch.save({"model": {"w": torch.zeros(1)}, "x": _RunsACommand(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        read_state_dict(path)
    assert not marker.exists()


def test_hub_takes_an_official_file(files):
    """torch.hub's loader (hubconf.py) reads the number of classes and the weights from it."""
    from cgnl_video.hub import hub_model

    path, blobs = files["c2d"]
    model = hub_model(os.path.join(ROOT, "configs", "kinetics400", f"{C2D}.yaml"), checkpoint=path)
    assert model.head.proj.out_features == 400
    assert np.array_equal(model.head.proj.weight.detach().numpy(), blobs["pred_w"])


def test_load_state_reports_keys_in_our_names_for_our_files():
    model = build_model(load_config(None, ["RESNET.WIDTH_PER_GROUP", "8", "RESNET.IMAGENET_WEIGHTS", ""]))
    state = dict(model.state_dict())
    del state["blocks.0.conv.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing from the file: blocks\.0\.conv\.weight$"):
        load_state(model, state)


def test_convert_checkpoint_writes_ours_once_verified(files, tmp_path, capsys, monkeypatch):
    from caffe2_fixtures import KINETICS_LIKE_CLASSES
    from cgnl_video.data import write_classes
    from tools_fixtures import run_tool

    path, _ = files["nl5"]
    config = os.path.join(ROOT, "configs", "kinetics400", f"{NL5}.yaml")
    classes, out = str(tmp_path / "classes.txt"), str(tmp_path / "nl5.pyth")
    write_classes(classes, KINETICS_LIKE_CLASSES)
    assert run_tool("convert_checkpoint", [path, "--cfg", config, "--out", out, "--classes", classes]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 385 tensors of {path}, 400 class names\n"
    converted, original = cu.load_checkpoint(out), read_state_dict(path)
    assert converted["classes"] == KINETICS_LIKE_CLASSES
    assert converted["model"].keys() == original.keys()
    assert all(torch.equal(converted["model"][k], v) for k, v in original.items())
    model = official_model(NL5)
    cu.load_model_weights(model, out)  # our layout now, strictly

    wrong = str(tmp_path / "wrong.pyth")  # the C2D config does not take the NL blobs: nothing written
    assert run_tool("convert_checkpoint", [path, "--cfg", config.replace(NL5, C2D), "--out", wrong]) == 2
    assert "60 not in the model: nonlocal_conv3_1_theta_w" in capsys.readouterr().err
    assert not os.path.exists(wrong)

    monkeypatch.setattr("cgnl_video.models.read_state_dict", lambda p: {})  # reading back loses everything
    assert run_tool("convert_checkpoint", [path, "--cfg", config, "--out", wrong]) == 1
    assert capsys.readouterr().err.startswith("error: reading the converted file back differs at 385 tensors")
    assert sorted(os.listdir(tmp_path)) == ["classes.txt", "nl5.pyth"]


def test_test_only_runs_and_the_inference_tools_read_an_official_file(files):
    """TEST.CHECKPOINT_FILE_PATH (a test-only run) and inference.load_model (predict.py,
    export.py) go through the same reader: the file's weights, strictly."""
    from cgnl_video.engine.multiview import load_test_weights
    from cgnl_video.inference import load_model

    path, blobs = files["nl5"]
    cfg = load_config(os.path.join(ROOT, "configs", "kinetics400", f"{NL5}.yaml"),
                      ["RESNET.IMAGENET_WEIGHTS", "", "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", path])
    model = build_model(cfg)
    assert load_test_weights(cfg, model, trained=False) == (path, None)
    for loaded in (model, load_model(cfg, path)):
        assert np.array_equal(loaded.stages[2].inserted["5"].g.weight.detach().numpy(), blobs["nonlocal_conv4_5_g_w"])
        assert np.array_equal(loaded.stem.conv.weight.detach().numpy(), blobs["conv1_w"])
