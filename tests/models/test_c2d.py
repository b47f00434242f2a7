"""C2D ResNet: layout, train/eval outputs, block insertion, PyTorchVideo compatibility."""

from typing import Sequence

import pytest
import torch
from pytorchvideo.models.hub import c2d_r50

from cgnl_video.config import get_cfg
from cgnl_video.models import (
    CGNLBlock,
    NonLocalBlock,
    build_model,
    load_pretrained,
    placement_preset,
    prepare_for_speed,
)
from cgnl_video.models.c2d import C2DStage

NARROW = ["RESNET.WIDTH_PER_GROUP", "8"]  # stage widths 32..256: fast on CPU


def _cfg(*opts: str):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def _shapes(model: torch.nn.Module, clip: torch.Tensor) -> Sequence[tuple]:
    shapes = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for b in model.blocks]
    with torch.no_grad():
        model(clip)
    for hook in hooks:
        hook.remove()
    return shapes


def test_parameter_counts_match_the_facts():
    with torch.device("meta"):  # shapes only
        r50, r101 = build_model(_cfg()), build_model(_cfg("RESNET.DEPTH", "101"))
    # FACTS section 3: C2D R-50 with 200 classes has 23,917,832 parameters.
    assert sum(p.numel() for p in r50.parameters()) == 23_917_832
    # torchvision's 44,549,160 minus its 1000-class fc plus a 200-class fc.
    assert sum(p.numel() for p in r101.parameters()) == 44_549_160 - 2_049_000 + 409_800


def test_default_layout_for_32x224x224_clips():
    """FACTS section 3 table (channels scaled by the narrow width 8/64)."""
    model = build_model(_cfg(*NARROW)).eval()
    shapes = _shapes(model, torch.zeros(1, 3, 32, 224, 224))
    assert shapes == [
        (1, 8, 8, 56, 56),  # conv1 + pool1
        (1, 32, 8, 56, 56),  # res2
        (1, 32, 4, 56, 56),  # pool2
        (1, 64, 4, 28, 28),  # res3
        (1, 128, 4, 14, 14),  # res4
        (1, 256, 4, 7, 7),  # res5
        (1, 200),  # head
    ]
    conv1 = model.blocks[0].conv
    assert conv1.kernel_size == (1, 7, 7) and conv1.stride == (2, 2, 2)
    assert all(m.kernel_size[0] == 1 for m in model.modules() if isinstance(m, torch.nn.Conv3d))


def test_kernels_and_strides_come_from_the_config():
    cfg = _cfg(
        *NARROW,
        "RESNET.CONV_A_KERNEL", "[[1, 1, 1], [3, 1, 1], [3, 1, 1], [1, 1, 1]]",
        "RESNET.TEMPORAL_STRIDES", "[1, 2, 1, 1]",
        "RESNET.SPATIAL_STRIDES", "[1, 2, 2, 1]",
        "RESNET.STEM_CONV_STRIDE", "[1, 2, 2]",
    )
    model = build_model(cfg).eval()
    assert model.blocks[3].res_blocks[0].branch2.conv_a.kernel_size == (3, 1, 1)
    shapes = _shapes(model, torch.zeros(1, 3, 8, 64, 64))
    # T: 8 -> conv1 8 -> pool1 4 -> pool2 2 -> res3 stride 2 -> 1; res5 keeps 4x4.
    assert shapes[0][2] == 4 and shapes[3][2] == 1 and shapes[5][2:] == (1, 4, 4)


def test_train_mode_gives_logits_and_eval_mode_probabilities_for_any_size():
    torch.manual_seed(0)
    model = build_model(_cfg(*NARROW, "MODEL.NUM_CLASSES", "7"))
    clip = torch.randn(2, 3, 8, 64, 64)
    logits = model.train()(clip)
    assert logits.shape == (2, 7) and not torch.allclose(logits.sum(1), torch.ones(2))
    model.eval()
    for height, width in [(224, 224), (256, 256), (256, 340)]:
        probs = model(torch.randn(1, 3, 8, height, width))
        assert probs.shape == (1, 7)
        assert torch.allclose(probs.sum(1), torch.ones(1), atol=1e-5) and (probs >= 0).all()


def _reference_eval_head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         window: Sequence[int]) -> torch.Tensor:
    """The reference test head written out: average every training-size window (stride 1),
    the fc on each, softmax per window, mean over windows."""
    t, h, w = window
    size_t, size_h, size_w = features.shape[2:]
    probs = []
    for t0 in range(size_t - t + 1):
        for h0 in range(size_h - h + 1):
            for w0 in range(size_w - w + 1):
                pooled = features[:, :, t0:t0 + t, h0:h0 + h, w0:w0 + w].mean(dim=(2, 3, 4))
                probs.append((pooled @ weight.T + bias).softmax(dim=1))
    return torch.stack(probs).mean(dim=0)


