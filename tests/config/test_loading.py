"""Configuration: defaults, _BASE_ inheritance, overrides, and errors naming the key."""

import pytest

from cgnl_video.config import ConfigError, get_cfg, load_config, validate
from cgnl_video.config.backbones import placement_preset
from repo_paths import ROOT


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.TRAIN.BATCH_SIZE = 3
    assert b.TRAIN.BATCH_SIZE == 64


def test_defaults_are_valid_and_follow_the_paper():
    cfg = validate(get_cfg())
    assert (cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE) == (32, 2)
    assert cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE == [0.08, 1.25]
    assert cfg.SOLVER.MOMENTUM == 0.9 and cfg.SOLVER.WEIGHT_DECAY == 1e-4
    assert cfg.CGNL.GAMMA == 1e-4 and cfg.CGNL.ORDER == 3 and cfg.CGNL.NORM == "bn"
    assert (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS) == (10, 3)


def test_base_inheritance_and_command_line_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "TRAIN:\n  BATCH_SIZE: 16\nRESNET:\n  DEPTH: 101\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nTRAIN:\n  BATCH_SIZE: 8\n")
    cfg = load_config(child, ["SOLVER.BASE_LR", "0.02", "NONLOCAL.LOCATION", "[[], [], [21], []]"])
    assert cfg.TRAIN.BATCH_SIZE == 8 and cfg.RESNET.DEPTH == 101
    assert cfg.SOLVER.BASE_LR == 0.02 and cfg.NONLOCAL.LOCATION == [[], [], [21], []]
    assert cfg.is_frozen()


def test_unknown_key_in_file_is_an_error_naming_it(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "TRAIN:\n  BATCH_SIZ: 16\n")
    with pytest.raises(ConfigError, match=r"unknown config key TRAIN\.BATCH_SIZ"):
        load_config(bad)


def test_unknown_key_on_command_line_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"unknown config key SOLVER\.BASE_LRR \(in command line\)"):
        load_config(None, ["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key NOPE\.KEY"):
        load_config(None, ["NOPE.KEY", "1"])


def test_override_without_value_and_wrong_type_are_errors():
    with pytest.raises(ConfigError, match="no value"):
        load_config(None, ["TRAIN.BATCH_SIZE"])
    with pytest.raises(ConfigError, match=r"TRAIN\.BATCH_SIZE"):
        load_config(None, ["TRAIN.BATCH_SIZE", "'many'"])


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")


@pytest.mark.parametrize(
    "opts, key",
    [
        (["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [6], []]"], r"NONLOCAL\.LOCATION\[2\]"),
        (["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [4], []]", "CGNL.GROUPS", "7"], r"CGNL\.GROUPS"),
        (["NONLOCAL.TYPE", "attention"], r"NONLOCAL\.TYPE"),
        (["CGNL.KERNEL", "cosine"], r"CGNL\.KERNEL"),
        (["CGNL.NORM", "ln"], r"CGNL\.NORM"),
        (["RESNET.DEPTH", "34"], r"RESNET\.DEPTH"),
        (["DATA.NUM_FRAMES", "12"], r"DATA\.NUM_FRAMES"),
        (["DATA.TRAIN_CROP_SIZE", "16"], r"DATA\.TRAIN_CROP_SIZE"),
        (["DATA.VAL_CROP_SIZE", "300"], r"DATA\.VAL_CROP_SIZE"),
        (["DATA.TRAIN_JITTER_SCALES_RELATIVE", "[1.0, 0.5]"], r"DATA\.TRAIN_JITTER_SCALES_RELATIVE"),
        (["SOLVER.STEPS", "[0, 10]"], r"SOLVER\.STEPS"),
        (["SOLVER.LR_POLICY", "poly"], r"SOLVER\.LR_POLICY"),
        (["TEST.NUM_SPATIAL_CROPS", "2"], r"TEST\.NUM_SPATIAL_CROPS"),
        (["TRAIN.AMP_DTYPE", "fp8"], r"TRAIN\.AMP_DTYPE"),
        (["TRAIN.BATCH_SIZE", "0"], r"TRAIN\.BATCH_SIZE"),
        (["DATA.DECODE_ON", "gpu"], r"DATA\.DECODE_ON"),
    ],
)
def test_inconsistent_values_fail_naming_the_key(opts, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, opts)


def test_groups_need_only_divide_stages_that_get_blocks():
    # 1024 * 0.5 = 512 inner channels at res4: 16 groups divide them.
    load_config(None, ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [4], []]", "CGNL.GROUPS", "16"])


def test_placement_presets_match_the_paper():
    assert placement_preset(50, 1) == [[], [], [4], []]
    assert placement_preset(101, 1) == [[], [], [21], []]
    assert placement_preset(50, 5) == placement_preset(101, 5) == [[], [1, 3], [1, 3, 5], []]
    with pytest.raises(ValueError):
        placement_preset(50, 3)


def test_negative_thread_count_is_refused():
    with pytest.raises(ConfigError, match=r"NUM_THREADS"):
        load_config(None, ["NUM_THREADS", "-1"])


def test_config_modules_import_each_other_without_cycles():
    """config/*.py import only one another in one direction (function-level imports
    count too), and nothing of cgnl_video outside config/ (the models import it)."""
    import ast
    import glob
    import os

    folder = os.path.join(ROOT, "cgnl_video", "config")
    graph = {}
    for path in glob.glob(os.path.join(folder, "*.py")):
        name = os.path.splitext(os.path.basename(path))[0]
        imported = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cgnl_video"):
                assert node.module.startswith("cgnl_video.config"), f"config/{name}.py imports {node.module}"
                parts = node.module.split(".")
                imported |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
        graph[name] = imported - {name}
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, f"import cycle: {' -> '.join(visiting + [module])}"
        if module in done:
            return
        visiting.append(module)
        for other in graph.get(module, ()):
            visit(other)
        visiting.pop()
        done.add(module)

    for module in graph:
        if module != "__init__":
            visit(module)
