"""Models: C2D ResNet backbones with CGNL / NL / simple residual blocks.

Public entry points: ``build_model(cfg)`` (the architecture, freshly initialised;
it reads no file), ``load_pretrained(cfg, model)`` (the ImageNet weights a config
names), ``read_state_dict`` / ``load_state`` (checkpoints of any layout), ``CGNLBlock``, ``NonLocalBlock``,
``SimpleResidualBlock``, their 2D forms for image networks (``CGNLBlock2d``,
``NonLocalBlock2d``, ``SimpleResidualBlock2d``), ``placement_preset``, and ``register_block`` /
``register_backbone`` to add a NONLOCAL.TYPE or MODEL.ARCH from user code
(see ``cgnl_video/config/registry.py`` and docs/MODELS.md).

Plain imports: this package needs torch anyway, and ``cgnl_video.config`` (the
torch-free part: keys, checks, registries) does not import it.
"""

from cgnl_video.config.backbones import STAGE_DEPTHS, placement_preset, stage_out_channels
from cgnl_video.config.registry import BackboneDescription, BlockDescription, Stage, register_backbone, register_block
from cgnl_video.models.blocks_2d import CGNLBlock2d, NonLocalBlock2d, SimpleResidualBlock2d
from cgnl_video.models.build import (
                                        Backbone,
                                        build_backbone,
                                        build_model,
                                        insert_blocks,
                                        load_pretrained,
                                        prepare_for_speed,
                                        standalone_config,
)
from cgnl_video.models.c2d import C2DHead, C2DResNet, C2DStage, create_c2d
from cgnl_video.models.cgnl import CGNLBlock, exact_generalized_nonlocal, taylor_coefficients
from cgnl_video.models.nonlocal_block import NonLocalBlock, SimpleResidualBlock
from cgnl_video.models.state_dict import CheckpointError, load_state, read_state_dict
from cgnl_video.models.weights import load_imagenet_weights, load_pytorchvideo_state_dict

__all__ = [
    "Backbone", "BackboneDescription", "BlockDescription", "C2DHead", "C2DResNet", "C2DStage", "CGNLBlock",
    "CGNLBlock2d", "CheckpointError", "NonLocalBlock", "NonLocalBlock2d", "STAGE_DEPTHS", "SimpleResidualBlock",
    "SimpleResidualBlock2d", "Stage", "build_backbone",
    "build_model", "create_c2d", "exact_generalized_nonlocal", "insert_blocks", "load_imagenet_weights",
    "load_pretrained", "load_pytorchvideo_state_dict", "load_state", "read_state_dict",
    "placement_preset", "prepare_for_speed", "register_backbone", "register_block", "stage_out_channels",
    "standalone_config", "taylor_coefficients",
]
