#!/usr/bin/env python
"""End to end: training clips/s through the real loader against the model alone, and
multi-view test videos/s.

    python benchmarks/bench_end_to_end.py [--quick]   # cuda if available, else cpu

Inputs: generated frame folders (150 JPEGs of 340x256, ``_common.synthetic_frames``) and
manifests. Training (``configs/minikinetics/R50_CGNL8.yaml``, ``--mode`` of
bench_train_step.py): the model alone on a fixed batch, then ``build_loader(cfg, "train")``
with DATA.DECODE_ON worker (``--input cpu``) and device (``--input gpu``: nvJPEG and
``data.gpu_augment``; runs on the CPU too). The data stall is the time waiting for batches
over the total, and 1 - end-to-end / model-only clips/s. Multi-view test:
``engine.multiview.run_test`` (30 views per video) against the model alone on as many views.
On a CPU the loader workers and the model share the cores. Writes benchmarks/results/end_to_end.json.
"""

import argparse
import os
import statistics
import sys
import time
from typing import Dict, List, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

from cgnl_video.data import ManifestEntry, build_loader, set_loader_epoch, write_classes, write_manifest  # noqa: E402
from cgnl_video.engine.inputs import batch_to_device, decode_on_device  # noqa: E402
from cgnl_video.engine.multiview import forward_views, run_test  # noqa: E402

FRAMES_PER_VIDEO = 150


def make_data(work: str, videos: int) -> Dict[str, str]:
    root, lists = os.path.join(work, "frames"), os.path.join(work, "lists")
    entries = []
    for v in range(videos):
        name = f"video_{v:03d}"
        common.write_folder(os.path.join(root, name), common.synthetic_frames(FRAMES_PER_VIDEO, v))
        entries.append(ManifestEntry(name, v % 2, FRAMES_PER_VIDEO))
    write_classes(os.path.join(lists, "classes.txt"), ["a", "b"])
    for split in ("train", "val", "test"):
        write_manifest(os.path.join(lists, f"{split}.txt"), entries)
    return {"root": root, "lists": lists}


def data_opts(args: argparse.Namespace, data: Dict[str, str]) -> List[str]:
    return ["DATA.PATH_TO_DATA_DIR", data["lists"], "DATA.PATH_PREFIX", data["root"],
            "DATA_LOADER.NUM_WORKERS", str(args.workers), "MODEL.NUM_CLASSES", "2",
            "TEST.BATCH_SIZE", "1", "TEST.NUM_ENSEMBLE_VIEWS", "10", "TEST.NUM_SPATIAL_CROPS", "3",
            "DATA.TEST_CROP_SIZE", str(args.test_size), "TEST.VIEWS_PER_FORWARD", str(args.views_per_forward)]


def run_training(case: common.Case, loader, steps: int, warmup: int, device: torch.device) -> Dict:
    """Wall time of ``steps`` training steps fed by ``loader`` (after ``warmup`` steps),
    each batch made the model's input as ``engine.train_loop`` does it."""
    epoch, done, waits, total_start = 0, 0, [], None
    while done < warmup + steps:
        set_loader_epoch(loader, epoch)
        tic = time.perf_counter()
        for batch in loader:
            batch = decode_on_device(batch, loader.dataset, device)  # DATA.DECODE_ON device: counts as waiting
            common.synchronize(device)
            wait = time.perf_counter() - tic
            if done == warmup:
                total_start, waits = tic, []
            case.clips, case.labels = batch_to_device(batch, loader.dataset, device, case.cfg)
            case.step()
            common.synchronize(device)
            waits.append(wait)
            done += 1
            tic = time.perf_counter()
            if done >= warmup + steps:
                break
        epoch += 1
    total = time.perf_counter() - total_start
    return {"steps": steps, "seconds": total, "clips_per_s": steps * case.clips.shape[0] / total,
            "data_wait_fraction": sum(waits) / total, "median_wait_s": statistics.median(waits)}


