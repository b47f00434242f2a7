#!/usr/bin/env python
"""End to end: training clips/s through the real loader against the model alone (the
data stall), and multi-view test videos/s against the model alone.

    python benchmarks/bench_end_to_end.py [--quick]   # cuda if available, else cpu

C2D R-50 + 1 CGNL (``configs/minikinetics/R50_CGNL8.yaml``) in ``--mode`` (_common.MODES)
on generated frame folders (150 JPEGs of 340x256). Training: the model on a fixed batch,
then ``engine.train_loop.train_epoch`` through ``build_loader(cfg, "train")`` with
``DATA.DECODE_ON`` worker and device (nvJPEG and ``data.gpu_augment``; runs on the CPU
too); its data time over the epoch time is the wait, 1 - loader / model clips/s the
stall. Test: ``engine.multiview.run_test`` (30 views per video) against
``forward_views`` on as many synthetic views. On a CPU the loader workers and the model
share the cores.
"""

import os
import time
from typing import Dict

import _common as common
import torch

from cgnl_video.data import build_loader, read_manifest, set_loader_epoch, write_manifest
from cgnl_video.engine.multiview import forward_views, run_test
from cgnl_video.engine.optim import EpochLRScheduler
from cgnl_video.engine.train_loop import train_epoch


def train(args, data: Dict[str, str], device: torch.device) -> Dict:
    case = common.Case(50, "+1 CGNL", args.mode, args, device, args.opts)
    timing = common.time_interleaved({"m": case.step}, args.steps, args.warmup, device, clock="wall")["m"]
    result = {"model_only_clips_per_s": args.batch / timing["median_s"]}
    for decode_on in args.decode_on:
        common.say(f"  training through the loader, DATA.DECODE_ON {decode_on} ...")
        cfg = case.cfg.clone()
        cfg.defrost()
        cfg.DATA.DECODE_ON = decode_on
        loader = build_loader(cfg, "train")
        scheduler = EpochLRScheduler(case.optimizer, cfg)
        for epoch in range(2):  # the first starts the workers and warms up; the second is timed
            set_loader_epoch(loader, epoch)
            stats = train_epoch(case.model, loader, case.optimizer, scheduler, case.scaler, cfg, epoch, device)
        rate, wait = stats["iters"] * args.batch / stats["epoch_time"], stats["data_time"] * stats["iters"]
        result[f"DECODE_ON {decode_on}"] = {"steps": stats["iters"], "clips_per_s": rate, "data_wait_fraction": wait
                                            / stats["epoch_time"], "stall_vs_model_only": 1 - rate / result[
                                                "model_only_clips_per_s"]}
        del loader
    return result


