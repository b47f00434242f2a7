"""The baselines the CGNL block is compared with.

``NonLocalBlock``: the spacetime non-local block of Wang et al. (embedded
Gaussian / dot product), as in the non-local paper (Sec. 3.2-3.3, Fig. 2).
``SimpleResidualBlock``: the "simple residual block" of the CGNL paper's
Table 3 / Fig. 4, i.e. a CGNL block without the kernel scalars:
Z = norm(W_z(theta(X))) + X.

Both end in a zero-initialised norm, so a newly inserted block is the identity.
Under autocast part of the NL block runs in float32 (output in the input's dtype);
which part and why, with the measured errors: docs/MODELS.md, "Mixed precision".
"""

from typing import Any, ClassVar, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cgnl_video.config.blocks import NL_INSTANTIATIONS, inner_channels
from cgnl_video.models.cgnl import (
    SPACETIME,
    Layers,
    apply_norm,
    autocast_off,
    check_groups,
    init_block_convs,
    make_zero_norm,
)


class NonLocalBlock(nn.Module):
    """Spacetime non-local block: Z = BN(W_z(f(theta, phi) g)) + X.

    Args:
        dim_in: channels C of the input (and output).
        dim_inner: channels of theta, phi and g (default C / 2).
        instantiation: "softmax" (embedded Gaussian: softmax over positions of
            theta^T phi) or "dot_product" (theta^T phi divided by the number of positions).
        pool_size: max-pool kernel = stride applied to the input of phi and g
            only ((1, 1, 1) = none). ``ceil_mode`` keeps odd and size-1 maps valid.
        scale: softmax only: multiply theta^T phi by dim_inner ** -0.5 first.
    """

    layers: ClassVar[Layers] = SPACETIME
    #: ``AttentionMaps.kind`` of the maps ``attention_map`` gives
    attention_kind: ClassVar[str] = "nl"

    def __init__(
        self,
        dim_in: int,
        dim_inner: int = 0,
        instantiation: str = "softmax",
        pool_size: Sequence[int] = (1, 2, 2),
        scale: bool = True,
    ) -> None:
        super().__init__()
        if instantiation not in NL_INSTANTIATIONS:
            raise ValueError(f"instantiation must be one of {list(NL_INSTANTIATIONS)}, got {instantiation!r}")
        dim_inner = dim_inner or dim_in // 2
        self.instantiation = instantiation
        self.scale = scale
        conv = self.layers.conv
        self.theta = conv(dim_in, dim_inner, 1)
        self.phi = conv(dim_in, dim_inner, 1)
        self.g = conv(dim_in, dim_inner, 1)
        self.z = conv(dim_inner, dim_in, 1)
        self.norm = make_zero_norm("bn", dim_in, layers=self.layers)
        pool_size = tuple(pool_size)
        self.pool = self.layers.max_pool(pool_size, pool_size, ceil_mode=True) if max(pool_size) > 1 else None
        init_block_convs(self.theta, self.phi, self.g, self.z)

    def extra_repr(self) -> str:
        return f"instantiation={self.instantiation}, scale={self.scale}"

    def affinity(self, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """Pairwise weights (B, N, M) from theta (B, C', N) and phi (B, C', M)."""
        logits = torch.einsum("bcn,bcm->bnm", theta, phi)
        if self.instantiation == "dot_product":
            return logits / phi.shape[-1]
        if self.scale:
            logits = logits * theta.shape[1] ** -0.5
        return logits.softmax(dim=-1)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, ref: int) -> Tuple[torch.Tensor, List[str]]:
        """The row of the N x M affinity matrix that belongs to reference position ``ref``
        (a flat index into x's grid), for the first sample of the block input ``x``; each
        grid position gets the value of the pooled cell of phi that covers it.

        Returns:
            (1, *grid) raw map, and its label.
        """
        x = x[:1]
        theta = self.theta(x)
        phi = self.phi(self.pool(x) if self.pool is not None else x)
        pooled = self.affinity(theta.flatten(2), phi.flatten(2))[0, ref].reshape(phi.shape[2:])
        # nearest upsampling: grid position (t, h, w) lies in pooled cell (t // kt, h // kh, w // kw)
        kernel = self.pool.kernel_size if self.pool is not None else (1,) * pooled.dim()
        for dim, k in enumerate(kernel):
            pooled = pooled.repeat_interleave(int(k), dim=dim)
        return pooled[tuple(slice(n) for n in theta.shape[2:])].unsqueeze(0), ["NL"]

    def attend(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """y (B, C', N) = g weighted by ``affinity(theta, phi)``, for (B, C', N / M) inputs.

        The softmax instantiation goes through ``scaled_dot_product_attention``, which
        picks a fused (flash / memory-efficient) kernel where one exists: the N x M
        matrix is then never stored, so memory grows with N, not N * M.
        """
        if self.instantiation == "dot_product":
            return torch.einsum("bnm,bcm->bcn", self.affinity(theta, phi), g)
        # C' as the module's int: theta.shape[1] is a traced value under torch.jit.trace (a TracerWarning)
        scale = self.theta.out_channels ** -0.5 if self.scale else 1.0
        # (B, 1, N, C'), contiguous: the fused kernels need unit stride over C' (a free
        # view for channels_last inputs, one transposing copy otherwise).
        query, key, value = (t.transpose(1, 2).contiguous().unsqueeze(1) for t in (theta, phi, g))
        return F.scaled_dot_product_attention(query, key, value, scale=scale).squeeze(1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layers.check_input(self, x)
        theta = self.theta(x)
        source = x
        if self.pool is not None:
            with autocast_off(x):  # in x's dtype on every device (CPU autocast would pool in float32)
                source = self.pool(x)
        phi = self.phi(source)
        with autocast_off(x):  # g, the attention, W_z and BN in full precision (docs/MODELS.md)
            g = self.g(source.to(self.g.weight.dtype)).flatten(2)
            y = self.attend(theta.flatten(2).to(g.dtype), phi.flatten(2).to(g.dtype), g)
            branch = self.norm(self.z(y.unflatten(2, theta.shape[2:])))
        return x + branch.to(x.dtype)


class SimpleResidualBlock(nn.Module):
    """Table 3 / Fig. 4 of the CGNL paper: Z = norm(W_z(theta(X))) + X.

    The same convolutions and norm as a CGNL block (theta C -> C_inner, grouped
    W_z C_inner -> C, zero-initialised norm) but no phi, g or kernel scalars:
    it isolates what the extra parameters alone contribute.
    """

    layers: ClassVar[Layers] = SPACETIME

    def __init__(self, dim_in: int, dim_inner: int = 0, groups: int = 8, norm: str = "bn") -> None:
        super().__init__()
        dim_inner = dim_inner or dim_in // 2
        check_groups(dim_in, dim_inner, groups)
        self.theta = self.layers.conv(dim_in, dim_inner, 1, bias=False)
        self.z = self.layers.conv(dim_inner, dim_in, 1, groups=groups, bias=False)
        self.norm = make_zero_norm(norm, dim_in, groups, self.layers)
        init_block_convs(self.theta, self.z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layers.check_input(self, x)
        return x + apply_norm(self.norm, self.z(self.theta(x))).to(x.dtype)


def build_nl(cfg: Any, channels: int) -> nn.Module:
    """NONLOCAL.TYPE nl: a NonLocalBlock of the NL keys (registered in ``cgnl_video.config.blocks``)."""
    n = cfg.NL
    return NonLocalBlock(channels, inner_channels(cfg, channels), instantiation=n.INSTANTIATION, pool_size=n.POOL,
                         scale=n.SCALE)


def build_residual(cfg: Any, channels: int) -> nn.Module:
    """NONLOCAL.TYPE residual (registered in ``cgnl_video.config.blocks``)."""
    # Table 3 compares with a CGNL block, so it shares CGNL.GROUPS and CGNL.NORM.
    return SimpleResidualBlock(channels, inner_channels(cfg, channels), groups=cfg.CGNL.GROUPS, norm=cfg.CGNL.NORM)
