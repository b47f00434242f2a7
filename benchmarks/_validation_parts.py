"""The parts of benchmarks/gpu_validation.py: what each measures, and its markdown.

Each part is a function ``part(ctx: Context) -> None`` that measures through the
existing benchmark scripts' functions and stores what it finds with ``ctx.put`` /
``ctx.attempt`` as it goes (the record on disk is rewritten after each value, so a
part stopped at its deadline still leaves what it had measured). A sub-measurement
run with ``ctx.attempt`` that raises is recorded with its error and the part goes on;
the part's status is then "failed". ``RENDER[name](result)`` turns a part's result
into markdown.

Sizes (``Sizes.full`` / ``Sizes.quick``): the full run uses the paper's
32x224x224 training clips (CGNL paper, Sec. 4) at batch 8 per GPU and 30-view tests
of 32x256x256; ``--quick`` uses toy sizes (batch 2, 8x32x32 clips, ResNets of
width 8 instead of 64) that exercise the same code in seconds on a CPU.
"""

import argparse
import dataclasses
import io
import json
import math
import os
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import _common as common
import bench_blocks as blocks
import bench_end_to_end as e2e
import bench_train_step as bts
import torch

from cgnl_video.data import build_loader, gpu_augment, set_loader_epoch, write_manifest
from cgnl_video.data.manifest import read_manifest
from cgnl_video.engine.multiview import forward_views
from cgnl_video.engine.optim import EpochLRScheduler
from cgnl_video.engine.precision import native_bf16
from cgnl_video.engine.train_loop import train_epoch
from cgnl_video.models import CGNLBlock, NonLocalBlock
from cgnl_video.utils.io import atomic_write_text

DEPTHS = (50, 101)
STEP_MODES = ("eager", "amp", "fast-nocompile")  # fp32; bf16 autocast; bf16 + channels_last + fused
COMPILE_ORDER = ("baseline", "+1 CGNL", "+5 CGNL", "+1 NL")  # compiled ("fast") cases, most wanted first
#: a priori seconds of the first (compiling) step of C2D R-50 under torch.compile on a GPU
#: (forward + backward graphs, inductor); replaced by the measured time once one ran.
COMPILE_GUESS_S = 60.0
DEPTH_COST = {50: 1.0, 101: 2.0}  # R-101 has 33 bottleneck blocks against R-50's 16
NL_TIME_EXPONENT = {"CGNL dot": 1, "NL": 2, "NL explicit": 2}  # time ~ N^k (bench_blocks' sweep)


# ----------------------------------------------------------------------------- sizes


@dataclasses.dataclass
class Sizes:
    """Everything a part needs to know about how big to measure."""

    batch: int
    frames: int
    size: int
    width: int  # RESNET.WIDTH_PER_GROUP
    test_size: int
    views_per_forward: int
    test_videos: int
    videos: int  # generated frame folders
    steps: int  # training steps per epoch through the loader
    repeats: int  # most timed repeats of a round-robin timing
    warmup: int
    finite_steps: int
    block_batch: int
    block_shapes: Dict[str, Tuple[int, int, int, int]]  # stage -> (C, T, H, W)
    sweep: List[str]  # T x H x W of the N sweep
    sweep_channels: int
    sweep_batch: int
    decode_frames: int  # JPEGs per decode batch
    toy: bool

    @staticmethod
    def full() -> "Sizes":
        return Sizes(batch=8, frames=32, size=224, width=64, test_size=256, views_per_forward=30, test_videos=8,
                     videos=16, steps=24, repeats=20, warmup=3, finite_steps=3, block_batch=8,
                     block_shapes=dict(blocks.RES_SHAPES),
                     sweep=blocks.SWEEP + ["32x56x56", "32x112x112", "16x224x224", "32x224x224"],
                     sweep_channels=512, sweep_batch=8, decode_frames=256, toy=False)

    @staticmethod
    def quick() -> "Sizes":
        return Sizes(batch=2, frames=8, size=32, width=8, test_size=32, views_per_forward=10, test_videos=1,
                     videos=2, steps=3, repeats=3, warmup=1, finite_steps=2, block_batch=1,
                     block_shapes={"res3": (64, 2, 8, 8), "res4": (128, 2, 4, 4)},
                     sweep=["2x7x7", "4x14x14", "4x28x28"], sweep_channels=64, sweep_batch=1,
                     decode_frames=16, toy=True)

    def model_opts(self) -> List[str]:
        """Config overrides of every model built here (the toy width in quick mode)."""
        return [] if self.width == 64 else ["RESNET.WIDTH_PER_GROUP", str(self.width)]

    def describe(self) -> str:
        text = (f"training clips batch {self.batch} x {self.frames}x{self.size}x{self.size}, test views "
                f"{self.frames}x{self.test_size}x{self.test_size}, ResNet width {self.width}")
        return ("TOY SIZES (--quick): " + text) if self.toy else text


