#!/usr/bin/env python
"""Block level: forward + backward time and peak memory of CGNL, NL and a per-group reference.

    python benchmarks/bench_blocks.py [--quick] [--precision] [--compile on]

Blocks (fp32; ``--amp bf16`` under autocast): ``CGNL dot`` / ``CGNL rbf P=3`` (G = 8, fused
theta/phi/g, hand-written kernel backward), ``CGNL dot, unfused``; ``per-group reference``
(the kernel per group as the official image code: bmm(phi^p, g), bmm(att, theta^p)); the
fused blocks under torch.compile (``--compile``); ``NL`` (SDPA, with and without (1,2,2)
pooling) and ``NL explicit`` (the N x N attention materialised). Part 1: the res3 / res4
inputs of C2D R-50 at 32x224x224 (batch 8), with the CGNL kernel timed on its own. Part 2:
N = T x H x W growing at 512 channels; on CUDA an OOM is recorded, on the CPU nothing over
``--mem-cap-gb`` runs and NL explicit's OOM point is estimated from its memory.
``--precision``: only the cost of the blocks' float32 parts under autocast.
Time and memory: ``_common.time_interleaved`` (round-robin) and ``_common.peak_memory_bytes``.
Prints markdown tables and writes benchmarks/results/blocks.json.
"""

import argparse
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

from cgnl_video.models.cgnl import CGNLBlock, _CompactGNL, _scaled  # noqa: E402
from cgnl_video.models.nonlocal_block import NonLocalBlock  # noqa: E402

RES_SHAPES = {"res3": (512, 4, 28, 28), "res4": (1024, 4, 14, 14)}  # C2D R-50, 32x224x224
SWEEP = ["4x14x14", "8x14x14", "4x28x28", "8x28x28", "16x28x28", "8x56x56", "16x56x56"]


# ----------------------------------------------------------------------------- the blocks


