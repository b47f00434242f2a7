"""benchmarks/bench_claim.py: its --quick run gives a well-formed table and JSON (every
model, every seed, summaries, paired differences, attention shares), and its statistics
are the textbook ones. The numbers of a quick run mean nothing and are not checked."""

import json
import math
import os
import subprocess
import sys

import pytest

from repo_paths import ROOT

BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import bench_claim  # noqa: E402

CELLS = 2 * 4 * 4  # block grid of the default task: frames x grid x grid
MODELS = ["C2D", "+residual (G=4)", "+NL", "+CGNL dot G=1", "+CGNL dot G=4"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("claim") / "claim.json"
    run = subprocess.run([sys.executable, os.path.join(BENCH, "bench_claim.py"), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, json.loads(out.read_text())


def test_quick_json_has_every_model_seed_and_field(quick):
    _, result = quick
    assert list(result["models"]) == MODELS == list(bench_claim.MODELS)
    assert result["seeds"] == 2 and result["machine"]["torch"] and "--quick" in result["command"]
    for name, entry in result["models"].items():
        assert [r["seed"] for r in entry["seeds"]] == [0, 1]
        assert all(0.0 <= r["top1"] <= 100.0 for r in entry["seeds"])
        assert set(entry["top1"]) == {"mean", "std"}
        for key in ("vs_C2D", "vs_NL"):
            assert set(entry[key]) == {"mean", "std", "diffs", "ci95", "exceeds_spread"}
            assert len(entry[key]["diffs"]) == 2
        has_map = "NL" in name
        assert all(("attention" in r) == has_map for r in entry["seeds"])
        assert ("share_a_to_b" in entry) == ("share_b_to_a" in entry) == has_map
        for r in entry["seeds"] if has_map else []:
            assert 0.0 <= r["attention"]["share_a_to_b"] <= 1.0 and 0.0 <= r["attention"]["share_b_to_a"] <= 1.0
            assert r["attention"]["chance"] == round(1 / CELLS, 4)
            assert r["attention"]["maps"] == 2 * (4 if "G=4" in name else 1)
    assert result["models"]["C2D"]["vs_C2D"]["diffs"] == [0.0, 0.0]


def test_quick_table_has_a_row_per_model(quick):
    stdout, result = quick
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | top-1 %")
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == MODELS
    assert rows[1].endswith("| — | — |") and not rows[3].endswith("| — |")
    assert f"chance {100 / CELLS:.1f} %" in stdout
    assert f"wall time {result['wall_s']} s" in stdout


def test_paired_differences_and_their_interval():
    a, b = [71.0, 80.0, 75.5], [70.0, 70.0, 72.0]
    diffs = [1.0, 10.0, 3.5]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    out = bench_claim.paired(a, b)
    assert out["diffs"] == diffs and out["mean"] == round(mean, 2) and out["std"] == round(std, 2)
    assert out["ci95"] == pytest.approx(4.303 * std / math.sqrt(3), abs=0.02)
    assert out["exceeds_spread"] is (abs(mean) > out["ci95"])
    assert bench_claim.paired([60.0, 61.0, 62.0], [50.0, 50.5, 51.0])["exceeds_spread"] is True
