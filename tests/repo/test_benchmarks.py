"""benchmarks/: each script's --help works, the CPU memory proxy and the timing helper
measure what they say (benchmarks/_common.py), and the folder stays small."""

import glob
import os
import subprocess
import sys
import time

import pytest

from repo_paths import ROOT

REPO = ROOT
BENCH = os.path.join(REPO, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import _common as common  # noqa: E402

SCRIPTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCH, "*.py")) if not os.path.basename(p)
                 .startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_of_each_script(script):
    run = subprocess.run([sys.executable, os.path.join(BENCH, script), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage: ") and ("--json" in run.stdout or "--out" in run.stdout)


PEAK_OF_TENSORS = """
import sys
import torch
sys.path.insert(0, sys.argv[1])
import _common as common

before = torch.ones(1 << 24)  # 64 MiB, allocated (and touched) before the call

def work():
    a = torch.ones(1 << 24)  # 64 MiB
    b = a * 2  # 128 MiB live
    del a
    c = b + b  # 128 MiB live again
    return c.sum()

cpu = torch.device("cpu")
print(common.peak_memory_bytes(work, cpu), common.peak_memory_bytes(lambda: before.sum(), cpu))
"""


def test_cpu_peak_memory_proxy_sees_the_tensors_a_call_touches():
    """Peak live tensors 128 MiB (a and b, then b and c): the resident-memory proxy counts
    about that (a few pages may have been resident already), not the 192 MiB of all three,
    and not a tensor that existed before. The proxy reads the whole process's resident
    memory, so it runs in a process of its own, as the benchmarks do: in the suite's
    process, what earlier tests left behind once made it read all three (CI)."""
    run = subprocess.run([sys.executable, "-c", PEAK_OF_TENSORS, BENCH], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    peak, untouched = (int(word) for word in run.stdout.split())
    assert 120 * 2**20 <= peak < 170 * 2**20, peak / 2**20
    assert untouched < 8 * 2**20
    assert "resident" in common.MEMORY_NOTE["cpu"]


def test_time_interleaved_runs_the_cases_round_robin_with_the_chosen_clock():
    order = []
    timing = common.time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                     repeats=3, warmup=1)
    assert order == ["a", "b"] * 4  # the warm-up, then each round runs every case once
    assert timing["a"]["repeats"] == timing["b"]["repeats"] == 3
    nap = common.time_interleaved({"nap": lambda: time.sleep(0.02)}, repeats=3, warmup=0, clock="wall")["nap"]
    assert 0.02 <= nap["median_s"] < 0.2 and nap["cpu_median_s"] < 0.01  # sleeping costs no CPU time
    asleep = common.time_interleaved({"nap": lambda: time.sleep(0.02)}, repeats=3, warmup=0, clock="cpu")["nap"]
    assert asleep["median_s"] < 0.01 and asleep["wall_median_s"] >= 0.02 and asleep["clock"] == "cpu"
    assert nap["measurement"].median == pytest.approx(nap["median_s"])  # a Measurement, for benchmark.Compare


#: the most lines benchmarks/*.py may hold together (issue 22 item 7).
MAX_LINES = 2000


def test_benchmarks_stay_small():
    counts = {}
    for path in glob.glob(os.path.join(BENCH, "*.py")):
        with open(path, encoding="utf-8") as handle:
            counts[os.path.basename(path)] = sum(1 for _ in handle)
    assert sum(counts.values()) <= MAX_LINES, counts
