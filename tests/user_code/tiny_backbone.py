"""A user's backbone, registered from outside the package: a two-stage 3D ResNet
(MODEL.ARCH tiny) built from the package's stage and head modules.

It keeps the backbone contract of ``cgnl_video.models.build``: ``stages`` that
take inserted blocks, ``parts()`` for model_info, ``classifier_key`` for torch.hub
and fine-tuning; a ``pretrained`` hook: TINY.PRETRAINED, a state dict file the
engine loads at the start of a fresh run; and its norm key TINY.NORM
("sync_batchnorm": build_model converts every BatchNorm).
"""

from typing import Dict, List

import torch
from fvcore.common.config import CfgNode
from pytorchvideo.models.resnet import create_bottleneck_block, create_res_stage
from torch import nn

from cgnl_video.config import BackboneDescription, Stage
from cgnl_video.config.rules import one_of, require
from cgnl_video.models import load_state, read_state_dict, register_backbone
from cgnl_video.models.c2d import C2DHead, C2DStage


def tiny_stages(cfg: CfgNode) -> List[Stage]:
    w = cfg.TINY.WIDTH
    return [Stage("s1", cfg.TINY.DEPTH, 4 * w), Stage("s2", cfg.TINY.DEPTH, 8 * w)]


def check_tiny(cfg: CfgNode) -> None:
    require(cfg.TINY.WIDTH >= 1, "TINY.WIDTH", f"must be >= 1, got {cfg.TINY.WIDTH}")
    require(cfg.TINY.DEPTH >= 1, "TINY.DEPTH", f"must be >= 1, got {cfg.TINY.DEPTH}")
    one_of(cfg.TINY.NORM, ("batchnorm", "sync_batchnorm"), "TINY.NORM")


class TinyNet(nn.Module):
    """stem (conv 1x3x3 stride 2) -> s1 -> s2 (stride 2) -> head."""

    def __init__(self, stages: List[Stage], width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, width, (1, 3, 3), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(width),
                                  nn.ReLU())
        body, dim_in = [], width
        for i, stage in enumerate(stages):
            res = create_res_stage(depth=stage.depth, dim_in=dim_in, dim_inner=stage.channels // 4,
                                   dim_out=stage.channels, bottleneck=create_bottleneck_block,
                                   conv_a_kernel_size=(1, 1, 1), conv_a_stride=(1, 1, 1), conv_a_padding=(0, 0, 0),
                                   conv_b_stride=(1, 1 + i, 1 + i))
            body.append(C2DStage(res.res_blocks))
            dim_in = stage.channels
        self.body = nn.ModuleList(body)
        self.head = C2DHead(dim_in, num_classes, dropout_rate=0.0)

    @property
    def stages(self) -> List[C2DStage]:
        return list(self.body)

    def parts(self) -> Dict[str, str]:
        return {"stem": "stem", "s1": "body.0", "s2": "body.1", "head": "head"}

    @property
    def classifier_key(self) -> str:
        return "head.proj.weight"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.body:
            x = stage(x)
        return self.head(x)


def load_tiny_pretrained(cfg: CfgNode, model: nn.Module):
    """TINY.PRETRAINED (a state dict file of any layout) into the model, a classifier with
    another number of classes excepted; None when it is ""."""
    if not cfg.TINY.PRETRAINED:
        return None
    return load_state(model, read_state_dict(cfg.TINY.PRETRAINED), new_classifier=True, source=cfg.TINY.PRETRAINED)


@register_backbone("tiny", stages=tiny_stages,
                   defaults=CfgNode({"TINY": {"WIDTH": 4, "DEPTH": 2, "PRETRAINED": "", "NORM": "batchnorm"}}),
                   validate=check_tiny, describe=lambda cfg: BackboneDescription(f"Tiny-{cfg.TINY.DEPTH}"),
                   pretrained=load_tiny_pretrained, norm_key="TINY.NORM", weights_key="TINY.PRETRAINED")
def build_tiny(cfg: CfgNode) -> nn.Module:
    return TinyNet(tiny_stages(cfg), cfg.TINY.WIDTH, cfg.MODEL.NUM_CLASSES)
