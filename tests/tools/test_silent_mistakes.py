"""The user tools against what they must not get wrong silently (mutation-round tests).

* tools/extract_features.py: a rerun with any setting the features depend on changed
  (the crop size and short side of the views or windows, the normalisation) refuses
  the old outputs, naming the setting, instead of reusing features made otherwise.
* Class names (tools/predict.py, visualize_attention.py): a classes.txt that lists
  another number of classes than the model has is not used.
"""

import logging
import os

import numpy as np
import pytest

from cgnl_video.config import load_config
from cgnl_video.data import write_classes
from cgnl_video.inference import class_names
from tools_fixtures import run_tool, tiny_tool_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_tool_run(str(tmp_path_factory.mktemp("features")))


WINDOWS = ["--window-stride", "8", "--opt", "DATA.VAL_SHORT_SIDE", "80"]  # room for a larger crop
#: (arguments of both runs, config key changed in the second, its new value, the setting it names)
CHANGES = [
    ([], "DATA.TEST_CROP_SIZE", "80", "crop_size: 64 -> 80"),
    ([], "DATA.MEAN", "[0.5, 0.5, 0.5]", "mean: "),
    ([], "DATA.STD", "[0.5, 0.5, 0.5]", "std: "),
    (WINDOWS, "DATA.VAL_CROP_SIZE", "72", "crop_size: 64 -> 72"),
    (WINDOWS, "DATA.VAL_SHORT_SIDE", "96", "short_side: 80 -> 96"),
    (WINDOWS, "DATA.MEAN", "[0.5, 0.5, 0.5]", "mean: "),
]


@pytest.mark.parametrize("mode, key, value, named", CHANGES,
                         ids=[f"{c[1]}{' windows' if c[0] else ''}" for c in CHANGES])
def test_features_rerun_with_another_view_setting_are_refused_not_reused(tiny, tmp_path, capsys, mode, key,
                                                                         value, named):
    out = tmp_path / "out"
    argv = ["--cfg", tiny["cfg"], "--checkpoint", tiny["checkpoint"], "--out", str(out),
            "--root", os.path.dirname(tiny["frames"]), "--opt", "TEST.NUM_ENSEMBLE_VIEWS", "1", *mode]
    assert run_tool("extract_features", [*argv, tiny["frames"]]) == 0
    before = np.load(out / "frames_two.npy")
    capsys.readouterr()
    assert run_tool("extract_features", [*argv, "--opt", key, value, tiny["frames"]]) == 1
    captured = capsys.readouterr()
    assert "other settings" in captured.err and named in captured.err and "frames_two.json" in captured.err
    assert "1 inputs: 0 extracted, 0 already complete, 1 failed" in captured.out
    assert np.array_equal(np.load(out / "frames_two.npy"), before)  # kept for the user to delete


@pytest.mark.parametrize("listed", [["walk", "run"], ["walk", "run", "jump", "swim"]])
def test_a_class_list_of_another_length_is_not_used_to_name_predictions(tiny, tmp_path, caplog, listed):
    """A 3-class model with a classes.txt of 2 or 4 names: the names cannot say which
    output is which, so predictions are named class_<i>, with a warning naming the file."""
    lists = tmp_path / "lists"
    write_classes(str(lists / "classes.txt"), listed)
    cfg = load_config(tiny["cfg"], ["DATA.PATH_TO_DATA_DIR", str(lists)])
    with caplog.at_level(logging.WARNING, logger="cgnl_video"):
        assert class_names(cfg) == ["class_0", "class_1", "class_2"]
    assert f"lists {len(listed)} classes, the model has 3" in caplog.text and str(lists) in caplog.text
