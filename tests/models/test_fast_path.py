"""The fast-path switches (CGNL.FUSED, MODEL.CHANNELS_LAST, MODEL.COMPILE,
TRAIN.MIXED_PRECISION), the hand-written CGNL kernel backward and the SDPA NL
path, all on the CPU; plus the baselines and helpers of benchmarks/.

The compiled-block test compiles two tiny blocks with the CPU inductor backend
(about 20 s); it needs a C++ compiler, as torch.compile does on the CPU.
"""

import importlib.util
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from cgnl_video.config import get_cfg
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.inputs import to_device
from cgnl_video.engine.precision import amp_dtype, autocast_context, build_grad_scaler
from cgnl_video.models import CGNLBlock, NonLocalBlock, build_model, prepare_for_speed
from cgnl_video.models.cgnl import CGNL_KERNELS, _compact_expression, compact_generalized_nonlocal
from repo_paths import ROOT

REPO = ROOT
NARROW = ["RESNET.WIDTH_PER_GROUP", "8", "MODEL.NUM_CLASSES", "5", "MODEL.DROPOUT_RATE", "0.0"]
CGNL_1_5 = ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [1], [2], []]", "CGNL.GROUPS", "4"]


def _cfg(*opts: str):
    cfg = get_cfg()
    cfg.merge_from_list(list(NARROW) + list(opts))
    return cfg


def _bench_module(name: str):
    """A module of benchmarks/ (not a package) imported by path."""
    folder = os.path.join(REPO, "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plain_compact(theta, phi, g, coefficients):
    """Eq. 12 as a plain autograd expression (the reference for the custom backward)."""
    dims = tuple(range(2, theta.dim()))
    y = torch.zeros_like(theta)
    for power, c in enumerate(coefficients):
        if c:
            y = y + c * (g * phi**power).sum(dims, keepdim=True) * theta**power
    return y


def _train_step(model, cfg, clip, labels):
    """Forward + backward as engine.train_loop does it; returns the logits and the gradients."""
    model.zero_grad(set_to_none=True)
    with autocast_context(cfg, torch.device("cpu")):
        logits = model(to_device(clip, torch.device("cpu"), cfg))
    F.cross_entropy(logits.float(), labels).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in cu.unwrap_model(model).named_parameters()}


def _assert_same_gradients(expected, actual, tolerance=1e-4):
    """Same up to fp32 rounding: the whole gradient within ``tolerance`` relative (2-norm),
    each tensor within 10x that of the largest entry (some sums, like the gradient of a
    BatchNorm bias followed by another BatchNorm, are rounding noise around zero)."""
    flat_e = torch.cat([g.flatten() for g in expected.values()])
    flat_a = torch.cat([actual[k].flatten() for k in expected])
    assert (flat_e - flat_a).norm() <= tolerance * flat_e.norm()
    scale = flat_e.abs().max()
    for key, grad in expected.items():
        assert torch.allclose(actual[key], grad, rtol=10 * tolerance, atol=10 * tolerance * scale), key


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-zero weights in the zero-initialised norms, so gradients reach every conv."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm3d, torch.nn.GroupNorm)) and not module.weight.any():
                module.weight.uniform_(0.5, 1.5)


# ----------------------------------------------------------------------------- the CGNL kernel