def test(args, data: Dict[str, str], device: torch.device) -> Dict:
    case = common.Case(50, "+1 CGNL", args.mode, args, device, args.opts)
    cfg, model = case.cfg, case.model.eval()
    loader = build_loader(cfg, "test")
    loader.dataset.entries = loader.dataset.entries[:args.test_videos]
    loader = build_loader(cfg, "test", loader.dataset)
    run_test(model, loader, cfg, device)  # warm-up (workers, kernels)
    begin = time.perf_counter()
    run_test(model, loader, cfg, device)
    seconds = time.perf_counter() - begin
    views = torch.randint(0, 256, (30, 3, args.frames, args.test_size, args.test_size), dtype=torch.uint8)
    with torch.no_grad():
        model_s = common.time_interleaved({"m": lambda: forward_views(model, views, args.views_per_forward, device,
                                                                      cfg)}, max(2, args.steps // 4), 1, device,
                                          clock="wall")["m"]["median_s"]
    rate = len(loader.dataset) / seconds
    return {"videos": len(loader.dataset), "videos_per_s": rate, "model_only_videos_per_s": 1 / model_s,
            "stall_vs_model_only": 1 - rate * model_s}


def main() -> int:
    parser = common.parser(__doc__, "end_to_end", repeats=0, quick="4 steps, 1 test video", work=True)
    parser.add_argument("--mode", default="fast-nocompile", help="_common.MODES (default: %(default)s)")
    parser.add_argument("--decode-on", nargs="+", choices=["worker", "device"], default=["worker", "device"])
    parser.add_argument("--batch", type=int, default=0, help="default: 8 on cuda, 2 on cpu")
    parser.add_argument("--frames", type=int, default=0, help="default: 32 on cuda, 8 on cpu")
    parser.add_argument("--size", type=int, default=0, help="training crop (default: 224 on cuda, 112 on cpu)")
    parser.add_argument("--test-size", type=int, default=0, help="test crop (default: 256 on cuda, 128 on cpu)")
    parser.add_argument("--width", type=int, default=64, help="RESNET.WIDTH_PER_GROUP (8: a toy ResNet)")
    parser.add_argument("--views-per-forward", type=int, default=0, help="default: 30 on cuda, 6 on cpu")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (default: min(8, cores - 1))")
    parser.add_argument("--test-videos", type=int, default=0, help="default: 16 on cuda, 4 on cpu")
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (default: 40 on cuda, 20 on cpu)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps of the model alone")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    device = common.start(args, threads=0 if cuda else 1)  # on a CPU the loader workers get the other cores
    args.batch, args.frames = args.batch or (8 if cuda else 2), args.frames or (32 if cuda else 8)
    args.size, args.test_size = args.size or (224 if cuda else 112), args.test_size or (256 if cuda else 128)
    args.views_per_forward = args.views_per_forward or (30 if cuda else 6)
    args.workers = args.workers or max(1, min(8, (os.cpu_count() or 2) - 1))
    args.steps, args.test_videos = args.steps or (40 if cuda else 20), args.test_videos or (16 if cuda else 4)
    if args.quick:
        args.steps, args.warmup, args.test_videos = 4, 1, 1
    with common.work_folder(args.work, "bench_e2e_") as work:
        common.say("writing frame folders ...")
        data = common.make_frame_data(work, max(2, args.test_videos), 64 if args.quick else 150)
        args.opts = ["RESNET.WIDTH_PER_GROUP", str(args.width), "DATA.PATH_TO_DATA_DIR", data["lists"],
                     "DATA.PATH_PREFIX", data["root"], "DATA_LOADER.NUM_WORKERS", str(args.workers),
                     "MODEL.NUM_CLASSES", "2", "TEST.BATCH_SIZE", "1", "TEST.NUM_ENSEMBLE_VIEWS", "10",
                     "TEST.NUM_SPATIAL_CROPS", "3", "DATA.TEST_CROP_SIZE", str(args.test_size),
                     "TEST.VIEWS_PER_FORWARD", str(args.views_per_forward), "SOLVER.MAX_EPOCH", "2"]
        path = os.path.join(data["lists"], "train.txt")  # an epoch of --steps batches: the folders over and over
        entries = read_manifest(path)
        write_manifest(path, [entries[i % len(entries)] for i in range(args.steps * args.batch)])
        result = {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "work", "opts")},
                  "train": train(args, data, device), "test": test(args, data, device)}
    rows = [["model only (fixed batch)", f"{result['train']['model_only_clips_per_s']:.2f}", "", ""]]
    rows += [[f"loader, {k}", f"{r['clips_per_s']:.2f}", f"{100 * r['data_wait_fraction']:.1f}%",
              f"{100 * r['stall_vs_model_only']:.1f}%"] for k, r in result["train"].items() if k.startswith("DECODE")]
    t = result["test"]
    text = (f"Training, R-50 + 1 CGNL, mode {args.mode}, batch {args.batch}, {args.frames}x{args.size}x{args.size}, "
            f"{args.workers} workers:\n\n" + common.markdown_table(["input", "clips/s", "time waiting for data",
                                                                  "stall vs model only"], rows)
            + f"\n\nMulti-view test, 30 views of {args.frames}x{args.test_size}x{args.test_size}, {t['videos']} "
            f"videos: {t['videos_per_s']:.3f} videos/s end to end, {t['model_only_videos_per_s']:.3f} model only, "
            f"stall {100 * t['stall_vs_model_only']:.1f}%")
    return common.report(args, device, result, text)


if __name__ == "__main__":
    raise SystemExit(main())
