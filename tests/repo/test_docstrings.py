"""Every module of the package, the tools, data_prep and hubconf.py starts with a
docstring of at most 15 lines that says what it is for (the developers' guide);
measurements, history and long rationale go to docs/ or benchmarks/RESULTS.md.
The benchmark scripts too: their figures are in benchmarks/RESULTS.md."""

import ast
import glob
import os

import pytest

from repo_paths import ROOT

MAX_LINES = 15


def modules():
    """The checked files, relative to the repository root."""
    patterns = ["cgnl_video/**/*.py", "tools/*.py", "data_prep/*.py", "hubconf.py", "benchmarks/*.py"]
    files = {os.path.relpath(path, ROOT) for pattern in patterns
             for path in glob.glob(os.path.join(ROOT, pattern), recursive=True)}
    return sorted(files)


def test_the_modules_are_found():
    found = modules()
    assert len(found) > 50 and "cgnl_video/models/cgnl.py" in found and "hubconf.py" in found


@pytest.mark.parametrize("path", modules())
def test_module_docstring_is_short(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read(), filename=path))
    assert doc and doc.strip(), f"{path} has no module docstring"
    lines = len(doc.strip().splitlines())
    assert lines <= MAX_LINES, (f"{path}: module docstring of {lines} lines (at most {MAX_LINES}); "
                                "move measurements and details to docs/ or benchmarks/RESULTS.md")
