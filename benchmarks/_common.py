"""Helpers shared by the scripts of benchmarks/ (the only module they import from here).

* options and output: ``parser`` (--json, --repeats, --device, --threads, --quick,
  --work), ``start``, ``report`` (JSON with the machine record + markdown on stdout;
  progress goes to stderr through ``say``), ``markdown_table``;
* timing: ``time_interleaved``, cases run round-robin, as ``benchmark.Measurement``s;
* memory: ``peak_memory_bytes`` (``torch.cuda.max_memory_allocated``; a resident-memory
  proxy on the CPU); MFU: the datasheet peaks ``GPU_PEAK_TFLOPS``, ``peak_tflops``;
* inputs: ``Case`` (a training step of a config in ``configs/minikinetics``),
  ``synthetic_frames``, ``make_frame_data``.
"""

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
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


# ----------------------------------------------------------------------------- options and output


def parser(doc: str, name: str, repeats: Optional[int], quick: str = "", device: bool = True,
           work: bool = False) -> argparse.ArgumentParser:
    """A script's options: --json (default results/<name>.json), --repeats unless ``repeats``
    is None; with ``device`` --device and --threads; with ``quick`` (its help) --quick; with
    ``work`` --work."""
    out = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("--json", default=os.path.join(RESULTS, f"{name}.json"), help="results (default: %(default)s)")
    if repeats is not None:
        out.add_argument("--repeats", type=int, default=repeats, help="timed rounds (default: %(default)s)")
    if device:
        out.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
        out.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    if quick:
        out.add_argument("--quick", action="store_true", help=quick)
    if work:
        out.add_argument("--work", default="", help="folder for generated data, kept (default: a temporary one)")
    return out


def start(args: argparse.Namespace, threads: int = 0) -> torch.device:
    """The device of --device, --threads (else ``threads``) torch threads, cuDNN autotuning."""
    name = getattr(args, "device", "cpu")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if getattr(args, "threads", 0) or threads:
        torch.set_num_threads(getattr(args, "threads", 0) or threads)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    return device


def say(text: str) -> None:
    """Progress, on stderr (stdout holds the tables)."""
    print(text, file=sys.stderr, flush=True)


def machine_info(device: torch.device, decoders: bool = False) -> Dict:
    """What the figures were measured on (with ``decoders``: the video decoders' versions)."""
    import torchvision

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    info = {"date": datetime.date.today().isoformat(), "device": device.type, "cpu": cpu,
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    if decoders:
        import av

        from cgnl_video.utils.decord_support import load_decord
        from cgnl_video.utils.torchcodec_support import TorchCodecUnavailable, load_torchcodec

        decord = load_decord()
        info.update(av=av.__version__, decord=decord.__version__ if decord is not None else None)
        with contextlib.suppress(TorchCodecUnavailable):
            info["torchcodec"] = load_torchcodec().__version__
    return info


def report(args: argparse.Namespace, device: torch.device, result: Dict, text: str, decoders: bool = False) -> int:
    """Write ``result`` with the machine, command and load average to --json, print ``text``."""
    command = "python " + shlex.join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    write_json(args.json, {"machine": machine_info(device, decoders), "command": command,
                           "load_average_1min": os.getloadavg()[0], **result})
    print(text, flush=True)
    say(f"results written to {args.json}")
    return 0


def write_json(path: str, result: Dict) -> None:
    """``result`` as JSON (a ``benchmark.Measurement`` is written as null)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, default=lambda value: None)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """``align``: one character per column, "l" or "r" (default: first left, others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


@contextlib.contextmanager
def work_folder(given: str, prefix: str) -> Iterator[str]:
    """The scratch folder ``given`` (--work, kept), or a temporary one removed afterwards."""
    work = given or tempfile.mkdtemp(prefix=prefix)
    try:
        yield work
    finally:
        if not given:
            shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- time and memory


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(cases: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: Optional[torch.device] = None, clock: str = "auto", max_seconds: Optional[float] = None,
                     label: str = "seconds per call", sub_label: str = "") -> Dict[str, Dict]:
    """Seconds per call of each case, the cases run round-robin (one call each per round)
    so that load from other processes hits every case alike (``benchmark.Timer`` times one
    case after another). ``clock``: "wall", "cpu" (this process's CPU time) or "auto": CPU
    time on a CPU with one torch thread (steady on a shared machine), else wall time; CUDA
    is synchronised. ``max_seconds``: stop after the round that passes it (at least 2).
    Returns per case median_s / min_s of that clock, wall_median_s, cpu_median_s, repeats,
    clock and ``measurement`` (a ``benchmark.Measurement`` for ``benchmark.Compare``)."""
    device = device or torch.device("cpu")
    if clock == "auto":
        clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: Dict[str, Dict[str, List[float]]] = {name: {"wall": [], "cpu": []} for name in cases}
    begin = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, fn in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
        if max_seconds is not None and done >= 2 and time.perf_counter() - begin > max_seconds:
            break
    out = {}
    for name, both in times.items():
        task = benchmark.TaskSpec(stmt=name, setup="", label=label, sub_label=sub_label or clock, description=name,
                                  num_threads=torch.get_num_threads())
        chosen = both[clock]
        out[name] = {"median_s": statistics.median(chosen), "min_s": min(chosen),
                     "wall_median_s": statistics.median(both["wall"]), "cpu_median_s": statistics.median(both["cpu"]),
                     "repeats": len(chosen), "clock": clock, "measurement": benchmark.Measurement(1, chosen, task)}
    return out


def _kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE).group(1))


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes ``fn()`` adds above what existed before. CUDA: ``max_memory_allocated``.
    CPU (no allocator statistics), a proxy: the process's peak resident memory (VmHWM,
    reset through /proc/self/clear_refs after ``malloc_trim``) above its resident memory
    before: every page the call touches (tensors, scratch, allocator slack); 0 without /proc."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        ctypes.CDLL(None).malloc_trim(0)  # freed heap back to the system, so reusing it counts
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # VmHWM := the current resident size
        before = _kb("VmRSS")
    except OSError:
        fn()
        return 0
    fn()
    return max(0, _kb("VmHWM") - before) * 1024


