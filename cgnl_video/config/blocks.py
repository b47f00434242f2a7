"""The inserted blocks the package ships (NONLOCAL.TYPE cgnl, nl and residual),
torch-free half: their keys, their checks and their names in reports. Each is
registered with ``register_block`` like a user's block; each builder sits next to
its module (``models/cgnl.py``, ``models/nonlocal_block.py``), named by a string.

Every check mirrors one a block constructor (or forward) would otherwise fail
with, and names the key.
"""

import math
from typing import Sequence

from fvcore.common.config import CfgNode

from cgnl_video.config.registry import BlockDescription, register_block
from cgnl_video.config.rules import one_of, require, triple

CGNL_KERNELS = ("dot", "embedded_gaussian", "rbf")  # CGNL.KERNEL (paper Eq. 9 and Sec. 3.2)
CGNL_NORMS = ("bn", "gn")  # CGNL.NORM: the block's zero-initialised norm
NL_INSTANTIATIONS = ("softmax", "dot_product")  # NL.INSTANTIATION

# NL block (Wang et al.), the baseline.
_NL = CfgNode()
_NL.NL = CfgNode()
_NL.NL.INSTANTIATION = "softmax"  # "softmax" (embedded Gaussian) or "dot_product"
_NL.NL.POOL = [1, 2, 2]  # max-pool kernel/stride on the input of phi and g ([1, 1, 1] = none)
_NL.NL.SCALE = True  # softmax: scale theta^T phi by dim_inner ** -0.5 first

# CGNL block (Yue et al.).
_CGNL = CfgNode()
_CGNL.CGNL = CfgNode()
_CGNL.CGNL.KERNEL = "dot"  # "dot", "embedded_gaussian" or "rbf"
_CGNL.CGNL.GROUPS = 8  # channel groups G
_CGNL.CGNL.ORDER = 3  # Taylor order P (embedded_gaussian and rbf)
_CGNL.CGNL.GAMMA = 1e-4  # RBF gamma
_CGNL.CGNL.USE_SCALE = False  # divide the group scalars by sqrt(C' * T * H * W)
_CGNL.CGNL.NORM = "bn"  # "bn" (paper, Eq. 13) or "gn" (official image code)
_CGNL.CGNL.FUSED = False  # run theta/phi/g as one convolution (same weights, saved separately)

#: 1 / p! is a float up to p = 170
_MAX_ORDER = 170
#: log of the largest float, and of the smallest term kept safely non-zero after any scaling
_LOG_MAX, _LOG_MIN = math.log(1.7e308), math.log(1e-290)


def inner_channels(cfg: CfgNode, channels: int) -> int:
    """Channels of theta, phi and g for a block in a stage of ``channels``:
    NONLOCAL.DIM_INNER_RATIO x channels, rounded down."""
    return int(channels * cfg.NONLOCAL.DIM_INNER_RATIO)


def _check_inner(cfg: CfgNode, stage_channels: Sequence[int]) -> None:
    """The blocks take ``dim_inner or dim_in // 2``: a zero would silently become C / 2."""
    for channels in stage_channels:
        require(inner_channels(cfg, channels) >= 1, "NONLOCAL.DIM_INNER_RATIO",
                f"{cfg.NONLOCAL.DIM_INNER_RATIO} x {channels} channels leaves no inner channel")


def _check_groups(cfg: CfgNode, stage_channels: Sequence[int]) -> None:
    """CGNL.GROUPS divides the inner and the stage channels (grouped W_z, GroupNorm)."""
    groups = cfg.CGNL.GROUPS
    require(groups >= 1, "CGNL.GROUPS", f"must be >= 1, got {groups}")
    for channels in stage_channels:
        inner = inner_channels(cfg, channels)
        require(inner % groups == 0 and channels % groups == 0, "CGNL.GROUPS",
                f"{groups} groups must divide the {inner} inner and {channels} channels of a stage that gets a block")


def _check_taylor_series(c: CfgNode) -> None:
    """CGNL.ORDER and CGNL.GAMMA give usable Taylor coefficients alpha_p^2 (Eq. 9):
    1 / p! as floats, and for rbf beta (2 gamma)^p / p! with beta = exp(-2 gamma),
    whose powers must not overflow nor all terms of degree >= 1 vanish."""
    require(c.ORDER >= 1, "CGNL.ORDER", f"Taylor order must be >= 1, got {c.ORDER}")
    require(c.GAMMA > 0, "CGNL.GAMMA", f"must be positive, got {c.GAMMA}")
    if c.KERNEL == "dot":  # the order is not used
        return
    require(c.ORDER <= _MAX_ORDER, "CGNL.ORDER", f"1 / p! is no float beyond p = {_MAX_ORDER}, got {c.ORDER}")
    if c.KERNEL != "rbf":
        return
    log_2g = math.log(2 * c.GAMMA)
    require(c.ORDER * log_2g < _LOG_MAX, "CGNL.GAMMA",
            f"(2 gamma)^{c.ORDER} overflows for gamma {c.GAMMA}; lower CGNL.GAMMA or CGNL.ORDER")
    largest = max(-2 * c.GAMMA + p * log_2g - math.lgamma(p + 1) for p in range(1, c.ORDER + 1))
    require(largest > _LOG_MIN, "CGNL.GAMMA",
            f"every rbf term of degree >= 1 vanishes for gamma {c.GAMMA} (beta = exp(-2 gamma)); "
            "the paper uses 1e-4")


def validate_cgnl(cfg: CfgNode, stage_channels: Sequence[int]) -> None:
    c = cfg.CGNL
    one_of(c.KERNEL, CGNL_KERNELS, "CGNL.KERNEL")
    one_of(c.NORM, CGNL_NORMS, "CGNL.NORM")
    _check_taylor_series(c)
    _check_inner(cfg, stage_channels)
    _check_groups(cfg, stage_channels)


def validate_nl(cfg: CfgNode, stage_channels: Sequence[int]) -> None:
    one_of(cfg.NL.INSTANTIATION, NL_INSTANTIATIONS, "NL.INSTANTIATION")
    triple(cfg.NL.POOL, "NL.POOL")
    _check_inner(cfg, stage_channels)


def validate_residual(cfg: CfgNode, stage_channels: Sequence[int]) -> None:
    """CGNL.GROUPS and CGNL.NORM (shared with cgnl, whose check covers the norm)."""
    _check_inner(cfg, stage_channels)
    _check_groups(cfg, stage_channels)


register_block("cgnl", "cgnl_video.models.cgnl:build_cgnl", defaults=_CGNL, validate=validate_cgnl,
               describe=lambda cfg: BlockDescription("CGNL", kernel=cfg.CGNL.KERNEL, groups=cfg.CGNL.GROUPS))
register_block("nl", "cgnl_video.models.nonlocal_block:build_nl", defaults=_NL, validate=validate_nl,
               describe=lambda cfg: BlockDescription("NL", kernel=cfg.NL.INSTANTIATION))
# Table 3 compares the simple residual block with a CGNL block: it shares CGNL.GROUPS and CGNL.NORM.
register_block("residual", "cgnl_video.models.nonlocal_block:build_residual", validate=validate_residual,
               describe=lambda cfg: BlockDescription("residual", groups=cfg.CGNL.GROUPS))
