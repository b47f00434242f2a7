"""The C2D ResNet backbone (MODEL.ARCH "c2d"), torch-free half: its RESNET keys,
their checks, its stages and its name in reports. The model itself is built by
``cgnl_video.models.c2d.build_c2d``; ``models.weights.load_c2d_pretrained`` loads
the RESNET.IMAGENET_WEIGHTS a fresh run starts from.

Layout of ResNet-50/101 (non-local paper, Table 1): residual blocks per stage
res2..res5 and their output channels.
"""

from typing import Dict, List, Tuple

from fvcore.common.config import CfgNode

from cgnl_video.config.registry import (
    BATCHNORM,
    SYNC_BATCHNORM,
    BackboneDescription,
    Stage,
    is_weights_name,
    register_backbone,
)
from cgnl_video.config.rules import one_of, require, triple

#: residual blocks per stage res2..res5
STAGE_DEPTHS: Dict[int, Tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
#: output channels of res2..res5 at the standard width 64 (bottleneck width is a quarter)
STAGE_OUT_CHANNELS: Tuple[int, int, int, int] = (256, 512, 1024, 2048)
STAGE_NAMES: Tuple[str, str, str, str] = ("res2", "res3", "res4", "res5")
#: the ImageNet weights torchvision has for its ResNet-50 and ResNet-101 (``ResNet50_Weights``,
#: ``ResNet101_Weights``): IMAGENET1K_V1 are the original ResNets, IMAGENET1K_V2 torchvision's 2021
#: retraining (a longer recipe, about +4.5 ImageNet top-1). ``DEFAULT`` is left out on purpose: it names
#: whatever the installed torchvision prefers, so a config using it would not say what it ran.
TORCHVISION_WEIGHTS: Tuple[str, ...] = ("IMAGENET1K_V1", "IMAGENET1K_V2")

_C = CfgNode()
_C.RESNET = CfgNode()
_C.RESNET.DEPTH = 50  # 50 or 101
_C.RESNET.WIDTH_PER_GROUP = 64  # stem width; stage widths scale with it (64 = standard ResNet)
_C.RESNET.NORM = "batchnorm"  # "batchnorm" or "sync_batchnorm" (distributed runs)
_C.RESNET.ZERO_INIT_FINAL_BN = True  # last BN of each residual block starts at gamma = 0
_C.RESNET.IMAGENET_WEIGHTS = ""  # a fresh run starts from: torchvision name (IMAGENET1K_V1), file, "" = random
_C.RESNET.STEM_CONV_KERNEL = [1, 7, 7]  # conv1 kernel (T, H, W)
_C.RESNET.STEM_CONV_STRIDE = [2, 2, 2]  # conv1 stride (T, H, W)
_C.RESNET.STEM_POOL_KERNEL = [2, 3, 3]  # pool1 kernel (T, H, W)
_C.RESNET.STEM_POOL_STRIDE = [2, 2, 2]  # pool1 stride (T, H, W)
_C.RESNET.STEM_POOL_PADDING = [0, 1, 1]  # pool1 padding (T, H, W); the official non-local models: [0, 0, 0]
_C.RESNET.POOL2_KERNEL = [2, 1, 1]  # temporal max pool after res2 (T, H, W)
_C.RESNET.POOL2_STRIDE = [2, 1, 1]  # its stride (T, H, W)
_C.RESNET.CONV_A_KERNEL = [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]  # 1st conv of blocks, res2..res5
_C.RESNET.CONV_B_KERNEL = [[1, 3, 3], [1, 3, 3], [1, 3, 3], [1, 3, 3]]  # 2nd conv of blocks, res2..res5
_C.RESNET.SPATIAL_STRIDES = [1, 2, 2, 2]  # spatial stride of the first block of res2..res5
_C.RESNET.TEMPORAL_STRIDES = [1, 1, 1, 1]  # temporal stride of the first block of res2..res5


def stage_out_channels(width_per_group: int = 64) -> Tuple[int, ...]:
    """Output channels of res2..res5 for a stem width of ``width_per_group``."""
    return tuple(c * width_per_group // 64 for c in STAGE_OUT_CHANNELS)


def placement_preset(depth: int, num_blocks: int) -> List[List[int]]:
    """NONLOCAL.LOCATION of the paper's placements (Sec. 4.1 and Table 2d).

    ``num_blocks=1``: one block before the last residual block of res4.
    ``num_blocks=5``: after res3 blocks {1, 3} and res4 blocks {1, 3, 5}.
    """
    if depth not in STAGE_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(STAGE_DEPTHS)}, got {depth}")
    if num_blocks == 1:
        return [[], [], [STAGE_DEPTHS[depth][2] - 2], []]
    if num_blocks == 5:
        return [[], [1, 3], [1, 3, 5], []]
    raise ValueError(f"presets exist for 1 and 5 blocks, got {num_blocks}")


def c2d_stages(cfg: CfgNode) -> List[Stage]:
    """res2..res5 of the configured depth and width."""
    r = cfg.RESNET
    return [Stage(name, depth, channels) for name, depth, channels
            in zip(STAGE_NAMES, STAGE_DEPTHS[r.DEPTH], stage_out_channels(r.WIDTH_PER_GROUP))]


def _check_imagenet_weights(cfg: CfgNode) -> None:
    value = cfg.RESNET.IMAGENET_WEIGHTS
    require(
        not is_weights_name(value) or value in TORCHVISION_WEIGHTS,
        "RESNET.IMAGENET_WEIGHTS",
        f"{value!r} is neither a torchvision ResNet-{cfg.RESNET.DEPTH} weights name "
        f"({', '.join(TORCHVISION_WEIGHTS)}) nor a file path (a path has a '/' or a file "
        "extension, e.g. pretrained/resnet50.pth); \"\" starts from random weights",
    )


def _temporal_size_at_res3(cfg: CfgNode) -> float:
    r = cfg.RESNET
    t = cfg.DATA.NUM_FRAMES / r.STEM_CONV_STRIDE[0] / r.STEM_POOL_STRIDE[0]
    return t / r.POOL2_STRIDE[0]


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or max pool (floor rounding, as PyTorch and Caffe2)."""
    return (size + 2 * padding - kernel) // stride + 1


def _side_after_stem(cfg: CfgNode, side: int) -> int:
    """Height / width of a ``side`` x ``side`` crop after conv1 and pool1; the padded 3x3
    convolutions after them never take a side of 1 or more below 1."""
    r = cfg.RESNET
    k = r.STEM_CONV_KERNEL[1]
    side = conv_output_size(side, k, r.STEM_CONV_STRIDE[1], (k - 1) // 2)
    return conv_output_size(side, r.STEM_POOL_KERNEL[1], r.STEM_POOL_STRIDE[1], r.STEM_POOL_PADDING[1])


def validate_c2d(cfg: CfgNode) -> None:
    """The RESNET keys, and DATA.NUM_FRAMES against the temporal strides."""
    r = cfg.RESNET
    one_of(r.DEPTH, sorted(STAGE_DEPTHS), "RESNET.DEPTH")
    one_of(r.NORM, (BATCHNORM, SYNC_BATCHNORM), "RESNET.NORM")
    require(r.WIDTH_PER_GROUP >= 4 and r.WIDTH_PER_GROUP % 4 == 0,
            "RESNET.WIDTH_PER_GROUP", f"must be a positive multiple of 4, got {r.WIDTH_PER_GROUP}")
    _check_imagenet_weights(cfg)
    for key in ("STEM_CONV_KERNEL", "STEM_CONV_STRIDE", "STEM_POOL_KERNEL", "STEM_POOL_STRIDE",
                "POOL2_KERNEL", "POOL2_STRIDE"):
        triple(r[key], f"RESNET.{key}")
    padding, kernel = r.STEM_POOL_PADDING, r.STEM_POOL_KERNEL
    require(len(padding) == 3 and all(isinstance(p, int) and 0 <= p <= k // 2 for p, k in zip(padding, kernel)),
            "RESNET.STEM_POOL_PADDING",
            f"needs 3 integers from 0 to half of RESNET.STEM_POOL_KERNEL {list(kernel)}, got {list(padding)}")
    for key in ("CONV_A_KERNEL", "CONV_B_KERNEL"):
        require(len(r[key]) == 4, f"RESNET.{key}", "needs one (T, H, W) kernel per stage res2..res5")
        for i, kernel in enumerate(r[key]):
            triple(kernel, f"RESNET.{key}[{i}]")
    for key in ("SPATIAL_STRIDES", "TEMPORAL_STRIDES"):
        require(
            len(r[key]) == 4 and all(isinstance(s, int) and s >= 1 for s in r[key]),
            f"RESNET.{key}",
            f"needs 4 positive integers (res2..res5), got {list(r[key])}",
        )
    train = cfg.DATA.TRAIN_CROP_SIZE
    require(_side_after_stem(cfg, train) >= 1, "DATA.TRAIN_CROP_SIZE",
            f"a {train}x{train} crop leaves no feature map after conv1 and pool1 (RESNET.STEM_*)")
    for key in ("VAL_CROP_SIZE", "TEST_CROP_SIZE"):  # the eval-mode head pools the training window
        require(cfg.DATA[key] >= train, f"DATA.{key}",
                f"{cfg.DATA[key]} is smaller than DATA.TRAIN_CROP_SIZE {train}: the eval-mode head averages "
                "windows of the training clip's feature map, which needs views at least as large")
    frames, t3 = cfg.DATA.NUM_FRAMES, _temporal_size_at_res3(cfg)
    require(
        t3 >= 1 and t3 == int(t3),
        "DATA.NUM_FRAMES",
        f"{frames} frames leave {t3:g} at res3 after the temporal strides of "
        "RESNET.STEM_CONV_STRIDE, STEM_POOL_STRIDE and POOL2_STRIDE; use a multiple of "
        f"{int(round(frames / t3)) if t3 else 8}",
    )


def describe_c2d(cfg: CfgNode) -> BackboneDescription:
    return BackboneDescription(f"R-{cfg.RESNET.DEPTH}", depth=cfg.RESNET.DEPTH)


register_backbone("c2d", "cgnl_video.models.c2d:build_c2d", stages=c2d_stages, defaults=_C,
                  validate=validate_c2d, describe=describe_c2d,
                  pretrained="cgnl_video.models.weights:load_c2d_pretrained",
                  norm_key="RESNET.NORM", weights_key="RESNET.IMAGENET_WEIGHTS")

