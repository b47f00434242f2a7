"""Compact Generalized Non-local (CGNL) block (Yue et al., NeurIPS 2018), spacetime.

For an input X of shape (B, C, T, H, W), three 1x1x1 convolutions give theta,
phi and g with C_inner channels. These are split into G channel groups; in each
group all C' = C_inner / G channels and all T*H*W positions form one vector of
length L = C'*T*H*W (Eq. 7). The generalized non-local operation (Eq. 8) uses
an L x L pairwise matrix f(theta_i, phi_j); with the truncated Taylor kernel

    f(theta_i, phi_j) = sum_{p=0..P} alpha_p^2 (theta_i phi_j)^p        (Eq. 9)

the associative law (Eq. 12) gives, per sample and group,

    y = sum_p alpha_p^2 (phi^p . g) theta^p                             (powers elementwise)

in O(L (P+1)) instead of O(L^2). The block output is Z = norm(W_z y) + X with a
grouped 1x1x1 W_z and a zero-initialised norm, so a new block is the identity.

``exact_generalized_nonlocal`` builds the L x L matrix explicitly; it exists
to check the compact form on small shapes.

Mixed precision. Under autocast (fp16 or bf16) the theta/phi/g convolutions
run in the autocast dtype; what else runs in float32 (autocast off, in the
parameters' dtype) was measured at trained-model magnitudes (ReLU'd inputs,
theta/phi/g weights of std 0.05, non-zero norm; res4 input (2, 1024, 4, 14, 14),
G = 8). The output has the input's dtype.

* fp16, every kernel: Eq. 12, W_z and the norm. Each group scalar sums
  phi^p g over L = C'THW elements (50,176 here, 524,288 for R-101 at the
  256-pixel test size), and y reaches 7e4 (dot) and 6e6 (embedded Gaussian):
  beyond fp16's largest value, 65,504. For RBF the sum of phi^3 g is formed
  before its coefficient beta (2 gamma)^3 / 6 ~ 1e-12 brings it down, so it
  overflows too. W_z and the norm take y, so they need its range.
* RBF, fp16 or bf16: the same parts, for resolution: y is a per-group
  constant (the p = 0 term c_0 (1 . g)) plus a position-dependent part 4e-4 of
  its size, below bf16's resolution of 2^-8; the norm removes the constant and
  scales the rest up (bf16 everywhere: g's gradient off by 110-420 % with
  GN, the residual branch by 90-200 % with BN in eval mode).
* RBF with BatchNorm: also the g convolution (the fused convolution is then
  split). BatchNorm subtracts a per-channel mean (the batch's, or in eval mode
  the running one) and divides by the spread of the small position-dependent
  part, so a rounding error in the constant c_0 (1 . g) is amplified about
  2,500 times: with only g from a bf16 convolution the residual branch was
  off by 110 % (eval mode; fp16: 2 %) and g's gradient by 8 % (train mode;
  fp16: 3 %). GroupNorm's spread includes the per-channel constants, so with
  GN nothing is amplified and g stays in the autocast dtype.
* fp16, dot kernel with BatchNorm: also the phi convolution (the fused one is
  split). y = (phi . g) theta, and BatchNorm in train mode divides out the
  group scalars' common scale, so the gradients of phi and g follow the ratio
  of the samples' scalars, sums of terms of both signs; fp16's rounding of
  W_phi for the convolution moved it enough for 2.4e-2 in those gradients
  (res4, seed 6 of tests/models/test_blocks_amp.py), 0.4e-2 with phi in float32. On
  GPUs whose float32 convolutions use TF32 (cuDNN's default) W_phi keeps
  fp16's 11 bits either way; fp16 is meant for V100 / T4, which have no TF32.
* GroupNorm, under autocast: in float32 (the input cast up), as CUDA's
  autocast runs group_norm; the CPU's has no such rule.
* bf16 with dot or embedded Gaussian: nothing else. bf16 has float32's range,
  and y's position-dependent part is of the order of y; the worst error is 3 %
  (of 5 % allowed, embedded Gaussian, phi's gradient) with or without float32
  parts, which would cost 12-36 % of the block's time. Not solved: dot with
  train-mode BatchNorm at seed 6 (above) is off by 7.9 % in the weight
  gradients of phi and g; phi's convolution in float32 makes that 16 %.

The dtypes are explicit (the group sums in their input's dtype, GroupNorm
cast), so CUDA's autocast rules, which sum fp16 / bf16 into float32, and the
CPU's compute the same. The float32 inputs of Eq. 12 are one cast copy of
theta/phi/g. W_z is grouped: 1/G of a dense convolution's work.
tests/models/test_blocks_amp.py checks every kernel and norm against float64, under
the CPU's autocast rules and CUDA's; the cost is in benchmarks/RESULTS.md.
"""

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, ContextManager, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from cgnl_video.config.choices import CGNL_KERNELS, CGNL_NORMS as NORMS


