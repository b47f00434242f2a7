#!/usr/bin/env python
"""Import cost: what a fresh interpreter spends importing parts of the package.

    python benchmarks/bench_imports.py [--quick]   # 7 rounds, quick 2

Decides whether a package's public names are plain imports or lazy
(``cgnl_video/utils/lazy.py``): data_prep scripts and their workers import
``cgnl_video.data.manifest`` only, without torch. Each case runs in a new process, timed
inside it (interpreter start excluded), round-robin; median and ratio to the lazy import.
Writes benchmarks/results/imports.json.
"""

import statistics
import subprocess
import sys
from typing import Dict, List, Tuple

import _common as common

BASELINE = "data.manifest, lazy exports (as shipped)"
#: case -> import statement
CASES: Dict[str, str] = {
    "config (torch-free)": "import cgnl_video.config",
    BASELINE: "import cgnl_video.data.manifest",
    "data.manifest, eager (what plain data exports import)": (
        "import cgnl_video.data.manifest, cgnl_video.data.dataset, cgnl_video.data.decode, cgnl_video.data.loader"),
    "prep.extract (a data_prep worker)": "import cgnl_video.prep.extract",
    "models (plain exports)": "import cgnl_video.models",
}
_CHILD = "import sys, time; t = time.perf_counter(); {}; print(time.perf_counter() - t, 'torch' in sys.modules)"


def time_import(statement: str) -> Tuple[float, bool]:
    """Seconds a new interpreter spends on ``statement``, and whether torch got imported."""
    out = subprocess.run([sys.executable, "-c", _CHILD.format(statement)], capture_output=True, text=True,
                         check=True, cwd=common.REPO).stdout.split()
    return float(out[0]), out[1] == "True"


def main() -> int:
    args = common.parser(__doc__, "imports", repeats=7, quick="2 rounds", device=False).parse_args()
    device = common.start(args)
    rounds = 2 if args.quick else args.repeats
    times: Dict[str, List[float]] = {name: [] for name in CASES}
    torch_loaded: Dict[str, bool] = {}
    for _ in range(rounds):
        for name, statement in CASES.items():
            seconds, torch_loaded[name] = time_import(statement)
            times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [[name, f"{medians[name] * 1000:.0f}", f"{min(times[name]) * 1000:.0f}",
             f"{medians[name] / medians[BASELINE]:.1f}x", "yes" if torch_loaded[name] else "no"] for name in CASES]
    result = {
        "rounds": rounds,
        "cases": {name: {"statement": CASES[name], "seconds": times[name], "median_s": medians[name],
                         "ratio_to_baseline": medians[name] / medians[BASELINE], "imports_torch": torch_loaded[name]}
                  for name in CASES},
    }
    return common.report(args, device, result, common.markdown_table(
        ["import of cgnl_video.", "median ms", "best ms", "vs lazy data.manifest", "imports torch"], rows, "lrrrl"))


if __name__ == "__main__":
    raise SystemExit(main())
