"""Blocks and backbones registered from user code (tests/user_code, outside the
package): config keys, checks naming the key, the model, one training iteration
through tools/run_net.py, model_info and the model zoo columns."""

import importlib.util
import os
import re

import pytest
import torch
from fvcore.common.config import CfgNode

from cgnl_video.analysis.model_zoo import block_columns
from cgnl_video.config import ConfigError, get_cfg, load_config, register_backbone, register_block
from cgnl_video.config.registry import block_entry, unregister_backbone, unregister_block
from cgnl_video.engine import checkpoint as cu
from cgnl_video.hub import checkpoint_classes
from cgnl_video.models import build_model, load_pretrained
from cgnl_video.models.summary import describe, summarize
from cgnl_video.utils.logging import read_json_stats
from engine_helpers import make_tiny_dataset, tiny_opts
from repo_paths import TESTS
from tools_fixtures import ROOT, run_tool

USER_CODE = os.path.join(TESTS, "user_code")


def _import_user_file(name: str):
    """Execute tests/user_code/<name>.py as a user's script would import it (registering on import)."""
    spec = importlib.util.spec_from_file_location(f"user_{name}", os.path.join(USER_CODE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def se_block():
    module = _import_user_file("se_block")
    yield module
    unregister_block("se")


@pytest.fixture(scope="module")
def tiny_backbone():
    module = _import_user_file("tiny_backbone")
    yield module
    unregister_backbone("tiny")


pytestmark = pytest.mark.usefixtures("single_thread")  # torch on one thread in every test


def test_a_registered_block_adds_its_keys_and_checks(se_block, tmp_path):
    assert get_cfg().SE.REDUCTION == 16
    yaml = tmp_path / "se.yaml"
    yaml.write_text("NONLOCAL: {TYPE: se, LOCATION: [[], [1], [4], []]}\nSE: {REDUCTION: 8}\n")
    assert load_config(str(yaml)).SE.REDUCTION == 8
    assert load_config(str(yaml), ["SE.REDUCTION", "4"]).SE.REDUCTION == 4
    with pytest.raises(ConfigError, match=r"^SE\.REDUCTION: must be >= 1"):
        load_config(str(yaml), ["SE.REDUCTION", "0"])
    # 512 channels at res3 of a width-64 R-50 leave no hidden channel with r = 1024.
    with pytest.raises(ConfigError, match=r"^SE\.REDUCTION: 1024 leaves no hidden channel of 512"):
        load_config(str(yaml), ["SE.REDUCTION", "1024"])
    load_config(None, ["SE.REDUCTION", "1024"])  # a block that is not inserted constrains no channels
    model = build_model(load_config(str(yaml), ["RESNET.WIDTH_PER_GROUP", "8"]))
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, se_block.SEBlock)}
    assert sorted(blocks) == ["blocks.3.inserted.1", "blocks.4.inserted.4"]
    assert blocks["blocks.4.inserted.4"].excite[0].weight.shape == (128 // 8, 128, 1, 1, 1)


def test_registration_refuses_taken_names_and_keys(se_block):
    with pytest.raises(ValueError, match="'se' is registered already"):
        register_block("se", se_block.build_se)
    with pytest.raises(ValueError, match="default CGNL.GROUPS collides"):
        register_block("se2", se_block.build_se, defaults=CfgNode({"CGNL": {"GROUPS": 4}}))
    with pytest.raises(ValueError, match="other than 'none'"):
        register_block("none", se_block.build_se)
    with pytest.raises(ConfigError, match=r"^NONLOCAL\.TYPE: must be one of"):  # nothing half-registered
        load_config(None, ["NONLOCAL.TYPE", "se2"])
    original = block_entry("se")
    register_block("se", se_block.build_se, defaults={"SE": {"REDUCTION": 2, "GATED": True}}, replace=True)
    assert get_cfg().SE == {"REDUCTION": 2, "GATED": True}  # a redefinition may reuse its own keys
    register_block("se", original.builder, defaults=original.defaults, validate=original.validate,
                   describe=original.describe, replace=True)
    assert get_cfg().SE == {"REDUCTION": 16}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    make_tiny_dataset(root)  # 3 classes x 4 training videos
    return root


def _run_net(argv):
    return run_tool("run_net", argv)


def test_a_registered_block_trains_through_run_net_and_shows_in_model_info(se_block, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    opts = tiny_opts(data_root, str(out), NONLOCAL__TYPE="se", SE__REDUCTION=4, TRAIN__BATCH_SIZE=12,
                     SOLVER__MAX_EPOCH=1, SOLVER__STEPS="[0]", SOLVER__LRS="[1.0]", SOLVER__WARMUP_EPOCHS=0.0,
                     TRAIN__EVAL_PERIOD=0, TEST__ENABLE=False)
    assert _run_net(["--cfg", "", *opts]) == 0
    train = [r for r in read_json_stats(os.path.join(out, "json_stats.log")) if r.get("split") == "train"]
    assert len(train) == 1 and train[0]["iters"] == 1  # one iteration: 12 clips, batch 12
    cfg = load_config(None, opts)
    torch.manual_seed(cfg.RNG_SEED)  # the engine seeds RNG_SEED + rank before building
    initial = build_model(cfg).state_dict()
    trained = cu.load_checkpoint(cu.list_checkpoints(str(out))[-1])["model"]
    se_keys = [k for k in trained if ".inserted.4.excite." in k]
    assert len(se_keys) == 4 and set(trained) == set(initial)
    assert all(not torch.equal(trained[k], initial[k]) for k in se_keys)  # the step reached the SE block

    capsys.readouterr()
    yaml = tmp_path / "se.yaml"
    yaml.write_text(cfg.dump())
    assert run_tool("model_info", ["--cfg", str(yaml)]) == 0
    text = capsys.readouterr().out
    assert f"{yaml}: R-50 + 1 SE, 3 classes" in text
    assert "(inserted blocks: 2,128)" in text  # SE at res4 (64 channels, r = 4): 64*16+16 + 16*64+64
    assert re.search(r"^res4\s+64x1x2x2\s", text, re.M)
    assert block_columns(cfg) == ("1 SE", "-", "-")


def test_run_net_reports_groups_the_residual_block_rejects(data_root, tmp_path, capsys):
    """NONLOCAL.TYPE residual shares CGNL.GROUPS: 3 groups do not divide res4's 32
    inner channels (width 4). The old check ran for cgnl only; the constructor then
    raised a bare ValueError and run_net printed a traceback instead of exiting 2."""
    opts = tiny_opts(data_root, str(tmp_path / "run"), NONLOCAL__TYPE="residual", CGNL__GROUPS=3)
    assert _run_net(["--cfg", "", *opts]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CGNL.GROUPS: 3 groups must divide the 32 inner and 64 channels")
    assert not os.path.exists(tmp_path / "run" / "config.yaml")  # refused before any work


def test_a_registered_backbone_carries_blocks_summary_and_hub(tiny_backbone):
    opts = ["MODEL.ARCH", "tiny", "MODEL.NUM_CLASSES", "5", "NONLOCAL.TYPE", "cgnl", "CGNL.GROUPS", "2",
            "NONLOCAL.LOCATION", "[[0], [1]]", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32"]
    with pytest.raises(ConfigError, match=r"^NONLOCAL\.LOCATION: needs one list per stage s1, s2"):
        load_config(None, opts[:8])  # the default LOCATION has four lists (C2D)
    with pytest.raises(ConfigError, match=r"^NONLOCAL\.LOCATION\[1\]: s2 of Tiny-2 has blocks 0\.\.1, got 2"):
        load_config(None, opts + ["NONLOCAL.LOCATION", "[[0], [2]]"])
    with pytest.raises(ConfigError, match=r"^CGNL\.GROUPS: 3 groups must divide the 8 inner and 16 channels"):
        load_config(None, opts + ["CGNL.GROUPS", "3"])  # s1 has 4 x 4 channels
    with pytest.raises(ConfigError, match=r"^TINY\.DEPTH"):
        load_config(None, opts + ["TINY.DEPTH", "0"])
    cfg = load_config(None, opts)
    model = build_model(cfg)
    assert [type(s.inserted[k]).__name__ for s, k in zip(model.stages, ("0", "1"))] == ["CGNLBlock"] * 2
    assert [s.inserted[k].theta.in_channels for s, k in zip(model.stages, ("0", "1"))] == [16, 32]
    summary = summarize(model, (1, 3, 4, 32, 32))
    assert list(summary.output_shapes) == ["stem", "s1", "s2", "head"]
    assert summary.output_shapes["s2"] == (1, 32, 4, 8, 8) and summary.output_shapes["head"] == (1, 5)
    assert summary.inserted_params > 0 and summary.macs_by_block["s1"] > 0
    assert describe(cfg) == "Tiny-2 + 2 CGNL (dot, G=2)"
    assert checkpoint_classes(cfg, model.state_dict()) == 5
    model.train()
    assert model(torch.randn(2, 3, 4, 32, 32)).shape == (2, 5)


def test_a_registered_backbone_loads_its_own_pretrained_weights(tiny_backbone, tmp_path):
    """``load_pretrained`` (what the engine calls at the start of a fresh run) goes through
    the entry's ``pretrained`` hook; build_model itself reads nothing."""
    opts = ["MODEL.ARCH", "tiny", "NONLOCAL.LOCATION", "[[], []]", "DATA.NUM_FRAMES", "4",
            "DATA.TRAIN_CROP_SIZE", "32"]
    torch.manual_seed(0)
    source = build_model(load_config(None, opts + ["MODEL.NUM_CLASSES", "7"]))
    path = str(tmp_path / "tiny.pth")
    torch.save({"state_dict": source.state_dict()}, path)
    cfg = load_config(None, opts + ["MODEL.NUM_CLASSES", "5", "TINY.PRETRAINED", path])
    assert load_pretrained(load_config(None, opts), build_model(cfg)) is None  # TINY.PRETRAINED ""
    model = build_model(cfg)
    report = load_pretrained(cfg, model)
    assert report.skipped == ["head.proj.weight", "head.proj.bias"]
    assert torch.equal(model.stem[0].weight, source.stem[0].weight) and model.head.proj.out_features == 5


def test_the_engine_reads_a_backbones_norm_and_weights_only_through_its_own_keys(tiny_backbone, tmp_path):
    """SyncBatchNorm, the standalone config, the launch checks and the weights-file check
    follow the keys the backbone names (TINY.NORM, TINY.PRETRAINED), not RESNET.*."""
    from cgnl_video.engine.preflight import check_files, check_run, run_warnings
    from cgnl_video.models import standalone_config

    opts = ["MODEL.ARCH", "tiny", "NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [0]]", "CGNL.GROUPS", "2",
            "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "OUTPUT_DIR", str(tmp_path)]

    def sync_norms(cfg):
        return sum(isinstance(m, torch.nn.SyncBatchNorm) for m in build_model(cfg).modules())

    assert sync_norms(load_config(None, opts + ["RESNET.NORM", "sync_batchnorm"])) == 0  # not tiny's key
    sync = load_config(None, opts + ["TINY.NORM", "sync_batchnorm", "MODEL.COMPILE", "True"])
    plain = build_model(load_config(None, opts))
    assert sync_norms(sync) == sum(isinstance(m, torch.nn.BatchNorm3d) for m in plain.modules()) > 0
    assert sync_norms(standalone_config(sync)) == 0
    assert "MODEL.COMPILE with TINY.NORM sync_batchnorm" in run_warnings(sync, 2)[0]
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^TINY\.NORM: sync_batchnorm needs GPUs"):
            check_run(sync, 2)
    absent = str(tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match=r"^TINY\.PRETRAINED: file not found"):
        check_files(load_config(None, opts + ["TINY.PRETRAINED", absent]))
    check_files(load_config(None, opts + ["RESNET.IMAGENET_WEIGHTS", absent]))  # not tiny's key
    with pytest.raises(ValueError, match=r"'tiny2': TINY2\.NORM \(norm_key / weights_key\) is not one of"):
        register_backbone("tiny2", tiny_backbone.build_tiny, stages=tiny_backbone.tiny_stages, norm_key="TINY2.NORM")
    with pytest.raises(ConfigError, match=r"^MODEL\.ARCH: must be one of \['c2d', 'tiny'\]"):
        load_config(None, ["MODEL.ARCH", "tiny2"])


def test_shipped_entries_describe_themselves():
    cfg = load_config(os.path.join(ROOT, "configs", "minikinetics", "R101_CGNL8.yaml"))
    assert describe(cfg) == "R-101 + 1 CGNL (dot, G=8)" and block_columns(cfg) == ("1 CGNL", "8", "dot")
    nl = load_config(os.path.join(ROOT, "configs", "minikinetics", "R50_NL_5B.yaml"))
    assert describe(nl) == "R-50 + 5 NL (softmax)" and block_columns(nl) == ("5 NL", "-", "softmax")
    res = load_config(os.path.join(ROOT, "configs", "minikinetics", "R50_RES8.yaml"))
    assert describe(res) == "R-50 + 1 residual (G=8)" and block_columns(res) == ("1 residual", "8", "-")
    base = load_config(os.path.join(ROOT, "configs", "minikinetics", "R50.yaml"))
    assert describe(base) == "R-50" and block_columns(base) == ("-", "-", "-")