# ----------------------------------------------------------------------------- the record of a part


def write_atomic(path: str, data: Dict) -> None:
    """``data`` as JSON at ``path``, never half-written (a watchdog may kill the writer)."""
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


def read_record(path: str) -> Optional[Dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def error_text(error: BaseException) -> str:
    """The exception and the last lines of its traceback."""
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return f"{type(error).__name__}: {error}\n" + "".join(lines[-3:])[-1500:]


class Context:
    """What a part gets: the device, the sizes, the run's options, its deadline and a
    record (``parts/<name>.json``) that every ``put`` rewrites.

    A part runs in two phases, written in the record (``phase``) with what it is doing
    (``doing``, for the watchdog's report of a part it stops): its "warm-up" (``WARMUPS``:
    cuDNN autotuning, the first compile), whose limit is ``warmup_limit_s``, then
    "measuring" (``start_measuring``), whose budget ends at ``deadline``. The warm-up's
    seconds (``warmup_s``) are not counted in the part's budget or in the run's."""

    def __init__(self, name: str, device: torch.device, sizes: Sizes, options: argparse.Namespace,
                 deadline: float, path: str, warmup_limit_s: float = 0.0) -> None:
        self.name, self.device, self.sizes, self.options = name, device, sizes, options
        self.deadline, self.path = deadline, path
        self.started = time.time()
        self.warm: Dict[str, Any] = {}  # what a warm-up found out for its part (e.g. a compile time)
        self.record: Dict[str, Any] = {"status": "running", "phase": "warm-up", "doing": "starting",
                                       "started": self.started, "deadline": self.started + warmup_limit_s,
                                       "warmup_limit_s": warmup_limit_s, "warmup_s": 0.0,
                                       "budget_s": round(deadline - self.started, 1), "error": None, "result": {}}
        self.errors: Dict[str, str] = {}
        self.save()

    def start_measuring(self, deadline: Optional[float] = None) -> None:
        """End the warm-up: the budget (to ``deadline``, default the one given at the
        start) counts from now."""
        now = time.time()
        self.deadline = self.deadline if deadline is None else deadline
        self.record.update(phase="measuring", warmup_s=round(now - self.started, 2), started=now,
                           deadline=self.deadline, budget_s=round(self.deadline - now, 1))
        self.started = now
        self.save()

    def doing(self, what: str) -> None:
        """Record what the part is doing now (the watchdog quotes it if it stops the part)."""
        print(f"  {self.name}: {what}", flush=True)
        self.record["doing"] = what
        self.save()

    def left(self) -> float:
        """Seconds to the deadline (never negative)."""
        return max(self.deadline - time.time(), 0.0)

    def save(self) -> None:
        self.record["seconds"] = round(time.time() - self.started, 2)
        write_atomic(self.path, self.record)

    def put(self, key: str, value: Any) -> None:
        self.record["result"][key] = value
        self.save()

    def attempt(self, key: str, fn: Callable[[], Dict]) -> Optional[Dict]:
        """``put(key, fn())``; if it raises, the error goes into the dict under ``key`` (kept
        with what ``fn`` had already put there) and the part goes on."""
        self.doing(key)
        try:
            value = fn()
        except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the run
            self.errors[key] = error_text(error)
            partial = self.record["result"].get(key)
            self.put(key, {**(partial if isinstance(partial, dict) else {}), "error": self.errors[key]})
            return None
        self.put(key, value)
        return value

    def finish(self, error: Optional[BaseException] = None) -> str:
        if error is not None:
            self.errors["part"] = error_text(error)
        self.record["status"] = "failed" if self.errors else "ok"
        self.record["error"] = "\n".join(f"[{k}] {v}" for k, v in self.errors.items()) or None
        self.save()
        return self.record["status"]

    # shared helpers of several parts

    def step_args(self, **extra: Any) -> argparse.Namespace:
        """The namespace bench_train_step / bench_end_to_end functions read."""
        s = self.sizes
        values = dict(batch=s.batch, frames=s.frames, size=s.size, compile_on=False, repeats=s.repeats,
                      warmup=s.warmup, peak_tflops=self.options.peak_tflops, mode="fast", test_size=s.test_size,
                      views_per_forward=s.views_per_forward, workers=self.options.workers,
                      test_videos=s.test_videos, steps=s.steps)
        values.update(extra)
        return argparse.Namespace(**values)

    def frame_data(self) -> Dict[str, str]:
        """Synthetic JPEG frame folders and manifests under the run's work folder, made once
        (bench_end_to_end.make_data); the train manifest lists the folders over and over
        so that one epoch has ``sizes.steps`` batches."""
        work = self.options.work
        done = os.path.join(work, "made")
        data = {"root": os.path.join(work, "frames"), "lists": os.path.join(work, "lists")}
        if not os.path.isfile(done):
            e2e.make_data(work, self.sizes.videos)
            entries = read_manifest(os.path.join(data["lists"], "train.txt"))
            count = self.sizes.steps * self.sizes.batch
            write_manifest(os.path.join(data["lists"], "train.txt"), [entries[i % len(entries)] for i in range(count)])
            open(done, "w").close()
        return data


def amp_for(device: torch.device) -> torch.dtype:
    """bf16, or fp16 where the GPU has no native bf16 (as engine/precision.py does)."""
    return torch.bfloat16 if native_bf16(device) else torch.float16


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- finite loss


def live_blocks(model: torch.nn.Module) -> int:
    """Set the output norm of every NL / CGNL block to weight 1, as in a trained model (it is
    zero-initialised, which would hide an overflow inside the block); returns their number."""
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (CGNLBlock, NonLocalBlock)):
                module.norm.weight.fill_(1.0)
                count += 1
    return count


