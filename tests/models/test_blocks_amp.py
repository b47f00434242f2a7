"""The CGNL and NL blocks under CPU autocast (fp16 and bf16) at trained-model magnitudes.

Each case compares the block's residual branch (output minus input) and the
gradients of the input and of every parameter, for one random output gradient,
under ``torch.autocast("cpu", dtype)`` with the same block in float64: relative
L2 error at most 1e-2 for fp16 and 5e-2 for bf16 (fp32 itself is within 1e-5 of
float64, so this is "close to fp32"). A gradient whose float64 norm is below
1e-6 of the largest parameter gradient is zero but for the norm's eps (phi and
g of the dot kernel followed by GroupNorm: 1e-8) or for rounding (a bias
followed by train-mode BatchNorm: 1e-14); only its finiteness is checked. The
smallest real gradient met is 2e-4 of the largest (theta's bias in the NL dot
product block).

Magnitudes as in a trained model: ReLU'd inputs (mean 0.6, up to 7),
theta/phi/g weights of std 0.05, norm weights in [0.5, 1.5] and biases of std
0.1, BatchNorm in train mode or in eval mode with the running statistics of
the input batch. Zero-initialised norms would hide the branch.

Cases: the res4 input (2, 1024, 4, 14, 14) for every kernel and norm (fused
and unfused alternate: the same arithmetic, see test_fast_path), and the res3
input (2, 512, 4, 28, 28) for the cases most sensitive to rounding (RBF with
eval-mode BatchNorm, both NL instantiations); the dot kernel with BatchNorm at
seed 6's input and weights (fp16); plus one compiled block.

Autocast rules: CUDA's autocast treats some ops the blocks use differently from
the CPU's (``cuda_autocast_rules``). Further tests check that both rule sets give
the documented dtypes and bitwise the same results for every kernel, norm and
convolution layout, so each case above runs under one rule set, CUDA's and the
CPU's alternately. fp16 convolutions are slow on CPUs without native fp16 (10x
fp32): the file takes about 2 minutes of CPU time.
"""

import contextlib
import copy
import math
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F

from cgnl_video.models import CGNLBlock, NonLocalBlock, SimpleResidualBlock

RES4 = (2, 1024, 4, 14, 14)
RES3 = (2, 512, 4, 28, 28)
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _reducible(t: object) -> bool:
    """A tensor autocast may cast: floating point, not float64."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


@contextlib.contextmanager
def cuda_autocast_rules() -> Iterator[None]:
    """CPU autocast with CUDA's rules for the ops of the blocks that the two devices
    treat differently (torch/include/ATen/autocast_mode.h against the AutocastCPU
    registrations): ``sum`` (CUDA: float32 unless a dtype is given, the
    fp32_set_opt_dtype list; CPU: no rule), ``group_norm`` (CUDA: float32; CPU: no
    rule) and ``max_pool3d`` (CUDA: no rule; CPU: float32). The blocks' other ops under
    autocast, convolutions, ``addcmul`` (CUDA: widest input type, which type promotion
    gives on the CPU too), ``batch_norm``, ``cat``, elementwise arithmetic, are treated alike."""
    library = torch.library.Library("aten", "IMPL")

    def sum_dim(self, dim, keepdim=False, *, dtype=None):
        with torch.autocast("cpu", enabled=False):
            dtype = torch.float32 if dtype is None and _reducible(self) else dtype
            return torch.ops.aten.sum.dim_IntList(self, dim, keepdim, dtype=dtype)

    def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        up = [t.float() if _reducible(t) else t for t in (input, weight, bias)]
        with torch.autocast("cpu", enabled=False):
            return torch.ops.aten.group_norm(up[0], num_groups, up[1], up[2], eps, cudnn_enabled)

    def max_pool3d(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return torch.ops.aten.max_pool3d(*args, **kwargs)

    library.impl("sum.dim_IntList", sum_dim, "AutocastCPU")
    library.impl("group_norm", group_norm, "AutocastCPU")
    library.impl("max_pool3d", max_pool3d, "AutocastCPU")  # replaces the CPU's float32 rule
    try:
        yield
    finally:
        library._destroy()  # the CPU's own rules again


def autocast_rules(name: str) -> contextlib.AbstractContextManager:
    """The CPU's own autocast rules ("cpu_rules") or CUDA's registered on the CPU ("cuda_rules")."""
    return cuda_autocast_rules() if name == "cuda_rules" else contextlib.nullcontext()


def _input(shape: Tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """ReLU'd activations: mean 0.6, root mean square 1.1, maximum about 7."""
    return F.relu(1.5 * torch.randn(shape, generator=torch.Generator().manual_seed(seed)))


