"""The package stands alone: nothing a user gets (package, tools, data_prep,
configs, docs, README, benchmarks) refers to the team's notes or to files
outside the repository. The paper is cited by equation, section or table, and
the repo's own docs by name. (Tests may read ../shared's official data lists.)"""

import os
import re

import pytest

from repo_paths import ROOT

REPO = ROOT
USER_FACING = ["cgnl_video", "tools", "data_prep", "configs", "docs", "benchmarks", ".ci",
               "README.md", "MODEL_ZOO.md", "hubconf.py", "setup.py"]
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".txt", ".cfg", ".toml", ".sh", "")
# The team's notes file, or a path into the folder that sits beside the repo.
OUTSIDE = re.compile(r"\bFACTS\b|\.\./shared|\bshared/(?:reference|data|DESIGN|STYLE)")


def user_facing_files():
    for entry in USER_FACING:
        path = os.path.join(REPO, entry)
        if os.path.isfile(path):
            yield path
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(TEXT_SUFFIXES) and not name.endswith((".png", ".jpg")):
                    yield os.path.join(folder, name)


def test_the_scan_sees_the_files_users_get():
    files = {os.path.relpath(p, REPO) for p in user_facing_files()}
    assert {"README.md", "cgnl_video/models/cgnl.py", "docs/TRAINING.md", "configs/minikinetics/_base.yaml",
            "tools/run_net.py", "data_prep/extract_frames.py"} <= files


@pytest.mark.parametrize("text, refers_outside", [
    ("as in the official code (FACTS section 2)", True),
    ("split 1 is also in `../shared/data/ucf101/`", True),
    ("see shared/reference/cgnl_paper.md", True),
    ("the associative law (paper Eq. 12)", False),
    ("weights shared across groups", False),
])
def test_the_pattern_tells_outside_references_from_ordinary_words(text, refers_outside):
    assert bool(OUTSIDE.search(text)) is refers_outside


def test_nothing_users_get_refers_to_files_outside_the_repo():
    offending = []
    for path in user_facing_files():
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except UnicodeDecodeError:
            continue
        offending += [f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}"
                      for n, line in enumerate(lines, 1) if OUTSIDE.search(line)]
    assert not offending, "cite the paper or the repo's docs instead:\n" + "\n".join(offending)
