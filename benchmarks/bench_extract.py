#!/usr/bin/env python
"""Frame extraction speed: data_prep/extract_frames.py with each video decoder, against
the ffmpeg command line.

    apt-get update && apt-get install -y ffmpeg
    python benchmarks/bench_extract.py

On generated H.264 videos (480x360, 30 fps, 10 s): calibrates the PIL quality matching
ffmpeg's ``-q:v 2`` by file size; for 1 core and all cores runs ffmpeg (one single-threaded
process per video) and ``extract_frames.py --workers <cores>`` per decoder, pinned with
sched_setaffinity, round-robin, best of ``--repeats`` (wall time includes process start);
then decoding alone in this process (one thread, median CPU time) and each decoder's
difference from PyAV. Checks the frame counts, prints tables and writes JSON.
"""

import io
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Sequence

import _common as common
import numpy as np

from cgnl_video.prep import video_io
from cgnl_video.prep.synthetic import encode_mp4


def make_videos(folder: str, count: int, seconds: int) -> List[str]:
    """``count`` H.264 videos of 480x360 at 30 fps (``_common.synthetic_frames``)."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"video_{v:02d}.mp4") for v in range(count)]
    for v, path in enumerate(paths):
        if not os.path.exists(path):
            encode_mp4(path, common.synthetic_frames(seconds * 30, v, 360, 480), 30, preset="veryfast", crf=20)
    return paths


def pinned(cores: Sequence[int]):
    """preexec_fn pinning a child process to ``cores``."""
    return lambda: os.sched_setaffinity(0, set(cores))


def ffmpeg_command(video: str, out: str) -> List[str]:
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", video, "-filter_threads", "1",
            "-vf", "scale=-2:256", "-threads", "1", "-q:v", "2", os.path.join(out, "%06d.jpg")]


def run_ffmpeg(videos: List[str], dst: str, cores: Sequence[int]) -> float:
    """Seconds for ffmpeg to extract all videos, one process per video, len(cores) at a time."""

    def one(video: str) -> None:
        out = os.path.join(dst, os.path.splitext(os.path.basename(video))[0])
        os.makedirs(out)
        subprocess.run(ffmpeg_command(video, out), check=True, preexec_fn=pinned(cores))

    start = time.perf_counter()
    with ThreadPoolExecutor(len(cores)) as pool:
        list(pool.map(one, videos))
    return time.perf_counter() - start


def run_ours(src: str, dst: str, cores: Sequence[int], quality: int, decoder: str) -> float:
    command = [sys.executable, os.path.join(common.REPO, "data_prep", "extract_frames.py"), "--src", src, "--dst", dst,
               "--short-side", "256", "--quality", str(quality), "--workers", str(len(cores)), "--no-progress",
               "--decoding-backend", decoder]
    start = time.perf_counter()
    subprocess.run(command, check=True, preexec_fn=pinned(cores), stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def children_cpu_seconds() -> float:
    """CPU time (user + system) used so far by finished child processes and theirs."""
    times = os.times()
    return times.children_user + times.children_system


def count_jpegs(folder: str) -> int:
    return sum(name.endswith(".jpg") for _, _, files in os.walk(folder) for name in files)


def calibrate_quality(video: str, work: str) -> Dict[str, float]:
    """The PIL quality whose mean JPEG size matches ``ffmpeg -q:v 2`` on ``video``."""
    from PIL import Image

    out = os.path.join(work, "calibrate")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    subprocess.run(ffmpeg_command(video, out), check=True)
    names = sorted(os.listdir(out))
    ffmpeg_bytes = float(np.mean([os.path.getsize(os.path.join(out, n)) for n in names]))
    info = video_io.probe(video)
    size = video_io.output_size(info.width, info.height, 256)
    frames = np.concatenate(list(video_io.frames_with_pyav(video, size, None, info.fps)))
    sample = frames[:: max(1, len(frames) // 30)]
    sizes = {}
    for quality in range(80, 99):
        total = 0
        for frame in sample:
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
            total += buffer.tell()
        sizes[quality] = total / len(sample)
    best = min(sizes, key=lambda q: abs(sizes[q] - ffmpeg_bytes))
    return {"quality": best, "ffmpeg_mean_bytes": ffmpeg_bytes, "pil_mean_bytes": sizes[best]}


def available_decoders() -> List[str]:
    """decord (where installed), PyAV, and torchcodec where it can decode here."""
    from cgnl_video.utils.decord_support import load_decord
    from cgnl_video.utils.torchcodec_support import TorchCodecUnavailable, load_torchcodec

    decoders = (["decord"] if load_decord() is not None else []) + ["pyav"]
    try:
        load_torchcodec()
        decoders.append("torchcodec")
    except TorchCodecUnavailable as error:
        common.say(f"torchcodec not measured: {error}")
    return decoders


def bench_end_to_end(videos: List[str], src: str, work: str, quality: int, decoders: List[str],
                     repeats: int) -> List[Dict]:
    """ffmpeg and extract_frames with each decoder, round-robin, on 1 and on all cores."""
    cores = sorted(os.sched_getaffinity(0))
    tools = ["ffmpeg"] + decoders
    rows = []
    for n in sorted({1, len(cores)}):
        use = cores[:n]
        times: Dict[str, List[float]] = {tool: [] for tool in tools}
        cpu: Dict[str, List[float]] = {tool: [] for tool in tools}
        frames = {}
        for repeat in range(repeats):
            for tool in tools:
                dst = os.path.join(work, f"{tool}_{n}_{repeat}")
                shutil.rmtree(dst, ignore_errors=True)
                os.makedirs(dst)
                before = children_cpu_seconds()
                if tool == "ffmpeg":
                    times[tool].append(run_ffmpeg(videos, dst, use))
                else:
                    times[tool].append(run_ours(src, dst, use, quality, tool))
                cpu[tool].append(children_cpu_seconds() - before)
                frames[tool] = count_jpegs(dst)
                shutil.rmtree(dst)
        if len(set(frames.values())) != 1:
            sys.exit(f"frame counts differ: {frames}")
        for tool in tools:
            best = min(times[tool])
            rows.append({"cores": n, "tool": tool, "frames": frames[tool], "seconds": best,
                         "fps": frames[tool] / best, "fps_per_cpu_second": frames[tool] / min(cpu[tool]),
                         "ratio_vs_ffmpeg": min(times["ffmpeg"]) / best})
    return rows


IMPORTS = {"decord": "import decord", "pyav": "import av", "torchcodec": "import torchcodec.decoders"}


def import_cpu_seconds(decoders: List[str], repeats: int) -> Dict[str, float]:
    """CPU seconds a fresh Python process spends importing each decoder (median): the
    start-up cost extract_frames pays in its parent and in every worker process."""
    spent: Dict[str, List[float]] = {d: [] for d in decoders}
    for _ in range(repeats):
        for decoder in decoders:
            before = children_cpu_seconds()
            subprocess.run([sys.executable, "-c", IMPORTS[decoder]], check=True)
            spent[decoder].append(children_cpu_seconds() - before)
    return {d: float(np.median(t)) for d, t in spent.items()}


def bench_decoding(videos: List[str], decoders: List[str], repeats: int) -> Dict:
    """Decode + resize to short side 256 of every video, per decoder, in this process."""
    readers = {"decord": video_io.frames_with_decord, "pyav": video_io.frames_with_pyav,
               "torchcodec": video_io.frames_with_torchcodec}
    info = video_io.probe(videos[0])
    size = video_io.output_size(info.width, info.height, 256)
    total = {"frames": 0}

    def decode_all(decoder: str) -> Callable[[], None]:
        def run() -> None:
            total["frames"] = sum(len(chunk) for video in videos
                                  for chunk in readers[decoder](video, size, None, info.fps))
        return run

    times = common.time_interleaved({d: decode_all(d) for d in decoders}, repeats, warmup=1, clock="cpu")
    first = {d: np.concatenate(list(readers[d](videos[0], size, None, info.fps))).astype(np.float32)
             for d in decoders}
    return {
        "frames": total["frames"], "size": list(size),
        "fps_per_cpu_second": {d: total["frames"] / t["cpu_median_s"] for d, t in times.items()},
        "fps_wall": {d: total["frames"] / t["wall_median_s"] for d, t in times.items()},
        "mean_abs_diff_vs_pyav": {d: float(np.abs(first[d] - first["pyav"]).mean()) for d in decoders},
    }


def markdown(result: Dict) -> str:
    calibration = result["calibration"]
    lines = [f"{result['videos']}; short side 256; ffmpeg -q:v 2 ~ PIL quality {calibration['quality']} "
             f"({calibration['ffmpeg_mean_bytes']:.0f} vs {calibration['pil_mean_bytes']:.0f} bytes/frame)", ""]
    table = [[row["cores"], "ffmpeg" if row["tool"] == "ffmpeg" else f"extract_frames, {row['tool']}",
              f"{row['fps']:.0f}", f"{row['ratio_vs_ffmpeg']:.2f}x", f"{row['fps_per_cpu_second']:.0f}"]
             for row in result["end_to_end"]]
    lines.append(common.markdown_table(["cores", "tool", "frames/s", "vs ffmpeg", "frames per CPU-second"], table,
                                       align="rlrrr"))
    decoding = result["decoding"]
    rates = decoding["fps_per_cpu_second"]
    base = rates.get("decord", rates["pyav"])
    startup = result["import_cpu_seconds"]
    lines += ["", "CPU seconds to import the decoder in a fresh process (extract_frames pays it in the parent "
              "and in each worker): " + ", ".join(f"{d} {t:.2f}" for d, t in startup.items())]
    lines += ["", f"Decoding + resizing to {decoding['size'][0]}x{decoding['size'][1]} only, one thread "
              f"({decoding['frames']} frames, median CPU time of {result['repeats_decoding']} round-robin runs):", ""]
    lines.append(common.markdown_table(
        ["decoder", "frames per CPU-second", "vs decord", "frames/s (wall)", "mean abs diff vs PyAV (levels)"],
        [[d, f"{r:.0f}", f"{r / base:.2f}x", f"{decoding['fps_wall'][d]:.0f}",
          f"{decoding['mean_abs_diff_vs_pyav'][d]:.2f}"] for d, r in rates.items()]))
    return "\n".join(lines)


def main() -> int:
    parser = common.parser(__doc__, "extract", repeats=2, device=False, work=True)
    parser.add_argument("--videos", type=int, default=8, help="number of test videos (default: %(default)s)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each video (default: %(default)s)")
    parser.add_argument("--decode-repeats", type=int, default=5,
                        help="round-robin runs of the decoding-only part, median counts (default: %(default)s)")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg not found: install it with  apt-get update && apt-get install -y ffmpeg")
    device = common.start(args, threads=1)
    with common.work_folder(args.work, "bench_extract_") as work:
        src = os.path.join(work, "videos")
        videos = make_videos(src, args.videos, args.seconds)
        calibration = calibrate_quality(videos[0], work)
        decoders = available_decoders()
        result = {
            "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0],
            "videos": f"{args.videos} x {args.seconds} s H.264 480x360 30 fps", "calibration": calibration,
            "repeats_decoding": args.decode_repeats,
            "decoding": bench_decoding(videos, decoders, args.decode_repeats),
            "import_cpu_seconds": import_cpu_seconds(decoders, 3),
            "end_to_end": bench_end_to_end(videos, src, work, int(calibration["quality"]), decoders, args.repeats),
        }
    return common.report(args, device, result, markdown(result), decoders=True)


if __name__ == "__main__":
    raise SystemExit(main())