def taylor_coefficients(kernel: str, order: int = 3, gamma: float = 1e-4) -> Tuple[float, ...]:
    """The coefficients alpha_p^2 for p = 0..P of a kernel's truncated Taylor series.

    ``dot``: f = theta_i phi_j, i.e. only the p = 1 term with coefficient 1
    (``order`` is ignored). ``embedded_gaussian``: f ~ exp(theta_i phi_j),
    alpha_p^2 = 1 / p!. ``rbf``: f ~ exp(-gamma |theta_i - phi_j|^2) with the
    constant beta = exp(-2 gamma) of the official code, alpha_p^2 = beta (2 gamma)^p / p!.
    """
    if kernel == "dot":
        return (0.0, 1.0)
    if order < 1:
        raise ValueError(f"Taylor order must be >= 1, got {order}")
    if kernel == "embedded_gaussian":
        return tuple(1.0 / math.factorial(p) for p in range(order + 1))
    if kernel == "rbf":
        beta = math.exp(-2.0 * gamma)
        return tuple(beta * (2.0 * gamma) ** p / math.factorial(p) for p in range(order + 1))
    raise ValueError(f"kernel must be one of {list(CGNL_KERNELS)}, got {kernel!r}")


def _sum_over_group(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension after (B, G), kept as size-1 dimensions, in ``x``'s dtype.

    The dtype is explicit because CUDA's autocast sums fp16 / bf16 tensors into float32
    (``sum`` is on its fp32_set_opt_dtype list) and the CPU's does not: without it y, W_z
    and the norm would run in float32 on a GPU only (module docstring)."""
    return x.sum(dim=tuple(range(2, x.dim())), keepdim=True, dtype=x.dtype)


def _horner(coefficients: Sequence[Optional[torch.Tensor]], x: torch.Tensor,
            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """sum_k coefficients[k] x^k for per-(sample, group) scalar tensors (None = 0): one
    ``addcmul`` (or ``mul``) pass per degree, in place after the first, the last one
    into ``out`` when given. The highest coefficient must not be None; degree 0
    returns it unexpanded."""
    y = coefficients[-1]
    lower = coefficients[:-1]
    for k in range(len(lower) - 1, -1, -1):
        # y is a fresh full-size tensor after the first step: update it in place (on the
        # CPU an in-place pass costs about half of one writing to new memory).
        target = out if k == 0 and out is not None else (y if k < len(lower) - 1 else None)
        y = torch.mul(y, x, out=target) if lower[k] is None else torch.addcmul(lower[k], y, x, out=target)
    return y


def _power_sums(weights: torch.Tensor, base: torch.Tensor, needed: Sequence[bool]) -> List[Optional[torch.Tensor]]:
    """[sum(weights * base^p) if needed[p] else None for p = 0..P] with running products."""
    sums: List[Optional[torch.Tensor]] = []
    running = weights
    for power, wanted in enumerate(needed):
        if power > 0 and any(needed[power:]):
            running = running * base if power == 1 else running.mul_(base)
        sums.append(_sum_over_group(running) if wanted else None)
    return sums


def _compact_forward(theta, phi, g, coefficients):
    """y and the scalars a_p = c_p (phi^p . g) (None where c_p = 0)."""
    sums = _power_sums(g, phi, [bool(c) for c in coefficients])
    scalars = [None if s is None else s * c for s, c in zip(sums, coefficients)]
    return _horner(scalars, theta), scalars


def _times(grad: torch.Tensor, poly: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    """grad * poly, in place in ``poly`` when it is a full-size temporary and no ``out``."""
    if out is None and poly.shape == grad.shape:
        return poly.mul_(grad)
    return torch.mul(grad, poly, out=out)


def _compact_backward(grad, theta, phi, g, scalars, coefficients, out=(None, None, None)):
    """Gradients of y = sum_p a_p theta^p, a_p = c_p (phi^p . g) for theta, phi and g.

    d theta = grad * sum_p p a_p theta^(p-1); with b_p = c_p (grad . theta^p):
    d phi = g * sum_p p b_p phi^(p-1), d g = sum_p b_p phi^p. Each polynomial by
    Horner's rule; the last pass of each writes into ``out`` when given.
    """
    sums = _power_sums(grad, theta, [bool(c) for c in coefficients])
    b = [None if s is None else s * c for s, c in zip(sums, coefficients)]
    d_theta_poly = [None if a is None else a * p for p, a in enumerate(scalars)][1:]
    d_phi_poly = [None if v is None else v * p for p, v in enumerate(b)][1:]
    d_theta = _times(grad, _horner(d_theta_poly, theta), out[0])
    d_phi = _times(g, _horner(d_phi_poly, phi), out[1])
    d_g = _horner(b, phi, out=out[2])
    return d_theta, d_phi, d_g


def _unstack(inputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    """theta, phi, g from either themselves or one (B, G, 3, C', ...) stacked tensor."""
    return inputs[0].unbind(2) if len(inputs) == 1 else inputs


class _CompactGNL(torch.autograd.Function):
    """Eq. 12 with a hand-written backward: saves only its inputs (which the
    convolutions produced anyway) and the scalars, and makes 2P full-size passes
    forward and 4P backward (autograd of the plain expression: about twice as many,
    and it keeps every intermediate power alive until the backward).

    The inputs are theta, phi and g, or one (B, G, 3, C', T, H, W) view of the fused
    convolution's output with the three stacked along dim 2: then the gradient is
    written straight into one buffer of that tensor's layout, so the backward needs
    no concatenation.
    """

    @staticmethod
    def forward(ctx, coefficients, *inputs):
        y, scalars = _compact_forward(*_unstack(inputs), coefficients)
        ctx.coefficients = coefficients
        ctx.num_inputs = len(inputs)
        ctx.save_for_backward(*inputs, *[s for s in scalars if s is not None])
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        inputs, saved = ctx.saved_tensors[:ctx.num_inputs], iter(ctx.saved_tensors[ctx.num_inputs:])
        scalars = [next(saved) if c else None for c in ctx.coefficients]
        if len(inputs) == 3:
            return (None, *_compact_backward(grad, *inputs, scalars, ctx.coefficients))
        d_stacked = torch.empty_like(inputs[0])
        _compact_backward(grad, *_unstack(inputs), scalars, ctx.coefficients, out=d_stacked.unbind(2))
        return None, d_stacked


def _compact_expression(theta, phi, g, coefficients):
    """Eq. 12 as a plain autograd expression, used under torch.compile (the compiler
    fuses it and its generated backward into fewer passes than the hand-written
    backward: about 2x faster on the CPU for the RBF kernel) and in exported models
    (``compact_generalized_nonlocal``)."""
    scalars: List[Optional[torch.Tensor]] = []
    weighted = g
    for power, coefficient in enumerate(coefficients):
        if power > 0:
            weighted = weighted * phi
        scalars.append(_sum_over_group(weighted) * coefficient if coefficient else None)
    y = scalars[-1]
    for scalar in reversed(scalars[:-1]):  # Horner
        y = y * theta if scalar is None else y * theta + scalar
    return y


def _scaled(coefficients: Sequence[float], length: int, use_scale: bool) -> Tuple[float, ...]:
    """The coefficients times 1 / sqrt(length) when ``use_scale``, trailing zeros dropped."""
    scale = length ** -0.5 if use_scale else 1.0
    scaled = [float(c) * scale for c in coefficients]
    while len(scaled) > 1 and not scaled[-1]:
        scaled.pop()
    if len(scaled) < 2:
        raise ValueError(f"the kernel needs a non-zero coefficient of degree >= 1, got {tuple(coefficients)}")
    return tuple(scaled)


def is_reduced_float(dtype: torch.dtype) -> bool:
    """fp16 or bf16 (what autocast computes in)."""
    return dtype.is_floating_point and dtype.itemsize < 4


def autocast_enabled(x: torch.Tensor) -> bool:
    """Whether autocast is on for ``x``'s device."""
    return torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type)


def autocast_off(x: torch.Tensor) -> ContextManager:
    """A context turning autocast off on ``x``'s device: the parts of a block kept in
    full precision run in the dtype of its parameters (float32 under autocast)."""
    if not torch.amp.is_autocast_available(x.device.type):  # e.g. "meta"
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


def compact_generalized_nonlocal(
    theta: torch.Tensor,
    phi: torch.Tensor,
    g: torch.Tensor,
    coefficients: Sequence[float],
    use_scale: bool = False,
) -> torch.Tensor:
    """Eq. 12 for tensors of shape (B, G, L) (or (B, G, *group_dims), the group being
    everything after G): y = sum_p c_p (phi^p . g) theta^p.

    The scalars s_p = phi^p . g come from repeated products (g, g*phi, ...),
    and the polynomial in theta is evaluated with Horner's rule (one ``addcmul``
    per degree), so no power of a full tensor is kept. All samples and groups
    are computed at once; any strides work (no copies). The backward is written
    out (``_CompactGNL``), except under torch.compile, torch.export (and so the
    ONNX export) and torch.jit.trace, which take the plain expression of the
    same math (``_compact_expression``): a Python autograd Function cannot be
    saved in a traced TorchScript file.
    fp16 / bf16 inputs are computed in float32, and y is float32 (safe for every
    kernel; ``CGNLBlock`` keeps bf16 where that is enough, module docstring).
    """
    return _compact((theta, phi, g), coefficients, use_scale, float32=True)


def _compact(inputs: Sequence[torch.Tensor], coefficients: Sequence[float], use_scale: bool,
             float32: bool) -> torch.Tensor:
    """Eq. 12 for (theta, phi, g) or their (B, G, 3, C', ...) stacked view; fp16 / bf16
    inputs are cast to float32 first when ``float32``."""
    if float32:
        inputs = [t.float() if is_reduced_float(t.dtype) else t for t in inputs]
    coefficients = _scaled(coefficients, math.prod(_unstack(inputs)[0].shape[2:]), use_scale)
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return _compact_expression(*_unstack(inputs), coefficients)
    return _CompactGNL.apply(coefficients, *inputs)


def exact_generalized_nonlocal(
    theta: torch.Tensor,
    phi: torch.Tensor,
    g: torch.Tensor,
    groups: int,
    coefficients: Sequence[float],
    use_scale: bool = False,
) -> torch.Tensor:
    """Eq. 8 literally, for checking: y = f(theta, phi) g with the explicit L x L matrix.

    ``theta``, ``phi``, ``g``: (B, C_inner, T, H, W). For every sample and group
    the matrix [f]_ij = sum_p c_p (theta_i phi_j)^p is built element by element
    over the group's flattened (C', T, H, W) vectors. Memory O(L^2): small shapes only.
    """
    outputs = []
    for t_b, p_b, g_b in zip(theta, phi, g):
        group_outputs = []
        for t, p, v in zip(t_b.chunk(groups), p_b.chunk(groups), g_b.chunk(groups)):
            products = torch.outer(t.flatten(), p.flatten())
            pairwise = sum(c * products**power for power, c in enumerate(coefficients))
            if use_scale:
                pairwise = pairwise / math.sqrt(products.shape[0])
            group_outputs.append((pairwise @ v.flatten()).reshape(t.shape))
        outputs.append(torch.cat(group_outputs))
    return torch.stack(outputs)


@dataclass(frozen=True)
class Layers:
    """The layers a block is made of for one input layout: ``SPACETIME`` for clips
    (B, C, T, H, W), ``IMAGE`` for images (B, C, H, W) (the 2D blocks, ``blocks_2d.py``).
    The paper's block is the same for both (Sec. 3.5: 1x1 or 1x1x1 convolutions, N = HW
    or THW)."""

    conv: Type[nn.Module]
    conv_fn: Callable[..., torch.Tensor]
    batch_norm: Type[nn.Module]
    max_pool: Type[nn.Module]
    rank: int  # of the inputs
    input: str  # what the inputs are, "clips (B, C, T, H, W)"
    other: str  # where inputs of the other layout go

    def check_input(self, block: nn.Module, x: torch.Tensor) -> None:
        """Refuse an input of another rank: a convolution would take a 4-D tensor
        as one unbatched clip, or a 3-D one as one unbatched image."""
        if x.dim() != self.rank:
            raise ValueError(f"{type(block).__name__} takes {self.input}, got a {x.dim()}-D tensor of shape "
                             f"{tuple(x.shape)}; {self.other}")


SPACETIME = Layers(nn.Conv3d, F.conv3d, nn.BatchNorm3d, nn.MaxPool3d, 5, "clips (B, C, T, H, W)",
                   "images (B, C, H, W) go to the 2D blocks (CGNLBlock2d, NonLocalBlock2d, SimpleResidualBlock2d)")
IMAGE = Layers(nn.Conv2d, F.conv2d, nn.BatchNorm2d, nn.MaxPool2d, 4, "images (B, C, H, W)",
               "clips (B, C, T, H, W) go to the spacetime blocks (CGNLBlock, NonLocalBlock, SimpleResidualBlock)")


def apply_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``; a GroupNorm under autocast runs in its parameters' dtype (float32).

    CUDA's autocast runs ``group_norm`` in float32 and the CPU's leaves it in the
    input's dtype: explicit here, so both devices compute the same. BatchNorm is on
    neither list and runs in the input's dtype on both."""
    if isinstance(norm, nn.GroupNorm) and autocast_enabled(x) and x.dtype != norm.weight.dtype:
        with autocast_off(x):
            return norm(x.to(norm.weight.dtype))
    return norm(x)


def make_zero_norm(kind: str, channels: int, groups: int = 1, layers: Layers = SPACETIME) -> nn.Module:
    """BatchNorm ("bn", of ``layers``) or GroupNorm ("gn", ``groups`` groups), weight and bias zero."""
    if kind == "bn":
        norm: nn.Module = layers.batch_norm(channels)
    elif kind == "gn":
        norm = nn.GroupNorm(groups, channels)
    else:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")
    nn.init.zeros_(norm.weight)
    nn.init.zeros_(norm.bias)
    return norm


def init_block_convs(*convs: nn.Module) -> None:
    """Gaussian std 0.01 weights and zero biases (official CGNL and video non-local code)."""
    for conv in convs:
        nn.init.normal_(conv.weight, std=0.01)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def check_groups(dim_in: int, dim_inner: int, groups: int) -> None:
    """Raise ValueError unless ``groups`` divides both channel counts."""
    if groups < 1 or dim_inner % groups or dim_in % groups:
        raise ValueError(f"groups={groups} must divide dim_inner={dim_inner} and dim_in={dim_in}")


class CGNLBlock(nn.Module):
    """Spacetime CGNL block: Z = norm(W_z(CGNL(theta, phi, g))) + X.

    Args:
        dim_in: channels C of the input (and output).
        dim_inner: channels of theta, phi and g (default C / 2).
        groups: channel groups G; W_z is a grouped conv and GroupNorm uses G groups.
        kernel: "dot", "embedded_gaussian" or "rbf".
        order: Taylor order P (embedded_gaussian and rbf).
        gamma: RBF gamma.
        use_scale: divide the group scalars by sqrt(C' T H W).
        norm: "bn" (paper, Eq. 13) or "gn" (official image code).
        fused: compute theta, phi and g with one convolution at run time; the
            parameters (and the state dict) stay three separate convolutions.
    """

    layers: ClassVar[Layers] = SPACETIME

    def __init__(
        self,
        dim_in: int,
        dim_inner: int = 0,
        groups: int = 8,
        kernel: str = "dot",
        order: int = 3,
        gamma: float = 1e-4,
        use_scale: bool = False,
        norm: str = "bn",
        fused: bool = False,
    ) -> None:
        super().__init__()
        dim_inner = dim_inner or dim_in // 2
        check_groups(dim_in, dim_inner, groups)
        self.groups = groups
        self.kernel = kernel
        self.coefficients = taylor_coefficients(kernel, order, gamma)
        self.use_scale = use_scale
        self.fused = fused
        self._bn = norm == "bn"
        conv = self.layers.conv
        self.theta = conv(dim_in, dim_inner, 1, bias=False)
        self.phi = conv(dim_in, dim_inner, 1, bias=False)
        self.g = conv(dim_in, dim_inner, 1, bias=False)
        self.z = conv(dim_inner, dim_in, 1, groups=groups, bias=False)
        self.norm = make_zero_norm(norm, dim_in, groups, self.layers)
        init_block_convs(self.theta, self.phi, self.g, self.z)

    def extra_repr(self) -> str:
        order = len(self.coefficients) - 1
        return f"kernel={self.kernel}, order={order}, groups={self.groups}, use_scale={self.use_scale}, fused={self.fused}"

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """theta(x), phi(x), g(x), each (B, C_inner, T, H, W); under autocast one of them
        may be computed in full precision (``_full_precision_conv``, module docstring)."""
        name = self._full_precision_conv(x)
        if name is not None:
            outputs = []
            for conv in (self.theta, self.phi, self.g):
                if conv is getattr(self, name):
                    with autocast_off(x):
                        outputs.append(conv(x.to(conv.weight.dtype)))
                else:
                    outputs.append(conv(x))
            return outputs[0], outputs[1], outputs[2]
        if not self.fused:
            return self.theta(x), self.phi(x), self.g(x)
        return self._embed_stacked(x).unbind(1)

    def _full_precision_conv(self, x: torch.Tensor) -> Optional[str]:
        """The convolution that leaves autocast, with BatchNorm only: g for RBF, phi for
        the dot kernel under fp16 (module docstring); None otherwise."""
        if not (self._bn and autocast_enabled(x)):
            return None
        if self.kernel == "rbf":
            return "g"
        if self.kernel == "dot" and torch.get_autocast_dtype(x.device.type) == torch.float16:
            return "phi"
        return None

    def _embed_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """theta, phi and g from one convolution with the concatenated weights,
        as a (B, 3, C_inner, T, H, W) view of its output."""
        weight = torch.cat([self.theta.weight, self.phi.weight, self.g.weight])
        return self.layers.conv_fn(x, weight).unflatten(1, (3, -1))

    def aggregate(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The compact GNL response y (B, C_inner, T, H, W), all groups at once."""
        grouped = [t.unflatten(1, (self.groups, -1)) for t in (theta, phi, g)]  # views in any layout
        return _compact(grouped, self.coefficients, self.use_scale, self._float32_eq12(theta)).flatten(1, 2)

    def _aggregate_stacked(self, stacked: torch.Tensor) -> torch.Tensor:
        """``aggregate`` for the fused convolution's (B, 3, C_inner, T, H, W) output; its
        gradient comes back as one tensor (no concatenation in the backward)."""
        grouped = stacked.unflatten(2, (self.groups, -1)).movedim(1, 2)  # (B, G, 3, C', T, H, W), a view
        return _compact([grouped], self.coefficients, self.use_scale, self._float32_eq12(stacked)).flatten(1, 2)

    def _float32_eq12(self, theta: torch.Tensor) -> bool:
        """Whether Eq. 12 runs in float32: under autocast, for fp16 (range) or for RBF
        (resolution), module docstring."""
        dtype = theta.dtype
        return autocast_enabled(theta) and is_reduced_float(dtype) and (
            self.kernel == "rbf" or dtype == torch.float16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layers.check_input(self, x)
        if self.fused and self._full_precision_conv(x) is None:
            y = self._aggregate_stacked(self._embed_stacked(x))
        else:
            y = self.aggregate(*self.embed(x))
        # y computed in float32 under autocast: W_z and the norm keep it (its range, its resolution)
        with autocast_off(x) if y.dtype == self.z.weight.dtype else contextlib.nullcontext():
            branch = apply_norm(self.norm, self.z(y))
        return x + branch.to(x.dtype)
