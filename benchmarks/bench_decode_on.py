#!/usr/bin/env python
"""Loader worker CPU time per clip with DATA.DECODE_ON worker and device.

    python benchmarks/bench_decode_on.py [--quick]   # about 2 minutes on one core

Generated frame folders (150 JPEGs of 602x256, quality 90); one process, one torch thread
(one DataLoader worker), timed by CPU time, round-robin, median of ``--repeats``:
training batches (worker mode: decode + augment items and collate; device mode: read the
files and ``collate_encoded`` in the worker, ``engine.inputs.batch_to_device`` in the
training process, by wall clock on ``--device cuda``), validation clips and test videos.
The device-mode batches are checked equal to the worker-mode ones.
Writes benchmarks/results/decode_on.json.
"""

import os
import sys
from typing import Callable, Dict, List

import torch
from torch.utils.data import default_collate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

from cgnl_video.config import get_cfg  # noqa: E402
from cgnl_video.data import ManifestEntry, build_dataset, write_classes, write_manifest  # noqa: E402
from cgnl_video.data.gpu_augment import collate_encoded  # noqa: E402
from cgnl_video.engine.inputs import batch_to_device, decode_on_device  # noqa: E402

HEIGHT, WIDTH, FRAMES = 256, 602, 150
TARGET = 0.010  # worker CPU-seconds per training clip in device mode (the target)


def make_data(work: str, videos: int) -> str:
    root, lists = os.path.join(work, "frames"), os.path.join(work, "lists")
    entries = []
    for video in range(videos):
        frames = common.synthetic_frames(FRAMES, video, HEIGHT, WIDTH)
        common.write_folder(os.path.join(root, f"video_{video:02d}"), frames)
        entries.append(ManifestEntry(f"video_{video:02d}", video % 2, FRAMES))
    write_classes(os.path.join(lists, "classes.txt"), ["a", "b"])
    for split in ("train", "val", "test"):
        write_manifest(os.path.join(lists, f"{split}.txt"), entries)
    return work


def datasets(work: str, split: str):
    out = {}
    for mode in ("worker", "device"):
        cfg = get_cfg()
        cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.PATH_PREFIX = os.path.join(work, "lists"), os.path.join(work, "frames")
        cfg.DATA.DECODE_ON = mode
        out[mode] = build_dataset(cfg, split)
    return out, cfg


def worker_batches(dataset, clips: int, batch: int, collate: Callable) -> List:
    """``clips`` items (clip k = video k % videos in epoch k // videos), collated by ``batch``."""
    batches, items = [], []
    for clip in range(clips):
        epoch, video = divmod(clip, len(dataset))
        dataset.set_epoch(epoch)
        items.append(dataset[video])
        if len(items) == batch:
            batches.append(collate(items))
            items = []
    return batches


def bench_train(work: str, clips: int, batch: int, repeats: int, device: torch.device) -> Dict:
    data, cfg = datasets(work, "train")
    encoded = worker_batches(data["device"], clips, batch, collate_encoded)

    def main_process() -> None:
        for one in encoded:
            batch_to_device(one, data["device"], device, cfg)

    cases: Dict[str, Callable[[], object]] = {
        "worker mode: worker (decode, augment, collate)":
            lambda: worker_batches(data["worker"], clips, batch, default_collate),
        "device mode: worker (plan, read bytes, collate)":
            lambda: worker_batches(data["device"], clips, batch, collate_encoded),
        f"device mode: training process on {device.type} (decode, augment)": main_process,
    }
    times = common.time_interleaved(cases, repeats, device=device, clock="cpu")
    if device.type == "cuda":  # the training process's figure: wall time on the GPU
        gpu = common.time_interleaved({"gpu": main_process}, repeats, device=device, clock="wall")["gpu"]
        times[list(cases)[2]] = gpu
    expected = worker_batches(data["worker"], clips, batch, default_collate)
    worst = max(float((batch_to_device(e, data["device"], device, cfg)[0].cpu()
                       - batch_to_device(w, data["worker"], torch.device("cpu"), cfg)[0]).abs().max())
                for e, w in zip(encoded, expected))
    jpeg_bytes = sum(one[0].jpegs.numel() for one in encoded) / max(1, len(encoded) * batch)
    return {"clips": clips, "batch": batch, "repeats": repeats, "mean_jpeg_bytes_per_clip": jpeg_bytes,
            "seconds_per_clip": {name: t["median_s"] / clips for name, t in times.items()},
            "clock": {name: t["clock"] for name, t in times.items()},
            "max_abs_diff_device_vs_worker": worst}