def _trained(block: torch.nn.Module, x: torch.Tensor, bn_eval: bool, seed: int = 1) -> torch.nn.Module:
    """Trained-model magnitudes; in eval mode BatchNorm holds the statistics of ``x``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in (block.theta, block.phi, block.g):
            conv.weight.copy_(0.05 * torch.randn(conv.weight.shape, generator=generator))
        block.norm.weight.copy_(0.5 + torch.rand(block.norm.weight.shape, generator=generator))
        block.norm.bias.copy_(0.1 * torch.randn(block.norm.bias.shape, generator=generator))
        if bn_eval:
            block.norm.momentum = None  # cumulative average: after one batch, its statistics
            block.train()(x)
            block.eval()
    return block


def _branch_and_gradients(block: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor,
                          dtype: Optional[torch.dtype], forward: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """The residual branch and the gradients of (branch * grad).sum(), under autocast
    ``dtype``; ``forward`` (default: the block) computes the block's output."""
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        branch = (block if forward is None else forward)(x) - x
    (branch.to(grad.dtype) * grad).sum().backward()
    results = {"branch": branch.detach(), "input": x.grad}
    results.update({name: p.grad for name, p in block.named_parameters()})
    block.zero_grad(set_to_none=True)
    return results


def _relative_errors(block: torch.nn.Module, x: torch.Tensor, dtypes: Sequence[torch.dtype] = tuple(TOLERANCE),
                     forward: Optional[Callable] = None) -> Dict[torch.dtype, Dict[str, float]]:
    """For each autocast dtype: the relative L2 error of each result against float64 (inf
    if any element is not finite; gradients that are zero but for eps or rounding: finiteness only)."""
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    expected = _branch_and_gradients(copy.deepcopy(block).double(), x.double(), grad.double(), None)
    largest = max(t.norm() for key, t in expected.items() if key not in ("branch", "input"))
    errors = {}
    for dtype in dtypes:
        actual = _branch_and_gradients(block, x, grad, dtype, forward)
        errors[dtype] = {}
        for key, value in actual.items():
            reference = expected[key]
            if not bool(torch.isfinite(value).all()):
                errors[dtype][key] = math.inf
            elif key in ("branch", "input") or reference.norm() > 1e-6 * largest:
                errors[dtype][key] = ((value.double() - reference).norm() / reference.norm()).item()
    return errors


def _assert_close(errors: Dict[torch.dtype, Dict[str, float]]) -> None:
    too_far = {f"{dtype} > {TOLERANCE[dtype]}": {k: f"{e:.2e}" for k, e in by_key.items() if not e <= TOLERANCE[dtype]}
               for dtype, by_key in errors.items()}
    assert not any(too_far.values()), f"relative errors: {too_far}"


def _case(shape: Tuple[int, ...], *words: str):
    return pytest.param(shape, *words, id="-".join(["res4" if shape == RES4 else "res3", *words]))


CGNL_CASES = [  # (shape, kernel, norm, norm mode, convolutions, autocast rules)
    _case(RES4, "dot", "bn", "train", "unfused", "cuda_rules"),
    _case(RES4, "dot", "gn", "train", "fused", "cpu_rules"),
    _case(RES4, "embedded_gaussian", "bn", "eval", "fused", "cuda_rules"),
    _case(RES4, "embedded_gaussian", "gn", "train", "unfused", "cpu_rules"),
    _case(RES4, "rbf", "bn", "train", "fused", "cuda_rules"),  # under autocast RBF + BN always splits the fused conv
    _case(RES4, "rbf", "gn", "train", "unfused", "cpu_rules"),
    _case(RES3, "rbf", "bn", "eval", "fused", "cuda_rules"),
]


