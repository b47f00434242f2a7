"""Helpers shared by the scripts of benchmarks/ (the only module they import from here).

* devices and machine records: ``setup_device``, ``machine_info``, ``decoder_versions``;
* timing: ``time_interleaved``, cases run round-robin, as ``benchmark.Measurement``s;
* memory: ``peak_memory_bytes``, ``torch.cuda.max_memory_allocated`` on CUDA and the
  process's peak resident memory as a CPU proxy (``MEMORY_NOTE``);
* model-FLOP utilisation: the datasheet peaks ``GPU_PEAK_TFLOPS``, ``peak_tflops``;
* inputs: ``synthetic_frames``, ``write_folder``; a training step: ``Case``, ``MODES``;
* output: ``report`` (JSON + printed markdown table), ``markdown_table``.
"""

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import benchmark

from cgnl_video.config import load_config
from cgnl_video.engine.inputs import to_device
from cgnl_video.engine.optim import build_optimizer
from cgnl_video.engine.precision import amp_dtype, autocast_context, build_grad_scaler
from cgnl_video.models import build_model, prepare_for_speed
from cgnl_video.utils.distributed import cudnn_conv_tf32

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


# ----------------------------------------------------------------------------- device and machine


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return device


def script_parser(doc: str, result_name: str, work: bool = False) -> argparse.ArgumentParser:
    """A benchmark's parser with --json (default benchmarks/results/<result_name>.json)
    and, with ``work``, --work (a folder for generated data; see ``work_folder``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=os.path.join(RESULTS, f"{result_name}.json"),
                        help="where the results go (default: %(default)s)")
    if work:
        parser.add_argument("--work", default="", help="folder for the generated data, kept (default: a "
                            "temporary one, removed at the end)")
    return parser


def base_parser(doc: str, result_name: str, quick_help: str,
                threads_help: str = "torch threads (default: torch's choice)",
                work: bool = False) -> argparse.ArgumentParser:
    """``script_parser`` with the options of the model benchmarks: --device, --threads, --quick."""
    parser = script_parser(doc, result_name, work)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    parser.add_argument("--threads", type=int, default=0, help=threads_help)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def setup_device(name: str = "auto", threads: int = 0) -> torch.device:
    """``pick_device`` plus the run settings every script uses: ``threads`` torch
    threads when given, cudnn autotuning on CUDA."""
    device = pick_device(name)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(device: torch.device) -> Dict:
    """What the figures were measured on."""
    info = {
        "date": datetime.date.today().isoformat(),
        "device": device.type,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), driver=_gpu_driver())
    return info


def decoder_versions() -> Dict[str, str]:
    """Versions of the video decoders (absent = not importable here)."""
    versions = {}
    try:
        import av

        versions["av"] = av.__version__
        versions["av_ffmpeg"] = str(getattr(av, "ffmpeg_version_info", "unknown"))  # the FFmpeg its wheel bundles
    except ImportError:
        pass
    try:
        import decord

        versions["decord"] = decord.__version__
    except (ImportError, OSError):
        pass
    from cgnl_video.utils.torchcodec_support import TorchCodecUnavailable, load_torchcodec

    try:
        torchcodec = load_torchcodec()
        versions["torchcodec"] = torchcodec.__version__
        versions["torchcodec_ffmpeg_major"] = str(torchcodec.ffmpeg_major_version)  # the system's FFmpeg
    except (TorchCodecUnavailable, AttributeError):
        pass
    return versions


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_clock(device: torch.device) -> str:
    """"cpu" (the process's CPU time) for single-threaded CPU runs, else "wall": on a
    shared CPU the wall time includes waiting for other processes, while with one
    torch thread the CPU time is the work done (a few percent spread, not +-30%)."""
    return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def time_interleaved(cases: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: Optional[torch.device] = None, clock: str = "auto",
                     max_seconds: Optional[float] = None) -> Dict[str, Dict[str, float]]:
    """Seconds per call of each case, the cases run round-robin (one call each per round)
    so that load from other processes hits every case alike.

    ``torch.utils.benchmark.Timer`` times one case after another (and ``timeit`` warms up
    twice per call), so each round calls ``timeit.Timer(fn).timeit(1)`` with the chosen
    ``clock`` ("wall", "cpu" or "auto" = ``default_clock``), CUDA synchronised, and reads
    the other clock around it. Returns median_s / min_s / max_s of the chosen clock,
    wall_median_s, cpu_median_s, repeats, clock and ``measurement`` (a
    ``benchmark.Measurement`` for ``benchmark.Compare``; null in JSON). ``max_seconds``:
    stop after the round in which the timed rounds' wall time passes it (at least 2 rounds).
    """
    device = device or torch.device("cpu")
    clock = default_clock(device) if clock == "auto" else clock
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    own, other = (time.process_time, time.perf_counter) if clock == "cpu" else (time.perf_counter, time.process_time)
    timers = {name: timeit.Timer(lambda fn=fn: (fn(), synchronize(device)), timer=own) for name, fn in cases.items()}
    chosen: Dict[str, List[float]] = {name: [] for name in cases}
    others: Dict[str, List[float]] = {name: [] for name in cases}
    start_rounds = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, timer in timers.items():
            start = other()
            chosen[name].append(timer.timeit(1))
            others[name].append(other() - start)
        if max_seconds is not None and done >= 2 and time.perf_counter() - start_rounds > max_seconds:
            break
    out = {}
    for name, times in chosen.items():
        wall, cpu = (others[name], times) if clock == "cpu" else (times, others[name])
        task = benchmark.TaskSpec(stmt=name, setup="", label="seconds per call", sub_label=clock,
                                  description=name, num_threads=torch.get_num_threads())
        out[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                     "wall_median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu),
                     "repeats": len(times), "clock": clock,
                     "measurement": benchmark.Measurement(1, times, task)}
    return out


# ----------------------------------------------------------------------------- memory


def _rss_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE).group(1))


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes that ``fn()`` adds above what existed before; its return value is dropped.

    CUDA: ``torch.cuda.max_memory_allocated`` above ``memory_allocated`` before. CPU
    (PyTorch keeps no CPU allocator statistics), a proxy: the process's peak resident
    memory (Linux VmHWM, reset through /proc/self/clear_refs) above its resident memory
    before (after ``malloc_trim``). It counts every page the call touches (tensors, kernels' scratch buffers,
    allocator slack), so it is about the live tensor bytes or more; 0 where /proc is absent.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        ctypes.CDLL(None).malloc_trim(0)  # freed heap memory back to the system, so reuse of it counts
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # resets VmHWM to the current resident size
        before = _rss_kb("VmRSS")
    except OSError:
        fn()
        return 0
    fn()
    return max(0, _rss_kb("VmHWM") - before) * 1024


MEMORY_NOTE = {
    "cuda": "torch.cuda.max_memory_allocated above the memory allocated before the call",
    "cpu": "peak resident memory of the process (VmHWM) above its resident memory before the call: every "
           "page the call touches, tensors, scratch buffers and allocator slack (CPU has no allocator statistics)",
}


# ----------------------------------------------------------------------------- peak FLOP/s (MFU)


def _peaks(half: Optional[float], tf32: Optional[float], fp32: float, bf16: bool = True) -> Dict[str, Optional[float]]:
    """Dense peaks: tensor-core bf16 (None without native bf16) and fp16, tf32, fp32 CUDA cores."""
    return {"bf16": half if bf16 else None, "fp16": half, "tf32": tf32, "fp32": fp32}


#: Dense (no structured sparsity) peak TFLOP/s per GPU, from the vendor datasheets
#: (their "with sparsity" figures halved), matched in order against the device name
#: (case-insensitive regular expressions; the first match wins, so NVL / PCIe
#: boards come before their SXM namesakes and A100 before A10).
GPU_PEAK_TFLOPS: List[Tuple[str, str, Dict[str, Optional[float]]]] = [
    # NVIDIA H200 Tensor Core GPU datasheet: H200 SXM FP32 67, TF32 989*, BF16/FP16 1,979*;
    # H200 NVL FP32 60, TF32 835*, BF16/FP16 1,671* (* with sparsity).
    (r"H200 NVL", "H200 NVL", _peaks(835.5, 417.5, 60.0)),
    (r"\bH200\b", "H200 SXM", _peaks(989.5, 494.5, 67.0)),
    # NVIDIA H100 Tensor Core GPU datasheet: H100 SXM FP32 67, TF32 989*, BF16/FP16 1,979*;
    # H100 NVL FP32 60, TF32 835*, BF16/FP16 1,671*; H100 PCIe FP32 51, TF32 756*, BF16/FP16 1,513*.
    (r"H100 NVL", "H100 NVL", _peaks(835.5, 417.5, 60.0)),
    (r"H100.*PCIe", "H100 PCIe", _peaks(756.5, 378.0, 51.0)),
    (r"\bH100\b", "H100 SXM", _peaks(989.5, 494.5, 67.0)),  # the SXM5 board reports "H100 80GB HBM3"
    # NVIDIA A100 Tensor Core GPU datasheet (SXM4 and PCIe alike): FP32 19.5, TF32 156, BF16/FP16 312.
    (r"\bA100\b", "A100", _peaks(312.0, 156.0, 19.5)),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183, BF16/FP16 362.05.
    (r"\bL40S\b", "L40S", _peaks(362.05, 183.0, 91.6)),
    # NVIDIA L4 datasheet: FP32 30.3, TF32 120*, BF16/FP16 242*.
    (r"\bL4\b", "L4", _peaks(121.0, 60.0, 30.3)),
    # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16/FP16 125.
    (r"\bA10\b", "A10", _peaks(125.0, 62.5, 31.2)),
    # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: FP32 82.6, TF32 82.6,
    # BF16/FP16 with FP32 accumulate 165.2.
    (r"RTX 4090", "RTX 4090", _peaks(165.2, 82.6, 82.6)),
    # NVIDIA V100 datasheet: SXM2 FP32 15.7, tensor (FP16) 125; V100S PCIe 16.4, 130; PCIe 14, 112.
    # No bf16 (the engine autocasts to fp16 there, engine/precision.py) and no tf32.
    (r"V100S", "V100S PCIe", _peaks(130.0, None, 16.4, bf16=False)),
    (r"V100.*SXM", "V100 SXM2", _peaks(125.0, None, 15.7, bf16=False)),
    (r"V100", "V100 PCIe", _peaks(112.0, None, 14.0, bf16=False)),
    # NVIDIA T4 datasheet: FP32 8.1, mixed precision (FP16/FP32) 65.
    (r"\bT4\b", "T4", _peaks(65.0, None, 8.1, bf16=False)),
]


def gpu_peaks(name: str) -> Optional[Tuple[str, Dict[str, Optional[float]]]]:
    """(board, peaks) of ``GPU_PEAK_TFLOPS`` for a device name, or None if it is not listed."""
    for pattern, board, peaks in GPU_PEAK_TFLOPS:
        if re.search(pattern, name, re.IGNORECASE):
            return board, peaks
    return None


def compute_precision(amp: Optional[torch.dtype]) -> str:
    """The arithmetic a training step runs in: the autocast dtype ("bf16" / "fp16"), or
    "tf32" for fp32 on CUDA with cuDNN's TF32 convolutions on (PyTorch's default, which
    the convolutions of C2D nearly all use), else "fp32"."""
    if amp is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    return "tf32" if cudnn_conv_tf32() else "fp32"


def peak_tflops(device: torch.device, precision: str, override: float = 0.0) -> Optional[float]:
    """The device's dense peak for ``precision`` (tf32 falls back to fp32 on GPUs without
    it); ``override`` if given; None on the CPU or an unlisted GPU (MFU not reported)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    found = gpu_peaks(torch.cuda.get_device_name(device))
    if found is None:
        return None
    peaks = found[1]
    return peaks[precision] or (peaks["fp32"] if precision == "tf32" else None)


