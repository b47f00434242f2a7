"""Importing the package changes nothing process-wide: no warning filters, no umask
calls; files are still written with a plain open()'s permissions under any umask."""

import os
import subprocess
import sys

from repo_paths import ROOT

PROBE = """
import os, sys, warnings
calls = []
real_umask = os.umask
os.umask = lambda mask: calls.append(mask) or real_umask(mask)
import numpy, torch, torchvision  # their own filters, set at their import, are theirs
warnings.simplefilter("error", FutureWarning)  # a deprecation warning at import fails the probe
strict = list(warnings.filters)
import cgnl_video, cgnl_video.models, cgnl_video.models.summary, cgnl_video.utils.io, cgnl_video.engine
assert warnings.filters == strict, [f for f in warnings.filters if f not in strict]
assert not calls, calls
print("quiet")
"""


def test_importing_the_package_sets_no_warning_filter_and_touches_no_umask():
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "quiet", done.stderr[-2000:]


def test_atomic_files_follow_the_umask_set_after_import(tmp_path):
    from cgnl_video.utils.io import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(str(tmp_path / "atomic.txt"), "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o640
