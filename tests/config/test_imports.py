"""IMPORTS: a block registered from user code (tests/user_code/se_block.py) reaches
every tool and torch.hub through the config alone; relative paths, _BASE_ files,
dotted names, importing twice, errors naming IMPORTS and the module, and a run's
config.yaml that finds the block again from another directory."""

import json
import os
import subprocess
import sys

import pytest
import torch

from cgnl_video.config import ConfigError, load_config
from cgnl_video.config.registry import block_entries, unregister_block
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.multiview import TEST_METRICS_FILE
from engine_helpers import make_tiny_dataset, tiny_opts
from repo_paths import TESTS
from tools_fixtures import ROOT, make_inputs, run_tool, save_tiny_checkpoint, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

USER_CODE = os.path.join(TESTS, "user_code")
SE_FILE = os.path.join(USER_CODE, "se_block.py")
SE_AT_RES4 = ["NONLOCAL.TYPE", "se", "NONLOCAL.LOCATION", "[[], [], [4], []]"]


def _se_registered() -> bool:
    return any(entry.name == "se" for entry in block_entries())


def _forget_user_modules() -> None:
    """Unregister ``se`` and drop every module imported from a file outside the package
    that these tests import, so the next test starts as a fresh process would."""
    if _se_registered():
        unregister_block("se")
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.startswith("_cgnl_imports_") or (isinstance(file, str) and file.startswith(USER_CODE + os.sep)):
            del sys.modules[name]


@pytest.fixture(autouse=True)
def fresh_process_state():
    _forget_user_modules()
    yield
    _forget_user_modules()


def imports_opt(*entries: str):
    return ["IMPORTS", repr(list(entries))]


