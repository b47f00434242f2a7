"""Models as built from a config, checked against formulas written out here.

* Every NONLOCAL.TYPE: the block that ``build_model`` inserts computes the block of
  the paper with the config's kernel, Taylor order, RBF gamma, USE_SCALE, groups,
  norm, DIM_INNER_RATIO (CGNL, Eq. 8-9 with alpha_p^2 computed by hand) or NL
  instantiation, scale and pooling, compared with an explicit L x L (or N x M)
  formulation in float64 at trained-model magnitudes.
* The NL block's affinity: a softmax over the positions of phi (one row per theta
  position), against an explicit exp / sum.
* 2D -> 3D ImageNet inflation: on a clip of different frames, a temporal kernel of
  size t gives the mean of the 2D convolution over the t frames it covers.
* Weights saved from a model wrapped twice (torch.compile and DataParallel, in either
  order) load into a plain model.
"""

import math
import re
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cgnl_video.config import load_config
from cgnl_video.models import NonLocalBlock, build_model, load_pretrained
from cgnl_video.models.state_dict import CheckpointError, load_state, read_state_dict

# A narrow C2D R-50 (stage widths 16..128) with one block after res4 block 4 (64 channels).
NARROW = ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "5", "NONLOCAL.LOCATION", "[[], [], [4], []]"]
RES4_CHANNELS = 64


