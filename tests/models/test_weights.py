"""ImageNet (torchvision) and PyTorchVideo weight loading."""

import pytest
import torch
import torchvision

from cgnl_video.config import get_cfg
from cgnl_video.models import build_model, load_imagenet_weights, load_pytorchvideo_state_dict
from cgnl_video.models.build import load_pretrained
from cgnl_video.models.weights import torchvision_key_to_c2d

CGNL_AT_RES3_RES4 = ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [1], [4], []]", "CGNL.GROUPS", "8"]


def _cfg(*opts: str):
    cfg = get_cfg()
    cfg.merge_from_list(list(opts))
    return cfg


def _pretrained(cfg):
    """The model of ``cfg`` initialised as a fresh run is: built, then RESNET.IMAGENET_WEIGHTS loaded."""
    model = build_model(cfg)
    load_pretrained(cfg, model)
    return model


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 with random weights and random BN statistics, saved to a file."""
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.3, 1.0)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        net.fc.weight.normal_(0.0, 0.05)
    path = tmp_path_factory.mktemp("imagenet") / "resnet50.pth"
    torch.save(net.state_dict(), path)
    return str(path), net.eval()


def _still_clip(frame: torch.Tensor, frames: int = 8) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, frames, H, W) of identical frames."""
    return frame[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()


@pytest.mark.parametrize("blocks", [[], CGNL_AT_RES3_RES4], ids=["baseline", "with_cgnl"])
def test_clip_of_identical_frames_gives_torchvision_output(resnet50_file, blocks):
    """With ImageNet weights, C2D on a still clip computes the 2D ResNet on the frame.

    Temporal max pooling and the temporal strides of identical frames are exact,
    so the whole network is. Two comparisons:
    * logits: BNs in eval mode (running statistics, as torchvision's eval), the
      head in train mode with dropout 0 (global average, then fc) -- torchvision's
      adaptive average pool then fc, at 160x160 (a 5x5 final map);
    * probabilities: the eval-mode model (softmax per position, averaged) at
      32x32, where the final map is 1x1 so there is a single position and the
      result is exactly softmax(torchvision logits).
    Zero-initialised CGNL blocks do not change either.
    """
    path, torchvision_net = resnet50_file
    model = _pretrained(_cfg("MODEL.NUM_CLASSES", "1000", "MODEL.DROPOUT_RATE", "0.0",
                             "RESNET.IMAGENET_WEIGHTS", path, *blocks))
    torch.manual_seed(1)
    with torch.no_grad():
        frame = torch.randn(2, 3, 160, 160)
        model.eval()
        model.head.train()
        logits, expected = model(_still_clip(frame)), torchvision_net(frame)
        assert torch.allclose(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        small = torch.randn(2, 3, 32, 32)
        model.eval()
        probs = model(_still_clip(small))
        assert torch.allclose(probs, torchvision_net(small).softmax(dim=1), rtol=1e-4, atol=1e-8)


def test_every_torchvision_key_has_a_place_in_c2d_r101():
    with torch.device("meta"):
        torchvision_net = torchvision.models.resnet101(weights=None)
        ours = build_model(_cfg("RESNET.DEPTH", "101", "MODEL.NUM_CLASSES", "1000")).state_dict()
    mapped = {}
    for key, value in torchvision_net.state_dict().items():
        name = torchvision_key_to_c2d(key)
        assert name in ours, key
        assert ours[name].shape[:2] == value.shape[:2] and ours[name].shape[-2:] == value.shape[-2:], key
        mapped[name] = key
    assert set(mapped) == set(ours)


def test_loading_reports_the_fc_it_skips_and_rejects_another_width(resnet50_file):
    path, _ = resnet50_file
    model = build_model(_cfg())  # 200 classes: the 1000-class fc cannot be used
    fc_before = model.head.proj.weight.clone()
    report = load_imagenet_weights(model, path)
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert torch.equal(model.head.proj.weight, fc_before)
    assert "blocks.0.conv.weight" in report.loaded
    narrow = build_model(_cfg("RESNET.WIDTH_PER_GROUP", "32"))
    with pytest.raises(ValueError, match="conv1.weight"):
        load_imagenet_weights(narrow, path)


def test_temporal_kernels_get_the_2d_kernel_spread_over_time(resnet50_file):
    path, torchvision_net = resnet50_file
    cfg = _cfg("RESNET.CONV_A_KERNEL", "[[1, 1, 1], [1, 1, 1], [3, 1, 1], [3, 1, 1]]", "RESNET.IMAGENET_WEIGHTS", path)
    inflated = _pretrained(cfg).blocks[4].res_blocks[0].branch2.conv_a.weight
    assert inflated.shape[2] == 3
    assert torch.allclose(inflated.sum(dim=2), torchvision_net.layer3[0].conv1.weight, atol=1e-6)


def test_pytorchvideo_checkpoint_format_loads_with_inserted_blocks_absent(tmp_path):
    baseline = build_model(_cfg("RESNET.WIDTH_PER_GROUP", "8"))
    path = tmp_path / "checkpoint.pyth"
    torch.save({"model_state": baseline.state_dict(), "epoch": 3}, path)
    with_blocks = build_model(_cfg("RESNET.WIDTH_PER_GROUP", "8", *CGNL_AT_RES3_RES4))
    report = load_pytorchvideo_state_dict(with_blocks, str(path))
    assert "blocks.0.conv.weight" in report.loaded
    state = dict(baseline.state_dict(), **{"blocks.9.bogus": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected"):
        load_pytorchvideo_state_dict(baseline, state)