# ----------------------------------------------------------------------------- a training step


VARIANTS = {"baseline": "", "+1 NL": "_NL", "+1 CGNL": "_CGNL8", "+5 CGNL": "_CGNL8_5B"}
FAST = ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "bf16", "MODEL.CHANNELS_LAST", "True",
        "CGNL.FUSED", "True"]
MODES: Dict[str, List[str]] = {
    "eager": [],
    "fast": FAST + ["MODEL.COMPILE", "True"],
    "fast+cpu_bf16": FAST,
    "fast-nocompile": FAST,
    "amp": ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "bf16"],
    "cpu_bf16": ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "bf16"],
    "channels_last": ["MODEL.CHANNELS_LAST", "True"],
    "fused": ["CGNL.FUSED", "True"],
    "compile": ["MODEL.COMPILE", "True"],
}


def make_cfg(depth: int, variant: str, mode: str, args: argparse.Namespace, extra: Sequence[str] = ()):
    """The config of one case; ``extra``: more KEY VALUE overrides."""
    opts = ["RESNET.IMAGENET_WEIGHTS", "", "DATA.NUM_FRAMES", str(args.frames),
            "DATA.TRAIN_CROP_SIZE", str(args.size), "TRAIN.BATCH_SIZE", str(args.batch)]
    switches = list(MODES[mode])
    if mode == "fast" and not args.compile_on:
        switches = list(FAST)
    opts += switches + list(extra)
    return load_config(os.path.join(REPO, "configs", "minikinetics", f"R{depth}{VARIANTS[variant]}.yaml"), opts)