def test_a_py_path_on_the_command_line_registers_the_block_once(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^NONLOCAL\.TYPE: must be one of"):
        load_config(None, SE_AT_RES4)  # without IMPORTS the block is unknown
    monkeypatch.chdir(USER_CODE)  # a relative path on the command line is from the current directory
    cfg = load_config(None, imports_opt("se_block.py") + SE_AT_RES4 + ["SE.REDUCTION", "8"])
    assert cfg.IMPORTS == [SE_FILE] and cfg.NONLOCAL.TYPE == "se" and cfg.SE.REDUCTION == 8
    monkeypatch.chdir(tmp_path)
    # again, by its absolute path: the file is not run again (a second register_block("se") would raise)
    again = load_config(None, imports_opt(SE_FILE) + SE_AT_RES4)
    assert again.IMPORTS == [SE_FILE] and again.SE.REDUCTION == 16
    assert [n for n in sys.modules if n.startswith("_cgnl_imports_se_block_")] != []


def test_relative_paths_in_yaml_files_are_from_the_file_that_names_them(tmp_path, monkeypatch):
    base_dir, child_dir = tmp_path / "shared", tmp_path / "experiments"
    base_dir.mkdir()
    child_dir.mkdir()
    (base_dir / "base.yaml").write_text(
        f"IMPORTS: [{os.path.relpath(SE_FILE, base_dir)}]\nNONLOCAL: {{TYPE: se, LOCATION: [[], [], [4], []]}}\n")
    (child_dir / "se8.yaml").write_text("_BASE_: ../shared/base.yaml\nSE: {REDUCTION: 8}\n")
    monkeypatch.chdir(USER_CODE)
    cfg = load_config(str(child_dir / "se8.yaml"))  # IMPORTS inherited through _BASE_, from base.yaml's folder
    assert cfg.IMPORTS == [SE_FILE] and cfg.SE.REDUCTION == 8
    (child_dir / "own.yaml").write_text("_BASE_: ../shared/base.yaml\nIMPORTS: [nowhere.py]\n")
    with pytest.raises(ConfigError, match=f"^IMPORTS: no such file {child_dir / 'nowhere.py'} "):
        load_config(str(child_dir / "own.yaml"))  # a file's own IMPORTS replaces its base's, from its folder
    cfg = load_config(str(child_dir / "own.yaml"), imports_opt("se_block.py"))  # the command line replaces both
    assert cfg.IMPORTS == [SE_FILE]


def test_a_dotted_name_and_a_module_the_user_imported_are_not_run_again(monkeypatch):
    monkeypatch.syspath_prepend(USER_CODE)
    cfg = load_config(None, imports_opt("se_block") + SE_AT_RES4)
    assert cfg.IMPORTS == ["se_block"] and cfg.NONLOCAL.TYPE == "se"
    # its file by path: the module imported as se_block is that file, so nothing runs twice
    assert load_config(None, imports_opt(SE_FILE) + SE_AT_RES4).NONLOCAL.TYPE == "se"
    assert not [n for n in sys.modules if n.startswith("_cgnl_imports_")]


def test_errors_name_imports_and_the_module(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^IMPORTS: importing 'no_such_user_module' failed: "
                                          r"ModuleNotFoundError: No module named 'no_such_user_module' \(a module"):
        load_config(None, imports_opt("no_such_user_module"))
    with pytest.raises(ConfigError, match=f"^IMPORTS: no such file {tmp_path / 'absent.py'} "):
        load_config(None, imports_opt(str(tmp_path / "absent.py")))
    broken = tmp_path / "broken_block.py"
    broken.write_text("raise RuntimeError('the user code is broken')\n")
    with pytest.raises(ConfigError, match=f"^IMPORTS: importing '{broken}' failed: "
                                          "RuntimeError: the user code is broken$"):
        load_config(None, imports_opt(str(broken)))
    broken.write_text("VALUE = 3\n")  # fixed: the failed run left nothing behind, the file runs now
    assert load_config(None, imports_opt(str(broken))).IMPORTS == [str(broken)]
    (tmp_path / "string.yaml").write_text("IMPORTS: se_block.py\n")
    with pytest.raises(ConfigError, match=r"^IMPORTS \(in .*string\.yaml\): must be a list of module names or "
                                          r"\.py paths, got 'se_block\.py'"):
        load_config(str(tmp_path / "string.yaml"))
    (tmp_path / "orphan.yaml").write_text("_BASE_: gone.yaml\n")  # read for its IMPORTS: named, not a traceback
    with pytest.raises(ConfigError, match=r"^config file not found: .*gone\.yaml \(the _BASE_ of .*orphan\.yaml\)"):
        load_config(str(tmp_path / "orphan.yaml"))


def _se_yaml(folder, **extra) -> str:
    """A YAML file of a narrow R-50 + 1 SE block whose IMPORTS names se_block.py relative to it."""
    lines = [f"IMPORTS: [{os.path.relpath(SE_FILE, folder)}]",
             "NONLOCAL: {TYPE: se, LOCATION: [[], [], [4], []]}", "SE: {REDUCTION: 4}",
             "DATA: {NUM_FRAMES: 8, TRAIN_CROP_SIZE: 32}", "MODEL: {NUM_CLASSES: 3}",
             "RESNET: {WIDTH_PER_GROUP: 4, IMAGENET_WEIGHTS: ''}"]
    path = os.path.join(folder, "R50_SE.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines + [f"{k}: {v}" for k, v in extra.items()]) + "\n")
    return path


def test_model_info_and_model_zoo_take_the_block(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    path = _se_yaml(str(configs), OUTPUT_DIR=str(tmp_path / "no_run"))
    assert run_tool("model_info", ["--cfg", path]) == 0
    out = capsys.readouterr().out
    assert f"{path}: R-50 + 1 SE, 3 classes" in out and "(inserted blocks: 2,128)" in out  # 64*16+16 + 16*64+64
    _forget_user_modules()
    zoo = tmp_path / "ZOO.md"
    assert run_tool("model_zoo", ["--configs", str(configs), "--out", str(zoo)]) == 0
    assert "| R50_SE.yaml | 50 | 1 SE | - | - |" in zoo.read_text()


def test_torch_hub_takes_the_block_through_opts():
    model = torch.hub.load(ROOT, "c2d_r50", source="local", trust_repo=True, num_classes=3,
                           opts=imports_opt(SE_FILE) + SE_AT_RES4 + ["RESNET.WIDTH_PER_GROUP", "4"])
    se = model.blocks[4].inserted["4"]
    assert type(se).__name__ == "SEBlock" and se.excite[0].weight.shape == (64 // 16, 64, 1, 1, 1)
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 3)


@pytest.fixture(scope="module")
def se_checkpoint(tmp_path_factory):
    """A tiny + SE config (IMPORTS in it) with a checkpoint, and input videos."""
    folder = str(tmp_path_factory.mktemp("se_tools"))
    cfg_path = write_tiny_config(folder, "se", IMPORTS=repr([SE_FILE]), SE__REDUCTION=4)
    checkpoint = save_tiny_checkpoint(cfg_path, os.path.join(folder, "run"))
    _forget_user_modules()
    inputs = os.path.join(folder, "inputs")
    return {"cfg": cfg_path, "checkpoint": checkpoint, "inputs": inputs, **make_inputs(inputs)}


def test_export_extract_features_and_visualize_attention_take_the_block(se_checkpoint, tmp_path, capsys):
    model_args = ["--cfg", se_checkpoint["cfg"], "--checkpoint", se_checkpoint["checkpoint"]]
    out = tmp_path / "se.pt"
    assert run_tool("export", model_args + ["--format", "torchscript", "--out", str(out), "--verify",
                                         "--verify-video", se_checkpoint["video"]]) == 0
    scripted = torch.jit.load(str(out))
    assert any(".inserted.4.excite." in name for name, _ in scripted.named_parameters())
    _forget_user_modules()
    features = tmp_path / "features"
    assert run_tool("extract_features", model_args + ["--out", str(features), "--root", se_checkpoint["inputs"],
                                                   se_checkpoint["video"]]) == 0
    assert (features / "index.jsonl").is_file()
    _forget_user_modules()
    capsys.readouterr()
    # the SE model is built and its checkpoint loaded; it has no attention map to draw
    argv = model_args + [se_checkpoint["video"], "--out", str(tmp_path / "attention.png")]
    assert run_tool("visualize_attention", argv) == 2
    assert capsys.readouterr().err == "error: the model has no NL or CGNL block (NONLOCAL.TYPE nl or cgnl)\n"


def _tool(name, args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_runs_config_yaml_finds_the_block_again_from_another_directory(tmp_path, monkeypatch):
    """Train one iteration with IMPORTS relative to the current directory; then a
    test-only run and predict on the run's config.yaml, each a fresh process
    started elsewhere."""
    data = str(tmp_path / "data")
    make_tiny_dataset(data)
    out = tmp_path / "run"
    opts = tiny_opts(data, str(out), NONLOCAL__TYPE="se", SE__REDUCTION=4, TRAIN__BATCH_SIZE=12,
                     SOLVER__MAX_EPOCH=1, SOLVER__STEPS="[0]", SOLVER__LRS="[1.0]", SOLVER__WARMUP_EPOCHS=0.0,
                     TRAIN__EVAL_PERIOD=0, TEST__ENABLE=False, TEST__NUM_SPATIAL_CROPS=1)
    monkeypatch.chdir(USER_CODE)
    assert run_tool("run_net", ["--cfg", "", *imports_opt("se_block.py"), *opts]) == 0
    config_yaml = str(out / "config.yaml")
    with open(config_yaml, encoding="utf-8") as handle:
        assert f"IMPORTS:\n- {SE_FILE}\n" in handle.read()
    checkpoint = cu.list_checkpoints(str(out))[-1]
    assert any(".inserted.4.excite." in key for key in cu.load_checkpoint(checkpoint)["model"])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tested = _tool("run_net", ["--cfg", config_yaml, "TRAIN.ENABLE", "False", "TEST.ENABLE", "True"], cwd=elsewhere)
    assert tested.returncode == 0, tested.stderr
    with open(out / TEST_METRICS_FILE, encoding="utf-8") as handle:
        assert json.load(handle)["videos_scored"] == 6
    frames = os.path.join(data, "frames", "test", "0_0")
    predicted = _tool("predict", ["--cfg", config_yaml, "--checkpoint", checkpoint, "--json", frames], cwd=elsewhere)
    assert predicted.returncode == 0, predicted.stderr
    (prediction,) = json.loads(predicted.stdout)["predictions"]
    assert prediction["path"] == frames and prediction["views"] == 2
    assert sum(t["prob"] for t in prediction["top"]) == pytest.approx(1.0, abs=1e-5)
