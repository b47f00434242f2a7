#!/usr/bin/env python
"""Block level: forward + backward time and peak memory of CGNL, NL and a per-group reference.

    python benchmarks/bench_blocks.py [--quick] [--amp bf16] [--compile]

Blocks (G = 8): ``CGNL dot`` / ``CGNL rbf P=3`` (fused theta/phi/g), ``CGNL dot, unfused``,
the ``per-group reference`` (the kernel per group, as the official image code: bmm per
group, cat), with ``--compile`` the fused blocks under torch.compile, ``NL`` (SDPA, also
with (1,2,2) pooling) and ``NL explicit`` (the N x N attention materialised). Part 1: the
res3 / res4 inputs of C2D R-50 at 32x224x224, with the CGNL kernel (``aggregate``: all but
the 1x1x1 convolutions and the norm) timed on its own. Part 2: N = T x H x W growing at
512 channels until a block runs out of memory (CUDA), or, on the CPU, would need more than
``--mem-cap-gb``. ``--quick``: toy sizes (1/8 of the channels and positions), 2 repeats.
"""

import math
from typing import Callable, Dict, List, Optional, Tuple

import _common as common
import torch
from torch.utils import benchmark

from cgnl_video.models import CGNLBlock, NonLocalBlock

RES_SHAPES = {"res3": (512, 4, 28, 28), "res4": (1024, 4, 14, 14)}  # C2D R-50 at 32x224x224
SWEEP = ["4x14x14", "8x14x14", "4x28x28", "8x28x28", "16x28x28", "8x56x56", "16x56x56", "32x56x56", "32x112x112"]
QUICK_RES = {"res3": (64, 2, 8, 8), "res4": (128, 2, 4, 4)}
QUICK_SWEEP = ["2x7x7", "4x14x14", "4x28x28"]