class Case:
    """A model with its optimizer and a fixed synthetic batch; ``step`` is one training
    step as ``engine.train_loop`` does it (bench_train_step.py, bench_end_to_end.py)."""

    def __init__(self, depth: int, variant: str, mode: str, args: argparse.Namespace, device: torch.device,
                 extra_opts: Sequence[str] = ()):
        self.device = device
        self.cfg = cfg = make_cfg(depth, variant, mode, args, extra_opts)
        self.compiled = bool(cfg.MODEL.COMPILE)
        torch.manual_seed(0)
        self.model = prepare_for_speed(build_model(cfg).to(device), cfg).train()
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = build_grad_scaler(cfg, device)
        generator = torch.Generator().manual_seed(1)
        self.clips = torch.randn((args.batch, 3, args.frames, args.size, args.size), generator=generator).to(device)
        self.labels = torch.randint(cfg.MODEL.NUM_CLASSES, (args.batch,), generator=generator).to(device)
        self.force_cpu_bf16 = mode.endswith("cpu_bf16") and device.type == "cpu"

    @property
    def amp(self) -> Optional[torch.dtype]:
        """The autocast dtype of the step (None: fp32)."""
        return torch.bfloat16 if self.force_cpu_bf16 else amp_dtype(self.cfg, self.device)

    def autocast(self):
        if self.force_cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return autocast_context(self.cfg, self.device)

    def step(self) -> float:
        clips = to_device(self.clips, self.device, self.cfg)
        with self.autocast():
            logits = self.model(clips)
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()


