"""tools/model_zoo.py and cgnl_video.analysis.model_zoo on two tiny configs; the
committed MODEL_ZOO.md covers every config of the repository."""

import json
import os

from cgnl_video.analysis.model_zoo import find_configs
from cgnl_video.config import load_config
from cgnl_video.models.summary import summarize_config
from tools_fixtures import ROOT, run_tool

TINY_BASE = """\
DATA: {NUM_FRAMES: 8, TRAIN_CROP_SIZE: 32}
MODEL: {NUM_CLASSES: 3}
RESNET: {WIDTH_PER_GROUP: 4, IMAGENET_WEIGHTS: pretrained/not_needed.pth}
"""


def write_configs(root):
    os.makedirs(os.path.join(root, "toy"))
    files = {
        "toy/_base.yaml": TINY_BASE,
        "toy/R50.yaml": "_BASE_: _base.yaml\nOUTPUT_DIR: nowhere/R50\n",
        "toy/R50_CGNL2.yaml": ("_BASE_: _base.yaml\nNONLOCAL: {TYPE: cgnl, LOCATION: [[], [], [4], []]}\n"
                               "CGNL: {GROUPS: 2, KERNEL: rbf}\n"),
    }
    for name, text in files.items():
        with open(os.path.join(root, name), "w", encoding="utf-8") as handle:
            handle.write(text)


def table_rows(markdown):
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return {cells[0]: cells for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


def test_table_from_configs_and_existing_runs_only(tmp_path, capsys):
    configs, runs = str(tmp_path / "configs"), str(tmp_path / "runs")
    write_configs(configs)
    os.makedirs(os.path.join(runs, "toy", "R50_CGNL2"))
    with open(os.path.join(runs, "toy", "R50_CGNL2", "test_metrics.json"), "w") as handle:
        json.dump({"top1_acc": 66.66666, "top5_acc": 100.0, "videos_scored": 3}, handle)
    out = str(tmp_path / "ZOO.md")
    assert run_tool("model_zoo", ["--configs", configs, "--runs", runs, "--out", out]) == 0
    assert "wrote" in capsys.readouterr().out
    markdown = open(out, encoding="utf-8").read()
    assert f"--runs {runs} --out ZOO.md" in markdown
    rows = table_rows(markdown)
    assert sorted(rows) == ["toy/R50.yaml", "toy/R50_CGNL2.yaml"]  # the _base file is no experiment
    baseline, cgnl = rows["toy/R50.yaml"], rows["toy/R50_CGNL2.yaml"]
    assert baseline[1:5] == ["50", "-", "-", "-"] and cgnl[1:5] == ["50", "1 CGNL", "2", "rbf"]
    summary = summarize_config(load_config(os.path.join(configs, "toy", "R50_CGNL2.yaml")))
    assert cgnl[5] == f"{summary.params:,}" and cgnl[6] == f"{summary.macs / 1e9:.2f}" and cgnl[7] == "8x32x32"
    assert cgnl[8:11] == ["66.67", "100.00", os.path.join(runs, "toy", "R50_CGNL2")]
    assert baseline[8:11] == ["", "", ""]  # no run: blank, not guessed


def test_committed_model_zoo_lists_every_config():
    with open(os.path.join(ROOT, "MODEL_ZOO.md"), encoding="utf-8") as handle:
        rows = table_rows(handle.read())
    configs = os.path.join(ROOT, "configs")
    assert sorted(rows) == sorted(os.path.relpath(p, configs) for p in find_configs(configs))
    assert rows["minikinetics/R50.yaml"][5] == "23,917,832"  # FACTS section 3
