#!/usr/bin/env python
"""Data loading speed, one process with one torch thread (what one DataLoader worker does).

    python benchmarks/bench_loader.py               # our loader against naive baselines
    python benchmarks/bench_loader.py --decode-on   # DATA.DECODE_ON worker against device

Default, generated inputs: 1. training clips from 340x256 JPEG frame folders:
``VideoDataset("train")`` against per-frame PIL + torchvision with the same frames, boxes
and flips; 2. 30-view test samples of a 10 s H.264 video (GOP 250 and 30): decoded once
(decord, PyAV, torchcodec where it runs) against each view on its own (PyAV seek + decode,
as PySlowFast). ``--decode-on``: on 602x256 frames, worker CPU-s per training clip in
both modes (device mode: read bytes and ``collate_encoded``; its decode in the training
process by ``batch_to_device``, checked equal), per validation and test item, and
``gpu_augment.decode_frames`` frames/s on the device against one CPU thread.
"""

import os
from typing import Callable, Dict, List

import _common as common
import numpy as np
import torch
from torch.utils.data import default_collate

from cgnl_video.config import get_cfg
from cgnl_video.data import build_dataset, gpu_augment, sampling, transforms
from cgnl_video.data.decode import VideoFileReader, frame_file_name
from cgnl_video.engine.inputs import batch_to_device

HEIGHT, WIDTH, FPS = 256, 340, 30


def datasets(data: Dict[str, str], split: str, **keys) -> Dict[str, object]:
    """The ``split`` dataset for each value of each DATA key in ``keys`` (key -> values)."""
    out = {}
    for key, values in keys.items():
        for value in values:
            cfg = get_cfg()
            cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.PATH_PREFIX = data["lists"], data["root"]
            setattr(cfg.DATA, key, value)
            out[value] = build_dataset(cfg, split)
    return out


