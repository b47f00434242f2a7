"""hubconf.py through torch.hub.load(source="local"): entry points, num_classes,
our checkpoints, PyTorchVideo's and bare state dicts."""

import os
import subprocess
import sys

import pytest
import torch

from cgnl_video.engine.checkpoint import save_checkpoint
from cgnl_video.models import CGNLBlock, CheckpointError, NonLocalBlock
from tools_fixtures import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

ENTRIES = ["c2d_r50", "c2d_r50_nl", "c2d_r50_nl_5b", "c2d_r50_cgnl8", "c2d_r50_cgnl8_5b",
           "c2d_r101", "c2d_r101_nl", "c2d_r101_nl_5b", "c2d_r101_cgnl8", "c2d_r101_cgnl8_5b"]
K400 = {"c2d_r50_k400_32x2": "C2D_R50_32x2", "c2d_r50_nl5_k400_32x2": "C2D_R50_NL5_32x2",
        "c2d_r50_k400_8x8": "C2D_R50_8x8", "c2d_r50_nl5_k400_8x8": "C2D_R50_NL5_8x8"}  # configs/kinetics400
NARROW = ["RESNET.WIDTH_PER_GROUP", "4"]  # keeps the R-50 models small and fast here


def load(name, **kwargs):
    return torch.hub.load(ROOT, name, source="local", trust_repo=True, **kwargs)


def test_entry_points_build_their_configs_architecture():
    model = load("c2d_r50_cgnl8", num_classes=7, opts=NARROW)
    blocks = [m for m in model.modules() if isinstance(m, CGNLBlock)]
    assert not model.training and len(blocks) == 1 and blocks[0].groups == 8
    assert model.head.proj.out_features == 7
    assert isinstance(model.blocks[4].inserted["4"], CGNLBlock)
    five = load("c2d_r50_nl_5b", opts=NARROW)
    assert sum(isinstance(m, NonLocalBlock) for m in five.modules()) == 5
    assert five.head.proj.out_features == 200
    r101 = load("c2d_r101", num_classes=5, opts=NARROW)
    assert len(r101.blocks[4].res_blocks) == 23


def test_checkpoints_ours_and_bare_state_dicts(tmp_path):
    torch.manual_seed(0)
    source = load("c2d_r50_cgnl8", num_classes=4, opts=NARROW)
    for p in source.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    ours = save_checkpoint(str(tmp_path), 3, {"model": source.state_dict(), "epoch": 3}, keep=1)
    bare, pytorchvideo = str(tmp_path / "bare.pth"), str(tmp_path / "pytorchvideo.pyth")
    torch.save(source.state_dict(), bare)
    torch.save({"model_state": source.state_dict(), "epoch": 3}, pytorchvideo)
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = source(clip)
        for path in (ours, bare, pytorchvideo):
            model = load("c2d_r50_cgnl8", checkpoint=path, opts=NARROW)  # num_classes from the checkpoint
            assert model.head.proj.out_features == 4
            assert torch.equal(model(clip), expected)
    with pytest.raises(CheckpointError, match=r"bare\.pth does not fit the model: 2 of another shape: "
                                              r"blocks\.6\.proj\.weight \(4, 128\) in the file, \(9, 128\)"):
        load("c2d_r50_cgnl8", num_classes=9, checkpoint=bare, opts=NARROW)


def test_hubconf_lists_every_entry_and_imports_no_model_code():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import hubconf; "
            "print(sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_'))); "
            "print('torch' in sys.modules, hubconf.dependencies)")
    result = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=60)
    names, loaded = result.stdout.strip().splitlines()
    assert eval(names) == sorted(ENTRIES + list(K400))
    assert loaded.startswith("False")
    for name in ENTRIES:
        config = name[len("c2d_"):].upper()  # c2d_r50_cgnl8_5b -> R50_CGNL8_5B
        assert os.path.isfile(os.path.join(ROOT, "configs", "minikinetics", f"{config}.yaml")), name
    for name, config in K400.items():
        assert os.path.isfile(os.path.join(ROOT, "configs", "kinetics400", f"{config}.yaml")), name


def test_kinetics400_entries_have_the_official_layouts():
    five = load("c2d_r50_nl5_k400_8x8", opts=NARROW)
    assert sum(isinstance(m, NonLocalBlock) for m in five.modules()) == 5
    assert five.head.proj.out_features == 400 and five.blocks[0].pool.padding == (0, 0, 0)


def test_a_sync_batchnorm_config_gives_a_standalone_model(tmp_path):
    """SyncBatchNorm needs a process group; a hub model must run on its own."""
    from cgnl_video.hub import hub_model

    config = tmp_path / "sync.yaml"
    config.write_text(f"_BASE_: {os.path.join(ROOT, 'configs', 'minikinetics', 'R50_CGNL8.yaml')}\n"
                      "RESNET:\n  NORM: sync_batchnorm\n  WIDTH_PER_GROUP: 8\n")
    model = hub_model(str(config), num_classes=3)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