@pytest.mark.parametrize("padding", ["[0, 1, 1]", "[0, 0, 0]"])
@pytest.mark.parametrize("frames, crop, window, test_maps", [
    (32, 224, (4, 7, 7), {224: (4, 7, 7), 256: (4, 8, 8)}),  # the paper's C2D 32x224
    (8, 112, (1, 4, 4), {112: (1, 4, 4), 160: (1, 5, 5)}),
])
def test_eval_head_window_is_the_training_clips_feature_map(padding, frames, crop, window, test_maps):
    cfg = _cfg(*NARROW, "DATA.NUM_FRAMES", str(frames), "DATA.TRAIN_CROP_SIZE", str(crop),
               "RESNET.STEM_POOL_PADDING", padding)
    model = build_model(cfg).eval()
    assert model.head.window == window
    for side, expected in test_maps.items():  # the res5 map a forward really gives
        assert _shapes(model, torch.zeros(1, 3, frames, side, side))[5][2:] == expected


@pytest.mark.parametrize("side, windows", [(224, 1), (256, 4)])
def test_eval_head_equals_the_reference_pool_fc_softmax_mean(side, windows):
    """R-50 at 32x224 (window 4x7x7): res5 features that vary over space and time, a
    trained-like fc; at 224 one window (= softmax of the training logits), at 256 the
    4x8x8 map gives 1x2x2 windows."""
    torch.manual_seed(3)
    model = build_model(_cfg("MODEL.NUM_CLASSES", "10"))
    head = model.head
    with torch.no_grad():
        head.proj.weight.normal_(0, 0.05)
        head.proj.bias.normal_(0, 0.1)
    size = side // 32
    # ReLU features whose statistics change from place to place (as res5 maps do)
    features = (torch.randn(2, 2048, 4, size, size) * torch.linspace(0.2, 3, size)[None, None, None, :, None]
                + torch.linspace(-1, 1, 4)[None, None, :, None, None]).relu()
    with torch.no_grad():
        expected = _reference_eval_head(features, head.proj.weight, head.proj.bias, (4, 7, 7))
        probs = head.eval()(features)
        assert torch.allclose(probs, expected, atol=1e-6)
        if windows == 1:  # the training size: softmax of the training logits
            training_logits = head.proj(features.mean(dim=(2, 3, 4)))  # train mode without dropout
            assert torch.allclose(probs, training_logits.softmax(dim=1), atol=1e-6)
        # ... which is not the softmax of every single res5 position averaged (the old head)
        per_position = torch.einsum("bcthw,kc->bthwk", features, head.proj.weight) + head.proj.bias
        assert (per_position.softmax(dim=-1).mean(dim=(1, 2, 3)) - probs).abs().max() > 0.05


def test_eval_head_pools_a_map_smaller_than_the_window_whole():
    """Outside runs (whose configs keep test views >= training crops), a smaller clip is
    pooled whole in each short dimension instead of failing."""
    torch.manual_seed(4)
    model = build_model(_cfg(*NARROW, "MODEL.NUM_CLASSES", "5"))
    head = model.head
    features = torch.randn(2, 256, 4, 3, 9).relu()  # H shorter than the window 7, W longer
    with torch.no_grad():
        head.proj.weight.normal_(0, 0.3)
        assert torch.allclose(head.eval()(features),
                              _reference_eval_head(features, head.proj.weight, head.proj.bias, (4, 3, 7)), atol=1e-6)


@pytest.mark.parametrize("block_type, extra", [
    ("cgnl", ["CGNL.KERNEL", "dot"]),
    ("cgnl", ["CGNL.KERNEL", "rbf", "CGNL.NORM", "gn", "CGNL.FUSED", "True"]),
    ("cgnl", ["CGNL.KERNEL", "embedded_gaussian"]),
    ("nl", []),
    ("residual", []),
])
def test_inserting_zero_initialised_blocks_leaves_the_function_unchanged(block_type, extra):
    torch.manual_seed(2)
    location = "[[0], [1, 3], [1, 3, 5], [2]]"  # the 5-block preset plus res2 and res5
    base = build_model(_cfg(*NARROW, "MODEL.DROPOUT_RATE", "0.0"))
    with_blocks = build_model(_cfg(*NARROW, "MODEL.DROPOUT_RATE", "0.0", "NONLOCAL.TYPE", block_type,
                                   "NONLOCAL.LOCATION", location, *extra))
    missing, unexpected = with_blocks.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".inserted." in k for k in missing) and missing
    with torch.no_grad():  # a trained-looking backbone: non-zero final BNs, random fc
        for stage in base.stages:
            for res_block in stage.res_blocks:
                res_block.branch2.norm_c.weight.uniform_(0.5, 1.0)
        base.head.proj.weight.normal_(0, 0.5)
    with_blocks.load_state_dict(base.state_dict(), strict=False)
    clip = torch.randn(2, 3, 8, 64, 64)
    for mode in (True, False):
        base.train(mode), with_blocks.train(mode)
        with torch.no_grad():
            assert torch.allclose(with_blocks(clip), base(clip), atol=1e-6), f"training={mode}"