def finite_steps(ctx: Context, amp: str, variant: str) -> Dict:
    """``sizes.finite_steps`` training steps of R-50 ``variant`` under ``amp`` autocast; raises
    FloatingPointError on a non-finite loss."""
    case = common.Case(50, variant, "amp", ctx.step_args(), ctx.device,
                    ctx.sizes.model_opts() + ["TRAIN.AMP_DTYPE", amp])
    blocks_live = live_blocks(case.model)
    losses, scales = [], []
    for _ in range(ctx.sizes.finite_steps):
        losses.append(case.step())
        scales.append(case.scaler.get_scale() if case.scaler.is_enabled() else None)
    result = {"autocast": str(case.amp).replace("torch.", ""), "blocks_with_live_norm": blocks_live,
              "losses": losses, "loss_scale": scales,
              "skipped_steps": sum(1 for a, b in zip([65536.0] + scales, scales) if a and b and b < a)}
    bad = [i + 1 for i, value in enumerate(losses) if not math.isfinite(value)]
    if bad:
        raise FloatingPointError(f"TRAIN.AMP_DTYPE {amp}, R-50 {variant}: non-finite loss at step {bad[0]}: {result}")
    return result


def finite_loss(ctx: Context) -> None:
    """fp16 and bf16: a few training steps under autocast give finite losses."""
    for amp in ("bf16", "fp16"):
        for variant in ("+1 NL", "+5 CGNL"):
            ctx.attempt(f"{amp}, R-50 {variant}", lambda: finite_steps(ctx, amp, variant))
            free(ctx.device)


def case_rows(cases: Dict[str, Dict], columns: int, render: Callable[[str, Dict], List[List[str]]]) -> List[List[str]]:
    """The table rows of a part's cases: ``render(name, record)`` for each case that ran;
    for one that failed, its name, blanks and the first line of its error."""
    rows: List[List[str]] = []
    for name, record in cases.items():
        if "error" in record:
            rows.append([name] + [""] * (columns - 2) + ["**failed**: " + record["error"].splitlines()[0]])
        else:
            rows += render(name, record)
    return rows


def render_finite_loss(result: Dict) -> str:
    def row(key: str, value: Dict) -> List[List[str]]:
        losses = ", ".join(f"{v:.3f}" for v in value["losses"])
        scale = value["loss_scale"][-1]
        return [[key, value["autocast"], losses, "" if scale is None else f"{scale:g} ({value['skipped_steps']} "
                 "steps skipped)", "finite"]]

    rows = case_rows(result, 5, row)
    return common.markdown_table(["config", "autocast", "losses", "loss scale (fp16)", "result"], rows, "lllll")


# ----------------------------------------------------------------------------- JPEG decode


