"""Every user tool answers --help (in a fresh interpreter, as a user runs it)."""

import os
import subprocess
import sys

import pytest

from tools_fixtures import ROOT


@pytest.mark.parametrize("tool", ["run_net", "predict", "visualize_attention", "plot_curves", "model_zoo",
                                  "extract_features", "analyze_test", "export", "convert_checkpoint", "submit"])
def test_help(tool):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", f"{tool}.py"), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage:")