def clips(dataset, count: int, batch: int = 0, collate: Callable = default_collate) -> List:
    """Clip k = video k % videos in epoch k // videos; collated by ``batch`` if given."""
    items, batches = [], []
    for k in range(count):
        dataset.set_epoch(k // len(dataset))
        items.append(dataset[k % len(dataset)])
        if batch and len(items) == batch:
            batches, items = batches + [collate(items)], []
    return batches or items


def per_frame_pil(dataset, k: int) -> torch.Tensor:
    """The naive training clip k: every frame opened with PIL and transformed on its own,
    with the frames, box and flip the dataset draws (``RandomClip.draw``)."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    epoch, video = divmod(k, len(dataset))
    policy = dataset.policy
    choice = policy.draw(sampling.item_generator(dataset.seed, epoch, video), dataset.entries[video].num_frames,
                         lambda frames: (HEIGHT, WIDTH))
    out = []
    for index in choice.frames:
        with Image.open(os.path.join(dataset.path_of(video), frame_file_name(index))) as image:
            image = TF.resized_crop(image.convert("RGB"), *choice.box, [policy.crop_size] * 2, antialias=True)
        image = TF.hflip(image) if choice.flip else image
        out.append(TF.normalize(TF.to_tensor(image), policy.mean, policy.std))
    return torch.stack(out, dim=1)


def per_view_pyav(path: str, policy, mean, std) -> int:
    """Every view decoded on its own: seek to the keyframe before its window, decode to its
    end, keep every ``sampling_rate``-th frame, crop, normalise. Returns the frames decoded."""
    import av

    decoded = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count, total, unit = 1, stream.frames, float(stream.time_base)
        for start in sampling.test_clip_starts(total, policy.window, policy.num_clips):
            for top, left, height, width in sampling.spatial_crop_boxes(HEIGHT, WIDTH, policy.num_crops):
                kept = []
                container.seek(int(start / FPS / unit), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    decoded, index = decoded + 1, round(frame.pts * unit * FPS)
                    if index >= start + policy.window:
                        break
                    if index >= start and (index - start) % policy.sampling_rate == 0:
                        kept.append(frame.to_ndarray(format="rgb24"))
                frames = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2)
                transforms.normalize_clip(frames[:, :, top:top + height, left:left + width], mean, std)
    return decoded


def write_h264(path: str, frames: np.ndarray, gop: int) -> None:
    """H.264 (x264 veryfast, crf 20) with keyframes at most ``gop`` frames apart."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "g": str(gop)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def loader_vs_naive(args, work: str) -> Dict:
    from cgnl_video.data import ManifestEntry, write_manifest
    from cgnl_video.utils.torchcodec_support import TorchCodecUnavailable, load_torchcodec

    data = common.make_frame_data(work, args.videos, 64 if args.quick else 150)
    train = datasets(data, "train", DECODE_ON=["worker"])["worker"]
    diff = float((per_frame_pil(train, 0) - clips(train, 1)[0][0]).abs().mean())
    times = common.time_interleaved({"ours (VideoDataset)": lambda: clips(train, args.clips),
                                     "per-frame PIL + torchvision": lambda: [per_frame_pil(train, k) for k in
                                                                             range(args.clips)]}, args.repeats)
    result = {"train": {"clips_per_s": {k: args.clips / t["median_s"] for k, t in times.items()},
                        "mean_abs_diff_vs_ours": diff}}
    backends = ["decord", "pyav"]
    try:
        load_torchcodec()
        backends.append("torchcodec")
    except TorchCodecUnavailable as error:
        common.say(f"torchcodec not measured: {error}")
    frames = common.synthetic_frames(10 * FPS, 99)
    for gop in args.gops:
        video = os.path.join(data["root"], f"gop{gop}.mp4")
        write_h264(video, frames, gop)
        write_manifest(os.path.join(data["lists"], "test.txt"), [ManifestEntry(os.path.basename(video), 0)])
        ours = datasets(data, "test", DECODING_BACKEND=backends)
        policy, cfg = ours["pyav"].policy, get_cfg()
        cases = {f"decode once, {b}": (lambda d=d: d[0]) for b, d in ours.items()}
        cases["per view, PyAV seek + decode"] = lambda: per_view_pyav(video, policy, cfg.DATA.MEAN, cfg.DATA.STD)
        times = common.time_interleaved(cases, args.repeats)
        decoded = {"per view, PyAV seek + decode": per_view_pyav(video, policy, cfg.DATA.MEAN, cfg.DATA.STD)}
        for backend in backends:
            with VideoFileReader(video, backend) as reader:
                starts = sampling.test_clip_starts(reader.num_frames, policy.window, policy.num_clips)
                reader.read(sampling.frame_union([policy.clip_frames(s, reader.num_frames) for s in starts])[0])
                decoded[f"decode once, {backend}"] = reader.frames_decoded
        views = {b: d[0][0] for b, d in ours.items()}
        same = {b: bool(torch.equal(v, views["pyav"])) for b, v in views.items()}
        result[f"GOP {gop}"] = {"videos_per_s": {k: 1 / t["median_s"] for k, t in times.items()},
                                "decoded_frames": decoded, "views_equal_to_pyav": same}
    return result


def decode_on(args, work: str, device: torch.device) -> Dict:
    data = common.make_frame_data(work, args.videos, 64 if args.quick else 150, 256, 602)
    train = datasets(data, "train", DECODE_ON=["worker", "device"])
    batch = 2 if args.quick else 8
    encoded = clips(train["device"], args.clips, batch, gpu_augment.collate_encoded)
    cases = {"worker mode: worker (decode, augment, collate)": lambda: clips(train["worker"], args.clips, batch),
             "device mode: worker (read bytes, collate)":
                 lambda: clips(train["device"], args.clips, batch, gpu_augment.collate_encoded),
             f"device mode: training process on {device.type} (decode, augment)":
                 lambda: [batch_to_device(one, train["device"], device, get_cfg()) for one in encoded]}
    times = common.time_interleaved(cases, args.repeats, device=device, clock="cpu")
    cpu, cfg = torch.device("cpu"), get_cfg()
    worst = max(float((batch_to_device(e, train["device"], device, cfg)[0].cpu()
                       - batch_to_device(w, train["worker"], cpu, cfg)[0]).abs().max())
                for e, w in zip(encoded, clips(train["worker"], args.clips, batch)))
    result = {"train_cpu_s_per_clip": {k: t["median_s"] / args.clips for k, t in times.items()},
              "max_abs_diff_device_vs_worker": worst}
    if device.type == "cuda":  # the training process's figure: wall time on the GPU
        result["train_process_gpu_wall_s_per_clip"] = times[list(cases)[2]]["wall_median_s"] / args.clips
    for split in ("val", "test"):
        both = datasets(data, split, DECODE_ON=["worker", "device"])
        count = max(1, args.clips // 4) if split == "val" else 1
        times = common.time_interleaved({m: (lambda d=d: clips(d, count)) for m, d in both.items()}, args.repeats,
                                        clock="cpu")
        result[f"{split}_cpu_s_per_item"] = {m: t["median_s"] / count for m, t in times.items()}
    jpegs = gpu_augment.read_encoded_clip(train["device"].path_of(0), range(16 if args.quick else 256))
    decoders = {f"decode_frames on {device.type}": lambda: gpu_augment.decode_frames(jpegs, device)}
    if device.type == "cuda":
        decoders["decode_frames on the CPU"] = lambda: gpu_augment.decode_frames(jpegs, torch.device("cpu"))
    times = common.time_interleaved(decoders, args.repeats, device=device, clock="wall")
    result["jpeg_frames_per_s"] = {k: len(jpegs) / t["median_s"] for k, t in times.items()}
    return result


def markdown(result: Dict) -> str:
    if "train_cpu_s_per_clip" in result:
        rows = [[k, f"{v:.4f}"] for k, v in result["train_cpu_s_per_clip"].items()]
        rows += [[f"{split} item, {mode} mode", f"{v:.4f}"] for split in ("val", "test")
                 for mode, v in result[f"{split}_cpu_s_per_item"].items()]
        rows += [[k + " (frames/s, wall)", f"{v:.0f}"] for k, v in result["jpeg_frames_per_s"].items()]
        return (common.markdown_table(["training clip / item (602x256 frames)", "CPU-s per clip or item"], rows)
                + f"\n\nLargest difference device vs worker batch: {result['max_abs_diff_device_vs_worker']:g}")
    rows = [["training clips/s", k, f"{v:.2f}", ""] for k, v in result["train"]["clips_per_s"].items()]
    rows += [[f"test videos/s, {gop}", k, f"{v:.2f}", row["decoded_frames"][k]] for gop, row in result.items()
             if gop.startswith("GOP") for k, v in row["videos_per_s"].items()]
    return common.markdown_table(["what", "method", "per s", "decoded frames"], rows, "llrr")


def main() -> int:
    parser = common.parser(__doc__, "loader", repeats=5, quick="2 videos, 4 clips, 2 repeats", work=True)
    parser.add_argument("--decode-on", action="store_true", help="DATA.DECODE_ON worker against device "
                        "(default JSON: results/decode_on.json)")
    parser.add_argument("--videos", type=int, default=6, help="frame folders of 150 frames")
    parser.add_argument("--clips", type=int, default=32, help="training clips per timed run")
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 30], help="keyframe intervals of the test video")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.clips, args.repeats, args.gops = 2, 4, 2, args.gops[-1:]
    if args.decode_on and args.json == os.path.join(common.RESULTS, "loader.json"):
        args.json = os.path.join(common.RESULTS, "decode_on.json")
    device = common.start(args, threads=1)  # one thread, as in a DataLoader worker
    with common.work_folder(args.work, "bench_loader_") as work:
        result = decode_on(args, work, device) if args.decode_on else loader_vs_naive(args, work)
    return common.report(args, device, result, markdown(result), decoders=not args.decode_on)


if __name__ == "__main__":
    raise SystemExit(main())