def encoded_frames(count: int) -> List[bytes]:
    """``count`` JPEGs of the synthetic 340x256 frames (quality 90, as the frame folders)."""
    from PIL import Image


    out = []
    for frame in common.synthetic_frames(count, 0):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def jpeg_decode(ctx: Context) -> None:
    """torchvision.io.decode_jpeg on the device (data/gpu_augment.py ``decode_frames``: one
    batched nvJPEG call on CUDA) against one CPU thread, round-robin."""
    s, device = ctx.sizes, ctx.device
    encoded = encoded_frames(s.decode_frames)
    cases = {f"decode on {device.type}": lambda: gpu_augment.decode_frames(encoded, device)}
    if device.type != "cpu":
        cases["decode on the CPU, 1 thread"] = lambda: gpu_augment.decode_frames(encoded, torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU reference: one decoding thread, as one loader worker
    try:
        timings = common.time_interleaved(cases, s.repeats, 1, device, clock="wall", max_seconds=0.6 * ctx.left())
    finally:
        torch.set_num_threads(threads)
    ctx.put("frame_size", "340x256 (synthetic, quality 90)")
    ctx.put("batches", {name: {"frames": len(encoded), "seconds": t["median_s"],
                               "frames_per_s": len(encoded) / t["median_s"], "repeats": t["repeats"]}
                        for name, t in timings.items()})


def render_jpeg_decode(result: Dict) -> str:
    rows = result.get("batches", {})
    cpu = rows.get("decode on the CPU, 1 thread", {}).get("frames_per_s")
    table = [[name, r["frames"], f"{r['frames_per_s']:.0f}", f"{r['frames_per_s'] / cpu:.1f}x" if cpu else ""]
             for name, r in rows.items()]
    return (f"Frames: {result.get('frame_size', '?')}.\n\n"
            + common.markdown_table(["decoder", "frames per batch", "frames/s", "vs one CPU thread"], table))


# ----------------------------------------------------------------------------- CGNL kernel share


def block_args(ctx: Context, amp: Optional[torch.dtype]) -> argparse.Namespace:
    """The namespace bench_blocks.measure_group reads."""
    return argparse.Namespace(repeats=ctx.sizes.repeats, warmup=ctx.sizes.warmup, amp_dtype=amp,
                              mem_cap_gb=2.0, max_tflop=0.3)


def kernel_share(ctx: Context) -> None:
    """The CGNL kernel (``aggregate``: all but the 1x1x1 convolutions and the norm) as a
    fraction of the block's forward + backward time, at the res3 / res4 inputs of C2D R-50."""
    s, device = ctx.sizes, ctx.device
    groups = [(stage, amp) for stage in s.block_shapes for amp in (None, amp_for(device))]
    for i, (stage, amp) in enumerate(groups):
        channels, *shape = s.block_shapes[stage]
        name = f"{stage}, {'fp32' if amp is None else str(amp).replace('torch.', '')}"
        budget = 0.5 * ctx.left() / (len(groups) - i)
        ctx.attempt(name, lambda: blocks.measure_group(["CGNL dot", "CGNL rbf P=3"], s.block_batch, channels,
                                                       tuple(shape), block_args(ctx, amp), device,
                                                       max_seconds=budget))
        free(device)


def render_kernel_share(result: Dict) -> str:
    def group_rows(group: str, rows: Dict) -> List[List[str]]:
        return [[group, block, common.fmt_ms(row.get("time_s")), common.fmt_ms(row.get("kernel_time_s")),
                 f"{100 * row['kernel_fraction']:.1f}%" if "kernel_fraction" in row else "—"]
                for block, row in rows.items()]

    table = case_rows(result, 5, group_rows)
    return common.markdown_table(["input, precision", "block", "block fwd+bwd ms", "kernel ms", "kernel share"],
                                 table, "lllrr")


# ----------------------------------------------------------------------------- NL vs CGNL out of memory


def predicted_seconds(last: Optional[Tuple[int, float]], n: int, exponent: int, passes: int) -> float:
    """Time of ``passes`` passes at ``n`` positions from the last measured (N, seconds per
    pass), time growing as N^exponent; 0 with nothing measured yet."""
    if last is None:
        return 0.0
    last_n, last_s = last
    return passes * last_s * (n / last_n) ** exponent


def nl_oom(ctx: Context) -> None:
    """Growing N = T x H x W: CGNL dot, NL (SDPA) and NL with the explicit N x N matrix,
    until each runs out of memory (CUDA; on the CPU bench_blocks skips what would need
    more than its memory cap) or would take longer than the budget left."""
    s, device = ctx.sizes, ctx.device
    args = block_args(ctx, None)
    alive = list(blocks.SWEEP_BLOCKS)
    last: Dict[str, Tuple[int, float]] = {}
    first_oom: Dict[str, int] = {}
    not_run: Dict[str, str] = {}
    sweep: Dict[str, Dict] = {}
    passes = 1 + s.warmup + 2
    for i, text in enumerate(s.sweep):
        shape = blocks.parse_shape(text)
        n = math.prod(shape)
        for name in list(alive):
            need = predicted_seconds(last.get(name), n, NL_TIME_EXPONENT[name], passes)
            if need > 0.5 * ctx.left():
                not_run[name] = f"N = {n} and above: predicted {need:.0f} s, {ctx.left():.0f} s left"
                alive.remove(name)
        if not alive:
            break
        budget = 0.5 * ctx.left() / (len(s.sweep) - i)
        rows = blocks.measure_group(list(alive), s.sweep_batch, s.sweep_channels, shape, args, device,
                                    s.repeats, max_seconds=budget)
        for name, row in rows.items():
            if row.get("oom"):
                first_oom[name] = n
                alive.remove(name)
            elif "skipped" in row:
                not_run[name] = f"N = {n} and above: {row['skipped']}"
                alive.remove(name)
            elif "time_s" in row:
                last[name] = (n, row["time_s"])
        sweep[text] = rows
        ctx.put("sweep", sweep)
        free(device)
    ctx.put("first_oom_N", first_oom)
    ctx.put("largest_N_run", {name: n for name, (n, _) in last.items()})
    ctx.put("not_run", not_run)
    if device.type == "cuda":
        limits = {"this_GPU": torch.cuda.get_device_properties(device).total_memory / 2**30, "80GB_GPU": 80.0}
    else:
        limits = {"RAM": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30}
    ctx.put("nl_explicit_estimate", blocks.nl_oom_analysis(sweep, s.sweep_batch, limits))


def render_nl_oom(result: Dict) -> str:
    first, largest, not_run = (result.get(k, {}) for k in ("first_oom_N", "largest_N_run", "not_run"))
    table = [[name, largest.get(name, "—"), first.get(name, "not reached"), not_run.get(name, "")]
             for name in blocks.SWEEP_BLOCKS]
    text = common.markdown_table(["block", "largest N run", "first N out of memory", "stopped because"], table,
                                 "lrrl")
    if result.get("sweep"):
        text += "\n\nTime ms / peak MB per N:\n\n" + blocks.sweep_table(result["sweep"])
    estimate = result.get("nl_explicit_estimate") or {}
    points = {k: v for k, v in estimate.items() if k.startswith("N_oom_")}
    if points:
        text += f"\n\nNL explicit, fitted {estimate['model']}: out of memory at " + ", ".join(
            f"{k[len('N_oom_'):]} N = {v:,}" for k, v in points.items()) + "."
    return text


# ----------------------------------------------------------------------------- multi-view test


def multiview_test(ctx: Context) -> None:
    """30-view test videos/s (engine.multiview.run_test through the test loader) against
    the model alone, R-50 + 1 CGNL, bf16 + channels_last + fused (no compile), decoding
    in the loader workers and with DATA.DECODE_ON device."""
    data = ctx.frame_data()
    args = ctx.step_args()
    for decode_on in ("worker", "device"):
        extra = ctx.sizes.model_opts() + (["DATA.DECODE_ON", decode_on] if decode_on != "worker" else [])
        ctx.attempt(f"DECODE_ON {decode_on}", lambda: e2e.bench_test(args, data, ctx.device, extra))
        free(ctx.device)


def render_multiview_test(result: Dict) -> str:
    table = case_rows(result, 4, lambda key, row: [[key, f"{row['videos_per_s']:.2f}",
                      f"{row['model_only_videos_per_s']:.2f}", f"{100 * row['stall_vs_model_only']:.1f}%"]])
    return common.markdown_table(["decode", "videos/s end to end", "videos/s model only", "stall"], table)


# ----------------------------------------------------------------------------- data stall


def through_engine(ctx: Context, data: Dict[str, str], decode_on: str, model_rate: float) -> Dict:
    """Two epochs of engine.train_loop.train_epoch through build_loader(cfg, "train"); the
    second is timed (the first starts the workers and warms the kernels up)."""
    args = ctx.step_args()
    extra = ctx.sizes.model_opts() + e2e.data_opts(args, data)
    if decode_on != "worker":
        extra += ["DATA.DECODE_ON", decode_on]
    case = common.Case(50, "+1 CGNL", "fast", args, ctx.device, extra)
    loader = build_loader(case.cfg, "train")
    scheduler = EpochLRScheduler(case.optimizer, case.cfg)
    for epoch in range(2):
        set_loader_epoch(loader, epoch)
        stats = train_epoch(case.model, loader, case.optimizer, scheduler, case.scaler, case.cfg, epoch, ctx.device)
    clips_per_s = stats["iters"] * ctx.sizes.batch / stats["epoch_time"]
    del loader
    return {"steps": stats["iters"], "seconds": stats["epoch_time"], "clips_per_s": clips_per_s,
            "data_wait_fraction": stats["data_time"] * stats["iters"] / stats["epoch_time"],
            "stall_vs_model_only": 1 - clips_per_s / model_rate}


def data_stall(ctx: Context) -> None:
    """Training clips/s through the real loader and the engine's loop against the model
    alone on a fixed batch: R-50 + 1 CGNL, bf16 + channels_last + fused (no compile, to
    keep within the budget), DATA.DECODE_ON worker and device."""
    data = ctx.frame_data()
    args = ctx.step_args()
    case = common.Case(50, "+1 CGNL", "fast", args, ctx.device, ctx.sizes.model_opts())
    model = e2e.model_only(case, ctx.sizes.steps, ctx.sizes.warmup, ctx.device)
    del case
    ctx.put("model_only", model)
    ctx.put("workers", ctx.options.workers)
    for decode_on in ("worker", "device"):
        ctx.attempt(f"DECODE_ON {decode_on}", lambda: through_engine(ctx, data, decode_on, model["clips_per_s"]))
        free(ctx.device)


def render_data_stall(result: Dict) -> str:
    table = []
    if "model_only" in result:
        table.append(["model only (fixed batch)", f"{result['model_only']['clips_per_s']:.2f}", "", ""])
    loops = {key: row for key, row in result.items() if key.startswith("DECODE_ON")}
    table += case_rows(loops, 4, lambda key, row: [[f"{key}, engine loop", f"{row['clips_per_s']:.2f}",
                       f"{100 * row['data_wait_fraction']:.1f}%", f"{100 * row['stall_vs_model_only']:.1f}%"]])
    return (f"Loader workers: {result.get('workers', '?')}.\n\n"
            + common.markdown_table(["input", "clips/s", "time waiting for data", "stall vs model only"], table))


# ----------------------------------------------------------------------------- training step


def compile_plan(left_s: float, reserve_s: float, estimate_s: float) -> bool:
    """Whether a compiled case fits: its estimated compile time within the time left
    after ``reserve_s`` (what the rest of the part still needs)."""
    return left_s - reserve_s >= estimate_s


def build_or_oom(cases: Dict[str, common.Case], rows: Dict[str, Dict], ctx: Context, depth: int, variant: str,
                 mode: str, args: argparse.Namespace, flops: int) -> None:
    """``bts.build_case`` into ``cases`` / ``rows``; out of memory, a row saying so."""
    key = f"{variant} | {mode}"
    try:
        cases[key], rows[key] = bts.build_case(depth, variant, mode, args, ctx.device, flops, ctx.sizes.model_opts())
    except RuntimeError as error:
        if not blocks.is_oom(error):
            raise
        rows[key] = {"depth": depth, "variant": variant, "mode": mode, "skipped": "out of memory"}
        free(ctx.device)


def train_step_depth(ctx: Context, depth: int, share_end: float, compile_s: List[float]) -> Dict:
    """One depth: every variant in the three uncompiled modes, timed round-robin; then
    compiled ("fast") cases while their compile fits before ``share_end``, timed
    round-robin together (their "vs eager" ratio comes from the first timing of the same
    run). Rows are put under "R-<depth>" as they come. ``compile_s``: measured compile
    times per R-50-sized model (the warm-up's first), shared between depths."""
    key = f"R-{depth}"
    args = ctx.step_args(compile_on=False)
    cases: Dict[str, common.Case] = {}
    rows: Dict[str, Dict] = {}
    for variant in common.VARIANTS:
        ctx.doing(f"R-{depth} {variant}: counting FLOPs, building its cases")
        flops = bts.model_flops(depth, variant, args, ctx.device)
        for mode in STEP_MODES:
            build_or_oom(cases, rows, ctx, depth, variant, mode, args, flops)
    timing_s = 0.2 * max(share_end - time.time(), 0.0)
    ctx.doing(f"R-{depth}: timing {len(cases)} uncompiled cases")
    bts.time_cases(cases, rows, args, ctx.device, max_seconds=max(timing_s, 1.0))
    ctx.put(key, {"rows": list(rows.values())})
    cases.clear()
    free(ctx.device)
    for variant in COMPILE_ORDER if ctx.options.compile_on else ():
        # the slowest compile seen: a case the warm-up compiled comes from the compile cache
        estimate = (max(compile_s) if compile_s else COMPILE_GUESS_S) * DEPTH_COST[depth]
        left = share_end - time.time()
        if not compile_plan(left, 0.5 * timing_s, estimate):
            rows[f"{variant} | fast"] = {
                "depth": depth, "variant": variant, "mode": "fast",
                "skipped": f"not compiled: about {estimate:.0f} s to compile, {left - 0.5 * timing_s:.0f} s left"}
            continue
        ctx.doing(f"R-{depth} {variant}: compiling (torch.compile, about {estimate:.0f} s)")
        start = time.time()
        build_or_oom(cases, rows, ctx, depth, variant, "fast", ctx.step_args(compile_on=True),
                     rows[f"{variant} | eager"]["flops_per_step"])
        rows[f"{variant} | fast"]["first_step_s"] = time.time() - start
        compile_s.append(rows[f"{variant} | fast"]["first_step_s"] / DEPTH_COST[depth])
        ctx.put(key, {"rows": list(rows.values())})
    if cases:
        ctx.doing(f"R-{depth}: timing {len(cases)} compiled cases")
        bts.time_cases(cases, rows, args, ctx.device, max_seconds=max(share_end - time.time(), 1.0))
    cases.clear()
    free(ctx.device)
    return {"rows": list(rows.values())}


def train_step(ctx: Context) -> None:
    """Training step clips/s, peak memory and MFU of C2D R-50 / R-101, baseline / +1 NL /
    +1 CGNL / +5 CGNL: eager fp32, AMP bf16, AMP bf16 + channels_last + fused, and the
    same + torch.compile where the budget allows (R-50 first; R-101 gets 40 % of the part)."""
    compile_s: List[float] = [ctx.warm["compile_s"]] if "compile_s" in ctx.warm else []
    for i, depth in enumerate(DEPTHS):
        share_end = time.time() + (0.6 if i == 0 else 1.0) * ctx.left()
        ctx.attempt(f"R-{depth}", lambda: train_step_depth(ctx, depth, share_end, compile_s))
    ctx.put("compile", "on, while the budget allows" if ctx.options.compile_on else
            "off (--compile off, or auto: off on a CPU and in --quick mode)")
    peaks = common.gpu_peaks(torch.cuda.get_device_name(ctx.device)) if ctx.device.type == "cuda" else None
    if ctx.options.peak_tflops:
        ctx.put("mfu_note", f"MFU against --peak-tflops {ctx.options.peak_tflops:g} for every mode.")
    elif peaks:
        ctx.put("mfu_note", f"MFU against the dense datasheet peaks of the {peaks[0]} ({peaks[1]} TFLOP/s; "
                            "benchmarks/_common.py GPU_PEAK_TFLOPS), for the precision each mode runs in.")
    else:
        name = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "a CPU"
        ctx.put("mfu_note", f"MFU not reported: no peak figure for {name} in benchmarks/_common.py "
                            "GPU_PEAK_TFLOPS (--peak-tflops gives one).")


def render_train_step(result: Dict) -> str:
    rows = [row for d in DEPTHS for row in result.get(f"R-{d}", {}).get("rows", [])]
    failed = [f"R-{d}: **failed**: {result[f'R-{d}']['error'].splitlines()[0]}" for d in DEPTHS
              if "error" in result.get(f"R-{d}", {})]
    notes = failed + [f"compile: {result.get('compile', '?')}", result.get("mfu_note", "")]
    return (bts.table(rows) if rows else "No rows.") + "\n\n" + "\n".join(f"- {n}" for n in notes if n)


# ----------------------------------------------------------------------------- warm-ups
# cuDNN autotunes each convolution shape, precision and layout on its first call
# (``cudnn.benchmark``: seconds per model for bf16 / fp16 3D convolutions) and keeps the
# choice for the worker process; inductor compiles a model on its first step and keeps
# the result in TORCHINDUCTOR_CACHE_DIR, which every worker of the run shares. The
# warm-ups make those first calls before a part's budget starts.


def warm_steps(ctx: Context, depth: int, variant: str, modes: Sequence[str], extra: Sequence[str] = ()) -> None:
    """One training step of R-``depth`` ``variant`` in each of ``modes``."""
    for mode in modes:
        ctx.doing(f"warm-up: one training step of R-{depth} {variant} | {mode} {' '.join(extra)}".rstrip())
        common.Case(depth, variant, mode, ctx.step_args(), ctx.device, ctx.sizes.model_opts() + list(extra)).step()
        free(ctx.device)


def warm_finite_loss(ctx: Context) -> None:
    for amp in ("bf16", "fp16"):
        for variant in ("+1 NL", "+5 CGNL"):
            warm_steps(ctx, 50, variant, ["amp"], ["TRAIN.AMP_DTYPE", amp])


def warm_multiview_test(ctx: Context) -> None:
    """The eval forward of one chunk of test views (other shapes than training's)."""
    s = ctx.sizes
    ctx.doing("warm-up: the test forward of R-50 +1 CGNL | fast-nocompile on one chunk of views")
    case = common.Case(50, "+1 CGNL", "fast", ctx.step_args(), ctx.device, s.model_opts())
    views = torch.randint(0, 256, (s.views_per_forward, 3, s.frames, s.test_size, s.test_size), dtype=torch.uint8)
    with torch.no_grad():
        forward_views(case.model.eval(), views, s.views_per_forward, ctx.device, case.cfg)
    free(ctx.device)


def warm_data_stall(ctx: Context) -> None:
    warm_steps(ctx, 50, "+1 CGNL", ["fast"])


def warm_train_step(ctx: Context) -> None:
    """The uncompiled modes of R-50 (R-101 has the same convolution shapes), then, with
    compile on, the first compiled case: its compile time becomes the part's estimate."""
    warm_steps(ctx, 50, "baseline", STEP_MODES)
    if ctx.options.compile_on:
        ctx.doing("warm-up: compiling R-50 baseline | fast (torch.compile, inductor)")
        start = time.time()
        common.Case(50, COMPILE_ORDER[0], "fast", ctx.step_args(compile_on=True), ctx.device,
                 ctx.sizes.model_opts()).step()
        ctx.warm["compile_s"] = time.time() - start
        free(ctx.device)


WARMUPS: Dict[str, Callable[[Context], None]] = {
    "finite_loss": warm_finite_loss, "multiview_test": warm_multiview_test, "data_stall": warm_data_stall,
    "train_step": warm_train_step,
}

PARTS: Dict[str, Callable[[Context], None]] = {
    "finite_loss": finite_loss, "jpeg_decode": jpeg_decode, "kernel_share": kernel_share, "nl_oom": nl_oom,
    "multiview_test": multiview_test, "data_stall": data_stall, "train_step": train_step,
}
TITLES = {
    "finite_loss": "fp16 / bf16 finite-loss check (R-50, a few training steps under autocast)",
    "jpeg_decode": "JPEG decode throughput",
    "kernel_share": "CGNL kernel share of block time (C2D R-50 res3 / res4 inputs)",
    "nl_oom": "N at which NL runs out of memory, against CGNL (512 channels, fp32)",
    "multiview_test": "30-view test, videos/s (R-50 + 1 CGNL, bf16 + channels_last + fused)",
    "data_stall": "Data stall, training through the real loader (R-50 + 1 CGNL, bf16 + channels_last + fused)",
    "train_step": "Training step: clips/s, peak memory, MFU",
}
RENDER: Dict[str, Callable[[Dict], str]] = {
    "finite_loss": render_finite_loss, "jpeg_decode": render_jpeg_decode, "kernel_share": render_kernel_share,
    "nl_oom": render_nl_oom, "multiview_test": render_multiview_test, "data_stall": render_data_stall,
    "train_step": render_train_step,
}


def run_parts(names: Sequence[str], make_context: Callable[[str, Sequence[str]], Context],
              registry: Optional[Dict[str, Callable[[Context], None]]] = None, stop_after_failure: bool = False,
              warmups: Optional[Dict[str, Callable[[Context], None]]] = None,
              deadline_of: Optional[Callable[[str, Sequence[str]], float]] = None) -> int:
    """Run ``names`` in order, each with its own context: its warm-up (``warmups``,
    default ``WARMUPS``) if it has one, then the part, its budget ending at
    ``deadline_of(name, remaining)`` reckoned once the warm-up is done (default: the
    context's deadline). A failing part is recorded and the next one runs.
    ``stop_after_failure``: return 3 after the first failed part (on CUDA a fresh
    process then takes the rest: an error can leave the context unusable)."""
    registry = registry or PARTS
    warmups = WARMUPS if warmups is None else warmups
    for i, name in enumerate(names):
        ctx = make_context(name, names[i:])
        try:
            if name in warmups:
                print(f"== {name}: warm-up (at most {ctx.record['warmup_limit_s']:.0f} s)", flush=True)
                warmups[name](ctx)
            ctx.start_measuring(deadline_of(name, names[i:]) if deadline_of else None)
            print(f"== {name}: {ctx.record['budget_s']:.0f} s", flush=True)
            registry[name](ctx)
            status = ctx.finish()
        except Exception as error:  # noqa: BLE001
            status = ctx.finish(error)
        print(f"== {name}: {status} in {ctx.record['seconds']:.1f} s", flush=True)
        if status != "ok" and stop_after_failure:
            return 3
    return 0
