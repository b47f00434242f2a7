#!/usr/bin/env python
"""Training step: clips/s, peak memory and MFU of C2D R-50 / R-101 (+NL, +CGNL) per mode.

    python benchmarks/bench_train_step.py [--quick]   # GPU: batch 8, 32x224x224; CPU: 2, 8x112x112

Models: ``configs/minikinetics/R{50,101}{,_NL,_CGNL8,_CGNL8_5B}.yaml``, random weights
(block norms live), synthetic clips; a step as ``engine.train_loop`` does it. Modes
(``_common.MODES``): ``eager`` fp32, ``amp`` (bf16), ``amp_fp16``, ``fast-nocompile`` (bf16,
channels_last, fused CGNL), ``fast`` (that + torch.compile) and single switches. The cases
of a depth run round-robin; FLOPs from ``FlopCounterMode``; MFU against
``_common.GPU_PEAK_TFLOPS``. Every loss must be finite (exit status 1 otherwise).
"""

import math
from typing import Dict, List

import _common as common
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def measure_depth(depth: int, args, device: torch.device) -> List[Dict]:
    """Every variant x mode of one depth: build (and measure the first step's memory), then
    time all round-robin."""
    cases, rows = {}, {}
    for variant in args.variants:
        case = common.Case(depth, variant, "eager", args, device, args.opts)
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(case.model(case.clips), case.labels).backward()
        del case
        for mode in args.modes:
            common.say(f"  building R-{depth} {variant} | {mode}")
            key = f"{variant} | {mode}"
            cases[key] = case = common.Case(depth, variant, mode, args, device, args.opts)
            rows[key] = {"depth": depth, "variant": variant, "mode": mode, "flops_per_step": counter.get_total_flops(),
                         "precision": common.compute_precision(case.amp, device), "losses": []}
            step = lambda case=case, row=rows[key]: row["losses"].append(case.step())  # noqa: E731
            if mode in ("fast", "compile"):
                step()  # the compile is not measured as memory
            else:
                rows[key]["peak_mem_bytes"] = common.peak_memory_bytes(step, device)
            cases[key] = step
    common.say(f"  timing {len(cases)} cases round-robin")
    timings = common.time_interleaved(cases, args.repeats, args.warmup, device)
    for key, timing in timings.items():
        row = rows[key]
        row.update(step_s=timing["median_s"], repeats=timing["repeats"], clips_per_s=args.batch / timing["median_s"],
                   achieved_tflops=row["flops_per_step"] / timing["median_s"] / 1e12,
                   peak_tflops=common.peak_tflops(device, row["precision"], args.peak_tflops))
        row["mfu"] = row["achieved_tflops"] / row["peak_tflops"] if row["peak_tflops"] else None
        row["finite"] = all(math.isfinite(loss) for loss in row["losses"])
        base, eager = rows.get(f"baseline | {row['mode']}", {}), rows.get(f"{row['variant']} | eager", {})
        row["vs_baseline_same_mode"] = row["clips_per_s"] / base["clips_per_s"] if "clips_per_s" in base else None
        row["vs_eager_same_model"] = row["clips_per_s"] / eager["clips_per_s"] if "clips_per_s" in eager else None
    return list(rows.values())


def table(rows: List[Dict]) -> str:
    out = []
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}% of {r['peak_tflops']:g}" if r.get("mfu") else "n/a"
        cost = f"{100 * (1 - r['vs_baseline_same_mode']):+.1f}%" if r["variant"] != "baseline" and r[
            "vs_baseline_same_mode"] else ""
        memory = f"{r['peak_mem_bytes'] / 2**20:.0f}" if "peak_mem_bytes" in r else "—"
        out.append([f"R-{r['depth']}", r["variant"], r["mode"], r["precision"], f"{r['clips_per_s']:.2f}",
                    f"{r['vs_eager_same_model']:.2f}x" if r["vs_eager_same_model"] else "", cost, memory,
                    f"{r['flops_per_step'] / 1e9:.0f}", mfu, "yes" if r["finite"] else "**NO**"])
    return common.markdown_table(["model", "variant", "mode", "precision", "clips/s", "vs eager",
                                  "cost vs baseline", "peak MB", "GFLOP/step", "MFU", "losses finite"], out)


def main() -> int:
    parser = common.parser(__doc__, "train_step", repeats=0, quick="R-50 only, baseline and +1 CGNL, 2 repeats")
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 101])
    parser.add_argument("--variants", nargs="+", default=list(common.VARIANTS), choices=list(common.VARIANTS))
    parser.add_argument("--modes", nargs="+", default=None, choices=list(common.MODES),
                        help="default: eager amp fast (cuda), eager fast-nocompile (cpu)")
    parser.add_argument("--batch", type=int, default=0, help="clips per step (default: 8 on cuda, 2 on cpu)")
    parser.add_argument("--frames", type=int, default=0, help="default: 32 on cuda, 8 on cpu")
    parser.add_argument("--size", type=int, default=0, help="crop side (default: 224 on cuda, 112 on cpu)")
    parser.add_argument("--width", type=int, default=64, help="RESNET.WIDTH_PER_GROUP (8: a toy ResNet)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up steps (default: 5 on cuda, 1 on cpu)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for the MFU")
    args = parser.parse_args()
    device = common.start(args)
    cuda = device.type == "cuda"
    args.batch, args.frames = args.batch or (8 if cuda else 2), args.frames or (32 if cuda else 8)
    args.size, args.warmup = args.size or (224 if cuda else 112), args.warmup or (5 if cuda else 1)
    args.modes = args.modes or (["eager", "amp", "fast"] if cuda else ["eager", "fast-nocompile"])
    args.repeats = args.repeats or (20 if cuda else 5)
    args.opts = ["RESNET.WIDTH_PER_GROUP", str(args.width)]
    if args.quick:
        args.depths, args.variants, args.repeats = [50], ["baseline", "+1 CGNL"], 2
    settings = {k: getattr(args, k) for k in ("batch", "frames", "size", "width", "repeats", "warmup", "modes")}
    result = {"settings": settings, "memory_measure": common.MEMORY_NOTE[device.type], "rows": []}
    for depth in args.depths:
        common.say(f"R-{depth}:")
        result["rows"] += measure_depth(depth, args, device)
        common.write_json(args.json, result)  # what is measured so far, should a later depth not finish
    text = (f"Training step, batch {args.batch}, {args.frames}x{args.size}x{args.size}, width {args.width}, median "
            f"of {args.repeats} steps:\n\n{table(result['rows'])}")
    common.report(args, device, result, text)
    return 0 if all(row["finite"] for row in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