@pytest.mark.parametrize("depth, blocks, expected", [
    (50, 1, {"blocks.4.inserted.4"}),
    (101, 1, {"blocks.4.inserted.21"}),
    (50, 5, {f"blocks.3.inserted.{i}" for i in (1, 3)} | {f"blocks.4.inserted.{i}" for i in (1, 3, 5)}),
    (101, 5, {f"blocks.3.inserted.{i}" for i in (1, 3)} | {f"blocks.4.inserted.{i}" for i in (1, 3, 5)}),
])
@pytest.mark.parametrize("block_type, block_class", [("cgnl", CGNLBlock), ("nl", NonLocalBlock)])
def test_placement_presets_put_blocks_after_the_right_residual_blocks(depth, blocks, expected,
                                                                      block_type, block_class):
    cfg = _cfg("RESNET.DEPTH", str(depth), "NONLOCAL.TYPE", block_type)
    cfg.NONLOCAL.LOCATION = placement_preset(depth, blocks)
    with torch.device("meta"):  # structure only
        model = build_model(cfg)
    found = {name for name, module in model.named_modules() if isinstance(module, block_class)}
    assert found == expected
    for name in found:
        stage = model.blocks[int(name.split(".")[1])]
        assert model.get_submodule(name).theta.in_channels == stage.out_channels


def test_an_inserted_block_runs_right_after_its_residual_block():
    stage: C2DStage = build_model(_cfg(*NARROW, "NONLOCAL.TYPE", "residual", "CGNL.GROUPS", "4",
                                       "NONLOCAL.LOCATION", "[[], [], [2], []]")).blocks[4]
    order = []
    for name, module in [("res1", stage.res_blocks[1]), ("res2", stage.res_blocks[2]),
                         ("inserted", stage.inserted["2"]), ("res3", stage.res_blocks[3])]:
        module.register_forward_hook(lambda *_, name=name: order.append(name))
    stage(torch.zeros(1, 64, 1, 4, 4))
    assert order == ["res1", "res2", "inserted", "res3"]


def test_pytorchvideo_c2d_r50_state_dict_loads_strictly_and_computes_the_same_features():
    """The layout of PyTorchVideo's model-zoo C2D_8x8_R50: same keys, same shapes."""
    torch.manual_seed(3)
    theirs = c2d_r50(pretrained=False).eval()
    with torch.no_grad():
        for tensor in theirs.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.2, 1.0) if tensor.dim() == 1 else tensor.normal_(0, 0.05)
    ours = build_model(_cfg("MODEL.NUM_CLASSES", "400")).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    # With PyTorchVideo's 8x8 strides the backbones are the same function.
    eight_by_eight = _cfg("MODEL.NUM_CLASSES", "400", "RESNET.STEM_CONV_STRIDE", "[1, 2, 2]",
                          "RESNET.STEM_POOL_KERNEL", "[1, 3, 3]", "RESNET.STEM_POOL_STRIDE", "[1, 2, 2]")
    ours = build_model(eight_by_eight).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        a, b = clip, clip
        for mine, other in zip(ours.blocks[:-1], theirs.blocks[:-1]):
            a, b = mine(a), other(b)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_norm_options_and_final_bn_init():
    sync = build_model(_cfg(*NARROW, "RESNET.NORM", "sync_batchnorm"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in sync.modules())
    assert not any(type(m) is torch.nn.BatchNorm3d for m in sync.modules())
    zero = build_model(_cfg(*NARROW))
    one = build_model(_cfg(*NARROW, "RESNET.ZERO_INIT_FINAL_BN", "False"))
    assert not zero.blocks[1].res_blocks[0].branch2.norm_c.weight.detach().any()
    assert torch.equal(one.blocks[1].res_blocks[0].branch2.norm_c.weight, torch.ones(32))


def test_prepare_for_speed_channels_last_gives_the_same_output():
    torch.manual_seed(4)
    cfg = _cfg(*NARROW, "NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [1], [2], []]", "CGNL.GROUPS", "4")
    model = build_model(cfg).eval()
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        expected = model(clip)
        cfg.MODEL.CHANNELS_LAST = True
        fast = prepare_for_speed(model, cfg)
        out = fast(clip.contiguous(memory_format=torch.channels_last_3d))
    assert torch.allclose(out, expected, atol=1e-5)


def test_errors_name_the_offending_setting(tmp_path):
    with pytest.raises(ValueError, match="NONLOCAL.TYPE"):
        build_model(_cfg("NONLOCAL.TYPE", "attention", "NONLOCAL.LOCATION", "[[], [], [1], []]"))
    missing_weights = _cfg(*NARROW, "RESNET.IMAGENET_WEIGHTS", str(tmp_path / "missing.pth"))
    model = build_model(missing_weights)  # reads no file
    with pytest.raises(FileNotFoundError, match="RESNET.IMAGENET_WEIGHTS: file not found"):
        load_pretrained(missing_weights, model)
    with pytest.raises(ValueError, match="MODEL.ARCH"):
        build_model(_cfg("MODEL.ARCH", "x3d"))