@pytest.mark.parametrize("shape, kernel, norm, mode, convolutions, rules", CGNL_CASES)
def test_cgnl_block_under_autocast_is_finite_and_close_to_float64(shape, kernel, norm, mode, convolutions, rules):
    torch.manual_seed(0)
    x = _input(shape)
    block = CGNLBlock(shape[1], groups=8, kernel=kernel, norm=norm, fused=convolutions == "fused")
    with autocast_rules(rules):
        errors = _relative_errors(_trained(block, x, mode == "eval"), x)
    _assert_close(errors)
    if kernel == "dot" and norm == "gn":
        # GroupNorm after the grouped W_z divides out the per-group scalar phi . g: no gradient for phi and g.
        assert {"phi.weight", "g.weight"}.isdisjoint(errors[torch.float16])


def test_cgnl_dot_block_with_batch_norm_under_fp16_where_a_group_scalar_nearly_cancels():
    """Dot kernel, train-mode BatchNorm, res4, fp16, input and weights of seed 6 (issue 21).

    y = (phi . g) theta per sample and group, and train-mode BatchNorm divides out the
    scalars' common scale: the gradients of phi and g depend on the ratio of the two
    samples' scalars, each a sum of terms of both signs (some 1-2 % of the largest).
    Rounding W_phi to fp16 (autocast's cast for the convolution) moves that ratio: with
    phi's convolution in fp16 the weight gradients of phi and g were off by 2.4e-2 and
    2.3e-2; with it in float32 (the block does so here), 0.4e-2."""
    torch.manual_seed(6)
    x = _input(RES4, seed=6)
    block = _trained(CGNLBlock(RES4[1], groups=8, kernel="dot", norm="bn"), x, False, seed=7)
    _assert_close(_relative_errors(block, x, (torch.float16,)))


NL_CASES = [  # (shape, instantiation, norm mode, autocast rules)
    _case(RES4, "softmax", "train", "cpu_rules"),
    _case(RES4, "dot_product", "train", "cuda_rules"),
    _case(RES3, "softmax", "eval", "cuda_rules"),
    _case(RES3, "dot_product", "train", "cpu_rules"),
]


@pytest.mark.parametrize("shape, instantiation, mode, rules", NL_CASES)
def test_nl_block_under_autocast_is_finite_and_close_to_float64(shape, instantiation, mode, rules):
    torch.manual_seed(0)
    x = _input(shape)
    block = _trained(NonLocalBlock(shape[1], instantiation=instantiation), x, mode == "eval")
    with autocast_rules(rules):
        _assert_close(_relative_errors(block, x))


def test_compiled_cgnl_block_under_bf16_autocast_is_close_to_float64():
    """Under torch.compile Eq. 12 is ``_compact_expression``; RBF with train-mode BatchNorm,
    the most sensitive case, at a small shape (compiling takes most of the ~20 s)."""
    shape = (2, 128, 2, 8, 8)
    x = _input(shape)
    block = _trained(CGNLBlock(shape[1], groups=8, kernel="rbf", norm="bn", fused=True), x, False)
    _assert_close(_relative_errors(block, x, (torch.bfloat16,), torch.compile(block)))


def test_cuda_rules_change_what_cpu_autocast_computes():
    """The emulation is live: under it ``sum`` and ``group_norm`` return float32 and
    ``max_pool3d`` keeps bf16, as on a GPU; afterwards the CPU's rules are back."""
    x = torch.rand(2, 4, 2, 4, 4).bfloat16()
    weight = torch.ones(4)

    def dtypes():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (x.sum(dim=(2, 3), keepdim=True).dtype, F.group_norm(x, 2, weight, weight).dtype,
                    F.max_pool3d(x, (1, 2, 2)).dtype)

    cpu = (torch.bfloat16, torch.bfloat16, torch.float32)
    assert dtypes() == cpu
    with cuda_autocast_rules():
        assert dtypes() == (torch.float32, torch.float32, torch.bfloat16)
    assert dtypes() == cpu


