#!/usr/bin/env python
"""Training step: clips/s and peak memory of C2D R-50 / R-101 (+NL, +CGNL), eager vs fast path.

    python benchmarks/bench_train_step.py [--quick]   # GPU: batch 8, 32x224x224; CPU: 2, 8x112x112

Models: ``configs/minikinetics/R{50,101}{,_NL,_CGNL8,_CGNL8_5B}.yaml``, random weights,
synthetic clips; one step as ``engine.train_loop`` does it (to_device, autocast forward,
fp32 loss, backward through the grad scaler, SGD step, loss.item()). Modes: ``eager`` (fp32);
``fast`` (bf16 autocast, channels_last, fused CGNL, torch.compile on CUDA);
``fast-nocompile``; ablations ``amp``, ``channels_last``, ``fused``, ``compile``, ``cpu_bf16``.
The cases of a depth run round-robin (``_common.time_interleaved``). FLOPs per step:
``torch.utils.flop_counter.FlopCounterMode``; MFU against ``_common.GPU_PEAK_TFLOPS``
(``--peak-tflops`` overrides). Peak memory: ``_common.peak_memory_bytes``.
Prints a markdown table and writes benchmarks/results/train_step.json.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402


def model_flops(depth: int, variant: str, args: argparse.Namespace, device: torch.device) -> int:
    """FLOPs of one eager forward + backward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    case = common.Case(depth, variant, "eager", args, device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(case.model(case.clips), case.labels).backward()
    return int(counter.get_total_flops())


def build_case(depth: int, variant: str, mode: str, args: argparse.Namespace, device: torch.device,
               flops: int, extra_opts: Sequence[str] = ()) -> Tuple[common.Case, Dict]:
    """A case and its row: switches, FLOPs per step and the peak memory of its first step
    (on CUDA that step also compiles; a compiled model's first step on the CPU is not tracked)."""
    print(f"  building R-{depth} {variant} | {mode}", flush=True)
    case = common.Case(depth, variant, mode, args, device, extra_opts)
    row = {"depth": depth, "variant": variant, "mode": mode, "flops_per_step": flops,
           "switches": {"MIXED_PRECISION": bool(case.cfg.TRAIN.MIXED_PRECISION),
                        "CHANNELS_LAST": bool(case.cfg.MODEL.CHANNELS_LAST),
                        "FUSED": bool(case.cfg.CGNL.FUSED), "COMPILE": case.compiled}}
    if case.compiled and device.type == "cpu":
        case.step()  # the compile is not measured
    else:
        row["peak_mem_bytes"] = common.peak_memory_bytes(case.step, device)
    return case, row


def time_cases(cases: Dict[str, common.Case], rows: Dict[str, Dict], args: argparse.Namespace, device: torch.device,
               max_seconds: Optional[float] = None) -> None:
    """Time ``cases`` round-robin and fill their ``rows`` (keys "variant | mode"): clips/s,
    TFLOP/s, the MFU against the peak of the precision each runs in, and the ratios."""
    print(f"  timing {len(cases)} cases round-robin ...", flush=True)
    timings = common.time_interleaved({k: c.step for k, c in cases.items()}, args.repeats,
                                      max(args.warmup - 1, 0), device, max_seconds=max_seconds)
    for key, timing in timings.items():
        row = rows[key]
        row.update(step_s=timing["median_s"], step_min_s=timing["min_s"], step_max_s=timing["max_s"],
                   repeats=timing["repeats"], clips_per_s=args.batch / timing["median_s"])
        row["achieved_tflops"] = row["flops_per_step"] / timing["median_s"] / 1e12
        row["precision"] = common.compute_precision(cases[key].amp)
        row["peak_tflops"] = common.peak_tflops(device, row["precision"], args.peak_tflops)
        row["mfu"] = row["achieved_tflops"] / row["peak_tflops"] if row["peak_tflops"] else None
    for row in rows.values():
        if "clips_per_s" not in row:
            continue
        base = rows.get(f"baseline | {row['mode']}", {})
        eager = rows.get(f"{row['variant']} | eager", {})
        row["vs_baseline_same_mode"] = row["clips_per_s"] / base["clips_per_s"] if "clips_per_s" in base else None
        row["vs_eager_same_model"] = row["clips_per_s"] / eager["clips_per_s"] if "clips_per_s" in eager else None


def measure_depth(depth: int, args: argparse.Namespace, device: torch.device) -> Dict:
    cases: Dict[str, common.Case] = {}
    rows: Dict[str, Dict] = {}
    for variant in args.variants:
        flops = model_flops(depth, variant, args, device)
        for mode in args.modes:
            key = f"{variant} | {mode}"
            cases[key], rows[key] = build_case(depth, variant, mode, args, device, flops)
    time_cases(cases, rows, args, device)
    del cases
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def table(rows: List[Dict]) -> str:
    """One line per row; a row that was not timed shows its "skipped" reason."""
    out = []
    for r in rows:
        if "clips_per_s" not in r:
            out.append([f"R-{r['depth']}", r["variant"], r["mode"], r.get("skipped", "not timed")] + [""] * 6)
            continue
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:g} ({r['precision']})" if r.get("mfu") else "n/a"
        cost = (f"{100 * (1 - r['vs_baseline_same_mode']):+.1f}%"
                if r["variant"] != "baseline" and r.get("vs_baseline_same_mode") else "")
        vs_eager = f"{r['vs_eager_same_model']:.2f}x" if r.get("vs_eager_same_model") else ""
        out.append([f"R-{r['depth']}", r["variant"], r["mode"], f"{r['clips_per_s']:.2f}", vs_eager, cost,
                    common.fmt_mb(r.get("peak_mem_bytes")), f"{r['flops_per_step'] / 1e9:.0f}",
                    f"{r['achieved_tflops']:.3f}", mfu])
    return common.markdown_table(["model", "variant", "mode", "clips/s", "vs eager", "clips/s cost vs baseline",
                                  "peak MB", "GFLOP/step", "TFLOP/s", "MFU (of peak TFLOP/s)"], out)


