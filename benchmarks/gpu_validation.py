#!/usr/bin/env python
"""One-shot GPU validation: the GPU figures of benchmarks/RESULTS.md in one command.

    python benchmarks/gpu_validation.py                       # one GPU: under 8 minutes
    python benchmarks/gpu_validation.py --quick --device cpu  # toy sizes on the CPU (what CI runs)

Parts (``_validation_parts.py``): finite_loss, jpeg_decode, kernel_share, nl_oom,
multiview_test, data_stall, train_step. Each reports its status ("ok", "failed", "timeout"
with what it had measured and was doing, "skipped") and the others run regardless.
Budget (``--budget-s``, 420 s, quick 100 s): the parts run in a worker process; each first
warms up outside the budget within ``--warmup-limit-s`` (cuDNN autotuning, the first
torch.compile; the workers share one TORCHINDUCTOR_CACHE_DIR), then gets its share
(``SHARES``) of the time left. This process watches the worker: a part past its deadline
(or warm-up limit) + grace is stopped with its process group and reported with its phase
and what it was doing; a crashed worker is reported with its stderr; a new worker continues.
Output (``--out``): gpu_validation.json, gpu_validation.md (also printed), worker.log.
"""

import time

START = time.time()  # the budget counts from here, imports included

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Dict, List, Optional, Sequence  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402
import _validation_parts as parts  # noqa: E402

#: each part's share of the time budget, in run order
SHARES = {"finite_loss": 0.06, "jpeg_decode": 0.04, "kernel_share": 0.06, "nl_oom": 0.11,
          "multiview_test": 0.10, "data_stall": 0.13, "train_step": 0.50}
ORDER = list(SHARES)
assert set(ORDER) == set(parts.PARTS)


def part_deadline(name: str, remaining: Sequence[str], now: float, end: float) -> float:
    """``name``'s deadline: its share of the time left over the shares of ``remaining``
    (the parts not yet run, ``name`` first)."""
    share = SHARES[name] / sum(SHARES[p] for p in remaining)
    return now + share * max(end - now, 0.0)


def grace_seconds(budget: float) -> float:
    return min(max(0.05 * budget, 10.0), 30.0)


# ----------------------------------------------------------------------------- options


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes: every part in seconds (CI)")
    parser.add_argument("--out", default=os.path.join(common.RESULTS, "gpu_validation"), help="output folder")
    parser.add_argument("--budget-s", type=float, default=0.0, help="total time budget (default 420, quick 100)")
    parser.add_argument("--warmup-limit-s", type=float, default=0.0,
                        help="limit of each part's warm-up, outside the budget (default 300, quick 120)")
    parser.add_argument("--parts", nargs="+", default=ORDER, choices=ORDER, help="parts to run (default: all)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile cases in train_step (auto: on for a full run on cuda)")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (default: min(12, cores - 1), "
                        "quick 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: 1 on a CPU, else "
                        "torch's choice)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for every MFU (default: "
                        "the datasheet table in _common.py)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--end-time", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.budget_s = args.budget_s or (100.0 if args.quick else 420.0)
    args.warmup_limit_s = args.warmup_limit_s or (120.0 if args.quick else 300.0)
    args.workers = args.workers or (1 if args.quick else max(1, min(12, (os.cpu_count() or 2) - 1)))
    args.parts = [p for p in ORDER if p in args.parts]
    return args


def worker_command(args: argparse.Namespace, names: Sequence[str], end: float, work: str) -> List[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--end-time", repr(end), "--work", work,
           "--device", args.device, "--out", args.out, "--budget-s", str(args.budget_s),
           "--warmup-limit-s", str(args.warmup_limit_s), "--compile", args.compile,
           "--workers", str(args.workers), "--threads", str(args.threads), "--peak-tflops", str(args.peak_tflops),
           "--parts", *names]
    return cmd + (["--quick"] if args.quick else [])


# ----------------------------------------------------------------------------- the worker


def worker_main(args: argparse.Namespace) -> int:
    """Run ``args.parts`` in this process (started by ``main``)."""
    import torch

    from cgnl_video.utils.distributed import seed_everything

    device = common.pick_device(args.device)
    # one torch thread on a CPU: the loader workers get the other cores, and the process CPU
    # time is the clock of single-threaded CPU timings (_common.default_clock)
    common.setup_device(args.device, args.threads or (1 if device.type == "cpu" else 0))
    seed_everything(0)  # as training does: TF32 for fp32 matmuls on CUDA
    args.compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda" and not args.quick)
    machine_path = os.path.join(args.out, "machine.json")
    if not os.path.isfile(machine_path):
        parts.write_atomic(machine_path, common.machine_info(device))
    sizes = parts.Sizes.quick() if args.quick else parts.Sizes.full()
    parts_dir = os.path.join(args.out, "parts")

    def deadline_of(name: str, remaining: Sequence[str]) -> float:
        end = args.end_time + warmup_seconds(args.out)  # the warm-ups so far are not counted
        return min(part_deadline(name, remaining, time.time(), end), end)

    def make_context(name: str, remaining: Sequence[str]) -> parts.Context:
        return parts.Context(name, device, sizes, args, deadline_of(name, remaining),
                             os.path.join(parts_dir, f"{name}.json"), args.warmup_limit_s)

    print(f"# gpu_validation worker on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}: "
          f"{', '.join(args.parts)}", flush=True)
    return parts.run_parts(args.parts, make_context, stop_after_failure=device.type == "cuda",
                           deadline_of=deadline_of)


# ----------------------------------------------------------------------------- the watchdog


def record_path(out: str, name: str) -> str:
    return os.path.join(out, "parts", f"{name}.json")


def warmup_seconds(out: str) -> float:
    """The seconds the parts' finished warm-ups took (their records' ``warmup_s``), by
    which the run's end moves."""
    return sum((parts.read_record(record_path(out, name)) or {}).get("warmup_s", 0.0) for name in ORDER)


def timeout_text(record: Dict, grace: float) -> str:
    """Why the watchdog stopped a part: its phase, its limit, and what it was doing."""
    doing = record.get("doing") or "?"
    if record.get("phase") == "warm-up":
        return (f"stopped in its warm-up, {grace:.0f} s after its {record.get('warmup_limit_s', 0):.0f} s limit "
                f"(not counted in the budget), while doing: {doing}")
    return (f"stopped {grace:.0f} s after its deadline ({record['budget_s']:.0f} s budget) while doing: {doing}; "
            "the result holds what it had measured")


def close_record(out: str, name: str, status: str, error: str) -> None:
    """Give a part's record a final status (keeping the result it had written)."""
    record = parts.read_record(record_path(out, name)) or {"result": {}}
    record.update(status=status, error=error)
    if "started" in record:
        record["seconds"] = round(time.time() - record["started"], 2)
    parts.write_atomic(record_path(out, name), record)


def log_tail(path: str, chars: int = 1500) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-chars:]
    except OSError:
        return ""