def model_only(case: common.Case, steps: int, warmup: int, device: torch.device) -> Dict:
    timing = common.time_interleaved({"m": case.step}, steps, warmup, device, clock="wall")["m"]
    return {"steps": steps, "step_s": timing["median_s"], "clips_per_s": case.clips.shape[0] / timing["median_s"]}


def bench_train(args, data, device) -> Dict:
    case = common.Case(50, "+1 CGNL", args.mode, args, device, data_opts(args, data))
    synthetic = (case.clips.clone(), case.labels.clone())
    result = {"model": "C2D R-50 + 1 CGNL (G=8)", "mode": args.mode}
    result["model_only_before"] = model_only(case, args.steps, args.warmup, device)
    for path in args.inputs:
        print(f"  training through the {path} input path ...", flush=True)
        cfg = case.cfg.clone()
        cfg.defrost()
        cfg.DATA.DECODE_ON = "device" if path == "gpu" else "worker"
        loader = build_loader(cfg, "train")
        result[f"input_{path}"] = run_training(case, loader, args.steps, args.warmup, device)
        del loader
    case.clips, case.labels = synthetic
    result["model_only_after"] = model_only(case, args.steps, 0, device)
    # the faster of the two: the conservative reference (the larger stall)
    model_rate = max(result["model_only_before"]["clips_per_s"], result["model_only_after"]["clips_per_s"])
    result["model_only_clips_per_s"] = model_rate
    for path in args.inputs:
        row = result[f"input_{path}"]
        row["stall_vs_model_only"] = 1 - row["clips_per_s"] / model_rate
    return result


