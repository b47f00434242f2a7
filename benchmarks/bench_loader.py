#!/usr/bin/env python
"""Data loading speed: cgnl_video.data against naive baselines, in the same run.

    python benchmarks/bench_loader.py

One process, one torch thread (what one DataLoader worker does), generated inputs:
1. training clips from 340x256 JPEG frame folders (32 of 64 frames, random box to 224,
   flip): ``VideoDataset("train")`` against per-frame PIL + torchvision transforms, with
   the same frames, boxes and flips;
2. 30-view test samples of a 10 s H.264 video, two GOP lengths (250 and 30):
   ``VideoDataset("test")`` decoding the video once (decord, PyAV, torchcodec where
   installed) against each view decoded on its own as PySlowFast does (PyAV seek + decode).
Decoders single-threaded; methods round-robin (``_common.time_interleaved``), medians of
``--repeats`` by wall and CPU time. Writes benchmarks/results/loader.json.
"""

import os
import sys
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

HEIGHT, WIDTH, FPS = 256, 340, 30


# ----------------------------------------------------------------------------- inputs


def write_h264(path: str, frames: np.ndarray, gop: int) -> None:
    """H.264 (x264 veryfast, crf 20) mp4 with keyframes at most ``gop`` frames apart."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast", "g": str(gop)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def bench_cfg(data_dir: str, root: str, backend: str = "decord"):
    from cgnl_video.config import get_cfg

    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.PATH_PREFIX = data_dir, root
    cfg.DATA.DECODING_BACKEND = backend
    return cfg


# ----------------------------------------------------------------------------- training clips


def train_plans(dataset, count: int) -> List[Tuple[int, List[int], Tuple[int, int, int, int], bool]]:
    """(video, frame indices, box, flip) of clip ``k`` = video ``k % videos`` in epoch
    ``k // videos``, drawn by the dataset's own ``RandomClip.draw``."""
    from cgnl_video.data import sampling

    plans = []
    for clip in range(count):
        epoch, video = divmod(clip, len(dataset))
        generator = sampling.item_generator(dataset.seed, epoch, video)
        choice = dataset.policy.draw(generator, dataset.entries[video].num_frames, lambda frames: (HEIGHT, WIDTH))
        plans.append((video, choice.frames, choice.box, choice.flip))
    return plans


