#!/usr/bin/env python
"""One-shot GPU validation: the GPU figures of benchmarks/RESULTS.md in one command.

    python benchmarks/gpu_validation.py                       # one GPU: 11 minutes at most
    python benchmarks/gpu_validation.py --quick --device cpu  # toy sizes on the CPU (what CI runs)

Each phase (``PHASES``) is one run of a script of this folder, with its options at full
and at toy sizes, in a process of its own (forked: torch is imported once), stopped with
its process group (loader workers too) at its timeout: a hung CUDA call or decoder cannot
stall the run, a CUDA error cannot spoil the next phase. A phase reports "ok",
"failed" (its exit status and the end of its log), "timeout" (with the JSON the script
had written by then) or "skipped"; every phase runs regardless, and the exit status is 1
if one failed or timed out. Output (``--out``): gpu_validation.json (each phase's status, seconds, command
and the script's JSON), gpu_validation.md (a summary and each script's tables, also
printed), and per phase its tables (<phase>.md) and log (<phase>.log).
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import runpy
import signal
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

import _common  # noqa: F401 - torch and the package, imported once for every phase

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
#: a ResNet of width 8 on 8x32x32 clips, one torch thread (several on a shared CPU spin against each other)
TOY = ["--width", "8", "--batch", "2", "--frames", "8", "--size", "32", "--threads", "1"]
STEP_MODES = ["--modes", "eager", "amp", "amp_fp16", "fast-nocompile"]


class Phase(NamedTuple):
    title: str
    script: str
    full: List[str]  # its options on a GPU
    quick: Optional[List[str]]  # with --quick (None: not run, for the reason in ``title``)
    timeout_s: float  # at full sizes; --quick: QUICK_TIMEOUT_S


PHASES: Dict[str, Phase] = {
    "train_step": Phase(
        "Training step: clips/s, peak memory, MFU; every fp32 / bf16 / fp16 loss finite (block norms live)",
        "bench_train_step.py", STEP_MODES + ["--repeats", "3", "--warmup", "2"],
        TOY + STEP_MODES + ["--depths", "50", "--variants", "+1 NL", "+5 CGNL", "--repeats", "2"], 200),
    "compile": Phase("Training step under torch.compile, R-50 (not with --quick: compiling takes minutes on a CPU)",
                     "bench_train_step.py", ["--depths", "50", "--variants", "baseline", "+1 CGNL", "--modes", "eager",
                                             "fast", "--repeats", "5"], None, 150),
    "blocks": Phase("Blocks: CGNL kernel share at res3 / res4, the N at which NL and CGNL run out of memory",
                    "bench_blocks.py", ["--repeats", "3", "--warmup", "1", "--sweep", "8x28x28", "16x56x56",
                                        "32x56x56", "16x112x112"], ["--quick", "--threads", "1"], 120),
    "end_to_end": Phase("Data stall through the real loader (DATA.DECODE_ON worker and device), 30-view test speed",
                        "bench_end_to_end.py", ["--steps", "24", "--test-videos", "8"],
                        TOY + ["--quick", "--test-size", "32", "--views-per-forward", "10", "--workers", "1",
                               "--steps", "3"], 120),
    "decode_on": Phase("Loader worker CPU time per clip, DATA.DECODE_ON worker and device; JPEG decode frames/s",
                       "bench_loader.py", ["--decode-on", "--videos", "4", "--clips", "16"],
                       ["--decode-on", "--quick"], 90),
}
QUICK_TIMEOUT_S = 300.0  # toy sizes take seconds; a loaded CI machine is slow


def _phase_process(script: str, options: Sequence[str], paths: Dict[str, str]) -> None:
    """In the forked process: a new session, stdout / stderr to files, the script as __main__."""
    os.setsid()
    for fd, stream, path in ((1, "stdout", paths["md"]), (2, "stderr", paths["log"])):
        getattr(sys, stream).flush()
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)  # for its child processes too
        setattr(sys, stream, open(fd, "w", buffering=1, encoding="utf-8", closefd=False))
    sys.argv = [script, *options]
    runpy.run_path(script, run_name="__main__")


def run_phase(name: str, script: str, options: Sequence[str], timeout_s: float, out: str) -> Dict:
    """Run ``script`` with ``options`` + ``--json <out>/<name>.json`` in a forked process of
    its own session (torch and the package imported once, here; CUDA is not initialised
    here), stdout to <name>.md, stderr to <name>.log; past ``timeout_s`` its whole process
    group is killed."""
    paths = {kind: os.path.join(out, f"{name}.{kind}") for kind in ("json", "md", "log")}
    for path in paths.values():
        if os.path.exists(path):
            os.remove(path)
    options = [*options, "--json", paths["json"]]
    begin = time.time()
    proc = multiprocessing.get_context("fork").Process(target=_phase_process, args=(script, options, paths))
    proc.start()
    proc.join(timeout_s)
    code = proc.exitcode  # None: still running at its timeout
    with contextlib.suppress(ProcessLookupError):  # what is left of its group (loader workers) goes too
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join()
    texts = {}
    for kind in ("md", "log"):
        with open(paths[kind], encoding="utf-8", errors="replace") as handle:
            texts[kind] = handle.read()
    try:
        with open(paths["json"], encoding="utf-8") as handle:
            result = json.load(handle)
    except (OSError, ValueError):
        result = None
    status = "ok" if code == 0 else ("timeout" if code is None else "failed")
    error = {"ok": None, "timeout": f"stopped at its {timeout_s:.0f} s timeout; the result holds what the script "
             f"had written by then; its log ends:\n{texts['log'][-1500:]}",
             "failed": f"exit status {code}; its log ends:\n{texts['log'][-1500:]}"}[status]
    return {"status": status, "seconds": round(time.time() - begin, 1), "timeout_s": timeout_s,
            "command": " ".join(["python", os.path.relpath(script, REPO), *options]), "error": error,
            "result": result, "text": texts["md"]}


def markdown(result: Dict) -> str:
    """The section for benchmarks/RESULTS.md: the machine, a summary, each phase's tables."""
    phases = result["phases"]
    machine = next((r["result"]["machine"] for r in phases.values() if (r.get("result") or {}).get("machine")), {})
    where = (f"{machine['gpu']} ({machine['gpu_memory_gb']} GB, CUDA {machine['cuda']})" if "gpu" in machine
             else f"no GPU: {machine.get('cpu', '?')}")
    lines = [f"## GPU validation: {where}, {machine.get('date', '?')}", "",
             f"Command: `{result['command']}`. Machine: {machine.get('cpu_cores', '?')} cores, "
             f"{machine.get('memory_gb', '?')} GB, torch {machine.get('torch', '?')}." + (
                 " **TOY SIZES (--quick): not a measurement of anything.**" if result["quick"] else ""), "",
             "| phase | status | s | timeout s | error |", "|---|---|---:|---:|---|"]
    for name, rec in phases.items():
        first = (rec.get("error") or "").strip().splitlines()[:1]
        lines.append(f"| {name} | {rec['status'] if rec['status'] == 'ok' else '**' + rec['status'] + '**'} | "
                     f"{rec.get('seconds', 0):.0f} | {rec.get('timeout_s', 0):.0f} | {''.join(first)[:200]} |")
    for name, rec in phases.items():
        lines += ["", f"### {PHASES[name].title}", "", rec.get("text", "").strip() or f"No result ({rec['status']})."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes: every phase in seconds (CI)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu_validation"), help="output folder")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES), help="default: all")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiplies every phase's timeout")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    phases = {}
    for name in args.phases:
        phase = PHASES[name]
        options = phase.quick if args.quick else phase.full
        if options is None:
            phases[name] = {"status": "skipped", "error": "not run with --quick", "text": ""}
            continue
        timeout = (QUICK_TIMEOUT_S if args.quick else phase.timeout_s) * args.timeout_scale
        print(f"== {name}: {phase.script} (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
        phases[name] = run_phase(name, os.path.join(HERE, phase.script), ["--device", args.device, *options],
                                 timeout, args.out)
        print(f"== {name}: {phases[name]['status']} in {phases[name]['seconds']:.0f} s", file=sys.stderr, flush=True)
    result = {"command": " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                                  + list(sys.argv[1:] if argv is None else argv)),
              "quick": args.quick, "device": args.device, "phases": phases}
    with open(os.path.join(args.out, "gpu_validation.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    text = markdown(result)
    with open(os.path.join(args.out, "gpu_validation.md"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    print(text)
    return 1 if any(rec["status"] in ("failed", "timeout") for rec in phases.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