def bench_test(args, data, device, extra: Sequence[str] = ()) -> Dict:
    """Multi-view test videos/s end to end and of the model alone; ``extra``: more config overrides."""
    case = common.Case(50, "+1 CGNL", args.mode, args, device, data_opts(args, data) + list(extra))
    cfg = case.cfg
    model = case.model.eval()
    loader = build_loader(cfg, "test")
    videos = min(args.test_videos, len(loader.dataset))
    loader.dataset.entries = loader.dataset.entries[:videos]
    loader = build_loader(cfg, "test", loader.dataset)
    run_test(model, loader, cfg, device)  # warm-up (workers, kernels)
    start = time.perf_counter()
    metrics, _ = run_test(model, loader, cfg, device)
    seconds = time.perf_counter() - start
    # uint8 views of the configured shape, like the test loader's (normalised on the device by forward_views)
    shape = (cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS, 3, cfg.DATA.NUM_FRAMES,
             cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE)
    views = torch.randint(0, 256, shape, dtype=torch.uint8)
    with torch.no_grad():
        forward_views(model, views, cfg.TEST.VIEWS_PER_FORWARD, device, cfg)  # warm-up
        timing = common.time_interleaved(
            {"m": lambda: forward_views(model, views, cfg.TEST.VIEWS_PER_FORWARD, device, cfg)},
            max(3, args.steps // 4), 0, device, clock="wall")["m"]
    return {"videos": videos, "views_per_video": metrics["views_per_video"] if metrics else 30,
            "view_size": [args.frames, args.test_size, args.test_size], "seconds": seconds,
            "videos_per_s": videos / seconds, "model_only_videos_per_s": 1.0 / timing["median_s"],
            "stall_vs_model_only": 1 - (videos / seconds) * timing["median_s"]}


def main() -> int:
    parser = common.base_parser(__doc__, "end_to_end", "4 steps, 1 test video",
                                threads_help="torch threads of the training process (default: 1 on cpu, so "
                                             "that the loader workers get the other cores)", work=True)
    parser.add_argument("--mode", default="", help="bench_train_step mode (default: fast, or fast+cpu_bf16 on cpu)")
    parser.add_argument("--inputs", nargs="+", choices=["cpu", "gpu"], default=None,
                        help="input paths to measure (default: cpu gpu on cuda, cpu on cpu)")
    parser.add_argument("--batch", type=int, default=0, help="default: 8 on cuda, 2 on cpu")
    parser.add_argument("--frames", type=int, default=0, help="default: 32 on cuda, 8 on cpu")
    parser.add_argument("--size", type=int, default=0, help="training crop (default: 224 on cuda, 112 on cpu)")
    parser.add_argument("--test-size", type=int, default=0, help="test crop (default: 256 on cuda, 128 on cpu)")
    parser.add_argument("--views-per-forward", type=int, default=0, help="default: 30 on cuda, 6 on cpu")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (default: min(8, cores - 1))")
    parser.add_argument("--videos", type=int, default=0, help="frame folders to generate (default: 2 x batch x 2)")
    parser.add_argument("--test-videos", type=int, default=0, help="default: 16 on cuda, 4 on cpu")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: 40 on cuda, 20 on cpu)")
    parser.add_argument("--warmup", type=int, default=0, help="default: 5 on cuda, 2 on cpu")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()

    device = common.pick_device(args.device)
    cuda = device.type == "cuda"
    common.setup_device(args.device, args.threads or (0 if cuda else 1))
    args.mode = args.mode or ("fast" if cuda else "fast+cpu_bf16")
    args.inputs = args.inputs or (["cpu", "gpu"] if cuda else ["cpu"])
    args.batch = args.batch or (8 if cuda else 2)
    args.frames = args.frames or (32 if cuda else 8)
    args.size = args.size or (224 if cuda else 112)
    args.test_size = args.test_size or (256 if cuda else 128)
    args.views_per_forward = args.views_per_forward or (30 if cuda else 6)
    args.workers = args.workers or max(1, min(8, (os.cpu_count() or 2) - 1))
    args.steps = args.steps or (40 if cuda else 20)
    args.warmup = args.warmup or (5 if cuda else 2)
    args.test_videos = args.test_videos or (16 if cuda else 4)
    if args.quick:
        args.steps, args.warmup, args.test_videos = 4, 1, 1
    args.videos = args.videos or max(2 * 2 * args.batch, args.test_videos)
    args.compile_on = args.compile == "on" or (args.compile == "auto" and cuda)
    machine = common.machine_info(device)
    print(f"# bench_end_to_end on {machine.get('gpu', machine['cpu'])} ({device.type}), mode {args.mode}, "
          f"batch {args.batch}, {args.frames}x{args.size}x{args.size}, {args.workers} workers", flush=True)
    with common.work_folder(args.work, "bench_e2e_") as work:
        print("writing frame folders ...", flush=True)
        data = make_data(work, args.videos)
        load_start = common.load_average()
        print("training ...", flush=True)
        train = bench_train(args, data, device)
        print("multi-view test ...", flush=True)
        test = bench_test(args, data, device)
    result = {
        "machine": machine, "command": common.command_line(), "load_average_1min": [load_start, common.load_average()],
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "work")},
        "frames": f"{FRAMES_PER_VIDEO} JPEG frames of 340x256 per video (quality 90)",
        "train": train, "test": test,
    }
    rows = [["model only (synthetic batch)", f"{train['model_only_clips_per_s']:.2f}", "", ""]]
    for path in args.inputs:
        row = train[f"input_{path}"]
        rows.append([f"real loader, {path} decode/augment", f"{row['clips_per_s']:.2f}",
                     f"{100 * row['data_wait_fraction']:.1f}%", f"{100 * row['stall_vs_model_only']:.1f}%"])
    text = "\n".join([
        f"\nTraining, {train['model']}, mode {args.mode}, batch {args.batch}, {args.frames}x{args.size}x{args.size}, "
        f"{args.workers} workers:\n",
        common.markdown_table(["input", "clips/s", "time waiting for data", "stall vs model only"], rows),
        f"\nMulti-view test, {test['views_per_video']} views of {args.frames}x{args.test_size}x{args.test_size}, "
        f"{test['videos']} videos:\n",
        common.markdown_table(["", "videos/s"], [["end to end (run_test)", f"{test['videos_per_s']:.3f}"],
                                                 ["model only (30 synthetic views)",
                                                  f"{test['model_only_videos_per_s']:.3f}"],
                                                 ["stall", f"{100 * test['stall_vs_model_only']:.1f}%"]])])
    return common.report(args.json, result, text)


if __name__ == "__main__":
    raise SystemExit(main())
