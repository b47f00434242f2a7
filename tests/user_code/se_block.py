"""A user's block, registered from outside the package: squeeze-and-excitation
(Hu et al., CVPR 2018) as an inserted block, NONLOCAL.TYPE se.

Importing this file registers it; a config then selects it like a shipped block:

    NONLOCAL: {TYPE: se, LOCATION: [[], [], [4], []]}
    SE: {REDUCTION: 8}
"""

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.config import BlockDescription
from cgnl_video.config.rules import require
from cgnl_video.models import register_block


class SEBlock(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_THW(x))): a learned weight per channel."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool3d(1)
        self.excite = nn.Sequential(
            nn.Conv3d(channels, channels // reduction, 1), nn.ReLU(),
            nn.Conv3d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(self.squeeze(x))


def check_se(cfg: CfgNode, stage_channels) -> None:
    """Everything SEBlock would reject, named by its key."""
    r = cfg.SE.REDUCTION
    require(r >= 1, "SE.REDUCTION", f"must be >= 1, got {r}")
    for channels in stage_channels:
        require(channels // r >= 1, "SE.REDUCTION", f"{r} leaves no hidden channel of {channels}")


@register_block("se", defaults=CfgNode({"SE": {"REDUCTION": 16}}), validate=check_se,
                describe=lambda cfg: BlockDescription("SE"))
def build_se(cfg: CfgNode, channels: int) -> nn.Module:
    return SEBlock(channels, cfg.SE.REDUCTION)