MEMORY_NOTE = {"cuda": "torch.cuda.max_memory_allocated above the memory allocated before the call",
               "cpu": "peak resident memory of the process (VmHWM) above its resident memory before the call"}


def _peaks(half: Optional[float], tf32: Optional[float], fp32: float, bf16: bool = True) -> Dict:
    return {"bf16": half if bf16 else None, "fp16": half, "tf32": tf32, "fp32": fp32}


#: Dense peak TFLOP/s from the vendors' datasheets ("with sparsity" figures halved),
#: matched in order against the device name (NVL / PCIe before SXM, A100 before A10).
#: V100 and T4: no bf16 (engine/precision.py autocasts to fp16 there) and no tf32.
GPU_PEAK_TFLOPS: List[Tuple[str, str, Dict[str, Optional[float]]]] = [
    (r"H200 NVL", "H200 NVL", _peaks(835.5, 417.5, 60.0)), (r"\bH200\b", "H200 SXM", _peaks(989.5, 494.5, 67.0)),
    (r"H100 NVL", "H100 NVL", _peaks(835.5, 417.5, 60.0)), (r"H100.*PCIe", "H100 PCIe", _peaks(756.5, 378.0, 51.0)),
    (r"\bH100\b", "H100 SXM", _peaks(989.5, 494.5, 67.0)), (r"\bA100\b", "A100", _peaks(312.0, 156.0, 19.5)),
    (r"\bL40S\b", "L40S", _peaks(362.05, 183.0, 91.6)), (r"\bL4\b", "L4", _peaks(121.0, 60.0, 30.3)),
    (r"\bA10\b", "A10", _peaks(125.0, 62.5, 31.2)), (r"RTX 4090", "RTX 4090", _peaks(165.2, 82.6, 82.6)),
    (r"V100S", "V100S PCIe", _peaks(130.0, None, 16.4, bf16=False)),
    (r"V100.*SXM", "V100 SXM2", _peaks(125.0, None, 15.7, bf16=False)),
    (r"V100", "V100 PCIe", _peaks(112.0, None, 14.0, bf16=False)), (r"\bT4\b", "T4", _peaks(65.0, None, 8.1, False)),
]


def gpu_peaks(name: str) -> Optional[Tuple[str, Dict[str, Optional[float]]]]:
    """(board, peaks) of ``GPU_PEAK_TFLOPS`` for a device name, or None if it is not listed."""
    return next(((board, peaks) for pattern, board, peaks in GPU_PEAK_TFLOPS
                 if re.search(pattern, name, re.IGNORECASE)), None)


def compute_precision(amp: Optional[torch.dtype], device: torch.device) -> str:
    """The arithmetic of a step: the autocast dtype, else tf32 (CUDA with cuDNN's TF32
    convolutions on) or fp32."""
    if amp is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
    return "tf32" if device.type == "cuda" and cudnn_conv_tf32() else "fp32"