def watch(proc: subprocess.Popen, names: Sequence[str], out: str, end: float, grace: float, log: str) -> str:
    """Wait for the worker; stop it (and its process group: loader workers, compile workers)
    when the running part passes its deadline (in its warm-up: its warm-up limit) + ``grace``
    or the run passes its end + ``grace``: ``end`` moved by the warm-ups' seconds.
    The running part's record (``<out>/parts/<name>.json``) is closed as "timeout" (with its
    phase and what it was doing) or, if the worker dies, "failed". Returns "exited" or "killed"."""
    while True:
        rc = proc.poll()
        running = None
        for name in names:
            record = parts.read_record(record_path(out, name))
            if record and record.get("status") == "running":
                running = (name, record)
        if rc is not None:
            if running:
                close_record(out, running[0], "failed",
                             f"the worker process exited with code {rc} during this part; its stderr ends:\n"
                             + log_tail(log))
            return "exited"
        now, end_now = time.time(), end + warmup_seconds(out)
        if running is not None and running[1].get("phase") == "warm-up":  # its own limit, outside the budget
            late = over = now > running[1]["deadline"] + grace
        else:
            late = running is not None and now > min(running[1]["deadline"], end_now) + grace
            over = now > end_now + grace
        if late or over:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if running:
                close_record(out, running[0], "timeout", timeout_text(running[1], grace))
            return "killed"
        time.sleep(0.2)


def run_workers(args: argparse.Namespace, start: float) -> int:
    """Run the parts in worker processes until all have a final record or the budget is
    spent; returns the number of worker processes started."""
    end, grace = start + args.budget_s, grace_seconds(args.budget_s)
    log = os.path.join(args.out, "worker.log")
    pending, started = list(args.parts), 0
    env = dict(os.environ)
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(args.work, "inductor_cache"))  # shared by the workers
    with open(log, "w", encoding="utf-8") as stderr:
        while pending and time.time() < end + warmup_seconds(args.out):
            proc = subprocess.Popen(worker_command(args, pending, end, args.work), stderr=stderr,
                                    start_new_session=True, cwd=common.REPO, env=env)
            started += 1
            try:
                outcome = watch(proc, pending, args.out, end, grace, log)
            except BaseException:  # interrupted: leave no worker behind
                os.killpg(proc.pid, signal.SIGKILL)
                raise
            done = [p for p in pending if (parts.read_record(record_path(args.out, p)) or {}).get("status")
                    not in (None, "running")]
            if not done and outcome == "killed":  # stopped at the end of the budget between parts
                break
            if not done:  # the worker died before starting a part: do not restart it for ever
                close_record(args.out, pending[0], "failed",
                             f"the worker process exited (code {proc.returncode}) before running this part; "
                             "its stderr ends:\n" + log_tail(log))
                done = [pending[0]]
            pending = [p for p in pending if p not in done]
    for name in pending:
        close_record(args.out, name, "skipped", f"not run: the {args.budget_s:.0f} s budget was spent")
    return started


