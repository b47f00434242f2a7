"""build_model(cfg): the C2D backbone, the inserted blocks, optional ImageNet init.

``cfg`` is a CfgNode from ``cgnl_video.config`` (this module does not import
the config package, which itself imports ``cgnl_video.models.spec``).
"""

import os
from functools import partial
from typing import Any, Callable, Dict

import torch
from torch import nn

from cgnl_video.models.c2d import C2DResNet, create_c2d, insert_blocks
from cgnl_video.models.cgnl import CGNLBlock
from cgnl_video.models.nonlocal_block import NonLocalBlock, SimpleResidualBlock
from cgnl_video.models.weights import load_imagenet_weights


def _dim_inner(cfg: Any, channels: int) -> int:
    return int(channels * cfg.NONLOCAL.DIM_INNER_RATIO)


def _make_cgnl(cfg: Any, channels: int) -> nn.Module:
    c = cfg.CGNL
    return CGNLBlock(
        channels,
        _dim_inner(cfg, channels),
        groups=c.GROUPS,
        kernel=c.KERNEL,
        order=c.ORDER,
        gamma=c.GAMMA,
        use_scale=c.USE_SCALE,
        norm=c.NORM,
        fused=c.FUSED,
    )


def _make_nl(cfg: Any, channels: int) -> nn.Module:
    return NonLocalBlock(
        channels,
        _dim_inner(cfg, channels),
        instantiation=cfg.NL.INSTANTIATION,
        pool_size=cfg.NL.POOL,
        scale=cfg.NL.SCALE,
    )


def _make_residual(cfg: Any, channels: int) -> nn.Module:
    # Table 3 compares with a CGNL block, so it shares CGNL.GROUPS and CGNL.NORM.
    return SimpleResidualBlock(channels, _dim_inner(cfg, channels), groups=cfg.CGNL.GROUPS, norm=cfg.CGNL.NORM)


#: NONLOCAL.TYPE -> constructor (cfg, stage channels) -> block
BLOCK_BUILDERS: Dict[str, Callable[[Any, int], nn.Module]] = {
    "cgnl": _make_cgnl,
    "nl": _make_nl,
    "residual": _make_residual,
}


def build_backbone(cfg: Any) -> C2DResNet:
    """The C2D ResNet of cfg.RESNET / cfg.MODEL, without inserted blocks or weights."""
    if cfg.MODEL.ARCH != "c2d":
        raise ValueError(f"MODEL.ARCH: only 'c2d' is implemented, got {cfg.MODEL.ARCH!r}")
    r = cfg.RESNET
    return create_c2d(
        depth=r.DEPTH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        width=r.WIDTH_PER_GROUP,
        dropout_rate=cfg.MODEL.DROPOUT_RATE,
        stem_conv_kernel=r.STEM_CONV_KERNEL,
        stem_conv_stride=r.STEM_CONV_STRIDE,
        stem_pool_kernel=r.STEM_POOL_KERNEL,
        stem_pool_stride=r.STEM_POOL_STRIDE,
        pool2_kernel=r.POOL2_KERNEL,
        pool2_stride=r.POOL2_STRIDE,
        conv_a_kernels=r.CONV_A_KERNEL,
        conv_b_kernels=r.CONV_B_KERNEL,
        spatial_strides=r.SPATIAL_STRIDES,
        temporal_strides=r.TEMPORAL_STRIDES,
        zero_init_final_bn=r.ZERO_INIT_FINAL_BN,
    )


def build_model(cfg: Any) -> C2DResNet:
    """The model of a config, on CPU, in train mode.

    Train mode returns logits (B, MODEL.NUM_CLASSES); eval mode returns class
    probabilities averaged over the positions of the last feature map (see
    ``C2DResNet``). Blocks of NONLOCAL.TYPE go after the residual blocks listed
    in NONLOCAL.LOCATION; RESNET.IMAGENET_WEIGHTS (a local torchvision state
    dict) initialises the backbone; RESNET.NORM "sync_batchnorm" converts every
    BatchNorm (the model then needs an initialised process group to train).
    """
    model = build_backbone(cfg)
    block_type = cfg.NONLOCAL.TYPE
    if block_type != "none":
        if block_type not in BLOCK_BUILDERS:
            raise ValueError(f"NONLOCAL.TYPE must be 'none' or one of {sorted(BLOCK_BUILDERS)}, got {block_type!r}")
        insert_blocks(model, cfg.NONLOCAL.LOCATION, partial(BLOCK_BUILDERS[block_type], cfg))
    weights = cfg.RESNET.IMAGENET_WEIGHTS
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"RESNET.IMAGENET_WEIGHTS: {weights} not found. Save a torchvision ResNet-{cfg.RESNET.DEPTH} "
                "state dict there (see configs/README.md) or set RESNET.IMAGENET_WEIGHTS '' for random init"
            )
        load_imagenet_weights(model, weights)
    if cfg.RESNET.NORM == "sync_batchnorm":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def standalone_config(cfg: Any) -> Any:
    """A thawed copy of ``cfg`` whose model builds on its own: no ImageNet file is
    read (the weights come from a checkpoint, or are not needed) and plain
    BatchNorm (SyncBatchNorm needs a process group)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.RESNET.IMAGENET_WEIGHTS = ""
    cfg.RESNET.NORM = "batchnorm"
    return cfg


def prepare_for_speed(model: nn.Module, cfg: Any) -> nn.Module:
    """Apply MODEL.CHANNELS_LAST (channels_last_3d weights; feed inputs in the
    same format) and MODEL.COMPILE (torch.compile). Call after moving to the device."""
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last_3d)
    if cfg.MODEL.COMPILE:
        model = torch.compile(model)
    return model
