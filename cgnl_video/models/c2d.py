"""C2D ResNet-50/101 for video (non-local paper, Table 1) from PyTorchVideo's builders.

Default layout for a 32x224x224 clip::

    conv1  1x7x7, stride (2,2,2)          -> 16x112x112
    pool1  max (2,3,3), stride (2,2,2)    ->  8x56x56   (padding (0,1,1); (0,0,0): 8x55x55)
    res2 / pool2 max (2,1,1)              ->  8x56x56 / 4x56x56 (256 ch)
    res3 / res4 / res5                    ->  4x28x28 / 4x14x14 / 4x7x7 (512 / 1024 / 2048)
    head   train: average, dropout, fc; eval: the training window's average pool, fc, softmax

The module list is PyTorchVideo's ``Net.blocks = [stem, res2, pool2, res3, res4,
res5, head]`` (its C2D state dicts load as is); ``C2DResNet.PARTS`` names the parts.
Inserted blocks live in each stage's ``inserted`` ModuleDict, keyed by the index of
the residual block they follow. Config keys and stage layout (``STAGE_DEPTHS``):
``cgnl_video.config.backbones``; details: docs/MODELS.md, "Backbone".
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cgnl_video.config.backbones import STAGE_DEPTHS, STAGE_NAMES, conv_output_size, stage_out_channels
from cgnl_video.utils.quiet_imports import no_jit_script_deprecation

with no_jit_script_deprecation():
    from pytorchvideo.models.net import Net
    from pytorchvideo.models.resnet import BottleneckBlock, ResStage, create_bottleneck_block, create_res_stage
    from pytorchvideo.models.stem import create_res_basic_stem

Triple = Sequence[int]


def same_padding(kernel: Triple) -> Tuple[int, ...]:
    """(k - 1) // 2 per dimension: odd kernels keep the size; a temporal pool
    of kernel 2 and stride 2 halves T exactly (no padded frame)."""
    return tuple((k - 1) // 2 for k in kernel)


def _plain_int_stride(conv: Optional[nn.Conv3d]) -> None:
    """PyTorchVideo computes the shortcut stride with numpy; tracing (fvcore,
    torch.jit) needs Python ints."""
    if conv is not None:
        conv.stride = tuple(int(s) for s in conv.stride)


class C2DHead(nn.Module):
    """Classifier with a train and an eval behaviour (non-local paper, Sec. 4 "Inference").

    ``train()``: global average over (T, H, W), dropout, fc -> logits (B, K).
    ``eval()``: average pool with the training clip's window (``window``: the size of
    the final feature map of a training clip) and stride 1, the fc on every pooled
    position, softmax per position, mean over positions -> probabilities (B, K).
    A test clip of the training size gives softmax(training logits); a larger one
    (a 256 test crop of a 224-trained model) several windows, each seeing as much
    as a training clip. A map smaller than the window in a dimension is pooled whole
    in that dimension (runs cannot get there: their configs need VAL_CROP_SIZE and
    TEST_CROP_SIZE >= TRAIN_CROP_SIZE).
    """

    def __init__(self, dim_in: int, num_classes: int, dropout_rate: float = 0.5,
                 window: Triple = (4, 7, 7)) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout_rate)
        self.proj = nn.Linear(dim_in, num_classes)
        self.window: Tuple[int, int, int] = tuple(int(w) for w in window)

    def extra_repr(self) -> str:
        return f"window={self.window}"

    def window_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, T', H', W', K) of every training-size window of the feature map x
        (a dimension shorter than the window is pooled whole)."""
        window = list(self.window)
        if not torch.jit.is_tracing():  # a trace has fixed sizes; reading them as ints would warn
            window = [min(w, s) for w, s in zip(window, x.shape[2:])]
        pooled = F.avg_pool3d(x, window, stride=1)
        return self.proj(pooled.permute(0, 2, 3, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.proj(self.dropout(x.mean(dim=(2, 3, 4))))
        return self.window_logits(x).softmax(dim=-1).mean(dim=(1, 2, 3))


class C2DStage(ResStage):
    """A PyTorchVideo ResStage plus blocks inserted after chosen residual blocks."""

    def __init__(self, res_blocks: nn.ModuleList) -> None:
        super().__init__(res_blocks)
        self.inserted = nn.ModuleDict()

    @property
    def out_channels(self) -> int:
        return self.res_blocks[-1].branch2.conv_c.out_channels

    def insert_after(self, index: int, block: nn.Module) -> None:
        """Run ``block`` right after residual block ``index`` (0-based)."""
        if not 0 <= index < len(self.res_blocks):
            raise IndexError(f"stage has residual blocks 0..{len(self.res_blocks) - 1}, got {index}")
        self.inserted[str(index)] = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, res_block in enumerate(self.res_blocks):
            x = res_block(x)
            key = str(index)
            if key in self.inserted:
                x = self.inserted[key](x)
        return x


class C2DResNet(Net):
    """C2D ResNet for clips (B, 3, T, H, W).

    Outputs depend on the mode:

    * ``model.train()``: logits (B, num_classes), for a cross-entropy loss.
    * ``model.eval()``: class probabilities (B, num_classes): the last feature
      map is average-pooled with the training window (stride 1), the fc applied
      at every pooled position, softmax per position, and the probabilities are
      averaged (fully convolutional testing, ``C2DHead``). Validation and testing
      therefore receive probabilities, not logits.
    """

    #: the modules of ``blocks`` in order (PyTorchVideo's layout, which its C2D checkpoints use)
    PARTS: Tuple[str, ...] = ("stem", STAGE_NAMES[0], "pool2", *STAGE_NAMES[1:], "head")

    @classmethod
    def part_path(cls, part: str) -> str:
        """Where a part (one of PARTS) is: its module path, the prefix of its state dict keys."""
        return f"blocks.{cls.PARTS.index(part)}"

    def parts(self) -> Dict[str, str]:
        """Part name -> module path, in forward order."""
        return {part: self.part_path(part) for part in self.PARTS}

    @property
    def classifier_key(self) -> str:
        """State dict key of the classifier weight (one row per class)."""
        return f"{self.part_path('head')}.proj.weight"

    @property
    def stem(self) -> nn.Module:
        return self.get_submodule(self.part_path("stem"))

    @property
    def stages(self) -> List[C2DStage]:
        """res2, res3, res4, res5."""
        return [self.get_submodule(self.part_path(name)) for name in STAGE_NAMES]

    @property
    def head(self) -> C2DHead:
        return self.get_submodule(self.part_path("head"))


def _size_through(module: nn.Module, size: List[int]) -> List[int]:
    """(T, H, W) after a Conv3d or MaxPool3d."""
    def triple(v):
        return (v,) * 3 if isinstance(v, int) else tuple(v)
    kernel, stride, padding = triple(module.kernel_size), triple(module.stride), triple(module.padding)
    return [conv_output_size(n, k, s, p) for n, k, s, p in zip(size, kernel, stride, padding)]


def feature_size(parts: Dict[str, nn.Module], clip: Triple) -> Tuple[int, int, int]:
    """(T, H, W) of the final feature map for a clip of (T, H, W), from the layers' kernels,
    strides and paddings along the main path (stem conv and pool, conv_a / conv_b of every
    residual block, pool2); raises ValueError when a layer would get an empty input."""
    size = list(clip)
    path: List[nn.Module] = [parts["stem"].conv, parts["stem"].pool]
    for name in STAGE_NAMES:
        for res_block in parts[name].res_blocks:
            path += [res_block.branch2.conv_a, res_block.branch2.conv_b]
        if name == STAGE_NAMES[0]:
            path.append(parts["pool2"])
    for module in path:
        size = _size_through(module, size)
        if min(size) < 1:
            raise ValueError(f"a {'x'.join(map(str, clip))} (T x H x W) training clip leaves no feature map "
                             "(DATA.NUM_FRAMES / DATA.TRAIN_CROP_SIZE too small for the strides)")
    return tuple(size)


def create_c2d(
    *,
    depth: int = 50,
    num_classes: int = 200,
    width: int = 64,
    dropout_rate: float = 0.5,
    stem_conv_kernel: Triple = (1, 7, 7),
    stem_conv_stride: Triple = (2, 2, 2),
    stem_pool_kernel: Triple = (2, 3, 3),
    stem_pool_stride: Triple = (2, 2, 2),
    stem_pool_padding: Optional[Triple] = None,
    pool2_kernel: Triple = (2, 1, 1),
    pool2_stride: Triple = (2, 1, 1),
    conv_a_kernels: Sequence[Triple] = ((1, 1, 1),) * 4,
    conv_b_kernels: Sequence[Triple] = ((1, 3, 3),) * 4,
    spatial_strides: Sequence[int] = (1, 2, 2, 2),
    temporal_strides: Sequence[int] = (1, 1, 1, 1),
    zero_init_final_bn: bool = True,
    norm: Callable[..., nn.Module] = nn.BatchNorm3d,
    train_input: Triple = (32, 224, 224),
) -> C2DResNet:
    """Build a C2D ResNet; every kernel and stride is an argument (stages res2..res5).

    ``width`` is the stem width (64 = standard); all stage widths scale with it.
    The temporal stride of a stage sits on its first block's conv_a and the
    spatial stride on its 3x3 conv_b (ResNet v1.5, as torchvision).
    ``stem_pool_padding`` None pads pool1 by (k - 1) // 2 (PyTorchVideo, torchvision);
    the official non-local models use (0, 0, 0). ``train_input`` (T, H, W) of a
    training clip sets the window the eval-mode head pools (``C2DHead``).
    """
    if depth not in STAGE_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(STAGE_DEPTHS)}, got {depth}")
    stem = create_res_basic_stem(
        in_channels=3,
        out_channels=width,
        conv_kernel_size=tuple(stem_conv_kernel),
        conv_stride=tuple(stem_conv_stride),
        conv_padding=same_padding(stem_conv_kernel),
        pool=nn.MaxPool3d,
        pool_kernel_size=tuple(stem_pool_kernel),
        pool_stride=tuple(stem_pool_stride),
        pool_padding=same_padding(stem_pool_kernel) if stem_pool_padding is None else tuple(stem_pool_padding),
        norm=norm,
    )
    stages = []
    dim_in = width
    for i, (blocks, dim_out) in enumerate(zip(STAGE_DEPTHS[depth], stage_out_channels(width))):
        stage = create_res_stage(
            depth=blocks,
            dim_in=dim_in,
            dim_inner=dim_out // 4,
            dim_out=dim_out,
            bottleneck=create_bottleneck_block,
            conv_a_kernel_size=tuple(conv_a_kernels[i]),
            conv_a_stride=(temporal_strides[i], 1, 1),
            conv_a_padding=same_padding(conv_a_kernels[i]),
            conv_b_kernel_size=tuple(conv_b_kernels[i]),
            conv_b_stride=(1, spatial_strides[i], spatial_strides[i]),
            conv_b_padding=same_padding(conv_b_kernels[i]),
            norm=norm,
        )
        for res_block in stage.res_blocks:
            _plain_int_stride(res_block.branch1_conv)
        stages.append(C2DStage(stage.res_blocks))
        dim_in = dim_out
    pool2 = nn.MaxPool3d(tuple(pool2_kernel), tuple(pool2_stride))
    parts = {"stem": stem, "pool2": pool2, **dict(zip(STAGE_NAMES, stages))}
    parts["head"] = C2DHead(dim_in, num_classes, dropout_rate, feature_size(parts, train_input))
    model = C2DResNet(blocks=nn.ModuleList([parts[name] for name in C2DResNet.PARTS]))
    if not zero_init_final_bn:
        for module in model.modules():
            if isinstance(module, BottleneckBlock):
                nn.init.ones_(module.norm_c.weight)
    return model


def build_c2d(cfg: Any) -> C2DResNet:
    """The C2D ResNet of cfg.RESNET / cfg.MODEL, freshly initialised (no file is read)."""
    r = cfg.RESNET
    model = create_c2d(
        depth=r.DEPTH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        width=r.WIDTH_PER_GROUP,
        dropout_rate=cfg.MODEL.DROPOUT_RATE,
        stem_conv_kernel=r.STEM_CONV_KERNEL,
        stem_conv_stride=r.STEM_CONV_STRIDE,
        stem_pool_kernel=r.STEM_POOL_KERNEL,
        stem_pool_stride=r.STEM_POOL_STRIDE,
        stem_pool_padding=r.STEM_POOL_PADDING,
        pool2_kernel=r.POOL2_KERNEL,
        pool2_stride=r.POOL2_STRIDE,
        conv_a_kernels=r.CONV_A_KERNEL,
        conv_b_kernels=r.CONV_B_KERNEL,
        spatial_strides=r.SPATIAL_STRIDES,
        temporal_strides=r.TEMPORAL_STRIDES,
        zero_init_final_bn=r.ZERO_INIT_FINAL_BN,
        train_input=(cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE),
    )
    return model