def _inserted(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The inserted blocks by module name (``...inserted.<index of the block they follow>``)."""
    return {name: m for name, m in model.named_modules() if re.fullmatch(r".*\.inserted\.\d+", name)}


def _realistic(block: torch.nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    """Trained-model-like parameters (the zero-initialised norm made non-trivial);
    returns the block's state dict in float64."""
    generator = torch.Generator().manual_seed(seed)
    block.double().eval()
    with torch.no_grad():
        for name, tensor in block.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or name.endswith("norm.weight"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype))
            else:  # conv weights and biases, norm biases, running means
                tensor.copy_(0.25 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
    return block.state_dict()


def _conv(x: torch.Tensor, weight: torch.Tensor, bias=None, groups: int = 1) -> torch.Tensor:
    """A 1x1x1 convolution written as a (grouped) channel contraction."""
    out_ch = weight.shape[0]
    w = weight.reshape(groups, out_ch // groups, -1)  # (G, O/G, I/G)
    xs = x.reshape(x.shape[0], groups, -1, *x.shape[2:])  # (B, G, I/G, T, H, W)
    y = torch.einsum("goi,bgithw->bgothw", w, xs).reshape(x.shape[0], out_ch, *x.shape[2:])
    return y if bias is None else y + bias.view(1, -1, 1, 1, 1)


def _norm(y: torch.Tensor, state: Dict[str, torch.Tensor], kind: str, groups: int) -> torch.Tensor:
    """Eval-mode BatchNorm (running statistics) or GroupNorm, written out."""
    shape = (1, -1, 1, 1, 1)
    if kind == "bn":
        normed = (y - state["norm.running_mean"].view(shape)) / torch.sqrt(state["norm.running_var"].view(shape) + 1e-5)
    else:
        grouped = y.reshape(y.shape[0], groups, -1)
        mean = grouped.mean(-1, keepdim=True)
        var = grouped.var(-1, unbiased=False, keepdim=True)
        normed = ((grouped - mean) / torch.sqrt(var + 1e-5)).reshape(y.shape)
    return normed * state["norm.weight"].view(shape) + state["norm.bias"].view(shape)


def _alpha_squared(kernel: str, order: int, gamma: float) -> List[float]:
    """alpha_p^2, p = 0..P, of the CGNL paper's Taylor kernels (Eq. 9-11)."""
    if kernel == "dot":
        return [0.0, 1.0]
    if kernel == "embedded_gaussian":  # exp(x) = sum x^p / p!
        return [1.0 / math.factorial(p) for p in range(order + 1)]
    beta = math.exp(-2.0 * gamma)  # RBF: exp(-gamma |t - p|^2) ~ beta exp(2 gamma t p) for unit-norm t, p
    return [beta * (2.0 * gamma) ** p / math.factorial(p) for p in range(order + 1)]


def _expected_cgnl(x, state, cfg) -> torch.Tensor:
    c = cfg.CGNL
    groups = c.GROUPS
    theta, phi, g = (_conv(x, state[f"{k}.weight"]) for k in ("theta", "phi", "g"))
    coefficients = _alpha_squared(c.KERNEL, c.ORDER, c.GAMMA)
    y = torch.empty_like(theta)
    per_group = theta.shape[1] // groups
    for b in range(x.shape[0]):
        for k in range(groups):
            part = slice(k * per_group, (k + 1) * per_group)
            t, p, v = theta[b, part].flatten(), phi[b, part].flatten(), g[b, part].flatten()
            products = t[:, None] * p[None, :]  # L x L, L = C' T H W
            pairwise = sum(a * products**power for power, a in enumerate(coefficients))
            if c.USE_SCALE:
                pairwise = pairwise / math.sqrt(t.numel())
            y[b, part] = (pairwise @ v).reshape(theta[b, part].shape)
    z = _conv(y, state["z.weight"], groups=groups)
    return x + _norm(z, state, c.NORM, groups)


def _expected_nl(x, state, cfg) -> torch.Tensor:
    theta = _conv(x, state["theta.weight"], state["theta.bias"])
    pool = tuple(cfg.NL.POOL)
    source = F.max_pool3d(x, pool, pool, ceil_mode=True) if max(pool) > 1 else x
    phi = _conv(source, state["phi.weight"], state["phi.bias"]).flatten(2)
    g = _conv(source, state["g.weight"], state["g.bias"]).flatten(2)
    logits = torch.einsum("bcn,bcm->bnm", theta.flatten(2), phi)
    if cfg.NL.INSTANTIATION == "softmax":
        if cfg.NL.SCALE:
            logits = logits / math.sqrt(theta.shape[1])
        weights = logits.exp() / logits.exp().sum(dim=2, keepdim=True)  # over phi's positions
    else:
        weights = logits / phi.shape[-1]
    y = torch.einsum("bnm,bcm->bcn", weights, g).reshape(theta.shape)
    z = _conv(y, state["z.weight"], state["z.bias"])
    return x + _norm(z, state, "bn", 1)


def _expected_residual(x, state, cfg) -> torch.Tensor:
    z = _conv(_conv(x, state["theta.weight"]), state["z.weight"], groups=cfg.CGNL.GROUPS)
    return x + _norm(z, state, cfg.CGNL.NORM, cfg.CGNL.GROUPS)


EXPECTED = {"cgnl": _expected_cgnl, "nl": _expected_nl, "residual": _expected_residual}

BLOCK_CONFIGS = {
    "cgnl-dot": ["NONLOCAL.TYPE", "cgnl", "CGNL.KERNEL", "dot", "CGNL.GROUPS", "2"],
    "cgnl-gaussian-order2-scaled-gn": ["NONLOCAL.TYPE", "cgnl", "CGNL.KERNEL", "embedded_gaussian",
                                       "CGNL.ORDER", "2", "CGNL.USE_SCALE", "True", "CGNL.NORM", "gn",
                                       "CGNL.GROUPS", "4"],
    "cgnl-gaussian-order4-ratio025": ["NONLOCAL.TYPE", "cgnl", "CGNL.KERNEL", "embedded_gaussian",
                                      "CGNL.ORDER", "4", "CGNL.GROUPS", "1", "NONLOCAL.DIM_INNER_RATIO", "0.25"],
    "cgnl-rbf-gamma05-fused": ["NONLOCAL.TYPE", "cgnl", "CGNL.KERNEL", "rbf", "CGNL.ORDER", "3",
                               "CGNL.GAMMA", "0.5", "CGNL.GROUPS", "2", "CGNL.FUSED", "True"],
    "cgnl-rbf-order1-scaled": ["NONLOCAL.TYPE", "cgnl", "CGNL.KERNEL", "rbf", "CGNL.ORDER", "1",
                               "CGNL.GAMMA", "0.05", "CGNL.USE_SCALE", "True", "CGNL.GROUPS", "8"],
    "nl-softmax-scaled-pooled": ["NONLOCAL.TYPE", "nl", "NL.POOL", "[1, 2, 2]"],
    "nl-softmax-unscaled": ["NONLOCAL.TYPE", "nl", "NL.SCALE", "False", "NL.POOL", "[1, 1, 1]"],
    "nl-dot-product-ratio025": ["NONLOCAL.TYPE", "nl", "NL.INSTANTIATION", "dot_product",
                                "NONLOCAL.DIM_INNER_RATIO", "0.25"],
    "residual-gn": ["NONLOCAL.TYPE", "residual", "CGNL.GROUPS", "4", "CGNL.NORM", "gn"],
}


@pytest.mark.parametrize("name", sorted(BLOCK_CONFIGS))
def test_inserted_block_computes_what_the_config_says(name):
    cfg = load_config(None, NARROW + BLOCK_CONFIGS[name])
    torch.manual_seed(0)
    blocks = _inserted(build_model(cfg))
    assert list(blocks) == ["blocks.4.inserted.4"]  # res4, after residual block 4
    block = blocks["blocks.4.inserted.4"]
    state = _realistic(block, seed=len(name))
    inner = int(RES4_CHANNELS * cfg.NONLOCAL.DIM_INNER_RATIO)
    assert tuple(state["theta.weight"].shape[:2]) == (inner, RES4_CHANNELS)
    if cfg.NONLOCAL.TYPE != "nl":
        assert isinstance(block.norm, torch.nn.GroupNorm if cfg.CGNL.NORM == "gn" else torch.nn.BatchNorm3d)
    generator = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(2, RES4_CHANNELS, 2, 3, 3, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        got, expected = block(x), EXPECTED[cfg.NONLOCAL.TYPE](x, state, cfg)
    branch = expected - x  # what the block adds: compare it, not the identity part
    assert branch.abs().max() > 0.1
    assert torch.allclose(got - x, branch, rtol=1e-9, atol=1e-9 * branch.abs().max().item())


# ----------------------------------------------------------------------------- NL affinity


@pytest.mark.parametrize("scale", [True, False])
def test_nl_affinity_is_a_softmax_over_the_positions_of_phi(scale):
    torch.manual_seed(3)
    block = NonLocalBlock(16, 8, pool_size=(1, 2, 2), scale=scale)
    _realistic(block, seed=3)
    x = 2.0 * torch.randn(2, 16, 2, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        theta = block.theta(x).flatten(2)  # (B, C', N = 48)
        phi = block.phi(block.pool(x)).flatten(2)  # (B, C', M = 12)
        g = block.g(block.pool(x)).flatten(2)
        weights = block.affinity(theta, phi)
        attended = block.attend(theta, phi, g)
    logits = torch.einsum("bcn,bcm->bnm", theta, phi) / (math.sqrt(8) if scale else 1.0)
    assert logits.std() > 1.0  # far from a uniform softmax
    expected = logits.exp() / logits.exp().sum(dim=2, keepdim=True)
    assert weights.shape == (2, 48, 12)
    assert torch.allclose(weights, expected, rtol=1e-10, atol=1e-14)
    assert torch.allclose(weights.sum(dim=2), torch.ones(2, 48, dtype=torch.float64))
    # The forward pass (fused attention) weighs g with exactly these rows.
    assert torch.allclose(attended, torch.einsum("bnm,bcm->bcn", expected, g), rtol=1e-9, atol=1e-12)


def test_nl_dot_product_affinity_divides_by_the_positions_of_phi():
    block = NonLocalBlock(8, 4, instantiation="dot_product", pool_size=(1, 1, 1))
    _realistic(block, seed=4)
    theta = torch.randn(1, 4, 6, dtype=torch.float64)
    phi = torch.randn(1, 4, 10, dtype=torch.float64)
    expected = torch.einsum("bcn,bcm->bnm", theta, phi) / 10
    assert torch.allclose(block.affinity(theta, phi), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- ImageNet inflation


@pytest.fixture(scope="module")
def resnet50_state(tmp_path_factory):
    """A torchvision ResNet-50 state dict with random (non-zero) weights, saved to a file."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    path = tmp_path_factory.mktemp("imagenet") / "resnet50.pth"
    torch.save(net.state_dict(), path)
    return str(path), net.state_dict()


def test_inflated_temporal_kernels_average_the_2d_kernel_over_different_frames(resnet50_state):
    """STEM_CONV_KERNEL [3, 7, 7] and a [3, 1, 1] conv_a in res3: each temporal tap holds
    the 2D kernel / 3, so on a clip whose frames all differ, output frame t is the mean
    of the 2D convolution of frames t-1, t, t+1 (zero frames outside the clip)."""
    path, state2d = resnet50_state
    cfg = load_config(None, ["RESNET.IMAGENET_WEIGHTS", path, "MODEL.NUM_CLASSES", "1000",
                             "RESNET.STEM_CONV_KERNEL", "[3, 7, 7]", "RESNET.STEM_CONV_STRIDE", "[1, 2, 2]",
                             "RESNET.CONV_A_KERNEL", "[[1, 1, 1], [3, 1, 1], [1, 1, 1], [1, 1, 1]]",
                             "DATA.NUM_FRAMES", "16"])
    model = build_model(cfg)
    load_pretrained(cfg, model)  # build_model reads no file; a fresh run loads the ImageNet weights
    stem_conv = model.blocks[0].conv
    conv_a = model.blocks[3].res_blocks[1].branch2.conv_a
    generator = torch.Generator().manual_seed(2)
    for conv, weight2d, size in ((stem_conv, state2d["conv1.weight"], 20),
                                 (conv_a, state2d["layer2.1.conv1.weight"], 5)):
        clip = torch.randn(1, conv.in_channels, 4, size, size, generator=generator)  # 4 different frames
        with torch.no_grad():
            got = conv(clip)
            per_frame = torch.stack([F.conv2d(clip[:, :, t], weight2d, stride=conv.stride[1:],
                                              padding=conv.padding[1:]) for t in range(4)], dim=2)
        padded = F.pad(per_frame, (0, 0, 0, 0, 1, 1))  # a zero frame before and after
        expected = (padded[:, :, :-2] + padded[:, :, 1:-1] + padded[:, :, 2:]) / 3
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


# ----------------------------------------------------------------------------- wrapped checkpoints


def _doubly_wrapped(model: torch.nn.Module, order: str) -> torch.nn.Module:
    """The model as a compiled data-parallel run holds it (torch.compile of DataParallel,
    keys ``_orig_mod.module.``) or the other way round (``module._orig_mod.``); DataParallel
    stands in for DDP, which prefixes its keys the same way. Nothing is compiled: the
    wrapper only names the keys."""
    if order == "compiled DataParallel":
        return torch.compile(torch.nn.DataParallel(model))
    return torch.nn.DataParallel(torch.compile(model))


@pytest.mark.parametrize("order", ["compiled DataParallel", "DataParallel of compiled"])
def test_weights_saved_from_a_doubly_wrapped_model_load_into_a_plain_one(order, tmp_path):
    """Both wrapper prefixes are removed, in either order, however they nest."""
    torch.manual_seed(3)
    source = build_model(load_config(None, NARROW))
    saved = _doubly_wrapped(source, order).state_dict()
    prefix = "_orig_mod.module." if order == "compiled DataParallel" else "module._orig_mod."
    assert all(key.startswith(prefix) for key in saved)  # what such a run writes
    path = tmp_path / "wrapped.pyth"
    torch.save({"model": saved, "epoch": 1}, path)

    read = read_state_dict(str(path))
    assert sorted(read) == sorted(source.state_dict())
    torch.manual_seed(4)
    target = build_model(load_config(None, NARROW))
    load_state(target, read, source=str(path))  # strict: every key of the model
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in target.state_dict().items())


def test_a_new_classifier_is_tolerated_only_for_another_number_of_classes():
    """Fine-tuning (``new_classifier``) keeps a fresh classifier when the file's has
    another number of rows (classes). A classifier over another feature width (another
    number of columns) is a different model: an error naming the key and both shapes,
    never a silent fresh start."""
    torch.manual_seed(5)
    model = build_model(load_config(None, NARROW))
    key = model.classifier_key
    state = dict(model.state_dict())
    rows, columns = state[key].shape
    state[key] = torch.randn(rows + 2, columns)  # 7 classes: tolerated
    state[key.replace("weight", "bias")] = torch.randn(rows + 2)
    report = load_state(model, state, new_classifier=True)
    assert sorted(report.skipped) == sorted([key, key.replace("weight", "bias")])

    state[key] = torch.randn(rows + 2, columns + 8)  # other features as well
    with pytest.raises(CheckpointError, match=re.escape(key) + r".*\(7, " + str(columns + 8) + r"\) in the file"):
        load_state(model, state, new_classifier=True)
