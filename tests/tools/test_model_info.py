"""Model summary numbers (FACTS section 3), tools/model_info.py, and the experiment configs."""

import glob
import os
import re
import runpy

import pytest
import torch

from cgnl_video.config import get_cfg, load_config
from cgnl_video.models import build_model, placement_preset
from cgnl_video.models.summary import count_parameters, summarize, summarize_config
from repo_paths import ROOT

CLIP = (1, 3, 32, 224, 224)
#: configs/README.md: R{depth}[_{NL | CGNL<G> | RES<G>}][_5B][_RBF | _EG][_from_<dataset>].yaml
NAME = re.compile(r"^R(?P<depth>50|101)(?:_(?P<block>NL|CGNL(?P<cgnl_groups>\d+)|RES(?P<res_groups>\d+)))?"
                  r"(?P<five>_5B)?(?P<kernel>_RBF|_EG)?(?:_from_(?P<source>minikinetics))?$")
KERNELS = {None: "dot", "_RBF": "rbf", "_EG": "embedded_gaussian"}


def _config_files(folder: str):
    return sorted(p for p in glob.glob(os.path.join(ROOT, "configs", folder, "*.yaml"))
                  if not os.path.basename(p).startswith("_"))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@pytest.fixture(scope="module")
def r50_summary():
    return summarize(build_model(get_cfg()), CLIP)


def test_c2d_r50_numbers_agree_with_the_facts(r50_summary):
    """FACTS section 3: 23,917,832 parameters; conv multiply-adds about 20.4 G at
    32x224x224 (conv1 1.9, res2 5.3, res3 4.1, res4 5.9, res5 3.2)."""
    s = r50_summary
    assert s.params == 23_917_832 and s.inserted_params == 0
    assert s.macs_by_operator["conv"] / 1e9 == pytest.approx(20.4, abs=0.1)
    per_block = {name: s.macs_by_block[name] / 1e9 for name in ("stem", "res2", "res3", "res4", "res5")}
    assert per_block == pytest.approx({"stem": 1.9, "res2": 5.3, "res3": 4.1, "res4": 5.9, "res5": 3.2}, abs=0.15)
    assert s.output_shapes == {
        "stem": (1, 64, 8, 56, 56), "res2": (1, 256, 8, 56, 56), "pool2": (1, 256, 4, 56, 56),
        "res3": (1, 512, 4, 28, 28), "res4": (1, 1024, 4, 14, 14), "res5": (1, 2048, 4, 7, 7), "head": (1, 200),
    }


def test_r101_adds_seventeen_res4_blocks(r50_summary):
    """R-101 = R-50 + 17 bottlenecks at res4 (4x14x14): 35.3 G conv multiply-adds
    (FACTS: about 34-35 G; the paper quotes 34.2 G)."""
    cfg = get_cfg()
    cfg.RESNET.DEPTH = 101
    s = summarize(build_model(cfg), CLIP)
    bottleneck = 1024 * 256 + 256 * 256 * 9 + 256 * 1024
    extra = 17 * bottleneck * 4 * 14 * 14
    assert s.macs_by_operator["conv"] - r50_summary.macs_by_operator["conv"] == pytest.approx(extra, rel=1e-6)
    assert 34.0 < s.macs_by_operator["conv"] / 1e9 < 35.5


def test_block_costs_agree_with_the_facts(r50_summary):
    """One NL block at res4 adds about 2.1 M parameters, one CGNL block (G = 8) about 1.6 M."""
    for block_type, params in [("nl", 2.1e6), ("cgnl", 1.6e6)]:
        cfg = get_cfg()
        cfg.NONLOCAL.TYPE = block_type
        cfg.NONLOCAL.LOCATION = placement_preset(50, 1)
        with torch.device("meta"):
            total, inserted = count_parameters(build_model(cfg))
        assert inserted == pytest.approx(params, rel=0.05)
        assert total == r50_summary.params + inserted


def test_model_info_prints_parameters_macs_and_stage_shapes(capsys):
    main = runpy.run_path(os.path.join(ROOT, "tools", "model_info.py"))["main"]
    cfg_file = os.path.join(ROOT, "configs", "minikinetics", "R101_CGNL8.yaml")
    assert main(["--cfg", cfg_file, "RESNET.WIDTH_PER_GROUP", "16", "DATA.NUM_FRAMES", "8",
                 "DATA.TRAIN_CROP_SIZE", "64"]) == 0
    out = capsys.readouterr().out
    assert "R-101 + 1 CGNL (dot, G=8), 200 classes" in out
    assert "input: 1x3x8x64x64" in out and "parameters:" in out and "multiply-adds" in out
    assert re.search(r"^res4\s+256x1x4x4\s", out, re.M)
    assert main(["--table", os.path.join(ROOT, "configs", "ucf101", "R50.yaml")]) == 0
    assert "| R50 | R-50 | 23,714,981 |" in capsys.readouterr().out  # 101 classes
    assert main(["--cfg", cfg_file, "CGNL.GROUPS", "7"]) == 2
    assert "CGNL.GROUPS" in capsys.readouterr().err