def peak_tflops(device: torch.device, precision: str, override: float = 0.0) -> Optional[float]:
    """The device's dense peak for ``precision`` (tf32 falls back to fp32); ``override`` if
    given; None on the CPU or an unlisted GPU (MFU not reported)."""
    found = gpu_peaks(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if override or found is None:
        return override or None
    return found[1][precision] or (found[1]["fp32"] if precision == "tf32" else None)


# ----------------------------------------------------------------------------- inputs


VARIANTS = {"baseline": "", "+1 NL": "_NL", "+1 CGNL": "_CGNL8", "+5 CGNL": "_CGNL8_5B"}
AMP = ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "bf16"]
FAST = AMP + ["MODEL.CHANNELS_LAST", "True", "CGNL.FUSED", "True"]
MODES: Dict[str, List[str]] = {
    "eager": [], "amp": AMP, "amp_fp16": ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "fp16"],
    "fast-nocompile": FAST, "fast": FAST + ["MODEL.COMPILE", "True"], "channels_last": ["MODEL.CHANNELS_LAST", "True"],
    "fused": ["CGNL.FUSED", "True"], "compile": ["MODEL.COMPILE", "True"],
}


class Case:
    """C2D R-``depth`` ``variant`` in ``mode`` (configs/minikinetics), random weights, its
    optimizer and a fixed synthetic batch (``args``: batch, frames, size); ``step`` is one
    training step as ``engine.train_loop`` does it. The blocks' output norms are set to
    weight 1, as trained (zero-initialised they would hide an overflow in the block)."""

    def __init__(self, depth: int, variant: str, mode: str, args: argparse.Namespace, device: torch.device,
                 extra: Sequence[str] = ()):
        opts = ["RESNET.IMAGENET_WEIGHTS", "", "DATA.NUM_FRAMES", str(args.frames), "DATA.TRAIN_CROP_SIZE",
                str(args.size), "TRAIN.BATCH_SIZE", str(args.batch), *MODES[mode], *extra]
        path = os.path.join(REPO, "configs", "minikinetics", f"R{depth}{VARIANTS[variant]}.yaml")
        self.device, self.cfg = device, load_config(path, opts)
        torch.manual_seed(0)
        self.model = prepare_for_speed(build_model(self.cfg).to(device), self.cfg).train()
        with torch.no_grad():
            for module in self.model.modules():
                if type(module).__name__ in ("CGNLBlock", "NonLocalBlock"):
                    module.norm.weight.fill_(1.0)
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scaler = build_grad_scaler(self.cfg, device)
        generator = torch.Generator().manual_seed(1)
        self.clips = torch.randn((args.batch, 3, args.frames, args.size, args.size), generator=generator).to(device)
        self.labels = torch.randint(self.cfg.MODEL.NUM_CLASSES, (args.batch,), generator=generator).to(device)
        self.amp = amp_dtype(self.cfg, device)

    def step(self) -> float:
        with autocast_context(self.cfg, self.device):
            logits = self.model(to_device(self.clips, self.device, self.cfg))
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()


def synthetic_frames(count: int, seed: int, height: int = 256, width: int = 340) -> np.ndarray:
    """``count`` x height x width x 3 frames: a sliding blocky texture, a moving wave, noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).repeat(8, 0).repeat(8, 1)[:height, :width]
    out = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        wave = 127 + 127 * np.sin((cols + 3 * t) / 29.0) * np.cos((rows - t) / 13.0)
        image = 0.5 * np.roll(texture, 3 * t, axis=1) + 0.5 * wave[..., None]
        out[t] = np.clip(image + rng.normal(0, 5, (height, width, 1)), 0, 255)
    return out


def make_frame_data(work: str, videos: int, frames: int = 150, height: int = 256, width: int = 340) -> Dict[str, str]:
    """``videos`` folders of ``frames`` JPEGs (quality 90, named as the loader reads them)
    under ``work``/frames, two classes, the same manifest for train, val and test."""
    from PIL import Image

    from cgnl_video.data import ManifestEntry, write_classes, write_manifest
    from cgnl_video.data.decode import frame_file_name

    data = {"root": os.path.join(work, "frames"), "lists": os.path.join(work, "lists")}
    entries = []
    for video in range(videos):
        folder = os.path.join(data["root"], f"video_{video:03d}")
        os.makedirs(folder, exist_ok=True)
        for index, frame in enumerate(synthetic_frames(frames, video, height, width)):
            Image.fromarray(frame).save(os.path.join(folder, frame_file_name(index)), quality=90)
        entries.append(ManifestEntry(f"video_{video:03d}", video % 2, frames))
    write_classes(os.path.join(data["lists"], "classes.txt"), ["a", "b"])
    for split in ("train", "val", "test"):
        write_manifest(os.path.join(data["lists"], f"{split}.txt"), entries)
    return data