def main() -> int:
    parser = common.base_parser(__doc__, "train_step", "R-50 only, baseline and +1 CGNL, 2 repeats")
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 101])
    parser.add_argument("--variants", nargs="+", default=list(common.VARIANTS), choices=list(common.VARIANTS))
    parser.add_argument("--modes", nargs="+", default=None, choices=list(common.MODES),
                        help="default: eager fast (+ fast+cpu_bf16 on a CPU)")
    parser.add_argument("--batch", type=int, default=0, help="clips per step (default: 8 on cuda, 2 on cpu)")
    parser.add_argument("--frames", type=int, default=0, help="default: 32 on cuda, 8 on cpu")
    parser.add_argument("--size", type=int, default=0, help="crop side (default: 224 on cuda, 112 on cpu)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="MODEL.COMPILE in the fast mode (auto: on for cuda, off for cpu, where "
                             "compiling a ResNet takes minutes)")
    parser.add_argument("--repeats", type=int, default=0, help="timed steps (default: 20 on cuda, 5 on cpu)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up steps (default: 5 on cuda, 2 on cpu)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for the MFU")
    args = parser.parse_args()

    device = common.setup_device(args.device, args.threads)
    cuda = device.type == "cuda"
    args.batch = args.batch or (8 if cuda else 2)
    args.frames = args.frames or (32 if cuda else 8)
    args.size = args.size or (224 if cuda else 112)
    args.modes = args.modes or (["eager", "fast"] if cuda else ["eager", "fast", "fast+cpu_bf16"])
    args.repeats = args.repeats or (20 if cuda else 5)
    args.warmup = args.warmup or (5 if cuda else 2)
    args.compile_on = args.compile == "on" or (args.compile == "auto" and cuda)
    if args.quick:
        args.depths, args.variants, args.repeats = [50], ["baseline", "+1 CGNL"], 2
    machine = common.machine_info(device)
    print(f"# bench_train_step on {machine.get('gpu', machine['cpu'])} ({device.type}), batch {args.batch}, "
          f"{args.frames}x{args.size}x{args.size}", flush=True)
    rows: List[Dict] = []
    load_start = common.load_average()
    for depth in args.depths:
        print(f"R-{depth}:", flush=True)
        rows += list(measure_depth(depth, args, device).values())
    result = {
        "machine": machine, "command": common.command_line(),
        "load_average_1min": [load_start, common.load_average()],
        "settings": {"batch": args.batch, "frames": args.frames, "size": args.size, "repeats": args.repeats,
                     "warmup": args.warmup, "modes": {m: common.MODES[m] for m in args.modes},
                     "compile_in_fast": args.compile_on, "peak_tflops_override": args.peak_tflops or None},
        "memory_measure": common.MEMORY_NOTE[device.type],
        "rows": rows,
    }
    return common.report(args.json, result, f"\nTraining step, batch {args.batch}, {args.frames}x{args.size}x"
                         f"{args.size}, median of {args.repeats} steps:\n\n{table(rows)}")


if __name__ == "__main__":
    raise SystemExit(main())
