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
"""

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

CGNL_KERNELS = ("dot", "embedded_gaussian", "rbf")
NORMS = ("bn", "gn")


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


def compact_generalized_nonlocal(
    theta: torch.Tensor,
    phi: torch.Tensor,
    g: torch.Tensor,
    coefficients: Sequence[float],
    use_scale: bool = False,
) -> torch.Tensor:
    """Eq. 12 for tensors of shape (B, G, L): y = sum_p c_p (phi^p . g) theta^p.

    The scalars s_p = phi^p . g come from repeated products (g, g*phi, ...),
    and the polynomial in theta is evaluated with Horner's rule, so no power of
    a full tensor is formed. All samples and groups are computed at once.
    """
    scale = theta.shape[-1] ** -0.5 if use_scale else 1.0
    scalars = []  # s_p = c_p (phi^p . g), None where c_p = 0
    weighted = g
    for power, coefficient in enumerate(coefficients):
        if power > 0:
            weighted = weighted * phi
        scalars.append(coefficient * scale * weighted.sum(dim=-1, keepdim=True) if coefficient else None)
    # Horner: ((s_P theta + s_{P-1}) theta + ...) theta + s_0
    y = scalars[-1] * theta
    for power in range(len(coefficients) - 2, -1, -1):
        if scalars[power] is not None:
            y = y + scalars[power]
        if power > 0:
            y = y * theta
    return y


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


def make_zero_norm(kind: str, channels: int, groups: int = 1) -> nn.Module:
    """BatchNorm3d ("bn") or GroupNorm ("gn", ``groups`` groups), weight and bias zero."""
    if kind == "bn":
        norm: nn.Module = nn.BatchNorm3d(channels)
    elif kind == "gn":
        norm = nn.GroupNorm(groups, channels)
    else:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")
    nn.init.zeros_(norm.weight)
    nn.init.zeros_(norm.bias)
    return norm


def init_block_convs(*convs: nn.Conv3d) -> None:
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
        self.theta = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.phi = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.g = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.z = nn.Conv3d(dim_inner, dim_in, 1, groups=groups, bias=False)
        self.norm = make_zero_norm(norm, dim_in, groups)
        init_block_convs(self.theta, self.phi, self.g, self.z)

    def extra_repr(self) -> str:
        order = len(self.coefficients) - 1
        return f"kernel={self.kernel}, order={order}, groups={self.groups}, use_scale={self.use_scale}, fused={self.fused}"

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """theta(x), phi(x), g(x), each (B, C_inner, T, H, W)."""
        if not self.fused:
            return self.theta(x), self.phi(x), self.g(x)
        weight = torch.cat([self.theta.weight, self.phi.weight, self.g.weight])
        theta, phi, g = F.conv3d(x, weight).chunk(3, dim=1)
        return theta, phi, g

    def aggregate(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The compact GNL response y (B, C_inner, T, H, W), all groups at once."""
        grouped = [t.reshape(t.shape[0], self.groups, -1) for t in (theta, phi, g)]
        y = compact_generalized_nonlocal(*grouped, self.coefficients, self.use_scale)
        return y.reshape(theta.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aggregate(*self.embed(x))
        return x + self.norm(self.z(y))