def bench_items(work: str, split: str, count: int, repeats: int) -> Dict:
    """Worker CPU seconds per item of ``split`` (items only: the collate is the train's)."""
    data, _cfg = datasets(work, split)
    cases = {f"{mode} mode": (lambda d=d: [d[i % len(d)] for i in range(count)]) for mode, d in data.items()}
    times = common.time_interleaved(cases, repeats, clock="cpu")
    check = data["worker"][0][0]
    pixels = decode_on_device(collate_encoded([data["device"][0]]), data["device"], torch.device("cpu"))[0][0]
    if check.dtype != torch.uint8:  # val: the worker's item is normalised
        pixels = data["device"].policy.item(pixels)
    return {"items": count, "repeats": repeats, "equal": bool(torch.equal(check, pixels)),
            "seconds_per_item": {name: t["median_s"] / count for name, t in times.items()}}


def markdown(result: Dict) -> str:
    train = result["train"]
    per_clip = train["seconds_per_clip"]
    names = list(per_clip)
    baseline = per_clip[names[0]]
    rows = [[name, f"{seconds:.4f}", f"{1 / seconds:.1f}", f"{baseline / seconds:.1f}x"]
            for name, seconds in per_clip.items()]
    device_worker = per_clip[names[1]]
    lines = [
        f"Training clips, {WIDTH}x{HEIGHT} JPEG frames (quality 90, {train['mean_jpeg_bytes_per_clip'] / 1e3:.0f} kB "
        f"per clip of 32 frames), batches of {train['batch']}, {train['clips']} clips, median of {train['repeats']}:",
        "",
        common.markdown_table(["", "CPU-s per clip", "clips/s", "worker mode / this"], rows),
        "",
        f"Target: device mode at most {TARGET} worker CPU-s per clip: "
        f"{'met' if device_worker <= TARGET else 'missed'} ({device_worker:.4f}). "
        f"Largest difference device vs worker batch: {train['max_abs_diff_device_vs_worker']:g}.",
    ]
    for split in ("val", "test"):
        part = result[split]
        seconds = part["seconds_per_item"]
        lines += ["", f"{split} items, worker CPU-s per item: worker mode {seconds['worker mode']:.4f}, "
                      f"device mode {seconds['device mode']:.4f} "
                      f"({seconds['worker mode'] / seconds['device mode']:.1f}x less); equal: {part['equal']}"]
    return "\n".join(lines)


def main() -> int:
    parser = common.base_parser(__doc__, "decode_on", "fewer clips and repeats (a smoke run)",
                                threads_help="ignored: one torch thread, as in a worker", work=True)
    parser.add_argument("--videos", type=int, default=6, help="frame folders of 150 frames")
    parser.add_argument("--clips", type=int, default=32, help="training clips per timed run")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each case (median)")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.clips, args.batch, args.repeats = 2, 4, 2, 2
    torch.set_num_threads(1)  # as in a DataLoader worker
    device = common.pick_device(args.device)
    with common.work_folder(args.work, "bench_decode_on_") as work:
        if not os.path.isdir(os.path.join(work, "frames")):
            make_data(work, args.videos)
        result = {
            "machine": common.machine_info(device),
            "load_average": common.load_average(),
            "command": common.command_line(),
            "train": bench_train(work, args.clips, args.batch, args.repeats, device),
            "val": bench_items(work, "val", args.clips // 2, args.repeats),
            "test": bench_items(work, "test", 1, max(2, args.repeats // 2)),
        }
    return common.report(args.json, result, markdown(result))

if __name__ == "__main__":
    raise SystemExit(main())