@pytest.mark.parametrize("folder, classes", [("minikinetics", 200), ("ucf101", 101)])
def test_every_config_matches_its_name(folder, classes):
    files = _config_files(folder)
    assert files
    for path in files:
        match = NAME.match(_stem(path))
        assert match, f"{path} does not follow the naming scheme of configs/README.md"
        cfg = load_config(path)
        depth = int(match["depth"])
        block = match["block"] or ""
        expected_type = {"": "none", "NL": "nl"}.get(block, "cgnl" if block.startswith("CGNL") else "residual")
        assert cfg.MODEL.NUM_CLASSES == classes and cfg.RESNET.DEPTH == depth, path
        assert cfg.NONLOCAL.TYPE == expected_type, path
        if expected_type != "none":
            assert cfg.NONLOCAL.LOCATION == placement_preset(depth, 5 if match["five"] else 1), path
        groups = match["cgnl_groups"] or match["res_groups"]
        if groups:
            assert cfg.CGNL.GROUPS == int(groups), path
        if expected_type == "cgnl":
            assert cfg.CGNL.KERNEL == KERNELS[match["kernel"]], path


#: configs/README.md: C2D_R50[_NL5]_{frames}x{stride}.yaml (the released non-local models' layouts)
K400_NAME = re.compile(r"^C2D_R50(?P<nl>_NL5)?_(?P<frames>\d+)x(?P<rate>\d+)$")


def test_kinetics400_configs_have_the_released_models_layout():
    files = _config_files("kinetics400")
    assert {_stem(p) for p in files} == {"C2D_R50_32x2", "C2D_R50_NL5_32x2", "C2D_R50_8x8", "C2D_R50_NL5_8x8"}
    for path in files:
        match = K400_NAME.match(_stem(path))
        assert match, f"{path} does not follow the naming scheme of configs/README.md"
        cfg = load_config(path, ["RESNET.WIDTH_PER_GROUP", "4"])
        frames, rate = int(match["frames"]), int(match["rate"])
        assert (cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.MODEL.NUM_CLASSES) == (frames, rate, 400), path
        assert cfg.DATA.MEAN == [0.45] * 3 and cfg.DATA.STD == [0.225] * 3, path  # 114.75 / 57.375 of 255
        assert cfg.RESNET.STEM_POOL_PADDING == [0, 0, 0], path
        assert cfg.NONLOCAL.TYPE == ("nl" if match["nl"] else "none"), path
        if match["nl"]:
            assert cfg.NONLOCAL.LOCATION == placement_preset(50, 5) and cfg.NL.POOL == [1, 2, 2], path
        model = build_model(cfg).eval()
        shapes = []
        hooks = [b.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[2:])))
                 for b in model.blocks[:-1]]
        with torch.no_grad():
            model(torch.zeros(1, 3, frames, 224, 224))
        for hook in hooks:
            hook.remove()
        # unpadded pool1: 224 -> conv1 112 -> pool1 55 -> res3 28 -> res4 14 -> res5 7; T 4 at res3..res5
        assert shapes[0][1:] == (55, 55) and shapes[5] == (4, 7, 7) and model.head.window == (4, 7, 7), path


def test_the_paper_rows_have_configs():
    mini = {_stem(p) for p in _config_files("minikinetics")}
    for depth in (50, 101):
        rows = ["", "_NL", "_NL_5B", "_CGNL1", "_CGNL4", "_CGNL8", "_CGNL8_5B"]  # Tables 2d and 4a
        assert {f"R{depth}{row}" for row in rows} <= mini
    assert {"R50_CGNL8_RBF", "R50_CGNL8_EG", "R50_RES8"} <= mini  # kernel and Table 3 ablations
    ucf101 = {_stem(p) for p in _config_files("ucf101")}
    assert {s for s in ucf101 if "_from_" not in s} == {"R50", "R50_NL", "R50_CGNL1"}  # Table 2b


def test_docs_table_lists_every_minikinetics_config_with_its_parameters():
    with open(os.path.join(ROOT, "docs", "MODELS.md"), encoding="utf-8") as f:
        rows = {m[0]: int(m[1].replace(",", ""))
                for m in re.findall(r"^\| (R\w+) \| [^|]+ \| ([\d,]+) \|", f.read(), re.M)}
    for path in _config_files("minikinetics"):
        name = _stem(path)
        assert name in rows, f"docs/MODELS.md has no row for {name}"
        cfg = load_config(path, ["RESNET.IMAGENET_WEIGHTS", ""])
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            assert rows[name] == count_parameters(build_model(cfg))[0], name


def test_summarize_config_reads_no_weights(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs", "minikinetics", "R50_CGNL8.yaml"),
                      ["RESNET.WIDTH_PER_GROUP", "8", "DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "64",
                       "RESNET.IMAGENET_WEIGHTS", str(tmp_path / "absent.pth"), "RESNET.NORM", "sync_batchnorm"])
    assert summarize_config(cfg).inserted_params > 0


def test_nl_attention_products_are_counted():
    """fvcore has no formula for scaled_dot_product_attention; ours counts q k^T and (weights) v."""
    from cgnl_video.config import load_config
    from cgnl_video.models.summary import summarize_config

    cfg = load_config(None, ["RESNET.WIDTH_PER_GROUP", "8", "DATA.NUM_FRAMES", "8", "DATA.TRAIN_CROP_SIZE", "64",
                             "NONLOCAL.TYPE", "nl", "NONLOCAL.LOCATION", "[[], [], [4], []]", "NL.POOL", "[1, 2, 2]"])
    summary = summarize_config(cfg)
    # res4 of a 8x64x64 clip: T=1, 4x4 positions; 128 channels -> inner 64; phi/g pooled (1,2,2): 2x2.
    queries, keys, inner = 1 * 4 * 4, 1 * 2 * 2, 64
    assert summary.macs_by_operator["scaled_dot_product_attention"] == queries * keys * (inner + inner)