# ----------------------------------------------------------------------------- report


def display_path(path: str) -> str:
    """Relative to the repository when inside it."""
    relative = os.path.relpath(path, common.REPO)
    return path if relative.startswith("..") else relative


def markdown(result: Dict) -> str:
    """The section for benchmarks/RESULTS.md."""
    m = result["machine"]
    where = (f"{m['gpu']} ({m['gpu_memory_gb']} GB, driver {m['driver']}, CUDA {m['cuda']})" if "gpu" in m
             else f"no GPU: {m['cpu']}")
    lines = [f"## GPU validation: {where}, {m['date']}", "",
             f"Command: `{result['command']}`. JSON: `{result['json']}`.",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores, {m['memory_gb']} GB; torch {m['torch']}, "
             f"torchvision {m.get('torchvision', '?')}; load average {result['load_average_1min'][0]} at the start, "
             f"{result['load_average_1min'][1]} at the end.",
             f"Sizes: {result['sizes_note']}.",
             f"Total {result['total_s']:.0f} s: the {result['settings']['budget_s']:.0f} s budget and the warm-ups "
             f"outside it ({result['worker_processes']} worker process(es)).", ""]
    summary = [[name, f"**{rec['status']}**" if rec["status"] != "ok" else "ok", f"{rec.get('seconds', 0):.0f}",
                f"{rec.get('budget_s', 0):.0f}", f"{rec.get('warmup_s', 0):.0f}",
                (rec.get("error") or "").strip().splitlines()[0][:200] if rec.get("error") else ""]
               for name, rec in result["parts"].items()]
    lines += [common.markdown_table(["part", "status", "s", "budget s", "warm-up s", "error"], summary, "llrrrl"),
              ""]
    for name, rec in result["parts"].items():
        lines += [f"### {parts.TITLES[name]}", ""]
        if rec.get("result"):
            try:
                lines.append(parts.RENDER[name](rec["result"]))
            except Exception as error:  # noqa: BLE001 - a report with a hole beats no report
                lines.append(f"(could not render this part's result: {error!r}; see the JSON)")
        else:
            lines.append(f"No result ({rec['status']}).")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    start = START
    args = parse_args()
    if args.worker:
        return worker_main(args)
    args.out = os.path.abspath(args.out)
    shutil.rmtree(os.path.join(args.out, "parts"), ignore_errors=True)
    os.makedirs(os.path.join(args.out, "parts"))
    machine_path = os.path.join(args.out, "machine.json")
    if os.path.isfile(machine_path):
        os.remove(machine_path)
    args.work = tempfile.mkdtemp(prefix="gpu_validation_")
    load_start = common.load_average()
    print(f"# gpu_validation: parts {', '.join(args.parts)}; budget {args.budget_s:.0f} s", flush=True)
    if not args.quick and common.pick_device(args.device).type == "cpu":
        print("# no GPU: at full sizes most parts will run into their deadlines on a CPU (--quick: toy sizes)",
              flush=True)
    try:
        started = run_workers(args, start)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    sizes = parts.Sizes.quick() if args.quick else parts.Sizes.full()
    json_path = os.path.join(args.out, "gpu_validation.json")
    result = {
        "machine": parts.read_record(machine_path) or common.machine_info(common.pick_device("cpu")),
        "command": common.command_line(), "json": display_path(json_path),
        "started": datetime.datetime.fromtimestamp(start).isoformat(timespec="seconds"),
        "total_s": time.time() - start, "load_average_1min": [load_start, common.load_average()],
        "worker_processes": started, "sizes_note": sizes.describe(),
        "settings": {"quick": args.quick, "device": args.device, "budget_s": args.budget_s,
                     "warmup_limit_s": args.warmup_limit_s,
                     "grace_s": grace_seconds(args.budget_s), "compile": args.compile, "workers": args.workers,
                     "threads": args.threads, "peak_tflops_override": args.peak_tflops or None,
                     "shares": SHARES, "sizes": dataclasses.asdict(sizes)},
        "parts": {name: parts.read_record(record_path(args.out, name)) for name in args.parts},
    }
    common.write_json(json_path, result)
    text = markdown(result)
    with open(os.path.join(args.out, "gpu_validation.md"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    shutil.rmtree(os.path.join(args.out, "parts"), ignore_errors=True)
    for path in (machine_path, os.path.join(args.out, "worker.log")):
        if os.path.isfile(path) and (path == machine_path or not os.path.getsize(path)):
            os.remove(path)
    print("\n" + text)
    print(f"\nresults written to {json_path} and gpu_validation.md next to it")
    return 0 if all(rec["status"] == "ok" for rec in result["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