@pytest.mark.parametrize("kernel", CGNL_KERNELS)
@pytest.mark.parametrize("layout", ["BGL", "grouped_6d_channels_last"])
def test_kernel_backward_equals_autograd_of_the_plain_expression(kernel, layout):
    torch.manual_seed(0)
    block = CGNLBlock(16, groups=4, kernel=kernel, order=3, gamma=0.05)
    shape = (2, 8, 3, 4, 5)
    memory = torch.channels_last_3d if layout != "BGL" else torch.contiguous_format
    inputs = [torch.randn(shape, dtype=torch.float64).contiguous(memory_format=memory) for _ in range(3)]
    if layout == "BGL":
        grouped = [t.reshape(2, 4, -1) for t in inputs]
    else:
        grouped = [t.unflatten(1, (4, -1)) for t in inputs]  # strided views, no copy
    leaves = [t.detach().requires_grad_() for t in grouped]
    ours = compact_generalized_nonlocal(*leaves, block.coefficients)
    plain_leaves = [t.detach().requires_grad_() for t in grouped]
    plain = _plain_compact(*plain_leaves, block.coefficients)
    assert torch.allclose(ours, plain, rtol=1e-10, atol=1e-12)
    # the form used under torch.compile
    assert torch.allclose(_compact_expression(*grouped, block.coefficients), plain, rtol=1e-10, atol=1e-12)
    grad = torch.randn_like(plain)
    ours.backward(grad)
    plain.backward(grad)
    for a, b in zip(leaves, plain_leaves):
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", CGNL_KERNELS)
def test_float64_gradcheck_of_the_fused_block(kernel):
    torch.manual_seed(5)
    block = CGNLBlock(4, groups=2, kernel=kernel, order=2, gamma=0.1, norm="gn", fused=True).double()
    _randomise_norms(block)
    x = torch.randn(1, 4, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.parametrize("kernel", CGNL_KERNELS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_block_gives_the_unfused_output_and_gradients(kernel, channels_last):
    torch.manual_seed(1)
    plain = CGNLBlock(32, groups=4, kernel=kernel, use_scale=kernel == "embedded_gaussian")
    _randomise_norms(plain)
    fused = CGNLBlock(32, groups=4, kernel=kernel, use_scale=kernel == "embedded_gaussian", fused=True)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 32, 3, 5, 4)
    results = []
    for block, memory in ((plain, torch.contiguous_format),
                          (fused, torch.channels_last_3d if channels_last else torch.contiguous_format)):
        block = block.to(memory_format=memory)
        xi = x.detach().contiguous(memory_format=memory).requires_grad_()
        out = block(xi)
        out.square().mean().backward()
        results.append((out.detach(), xi.grad, [p.grad for p in block.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    assert torch.allclose(out_a, out_b, rtol=1e-4, atol=1e-5)
    _assert_same_gradients(dict(enumerate([gx_a] + gp_a)), dict(enumerate([gx_b] + gp_b)))


# ----------------------------------------------------------------------------- the NL block


@pytest.mark.parametrize("pool", [(1, 1, 1), (1, 2, 2)])
@pytest.mark.parametrize("scale", [True, False])
def test_nl_attention_path_equals_the_explicit_matrix(pool, scale):
    torch.manual_seed(2)
    block = NonLocalBlock(16, pool_size=pool, scale=scale)
    _randomise_norms(block)
    x = torch.randn(2, 16, 2, 5, 6)
    explicit = _bench_module("bench_blocks").ExplicitNonLocal(16, pool_size=pool, scale=scale)
    explicit.load_state_dict(block.state_dict())
    outs = []
    for module, memory in ((explicit, torch.contiguous_format), (block, torch.contiguous_format),
                           (block, torch.channels_last_3d)):
        module = module.to(memory_format=memory)
        xi = x.detach().contiguous(memory_format=memory).requires_grad_()
        out = module(xi)
        out.square().mean().backward()
        outs.append((out.detach(), xi.grad.clone(), module.theta.weight.grad.clone()))
        module.zero_grad(set_to_none=True)
    for out, gx, gw in outs[1:]:
        assert torch.allclose(out, outs[0][0], rtol=1e-4, atol=1e-5)
        assert torch.allclose(gx, outs[0][1], rtol=1e-3, atol=1e-6)
        assert torch.allclose(gw, outs[0][2], rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------- config switches


def test_cgnl_fused_switch_gives_the_same_training_step():
    # float64: in train mode BatchNorm over 2 clips amplifies fp32 rounding differences.
    torch.manual_seed(3)
    clip, labels = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64), torch.tensor([1, 3])
    plain_cfg, fused_cfg = _cfg(*CGNL_1_5), _cfg(*CGNL_1_5, "CGNL.FUSED", "True")
    plain = build_model(plain_cfg).double()
    _randomise_norms(plain)
    fused = build_model(fused_cfg).double()
    fused.load_state_dict(plain.state_dict(), strict=True)
    assert all(b.fused for b in fused.modules() if isinstance(b, CGNLBlock))
    logits_a, grads_a = _train_step(plain, plain_cfg, clip, labels)
    logits_b, grads_b = _train_step(fused, fused_cfg, clip, labels)
    assert torch.allclose(logits_a, logits_b, rtol=1e-9, atol=1e-10)
    _assert_same_gradients(grads_a, grads_b, tolerance=1e-8)


@pytest.mark.parametrize("block", ["cgnl", "nl"])
def test_channels_last_switch_gives_the_same_training_step(block):
    torch.manual_seed(4)
    opts = CGNL_1_5 if block == "cgnl" else ["NONLOCAL.TYPE", "nl", "NONLOCAL.LOCATION", "[[], [1], [2], []]"]
    clip, labels = torch.randn(2, 3, 8, 32, 32, dtype=torch.float64), torch.tensor([0, 4])
    cfg, fast_cfg = _cfg(*opts), _cfg(*opts, "MODEL.CHANNELS_LAST", "True", "CGNL.FUSED", "True")
    model = build_model(cfg).double()
    _randomise_norms(model)
    reference = _train_step(model, cfg, clip, labels)
    fast = build_model(fast_cfg).double()
    fast.load_state_dict(model.state_dict())
    fast = prepare_for_speed(fast, fast_cfg)
    assert fast.blocks[0].conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert to_device(clip, torch.device("cpu"), fast_cfg).is_contiguous(memory_format=torch.channels_last_3d)
    logits, grads = _train_step(fast, fast_cfg, clip, labels)
    assert torch.allclose(logits, reference[0], rtol=1e-9, atol=1e-10)
    _assert_same_gradients(reference[1], grads, tolerance=1e-8)


def test_compile_switch_wraps_the_model_and_keeps_its_parameters():
    cfg = _cfg(*CGNL_1_5)
    model = build_model(cfg)
    assert prepare_for_speed(model, cfg) is model  # every switch off: untouched
    cfg.MODEL.COMPILE = True
    compiled = prepare_for_speed(model, cfg)  # torch.compile compiles lazily: cheap here
    assert compiled is not model and cu.unwrap_model(compiled) is model
    assert list(cu.unwrap_model(compiled).state_dict()) == list(model.state_dict())
    assert {id(p) for p in compiled.parameters()} == {id(p) for p in model.parameters()}


def test_compiled_cgnl_block_gives_the_eager_output_and_gradients():
    torch.manual_seed(6)
    for fused in (False, True):
        block = CGNLBlock(16, groups=4, kernel="rbf", fused=fused)
        _randomise_norms(block)
        x = torch.randn(2, 16, 2, 4, 4, requires_grad=True)
        block(x).square().sum().backward()
        expected_x, expected_p = x.grad.clone(), [p.grad.clone() for p in block.parameters()]
        x.grad = None
        block.zero_grad(set_to_none=True)
        out = torch.compile(block)(x)
        out.square().sum().backward()
        assert torch.allclose(x.grad, expected_x, rtol=1e-4, atol=1e-4)
        for p, expected in zip(block.parameters(), expected_p):
            assert torch.allclose(p.grad, expected, rtol=1e-3, atol=1e-5)


def test_bf16_mixed_precision_runs_on_the_cpu_without_a_scaler():
    cfg = _cfg(*CGNL_1_5, "TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "bf16", "CGNL.FUSED", "True")
    cpu = torch.device("cpu")
    # The engine autocasts on the CPU too; bf16 needs no loss scaling.
    assert amp_dtype(cfg, cpu) == torch.bfloat16
    assert not build_grad_scaler(cfg, cpu).is_enabled()
    torch.manual_seed(7)
    model = build_model(cfg)
    _randomise_norms(model)
    clip, labels = torch.randn(2, 3, 8, 64, 64), torch.tensor([2, 1])
    # The engine's autocast on the CPU. Eval mode (running statistics) compares the
    # numerics; in train mode, BatchNorm over 2 clips at res5 turns rounding
    # differences into different outputs, so there it checks that the step runs and
    # every gradient is finite.
    with torch.no_grad():
        expected = model.eval()(clip)
        with autocast_context(cfg, cpu):
            probs = model(clip).float()
    assert (probs - expected).abs().max() < 0.02
    model.train()
    with autocast_context(cfg, cpu):
        logits = model(clip)
    assert logits.dtype == torch.bfloat16
    F.cross_entropy(logits.float(), labels).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # The CGNL block alone: bf16 gradients stay close to fp32.
    block = CGNLBlock(64, groups=8, kernel="rbf", fused=True)
    _randomise_norms(block)
    x = torch.randn(2, 64, 4, 8, 8)
    grads = []
    for dtype in (None, torch.bfloat16):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = block(xi)
        out.float().square().mean().backward()
        grads.append(torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in block.parameters()]))
        block.zero_grad(set_to_none=True)
    assert (grads[1] - grads[0]).norm() / grads[0].norm() < 0.05


# ----------------------------------------------------------------------------- benchmark helpers


def test_per_group_reference_of_the_benchmark_equals_the_block():
    bench = _bench_module("bench_blocks")
    torch.manual_seed(8)
    for kernel in ("dot", "rbf"):
        block = CGNLBlock(16, groups=4, kernel=kernel, order=3, gamma=0.05).double()
        _randomise_norms(block)
        reference = bench.PerGroupReferenceCGNL(16, groups=4, kernel=kernel, order=3, gamma=0.05).double()
        reference.load_state_dict(block.state_dict())
        x = torch.randn(2, 16, 2, 3, 4, dtype=torch.float64)
        assert torch.allclose(block(x), reference(x), rtol=1e-10, atol=1e-12)