class PerGroupReferenceCGNL(CGNLBlock):
    """The kernel as the official (image) CGNL code writes it: a loop over groups,
    bmm per group, torch.cat. Same parameters and output as ``CGNLBlock``."""

    def aggregate(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        batch, size = theta.shape[0], theta.shape[1] // self.groups
        outputs = []
        for t, p, v in zip(theta.split(size, 1), phi.split(size, 1), g.split(size, 1)):
            shape = t.shape
            t, p, v = t.reshape(batch, 1, -1), p.reshape(batch, 1, -1), v.reshape(batch, -1, 1)
            y = None
            for power, coefficient in enumerate(self.coefficients):
                if not coefficient:
                    continue
                att = torch.bmm(p.pow(power), v) * coefficient  # (B, 1, 1)
                term = torch.bmm(att, t.pow(power))  # (B, 1, C' T H W)
                y = term if y is None else y + term
            outputs.append(y.reshape(shape))
        return torch.cat(outputs, dim=1)


class ExplicitNonLocal(NonLocalBlock):
    """NL with the N x M attention matrix materialised (the video non-local code)."""

    def attend(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnm,bcm->bcn", self.affinity(theta, phi), g)


class AllInAutocastCGNL(CGNLBlock):
    """The fused CGNL block with every op in the autocast dtype (no float32 parts):
    the baseline that prices them. Overflows in fp16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = self._embed_stacked(x).unflatten(2, (self.groups, -1)).movedim(1, 2)
        coefficients = _scaled(self.coefficients, math.prod(grouped.shape[3:]), self.use_scale)
        return x + self.norm(self.z(_CompactGNL.apply(coefficients, grouped).flatten(1, 2)))


class AllInAutocastNL(NonLocalBlock):
    """The NL block with every op in the autocast dtype (no float32 parts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x)
        source = self.pool(x) if self.pool is not None else x
        y = self.attend(theta.flatten(2), self.phi(source).flatten(2), self.g(source).flatten(2))
        return x + self.norm(self.z(y.unflatten(2, theta.shape[2:])))


BLOCKS: Dict[str, Callable[[int], torch.nn.Module]] = {
    "CGNL dot": lambda c: CGNLBlock(c, groups=8, kernel="dot", fused=True),
    "CGNL dot, unfused": lambda c: CGNLBlock(c, groups=8, kernel="dot", fused=False),
    "CGNL rbf P=3": lambda c: CGNLBlock(c, groups=8, kernel="rbf", order=3, fused=True),
    "per-group reference dot": lambda c: PerGroupReferenceCGNL(c, groups=8, kernel="dot"),
    "per-group reference rbf P=3": lambda c: PerGroupReferenceCGNL(c, groups=8, kernel="rbf", order=3),
    "NL": lambda c: NonLocalBlock(c, pool_size=(1, 1, 1)),
    "NL, pool (1,2,2)": lambda c: NonLocalBlock(c, pool_size=(1, 2, 2)),
    "NL explicit": lambda c: ExplicitNonLocal(c, pool_size=(1, 1, 1)),
    "NL explicit, pool (1,2,2)": lambda c: ExplicitNonLocal(c, pool_size=(1, 2, 2)),
}
#: --precision: block -> its "all in autocast" baseline
PRECISION_BLOCKS: Dict[str, Callable[[int], torch.nn.Module]] = {
    "CGNL dot": BLOCKS["CGNL dot"],
    "CGNL embedded_gaussian P=3": lambda c: CGNLBlock(c, groups=8, kernel="embedded_gaussian", order=3, fused=True),
    "CGNL rbf P=3": BLOCKS["CGNL rbf P=3"],
    "CGNL dot, GN": lambda c: CGNLBlock(c, groups=8, kernel="dot", norm="gn", fused=True),
    "NL, pool (1,2,2)": BLOCKS["NL, pool (1,2,2)"],
}
ALL_IN_AUTOCAST = {
    "CGNL dot": lambda c: AllInAutocastCGNL(c, groups=8, kernel="dot", fused=True),
    "CGNL embedded_gaussian P=3": lambda c: AllInAutocastCGNL(c, groups=8, kernel="embedded_gaussian", order=3,
                                                              fused=True),
    "CGNL rbf P=3": lambda c: AllInAutocastCGNL(c, groups=8, kernel="rbf", order=3, fused=True),
    "CGNL dot, GN": lambda c: AllInAutocastCGNL(c, groups=8, kernel="dot", norm="gn", fused=True),
    "NL, pool (1,2,2)": lambda c: AllInAutocastNL(c, pool_size=(1, 2, 2)),
}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILED = ["CGNL dot, compiled", "CGNL rbf P=3, compiled"]  # torch.compile of the fused blocks (--compile)
SWEEP_BLOCKS = ["CGNL dot", "NL", "NL explicit"]
#: block -> the block of the same flavour it is compared with
KERNEL_BASELINE = {"CGNL dot": "per-group reference dot", "CGNL dot, unfused": "per-group reference dot",
                   "CGNL rbf P=3": "per-group reference rbf P=3", "CGNL dot, compiled": "per-group reference dot",
                   "CGNL rbf P=3, compiled": "per-group reference rbf P=3"}


def make_block(name: str, channels: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    base = name.replace(", compiled", "")
    if base.endswith(", all in autocast"):
        factory = ALL_IN_AUTOCAST[base[: -len(", all in autocast")]]
    else:
        factory = {**BLOCKS, **PRECISION_BLOCKS}[base]
    block = factory(channels).to(device).train()
    with torch.no_grad():  # a trained block: the zero-initialised norm would stop the gradient
        block.norm.weight.fill_(1.0)
    return block


def pooled_positions(shape: Tuple[int, int, int], pooled: bool) -> int:
    t, h, w = shape
    return t * math.ceil(h / 2) * math.ceil(w / 2) if pooled else t * h * w


# ----------------------------------------------------------------------------- estimates (CPU guard)


def estimated_bytes(name: str, batch: int, channels: int, shape: Tuple[int, int, int]) -> float:
    """Rough fp32 forward+backward peak, to keep CPU runs under the memory cap:
    about 6 input-sized tensors, plus 3 N x M matrices for the explicit NL."""
    positions = math.prod(shape)
    linear = 6.0 * batch * channels * positions * 4
    if name.startswith("NL explicit"):
        return linear + 3.0 * batch * positions * pooled_positions(shape, "pool" in name) * 4
    return linear


def estimated_flops(name: str, batch: int, channels: int, shape: Tuple[int, int, int]) -> float:
    """Forward+backward multiply-adds x 2 of the convolutions and attention products."""
    positions = math.prod(shape)
    inner = channels // 2
    convs = 3 * 2 * batch * positions * channels * inner * 4  # theta/phi/g + z (dense bound), x3 fwd+bwd
    if name.startswith("NL"):
        convs += 3 * 2 * 2 * batch * positions * pooled_positions(shape, "pool" in name) * inner
    return float(convs)


# ----------------------------------------------------------------------------- measuring


class Case:
    """One block at one input size: its fwd+bwd callable and its kernel-only callable."""

    def __init__(self, name: str, batch: int, channels: int, shape: Tuple[int, int, int],
                 device: torch.device, amp: Optional[torch.dtype], kernel: bool = True) -> None:
        self.name, self.device, self.amp = name, device, amp
        self.block = make_block(name, channels, device)
        self.compiled = name.endswith(", compiled")
        self.forward = torch.compile(self.block) if self.compiled else self.block
        self.aggregate = self.block._aggregate_stacked if getattr(self.block, "fused", False) else getattr(
            self.block, "aggregate", None)
        if self.compiled:
            self.aggregate = torch.compile(self.aggregate)
        generator = torch.Generator(device="cpu").manual_seed(1)
        self.x = torch.randn((batch, channels, *shape), generator=generator).to(device).requires_grad_()
        self.dy = torch.randn((batch, channels, *shape), generator=generator).to(device)
        self.kernel_inputs = None
        if kernel and isinstance(self.block, CGNLBlock):
            with torch.no_grad(), self.autocast():
                if self.block.fused:
                    stacked = self.block._embed_stacked(self.x).detach().requires_grad_()
                    self.kernel_inputs = (stacked,)
                else:
                    self.kernel_inputs = tuple(t.detach().requires_grad_() for t in self.block.embed(self.x))
                self.kernel_dy = torch.randn_like(self.kernel_inputs[0][:, 0] if self.block.fused
                                                  else self.kernel_inputs[0])

    def autocast(self):
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def step(self) -> None:
        with self.autocast():
            out = self.forward(self.x)
        torch.autograd.backward(out, self.dy)
        self.x.grad = None
        for p in self.block.parameters():
            p.grad = None

    def kernel_step(self) -> None:
        with self.autocast():
            y = self.aggregate(*self.kernel_inputs)
        torch.autograd.backward(y, self.kernel_dy.reshape(y.shape))
        for t in self.kernel_inputs:
            t.grad = None


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure_group(names: List[str], batch: int, channels: int, shape: Tuple[int, int, int],
                  args: argparse.Namespace, device: torch.device, repeats: int = 0,
                  max_seconds: Optional[float] = None) -> Dict[str, Dict]:
    """Time and memory of several blocks at one input size, measured round-robin
    (``max_seconds``: the timing's budget, see ``_common.time_interleaved``)."""
    results: Dict[str, Dict] = {}
    cases: Dict[str, Case] = {}
    for name in names:
        row: Dict = {"N": math.prod(shape), "batch": batch, "channels": channels,
                     "input": f"{batch}x{channels}x{'x'.join(map(str, shape))}"}
        results[name] = row
        if device.type == "cpu":
            need = estimated_bytes(name, batch, channels, shape)
            flops = estimated_flops(name, batch, channels, shape)
            if need > args.mem_cap_gb * 2**30:
                row["skipped"] = f"estimated {need / 2**30:.1f} GB > --mem-cap-gb {args.mem_cap_gb}"
                continue
            if flops > args.max_tflop * 1e12:
                row["skipped"] = f"estimated {flops / 1e12:.1f} TFLOP > --max-tflop {args.max_tflop}"
                continue
        try:
            case = Case(name, batch, channels, shape, device, args.amp_dtype)
            if case.compiled and device.type == "cpu":  # compile first, not measured as memory
                case.step(), case.kernel_step()
            else:
                row["peak_mem_bytes"] = common.peak_memory_bytes(case.step, device)  # also the first warm-up
                if case.kernel_inputs is not None:
                    row["kernel_peak_mem_bytes"] = common.peak_memory_bytes(case.kernel_step, device)
            cases[name] = case
        except RuntimeError as error:
            if not is_oom(error):
                raise
            row["oom"] = True
            case = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    callables = {name: case.step for name, case in cases.items()}
    callables.update({f"{name} [kernel]": case.kernel_step for name, case in cases.items()
                      if case.kernel_inputs is not None})
    try:
        timings = common.time_interleaved(callables, repeats or args.repeats, max(args.warmup - 1, 0), device,
                                          max_seconds=max_seconds)
    except RuntimeError as error:  # OOM while timing several at once: time them one by one
        if not is_oom(error):
            raise
        timings = {}
        for key, fn in callables.items():
            try:
                timings.update(common.time_interleaved({key: fn}, repeats or args.repeats, 0, device,
                                                       max_seconds=max_seconds))
            except RuntimeError as inner:
                if not is_oom(inner):
                    raise
                results[key.replace(" [kernel]", "")]["oom"] = True
                torch.cuda.empty_cache()
    for key, timing in timings.items():
        if key.endswith(" [kernel]"):
            row = results[key[: -len(" [kernel]")]]
            row["kernel_time_s"] = timing["median_s"]
        else:
            row = results[key]
            row.update(time_s=timing["median_s"], time_min_s=timing["min_s"], time_max_s=timing["max_s"],
                       wall_time_s=timing["wall_median_s"], cpu_time_s=timing["cpu_median_s"],
                       repeats=timing["repeats"], clock=timing["clock"])
    for row in results.values():
        if "kernel_time_s" in row and "time_s" in row:
            row["kernel_fraction"] = row["kernel_time_s"] / row["time_s"]
    del cases, callables
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def measure_precision(batch: int, channels: int, shape: Tuple[int, int, int], args: argparse.Namespace,
                      device: torch.device) -> Dict[str, Dict]:
    """fwd+bwd time of each ``PRECISION_BLOCKS`` block in fp32 and under each autocast
    dtype, and of its all-in-autocast baseline, all measured round-robin."""
    cases: Dict[Tuple[str, str], Case] = {}
    for name in PRECISION_BLOCKS:
        cases[name, "fp32"] = Case(name, batch, channels, shape, device, None, kernel=False)
        for label in args.amp_dtypes:
            dtype = AMP_DTYPES[label]
            cases[name, label] = Case(name, batch, channels, shape, device, dtype, kernel=False)
            cases[name, f"{label}, all in autocast"] = Case(f"{name}, all in autocast", batch, channels, shape,
                                                            device, dtype, kernel=False)
    timings = common.time_interleaved({f"{name} [{label}]": case.step for (name, label), case in cases.items()},
                                      args.repeats, args.warmup, device)
    rows: Dict[str, Dict] = {}
    for name, label in cases:
        timing = timings[f"{name} [{label}]"]
        row = rows.setdefault(name, {"input": f"{batch}x{channels}x{'x'.join(map(str, shape))}"})
        row[label] = {"time_s": timing["median_s"], "time_min_s": timing["min_s"], "time_max_s": timing["max_s"],
                      "wall_time_s": timing["wall_median_s"], "cpu_time_s": timing["cpu_median_s"],
                      "repeats": timing["repeats"], "clock": timing["clock"]}
    for row in rows.values():
        for label in args.amp_dtypes:
            row[f"fp32_over_{label}"] = row["fp32"]["time_s"] / row[label]["time_s"]
            row[f"float32_parts_cost_{label}"] = row[label]["time_s"] / row[f"{label}, all in autocast"]["time_s"]
    return rows


# ----------------------------------------------------------------------------- analysis


def loglog_slope(points: List[Tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of log(time) against log(N)."""
    if len(points) < 2:
        return None
    xs, ys = [math.log(n) for n, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def nl_oom_analysis(sweep: Dict[str, Dict[str, Dict]], batch: int, limits_gb: Dict[str, float]) -> Dict:
    """N at which the explicit NL's fwd+bwd needs more than each memory limit, at the
    sweep's batch and at batch 8.

    Model: peak(N) = a N + 3 * 4 * batch * N^2 bytes, with a (bytes per position)
    taken from the largest measured explicit-NL case; both terms scale with the batch."""
    measured = [(row["N"], row["peak_mem_bytes"]) for shape_rows in sweep.values()
                for name, row in shape_rows.items() if name == "NL explicit" and "peak_mem_bytes" in row]
    if not measured:
        return {}
    n_max, peak = max(measured)
    quad = 3 * 4 * batch
    linear = max(peak - quad * n_max ** 2, 0.0) / n_max
    result = {"model": f"peak = {linear:.0f} B x N + 3 x 4 B x batch {batch} x N^2",
              "linear_bytes_per_position": linear,
              "check": [{"N": n, "measured_bytes": p, "model_bytes": linear * n + quad * n * n}
                        for n, p in sorted(measured)]}
    for target in sorted({batch, 8}):
        a, q = linear * target / batch, quad * target / batch
        for label, gb in limits_gb.items():
            limit = gb * 2**30
            result[f"N_oom_{label}_batch{target}"] = int((-a + math.sqrt(a ** 2 + 4 * q * limit)) / (2 * q))
    return result


def parse_shape(text: str) -> Tuple[int, int, int]:
    t, h, w = (int(v) for v in text.lower().split("x"))
    return t, h, w


# ----------------------------------------------------------------------------- output


def res_table(rows: Dict[str, Dict]) -> str:
    table = []
    for name, row in rows.items():
        if "time_s" not in row:
            table.append([name, "OOM" if row.get("oom") else row.get("skipped", "—"), "—", "—", "—", "—"])
            continue
        baseline = rows.get(KERNEL_BASELINE.get(name, ""), {})
        speedup = (f"{baseline['time_s'] / row['time_s']:.2f}x / "
                   f"{baseline['kernel_time_s'] / row['kernel_time_s']:.1f}x"
                   if "time_s" in baseline and "kernel_time_s" in row and "kernel_time_s" in baseline else "")
        frac = f"{100 * row['kernel_fraction']:.1f}%" if "kernel_fraction" in row else ""
        kern = common.fmt_ms(row.get("kernel_time_s")) if "kernel_time_s" in row else ""
        table.append([name, common.fmt_ms(row["time_s"]), common.fmt_mb(row.get("peak_mem_bytes")), kern, frac,
                      speedup])
    return common.markdown_table(["block", "fwd+bwd ms", "peak MB", "kernel ms", "kernel / block",
                                  "vs per-group ref (block / kernel)"], table)


def sweep_table(sweep: Dict[str, Dict[str, Dict]]) -> str:
    table = []
    for shape, rows in sweep.items():
        cells = [shape, str(next(iter(rows.values()))["N"])]
        for name in SWEEP_BLOCKS:
            row = rows.get(name, {})
            if "time_s" in row:
                cells.append(f"{common.fmt_ms(row['time_s'])} / {common.fmt_mb(row['peak_mem_bytes'])}")
            else:
                cells.append("OOM" if row.get("oom") else "skipped")
        cgnl, nl = rows.get("CGNL dot", {}), rows.get("NL explicit", {})
        cells.append(f"{cgnl['time_s'] / nl['time_s']:.3f}" if "time_s" in cgnl and "time_s" in nl else "—")
        sdpa = rows.get("NL", {})
        cells.append(f"{cgnl['time_s'] / sdpa['time_s']:.3f}" if "time_s" in cgnl and "time_s" in sdpa else "—")
        table.append(cells)
    return common.markdown_table(["T x H x W", "N"] + [f"{n} ms / MB" for n in SWEEP_BLOCKS]
                                 + ["CGNL / NL explicit", "CGNL / NL"], table)


def precision_table(rows: Dict[str, Dict], labels: List[str]) -> str:
    header = ["block", "fp32 ms"]
    for label in labels:
        header += [f"{label} ms", f"{label} speed-up", f"{label} all in autocast ms",
                   f"cost of the float32 parts ({label})"]
    table = []
    for name, row in rows.items():
        cells = [name, common.fmt_ms(row["fp32"]["time_s"])]
        for label in labels:
            cells += [common.fmt_ms(row[label]["time_s"]), f"{row[f'fp32_over_{label}']:.2f}x",
                      common.fmt_ms(row[f"{label}, all in autocast"]["time_s"]),
                      f"{100 * (row[f'float32_parts_cost_{label}'] - 1):+.0f} %"]
        table.append(cells)
    return common.markdown_table(header, table)


def main_precision(args: argparse.Namespace, device: torch.device, machine: Dict) -> int:
    """``--precision``: the cost of mixed precision and of the blocks' float32 parts."""
    res = {}
    for stage, (channels, *shape) in RES_SHAPES.items():
        print(f"measuring {stage} ...", flush=True)
        res[stage] = measure_precision(args.batch, channels, tuple(shape), args, device)
    if args.json == os.path.join(common.RESULTS, "blocks.json"):
        args.json = os.path.join(common.RESULTS, "blocks_precision.json")
    result = {"machine": machine, "command": common.command_line(),
              "load_average_1min_at_start": common.load_average(), "clock": common.default_clock(device),
              "settings": {"batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "groups": 8,
                           "amp_dtypes": args.amp_dtypes},
              "precision": res, "load_average_1min_at_end": common.load_average()}
    return common.report(args.json, result, "\n".join(
        f"\n{stage}: input {next(iter(rows.values()))['input']}, forward + backward\n\n"
        f"{precision_table(rows, args.amp_dtypes)}" for stage, rows in res.items()))


def main() -> int:
    parser = common.base_parser(__doc__, "blocks", "batch 2, three sweep points, 2 repeats")
    parser.add_argument("--batch", type=int, default=8, help="batch of the res3/res4 inputs")
    parser.add_argument("--sweep-batch", type=int, default=0, help="batch of the N sweep (default 8 on cuda, 1 on cpu)")
    parser.add_argument("--sweep", nargs="*", default=SWEEP, help="T x H x W sizes of the sweep at 512 channels")
    parser.add_argument("--repeats", type=int, default=0, help="timed passes (default: 10 on cuda, 5 on cpu)")
    parser.add_argument("--sweep-repeats", type=int, default=0, help="timed passes of the N sweep (default: --repeats, "
                        "at most 3 on cpu)")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up passes (default: 3 on cuda, 1 on cpu)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    parser.add_argument("--precision", action="store_true",
                        help="only the mixed-precision costs: fp32 vs autocast, and the blocks' float32 parts")
    parser.add_argument("--amp-dtypes", nargs="+", choices=list(AMP_DTYPES), default=None,
                        help="--precision: autocast dtypes (default: bf16 on cpu, bf16 fp16 on cuda)")
    parser.add_argument("--mem-cap-gb", type=float, default=4.0, help="cpu: skip cases estimated above this")
    parser.add_argument("--max-tflop", type=float, default=0.3, help="cpu: skip cases estimated above this")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="also time torch.compile'd CGNL blocks at res3/res4 (auto: on for cuda, off for cpu, "
                             "where compiling takes minutes)")
    args = parser.parse_args()

    device = common.setup_device(args.device, args.threads)
    cuda = device.type == "cuda"
    if args.quick:
        args.batch, args.sweep, args.repeats, args.warmup = 2, args.sweep[:3], args.repeats or 2, args.warmup or 1
    args.repeats = args.repeats or (10 if cuda else 5)
    args.sweep_repeats = args.sweep_repeats or (args.repeats if cuda else min(args.repeats, 3))
    args.warmup = args.warmup or (3 if cuda else 1)
    args.sweep_batch = args.sweep_batch or (8 if cuda else 1)
    args.compile_on = args.compile == "on" or (args.compile == "auto" and cuda)
    args.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    args.amp_dtypes = args.amp_dtypes or (["bf16", "fp16"] if cuda else ["bf16"])
    machine = common.machine_info(device)
    print(f"# bench_blocks on {machine.get('gpu', machine['cpu'])} ({device.type}), torch {torch.__version__}",
          flush=True)
    if args.precision:
        return main_precision(args, device, machine)

    res: Dict[str, Dict] = {}
    for stage, (channels, *shape) in RES_SHAPES.items():
        print(f"measuring {stage} ...", flush=True)
        names = list(BLOCKS) + (COMPILED if args.compile_on else [])
        res[stage] = measure_group(names, args.batch, channels, tuple(shape), args, device)
    sweep: Dict[str, Dict[str, Dict]] = {}
    for text in args.sweep:
        print(f"measuring N sweep {text} ...", flush=True)
        sweep[text] = measure_group(SWEEP_BLOCKS, args.sweep_batch, 512, parse_shape(text), args, device,
                                    args.sweep_repeats)

    limits = {f"{machine['memory_gb']:.0f}GB_RAM": machine["memory_gb"], "80GB_GPU": 80.0}
    if cuda:
        limits = {"this_GPU": machine["gpu_memory_gb"], "80GB_GPU": 80.0}
    analysis = {"nl_explicit_memory": nl_oom_analysis(sweep, args.sweep_batch, limits)}
    for name in SWEEP_BLOCKS:
        points = [(rows[name]["N"], rows[name]["time_s"]) for rows in sweep.values() if "time_s" in rows.get(name, {})]
        analysis[f"time_vs_N_loglog_slope[{name}]"] = loglog_slope(points)
    both = [(rows["CGNL dot"]["N"], rows["CGNL dot"]["time_s"] / rows["NL explicit"]["time_s"])
            for rows in sweep.values()
            if "time_s" in rows.get("CGNL dot", {}) and "time_s" in rows.get("NL explicit", {})]
    if both:
        analysis["largest_N_both_measured"], analysis["cgnl_over_nl_explicit_time_at_largest_N"] = max(both)
    oom = [rows["NL explicit"]["N"] for rows in sweep.values() if rows.get("NL explicit", {}).get("oom")]
    if oom:
        analysis["nl_explicit_first_oom_N_measured"] = min(oom)

    result = {
        "machine": machine, "command": common.command_line(), "load_average_1min_at_start": common.load_average(),
        "clock": common.default_clock(device),
        "settings": {"batch": args.batch, "sweep_batch": args.sweep_batch, "repeats": args.repeats,
                     "sweep_repeats": args.sweep_repeats,
                     "warmup": args.warmup, "amp": args.amp, "groups": 8, "dtype": "float32",
                     "compiled_blocks": args.compile_on,
                     "mem_cap_gb": args.mem_cap_gb if not cuda else None,
                     "max_tflop": args.max_tflop if not cuda else None},
        "memory_measure": common.MEMORY_NOTE[device.type],
        "res": res, "sweep": sweep, "analysis": analysis,
    }
    result["load_average_1min_at_end"] = common.load_average()
    lines = [f"\n{stage}: input {next(iter(rows.values()))['input']}\n\n{res_table(rows)}"
             for stage, rows in res.items()]
    lines += [f"\nN sweep, 512 channels, batch {args.sweep_batch} (time ms / peak MB):\n", sweep_table(sweep),
              "\nanalysis:", *(f"  {key}: {value}" for key, value in analysis.items())]
    return common.report(args.json, result, "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