class PerGroupReferenceCGNL(CGNLBlock):
    """The kernel as the official (image) CGNL code writes it: a loop over groups,
    bmm per group, torch.cat. Same parameters and output as ``CGNLBlock``."""

    def aggregate(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        batch, size = theta.shape[0], theta.shape[1] // self.groups
        outputs = []
        for t, p, v in zip(theta.split(size, 1), phi.split(size, 1), g.split(size, 1)):
            shape = t.shape
            t, p, v = t.reshape(batch, 1, -1), p.reshape(batch, 1, -1), v.reshape(batch, -1, 1)
            terms = [torch.bmm(torch.bmm(p.pow(k), v) * c, t.pow(k)) for k, c in enumerate(self.coefficients) if c]
            outputs.append(sum(terms).reshape(shape))
        return torch.cat(outputs, dim=1)


class ExplicitNonLocal(NonLocalBlock):
    """NL with the N x M attention matrix materialised (the video non-local code)."""

    def attend(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnm,bcm->bcn", self.affinity(theta, phi), g)


BLOCKS = {
    "CGNL dot": lambda c: CGNLBlock(c, groups=8, kernel="dot", fused=True),
    "CGNL dot, unfused": lambda c: CGNLBlock(c, groups=8, kernel="dot", fused=False),
    "CGNL rbf P=3": lambda c: CGNLBlock(c, groups=8, kernel="rbf", order=3, fused=True),
    "per-group reference dot": lambda c: PerGroupReferenceCGNL(c, groups=8, kernel="dot"),
    "per-group reference rbf P=3": lambda c: PerGroupReferenceCGNL(c, groups=8, kernel="rbf", order=3),
    "NL": lambda c: NonLocalBlock(c, pool_size=(1, 1, 1)),
    "NL, pool (1,2,2)": lambda c: NonLocalBlock(c, pool_size=(1, 2, 2)),
    "NL explicit": lambda c: ExplicitNonLocal(c, pool_size=(1, 1, 1)),
}
COMPILED = ["CGNL dot, compiled", "CGNL rbf P=3, compiled"]
SWEEP_BLOCKS = ["CGNL dot", "NL", "NL explicit"]
REFERENCE = {"CGNL dot": "per-group reference dot", "CGNL dot, unfused": "per-group reference dot",
             "CGNL rbf P=3": "per-group reference rbf P=3", "CGNL dot, compiled": "per-group reference dot",
             "CGNL rbf P=3, compiled": "per-group reference rbf P=3"}


def steps(name: str, batch: int, channels: int, shape: Tuple[int, ...], device: torch.device,
          amp: Optional[torch.dtype]) -> Dict[str, Callable[[], None]]:
    """The block's forward + backward, and for CGNL its kernel's (key "<name> [kernel]")."""
    torch.manual_seed(0)
    block = BLOCKS[name.replace(", compiled", "")](channels).to(device).train()
    with torch.no_grad():
        block.norm.weight.fill_(1.0)  # as trained: zero-initialised, it would stop the gradient
    compiled = name.endswith(", compiled")
    x = torch.randn((batch, channels, *shape), device=device, requires_grad=True)
    autocast = torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    def run(fn, inputs) -> None:
        with autocast:
            out = fn(*inputs)
        out.backward(torch.ones_like(out))
        for t in list(inputs) + list(block.parameters()):
            t.grad = None

    forward = torch.compile(block) if compiled else block
    out = {name: lambda: run(forward, (x,))}
    if isinstance(block, CGNLBlock):
        with torch.no_grad(), autocast:
            kernel_in = (block._embed_stacked(x),) if block.fused else block.embed(x)
        kernel_in = tuple(t.detach().requires_grad_() for t in kernel_in)
        kernel = block._aggregate_stacked if block.fused else block.aggregate
        kernel = torch.compile(kernel) if compiled else kernel
        out[f"{name} [kernel]"] = lambda: run(kernel, kernel_in)
    return out


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure(names: List[str], batch: int, channels: int, shape: Tuple[int, ...], args, device: torch.device,
            sub_label: str) -> Tuple[Dict[str, Dict], List[benchmark.Measurement]]:
    """Peak memory and round-robin time of ``names`` (and their kernels) at one input size."""
    rows, cases = {}, {}
    positions = math.prod(shape)
    for name in names:
        rows[name] = row = {"N": positions, "input": f"{batch}x{channels}x{'x'.join(map(str, shape))}"}
        # the CPU guard: about 6 input-sized tensors, and 3 N x N matrices for the explicit NL (fp32)
        need = 4 * batch * positions * (6 * channels + (3 * positions if name == "NL explicit" else 0))
        if device.type == "cpu" and need > args.mem_cap_gb * 2**30:
            row["skipped"] = f"estimated {need / 2**30:.1f} GB > --mem-cap-gb {args.mem_cap_gb}"
            continue
        try:
            new = steps(name, batch, channels, shape, device, args.amp)
            for key, fn in new.items():  # also the first warm-up (and the compile)
                row["kernel_peak_mem_bytes" if key.endswith("]") else "peak_mem_bytes"] = \
                    common.peak_memory_bytes(fn, device)
            cases.update(new)
        except RuntimeError as error:
            if not is_oom(error):
                raise
            row["oom"] = True
            torch.cuda.empty_cache()
    try:
        timings = common.time_interleaved(cases, args.repeats, args.warmup, device, label="fwd+bwd",
                                          sub_label=sub_label)
    except RuntimeError as error:  # out of memory with all cases alive: no timings here
        if not is_oom(error):
            raise
        timings = {}
        for row in rows.values():
            row["oom_while_timing"] = True
    for key, timing in timings.items():
        row = rows[key.split(" [")[0]]
        row["kernel_time_s" if key.endswith("]") else "time_s"] = timing["median_s"]
    for row in rows.values():
        if "kernel_time_s" in row and "time_s" in row:
            row["kernel_fraction"] = row["kernel_time_s"] / row["time_s"]
    del cases
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, [t["measurement"] for t in timings.values()]


def loglog_slope(points: List[Tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of log(time) against log(N)."""
    xs, ys = [math.log(n) for n, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / max(len(xs), 1), sum(ys) / max(len(ys), 1)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if len(points) > 1 and den else None


def res_table(rows: Dict[str, Dict]) -> str:
    table = []
    for name, row in rows.items():
        ref = rows.get(REFERENCE.get(name, ""), {})
        cells = [name, "OOM" if row.get("oom") else row.get("skipped", "—")] + [""] * 4
        if "time_s" in row:
            vs = (f"{ref['time_s'] / row['time_s']:.2f}x / {ref['kernel_time_s'] / row['kernel_time_s']:.1f}x"
                  if "kernel_time_s" in ref and "kernel_time_s" in row else "")
            cells = [name, f"{row['time_s'] * 1e3:.1f}", f"{row.get('peak_mem_bytes', 0) / 2**20:.0f}",
                     f"{row['kernel_time_s'] * 1e3:.1f}" if "kernel_time_s" in row else "",
                     f"{100 * row['kernel_fraction']:.1f}%" if "kernel_fraction" in row else "", vs]
        table.append(cells)
    return common.markdown_table(["block", "fwd+bwd ms", "peak MB", "kernel ms", "kernel / block",
                                  "vs per-group ref (block / kernel)"], table)


def main() -> int:
    parser = common.parser(__doc__, "blocks", repeats=0, quick="toy sizes, 2 repeats")
    parser.add_argument("--batch", type=int, default=8, help="batch of the res3/res4 inputs")
    parser.add_argument("--sweep-batch", type=int, default=0, help="batch of the N sweep (default 8 on cuda, 1 on cpu)")
    parser.add_argument("--sweep", nargs="*", default=None, help="T x H x W sizes of the N sweep (default: 9 to "
                        "32x112x112)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up passes (default: 3 on cuda, 1 on cpu)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    parser.add_argument("--mem-cap-gb", type=float, default=4.0, help="cpu: skip cases estimated above this")
    parser.add_argument("--compile", action="store_true", help="also the fused CGNL blocks under torch.compile")
    args = parser.parse_args()
    device = common.start(args)
    cuda = device.type == "cuda"
    shapes, args.sweep = (QUICK_RES, args.sweep or QUICK_SWEEP) if args.quick else (RES_SHAPES, args.sweep or SWEEP)
    channels = 64 if args.quick else 512
    args.batch = 2 if args.quick else args.batch
    args.repeats = args.repeats or (2 if args.quick else 10 if cuda else 5)
    args.warmup, args.sweep_batch = args.warmup or (3 if cuda else 1), args.sweep_batch or (8 if cuda else 1)
    args.amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    res, sweep, measurements = {}, {}, []
    for stage, (width, *shape) in shapes.items():
        common.say(f"measuring {stage} ...")
        res[stage], found = measure(list(BLOCKS) + (COMPILED if args.compile else []), args.batch, width,
                                    tuple(shape), args, device, stage)
    for text in args.sweep:
        common.say(f"measuring N sweep {text} ...")
        names = [n for n in SWEEP_BLOCKS if not any(r.get(n, {}).get("oom") for r in sweep.values())]
        sweep[text], found = measure(names, args.sweep_batch, channels, tuple(int(v) for v in text.split("x")),
                                     args, device, f"{text} (N sweep)")
        measurements += found
        common.write_json(args.json, {"res": res, "sweep": sweep})  # so far, should a larger N not finish
    analysis = {f"time_vs_N_loglog_slope[{name}]": loglog_slope(
        [(r[name]["N"], r[name]["time_s"]) for r in sweep.values() if "time_s" in r.get(name, {})])
        for name in SWEEP_BLOCKS}
    analysis["first_oom_N"] = {n: min((r[n]["N"] for r in sweep.values() if r.get(n, {}).get("oom")), default=None)
                               for n in SWEEP_BLOCKS}
    result = {"settings": {k: str(v) for k, v in vars(args).items() if k != "json"},
              "memory_measure": common.MEMORY_NOTE[device.type], "res": res, "sweep": sweep, "analysis": analysis}
    lines = [f"{stage}: input {next(iter(rows.values()))['input']}\n\n{res_table(rows)}\n"
             for stage, rows in res.items()]
    lines += [f"N sweep, {channels} channels, batch {args.sweep_batch}, seconds per fwd+bwd:\n",
              str(benchmark.Compare(measurements)), "analysis:", *(f"  {k}: {v}" for k, v in analysis.items())]
    return common.report(args, device, result, "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
