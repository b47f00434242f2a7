"""The code style and the layering the repo promises: ruff with the settings of
pyproject.toml, and the import-linter contracts there (docs/ARCHITECTURE.md's layers)."""

import os
import shutil
import subprocess

import pytest

from repo_paths import ROOT


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e \".[test]\" installs it")
    return path


def test_ruff_finds_nothing():
    done = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


def test_imports_keep_the_layers_of_the_architecture():
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "0 broken" in done.stdout, done.stdout[-5000:] + done.stderr[-2000:]


def test_a_broken_layer_is_reported(tmp_path):
    """The contracts bite: a models module importing the engine breaks them."""
    copy = tmp_path / "repo"
    shutil.copytree(os.path.join(ROOT, "cgnl_video"), copy / "cgnl_video")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), copy / "pyproject.toml")
    with open(copy / "cgnl_video" / "models" / "summary.py", "a", encoding="utf-8") as handle:
        handle.write("\nfrom cgnl_video.engine import launch  # noqa: E402,F401\n")
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=copy, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(copy)})
    assert done.returncode != 0 and "cgnl_video.models.summary -> cgnl_video.engine" in done.stdout, done.stdout