def per_frame_pil(dataset, video: int, frames: List[int], box, flip: bool) -> torch.Tensor:
    """The naive clip: every frame opened with PIL and transformed on its own."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    from cgnl_video.data.decode import frame_file_name

    policy = dataset.policy
    size = [policy.crop_size] * 2
    out = []
    for index in frames:
        with Image.open(os.path.join(dataset.path_of(video), frame_file_name(index))) as image:
            image = TF.resized_crop(image.convert("RGB"), *box, size, antialias=True)
        if flip:
            image = TF.hflip(image)
        out.append(TF.normalize(TF.to_tensor(image), policy.mean, policy.std))
    return torch.stack(out, dim=1)


def bench_train(work: str, videos: int, clips: int, repeats: int) -> Dict:
    from cgnl_video.data import ManifestEntry, build_dataset, write_classes, write_manifest

    root = os.path.join(work, "frames")
    length = 150
    entries = []
    for v in range(videos):
        common.write_folder(os.path.join(root, f"video_{v:02d}"), common.synthetic_frames(length, v))
        entries.append(ManifestEntry(f"video_{v:02d}", 0, length))
    lists = os.path.join(work, "frame_lists")
    write_classes(os.path.join(lists, "classes.txt"), ["only"])
    write_manifest(os.path.join(lists, "train.txt"), entries)
    dataset = build_dataset(bench_cfg(lists, root), "train")
    plans = train_plans(dataset, clips)

    def ours() -> None:
        for clip in range(clips):
            epoch, video = divmod(clip, len(dataset))
            dataset.set_epoch(epoch)
            dataset[video]

    dataset.set_epoch(0)
    ours0 = dataset[0][0]  # the same clip as plans[0]
    check = {"per-frame PIL": float((per_frame_pil(dataset, *plans[0]) - ours0).abs().mean())}
    methods: Dict[str, Callable[[], None]] = {
        "ours (VideoDataset)": ours,
        "per-frame PIL + torchvision": lambda: [per_frame_pil(dataset, *p) for p in plans],
    }
    jpeg_bytes = np.mean([e.stat().st_size for e in os.scandir(os.path.join(root, "video_00"))])
    return {
        "clips": clips, "repeats": repeats, "frame_size": [HEIGHT, WIDTH], "mean_jpeg_bytes": float(jpeg_bytes),
        "clips_per_s": timed(methods, repeats, clips),
        "mean_abs_diff_vs_ours": check,
    }


# ----------------------------------------------------------------------------- test views


def per_view_pyav(path: str, start: int, window: int, rate: int, box, mean, std) -> Tuple[torch.Tensor, int]:
    """One view decoded on its own: seek to the keyframe before the window, decode to
    its end, keep every ``rate``-th frame, crop, normalise. Returns (view, frames decoded)."""
    import av

    from cgnl_video.data import transforms

    kept, decoded = [], 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # one core, like every method here
        seconds_per_pts = float(stream.time_base)
        container.seek(int(start / FPS / seconds_per_pts), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            decoded += 1
            index = round(frame.pts * seconds_per_pts * FPS)
            if index >= start + window:
                break
            if index >= start and (index - start) % rate == 0:
                kept.append(frame.to_ndarray(format="rgb24"))
    frames = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2)
    top, left, height, width = box
    view = transforms.normalize_clip(frames[:, :, top:top + height, left:left + width], mean, std)
    return view, decoded


def per_view_sample(dataset, path: str, mean, std) -> Tuple[torch.Tensor, int]:
    """All views of one video, each decoded separately (PySlowFast style)."""
    import av

    from cgnl_video.data import sampling

    with av.open(path) as container:
        total = container.streams.video[0].frames
    policy = dataset.policy
    starts = sampling.test_clip_starts(total, policy.window, policy.num_clips)
    boxes = sampling.spatial_crop_boxes(HEIGHT, WIDTH, policy.num_crops)
    views, decoded = [], 0
    for start in starts:
        for box in boxes:
            view, count = per_view_pyav(path, start, policy.window, policy.sampling_rate, box, mean, std)
            views.append(view)
            decoded += count
    return torch.stack(views), decoded


def decode_once_count(dataset, path: str, backend: str) -> int:
    """Frames the decode-once path decodes for one video (requested frames for decord)."""
    from cgnl_video.data import sampling
    from cgnl_video.data.decode import VideoFileReader

    policy = dataset.policy
    with VideoFileReader(path, backend) as reader:
        total = reader.num_frames
        starts = sampling.test_clip_starts(total, policy.window, policy.num_clips)
        clips = [policy.clip_frames(s, total) for s in starts]
        reader.read(sampling.frame_union(clips)[0])
        return reader.frames_decoded


BACKEND_NAMES = {"decord": "decord", "pyav": "PyAV", "torchcodec": "torchcodec"}


def test_backends() -> List[str]:
    """decord and PyAV, plus torchcodec where it can decode here (else said once)."""
    from cgnl_video.utils.torchcodec_support import TorchCodecUnavailable, load_torchcodec

    try:
        load_torchcodec()
    except TorchCodecUnavailable as error:
        print(f"torchcodec not measured: {error}")
        return ["decord", "pyav"]
    return ["decord", "pyav", "torchcodec"]


def bench_test(work: str, repeats: int, gops: List[int], backends: List[str]) -> Dict:
    from cgnl_video.data import ManifestEntry, build_dataset, transforms, write_classes, write_manifest

    root = os.path.join(work, "videos")
    os.makedirs(root, exist_ok=True)
    frames = common.synthetic_frames(10 * FPS, 99)
    lists = os.path.join(work, "video_lists")
    write_classes(os.path.join(lists, "classes.txt"), ["only"])
    results = {}
    for gop in gops:
        name = f"gop{gop}.mp4"
        write_h264(os.path.join(root, name), frames, gop)
        write_manifest(os.path.join(lists, "test.txt"), [ManifestEntry(name, 0)])
        ours = {b: build_dataset(bench_cfg(lists, root, b), "test") for b in backends}
        path = ours["decord"].path_of(0)
        data_cfg = bench_cfg(lists, root).DATA
        mean, std = data_cfg.MEAN, data_cfg.STD
        reference = transforms.normalize_uint8(ours["decord"][0][0], mean, std)
        baseline, baseline_decoded = per_view_sample(ours["decord"], path, mean, std)
        check = float((baseline - reference).abs().mean())
        del baseline, reference
        views = {backend: dataset[0][0] for backend, dataset in ours.items()}
        same = {backend: bool(torch.equal(v, views["pyav"])) for backend, v in views.items()}
        del views
        methods: Dict[str, Callable[[], object]] = {
            f"ours, decode once ({BACKEND_NAMES[b]})": (lambda dataset=dataset: dataset[0])
            for b, dataset in ours.items()
        }
        methods["per view (PyAV seek + decode)"] = lambda: per_view_sample(ours["decord"], path, mean, std)
        decoded = {f"ours, decode once ({BACKEND_NAMES[b]})": decode_once_count(ours[b], path, b) for b in ours}
        decoded["per view (PyAV seek + decode)"] = baseline_decoded
        results[f"keyint {gop}"] = {
            "views": int(ours["decord"][0][0].shape[0]),
            "videos_per_s": timed(methods, repeats, 1),
            "decoded_frames": decoded,
            "mean_abs_diff_vs_ours": check,
            "views_equal_to_pyav": same,
        }
    return results


# ----------------------------------------------------------------------------- running


def timed(methods: Dict[str, Callable[[], object]], repeats: int, items: int) -> Dict[str, Dict[str, float]]:
    """Items per second of each method, run round-robin (``_common.time_interleaved``):
    by the median wall time and by the median CPU time of this process (user + system).
    CPU time leaves out the time spent waiting for a core: the steadier measure on a
    shared machine."""
    times = common.time_interleaved(methods, repeats, clock="wall")
    return {name: {"wall": items / t["wall_median_s"], "cpu": items / t["cpu_median_s"]}
            for name, t in times.items()}


def rows(rates: Dict[str, Dict[str, float]], ours: str, extra: Dict[str, int]) -> List[List[object]]:
    """Table rows: rate by wall and CPU time, how much faster ours is, optional count."""
    out = []
    for name, rate in rates.items():
        row = [name, f"{rate['wall']:.2f}", f"{rate['cpu']:.2f}",
               f"{rates[ours]['wall'] / rate['wall']:.2f}x", f"{rates[ours]['cpu'] / rate['cpu']:.2f}x"]
        if extra:
            row.append(f"{extra[name]}{' (requested)' if 'decord' in name or 'torchcodec' in name else ''}")
        out.append(row)
    return out


def markdown(result: Dict) -> str:
    train = result["train"]
    header = ["method", "{unit}/s (wall)", "{unit}/s (CPU)", "ours is (wall)", "ours is (CPU)"]
    lines = [
        f"Training clips per second per worker process ({train['clips']} clips, 32 of 64 frames, "
        f"{train['frame_size'][1]}x{train['frame_size'][0]} JPEG frames, 224 crop; median of "
        f"{train['repeats']}):",
        "",
        common.markdown_table([h.format(unit="clips") for h in header],
                              rows(train["clips_per_s"], "ours (VideoDataset)", {})),
        "",
        "Test videos per second, 30 views (10 clips x 3 crops, 32 of 64 frames, 256 crops) of a "
        "10 s, 30 fps, 340x256 H.264 video:",
    ]
    for video, row in result["test"].items():
        table = rows(row["videos_per_s"], "ours, decode once (decord)", row["decoded_frames"])
        lines += ["", f"{video}:", "",
                  common.markdown_table([h.format(unit="videos") for h in header] + ["decoded frames"], table)]
    return "\n".join(lines)


def main() -> int:
    parser = common.script_parser(__doc__, "loader", work=True)
    parser.add_argument("--videos", type=int, default=6, help="frame folders of 150 frames")
    parser.add_argument("--clips", type=int, default=30, help="training clips per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each method (median)")
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 30], help="keyframe intervals of the test video")
    args = parser.parse_args()

    torch.set_num_threads(1)  # as in a DataLoader worker
    with common.work_folder(args.work, "bench_loader_") as work:
        result = {
            "machine": common.machine_info(torch.device("cpu")),
            "decoders": common.decoder_versions(),
            "load_average": common.load_average(),
            "command": common.command_line(),
            "train": bench_train(work, args.videos, args.clips, args.repeats),
            "test": bench_test(work, args.repeats, args.gops, test_backends()),
        }
    return common.report(args.json, result, markdown(result))

if __name__ == "__main__":
    raise SystemExit(main())
