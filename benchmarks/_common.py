"""Helpers shared by bench_blocks.py, bench_train_step.py and bench_end_to_end.py.

* ``machine_info(device)``: CPU / GPU, driver, torch and library versions, load.
* ``pick_device(name)``: "auto" = cuda when available, else cpu.
* ``time_interleaved(cases, repeats, warmup)``: median (and spread) time of several
  callables measured round-robin in the same run, so that load from other
  processes hits every case alike; ratios of medians are then meaningful. The
  clock is wall time, or the process CPU time for single-threaded CPU runs
  (``default_clock``).
* ``PeakMemory``: peak tensor memory of a callable. On CUDA it is
  ``torch.cuda.max_memory_allocated`` above what was allocated before. On the CPU
  PyTorch keeps no allocator statistics, so a dispatch-mode tracker adds up the
  bytes of every tensor storage created inside the call and subtracts them when the
  storage is freed: the peak of live tensor bytes allocated by the call, the same
  quantity as the CUDA figure without the allocator's rounding and caching
  (it does not see memory a kernel uses internally, e.g. oneDNN scratch buffers).
* ``GPU_PEAK_TFLOPS`` / ``peak_tflops(device, precision)``: dense datasheet peaks per
  GPU and precision, the denominator of the model-FLOP utilisation (MFU).
* ``write_json(path, result)``, ``markdown_table(header, rows)``.
* ``decoder_versions()``: decord, PyAV (and its FFmpeg), torchcodec (and the system
  FFmpeg it loaded), for the video-decoding benchmarks.

bench_loader.py and bench_extract.py use them too (bench_extract.py for its decoder
comparison; its ffmpeg runs time whole processes with their own code).
"""

import argparse
import contextlib
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
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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
    """"cpu" (the process's CPU time) for single-threaded CPU runs, else "wall".

    On a CPU shared with other jobs the wall time of a step includes the time the
    thread waits while other processes run (spreads of +-30% were seen on the
    2-core development machine); with one torch thread every op runs on the
    calling thread, so its CPU time (time.process_time) is the work done, with a
    spread of a few percent. Memory-bandwidth contention still counts in both.
    """
    return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def time_interleaved(cases: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: Optional[torch.device] = None, clock: str = "auto",
                     max_seconds: Optional[float] = None) -> Dict[str, Dict[str, float]]:
    """Seconds per call of each case, the cases run round-robin.

    Returns median_s / min_s / max_s of the chosen ``clock`` ("wall", "cpu" or "auto"
    = ``default_clock``) plus wall_median_s and cpu_median_s, repeats and clock.
    ``max_seconds``: stop after the round in which the timed rounds' wall time
    passes it (at least 2 rounds), so a time budget caps the repeats.
    """
    device = device or torch.device("cpu")
    clock = default_clock(device) if clock == "auto" else clock
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    wall: Dict[str, List[float]] = {name: [] for name in cases}
    cpu: Dict[str, List[float]] = {name: [] for name in cases}
    start_rounds = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, fn in cases.items():
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
        if max_seconds is not None and done >= 2 and time.perf_counter() - start_rounds > max_seconds:
            break
    out = {}
    for name in cases:
        chosen = cpu[name] if clock == "cpu" else wall[name]
        out[name] = {"median_s": statistics.median(chosen), "min_s": min(chosen), "max_s": max(chosen),
                     "wall_median_s": statistics.median(wall[name]), "cpu_median_s": statistics.median(cpu[name]),
                     "repeats": len(chosen), "clock": clock}
    return out


# ----------------------------------------------------------------------------- memory


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of storages created while active, until each is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: Dict[int, weakref.ref] = {}

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.pop(key, None)
        self.live -= nbytes

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type != "cpu" or tensor.is_sparse:
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._seen:
            return
        nbytes = storage.nbytes()
        self._seen[key] = weakref.ref(storage, lambda _ref, key=key, nbytes=nbytes: self._free(key, nbytes))
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(item, torch.Tensor):
                self._track(item)
        return out


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensor memory that ``fn()`` allocates above what existed before.

    CUDA: max_memory_allocated. CPU: live tensor bytes tracked by a dispatch mode
    (module docstring). ``fn``'s return value is dropped before the figure is read.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    tracker = _LiveTensorBytes()
    with tracker:
        fn()
    return tracker.peak


MEMORY_NOTE = {
    "cuda": "torch.cuda.max_memory_allocated above the memory allocated before the call",
    "cpu": "peak bytes of live tensors allocated by the call, tracked with a TorchDispatchMode "
           "(CPU has no allocator statistics; excludes kernels' internal scratch buffers)",
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


def write_json(path: str, result: Dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
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