# ----------------------------------------------------------------------------- synthetic frames


def synthetic_frames(count: int, seed: int, height: int = 256, width: int = 340) -> np.ndarray:
    """``count`` x height x width x 3 frames (default 256 x 340): a sliding blocky
    texture, a moving wave, noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    blocks = rng.random((height // 8 + 1, width // 8 + 1, 3)).astype(np.float32) * 255
    texture = blocks.repeat(8, axis=0).repeat(8, axis=1)[:height, :width]
    out = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        wave = 127 + 127 * np.sin((cols + 3 * t) / 29.0) * np.cos((rows - t) / 13.0)
        image = 0.5 * np.roll(texture, 3 * t, axis=1) + 0.5 * wave[..., None]
        out[t] = np.clip(image + rng.normal(0, 5, (height, width, 1)), 0, 255)
    return out


def write_folder(folder: str, frames: np.ndarray) -> None:
    """``frames`` as JPEG files (quality 90) named as the loader reads them."""
    from PIL import Image

    from cgnl_video.data.decode import frame_file_name

    os.makedirs(folder, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(os.path.join(folder, frame_file_name(index)), quality=90)


# ----------------------------------------------------------------------------- output


@contextlib.contextmanager
def work_folder(given: Optional[str], prefix: str) -> Iterator[str]:
    """The scratch folder ``given`` (--work, kept), or a temporary one removed afterwards."""
    work = given or tempfile.mkdtemp(prefix=prefix)
    try:
        yield work
    finally:
        if not given:
            shutil.rmtree(work, ignore_errors=True)


def report(path: str, result: Dict, text: str) -> int:
    """Write ``result`` as JSON to ``path``, print its markdown ``text`` and where
    the JSON went; the script's exit status (0)."""
    write_json(path, result)
    print(text)
    print(f"\nresults written to {path}")
    return 0


def _no_measurement(value: object) -> None:
    """JSON has no place for the ``benchmark.Measurement`` a timing carries: written as null."""
    if isinstance(value, benchmark.Measurement):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str, result: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2, default=_no_measurement)
        handle.write("\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """``align``: one character per column, "l" or "r" (default: first left, others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ms(seconds: Optional[float]) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f}"


def fmt_mb(nbytes: Optional[float]) -> str:
    return "—" if nbytes is None else f"{nbytes / 2**20:.0f}"