#: (kernel, norm, autocast dtype) -> dtypes of (W_z's input, W_z's output, the norm's output), docs/MODELS.md
#: "Mixed precision": Eq. 12, W_z and the norm in float32 for fp16 and for RBF; bf16 for dot and embedded Gaussian,
#: except GroupNorm, which runs in float32 under autocast (``apply_norm``).
def _policy(kernel: str, norm: str, dtype: torch.dtype) -> Tuple[torch.dtype, ...]:
    if dtype == torch.float16 or kernel == "rbf":
        return torch.float32, torch.float32, torch.float32
    return dtype, dtype, torch.float32 if norm == "gn" else dtype


def _dtypes_and_results(block: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype):
    """The dtypes of W_z's input and output and of the norm's output, and the branch and
    gradients, of one forward + backward of ``block`` under autocast ``dtype``."""
    seen = []
    hooks = [block.z.register_forward_hook(lambda m, inputs, out: seen.extend([inputs[0].dtype, out.dtype])),
             block.norm.register_forward_hook(lambda m, inputs, out: seen.append(out.dtype))]
    try:
        grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        results = _branch_and_gradients(block, x, grad, dtype)
    finally:
        for hook in hooks:
            hook.remove()
    return tuple(seen), results


@pytest.mark.parametrize("kernel", ["dot", "embedded_gaussian", "rbf"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_cgnl_block_computes_the_same_under_cpu_and_cuda_autocast_rules(kernel, norm):
    """Each part runs in the dtype docs/MODELS.md ("Mixed precision") gives, under either device's
    autocast rules, and the results are bitwise the same (fused and unfused, fp16 and
    bf16). Before the dtypes were explicit, CUDA's float32 ``sum`` made y, W_z and the
    norm float32 for bf16 dot / embedded Gaussian on a GPU only."""
    shape = (2, 64, 2, 6, 6)
    x = _input(shape)
    for fused in (False, True):
        block = _trained(CGNLBlock(shape[1], groups=4, kernel=kernel, norm=norm, fused=fused), x, False)
        for dtype in TOLERANCE:
            cpu_dtypes, cpu = _dtypes_and_results(block, x, dtype)
            with cuda_autocast_rules():
                cuda_dtypes, cuda = _dtypes_and_results(block, x, dtype)
            case = f"fused={fused}, {dtype}"
            assert cpu_dtypes == cuda_dtypes == _policy(kernel, norm, dtype), case
            assert all(torch.equal(cpu[key], cuda[key]) for key in cpu), case


def test_nl_and_simple_residual_blocks_compute_the_same_under_cpu_and_cuda_autocast_rules():
    """The NL block pools a bf16 input in float32 under the CPU's rules and in bf16 under
    CUDA's (``max_pool3d``): the same values, and its g convolution and everything after
    it run with autocast off, so nothing differs. The simple residual block's GroupNorm
    runs in float32 under both (``apply_norm``)."""
    shape = (2, 64, 2, 6, 6)
    x = _input(shape)
    blocks = [_trained(NonLocalBlock(shape[1], instantiation=name), x, False) for name in ("softmax", "dot_product")]
    simple = SimpleResidualBlock(shape[1], groups=4, norm="gn")
    with torch.no_grad():
        simple.theta.weight.normal_(std=0.05)
        simple.norm.weight.uniform_(0.5, 1.5)
    for block in [*blocks, simple]:
        for inputs in (x, x.bfloat16()):  # in a network under autocast the block's input is bf16
            cpu_dtypes, cpu = _dtypes_and_results(block, inputs, torch.bfloat16)
            with cuda_autocast_rules():
                cuda_dtypes, cuda = _dtypes_and_results(block, inputs, torch.bfloat16)
            assert cpu_dtypes == cuda_dtypes, type(block).__name__
            assert all(torch.equal(cpu[key], cuda[key]) for key in cpu), type(block).__name__
