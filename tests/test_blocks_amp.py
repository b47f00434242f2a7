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
eval-mode BatchNorm, both NL instantiations); plus one compiled block. fp16
convolutions are slow on CPUs without native fp16 (10x fp32), so the file
takes about a minute on 2 cores.
"""

import copy
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F

from cgnl_video.models import CGNLBlock, NonLocalBlock

RES4 = (2, 1024, 4, 14, 14)
RES3 = (2, 512, 4, 28, 28)
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _input(shape: Tuple[int, ...]) -> torch.Tensor:
    """ReLU'd activations: mean 0.6, root mean square 1.1, maximum about 7."""
    return F.relu(1.5 * torch.randn(shape, generator=torch.Generator().manual_seed(0)))


def _trained(block: torch.nn.Module, x: torch.Tensor, bn_eval: bool) -> torch.nn.Module:
    """Trained-model magnitudes; in eval mode BatchNorm holds the statistics of ``x``."""
    generator = torch.Generator().manual_seed(1)
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


CGNL_CASES = [  # (shape, kernel, norm, norm mode, convolutions)
    _case(RES4, "dot", "bn", "train", "unfused"),
    _case(RES4, "dot", "gn", "train", "fused"),
    _case(RES4, "embedded_gaussian", "bn", "eval", "fused"),
    _case(RES4, "embedded_gaussian", "gn", "train", "unfused"),
    _case(RES4, "rbf", "bn", "train", "fused"),  # under autocast RBF + BN always splits the fused convolution
    _case(RES4, "rbf", "gn", "train", "unfused"),
    _case(RES3, "rbf", "bn", "eval", "fused"),
]


@pytest.mark.parametrize("shape, kernel, norm, mode, convolutions", CGNL_CASES)
def test_cgnl_block_under_autocast_is_finite_and_close_to_float64(shape, kernel, norm, mode, convolutions):
    torch.manual_seed(0)
    x = _input(shape)
    block = CGNLBlock(shape[1], groups=8, kernel=kernel, norm=norm, fused=convolutions == "fused")
    errors = _relative_errors(_trained(block, x, mode == "eval"), x)
    _assert_close(errors)
    if kernel == "dot" and norm == "gn":
        # GroupNorm after the grouped W_z divides out the per-group scalar phi . g: no gradient for phi and g.
        assert {"phi.weight", "g.weight"}.isdisjoint(errors[torch.float16])


NL_CASES = [  # (shape, instantiation, norm mode)
    _case(RES4, "softmax", "train"),
    _case(RES4, "dot_product", "train"),
    _case(RES3, "softmax", "eval"),
    _case(RES3, "dot_product", "train"),
]


@pytest.mark.parametrize("shape, instantiation, mode", NL_CASES)
def test_nl_block_under_autocast_is_finite_and_close_to_float64(shape, instantiation, mode):
    torch.manual_seed(0)
    x = _input(shape)
    block = _trained(NonLocalBlock(shape[1], instantiation=instantiation), x, mode == "eval")
    _assert_close(_relative_errors(block, x))


def test_compiled_cgnl_block_under_bf16_autocast_is_close_to_float64():
    """Under torch.compile Eq. 12 is ``_compact_expression``; RBF with train-mode BatchNorm,
    the most sensitive case, at a small shape (compiling takes most of the ~20 s)."""
    shape = (2, 128, 2, 8, 8)
    x = _input(shape)
    block = _trained(CGNLBlock(shape[1], groups=8, kernel="rbf", norm="bn", fused=True), x, False)
    _assert_close(_relative_errors(block, x, (torch.bfloat16,), torch.compile(block)))
