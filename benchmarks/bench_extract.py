#!/usr/bin/env python
"""Frame extraction speed: data_prep/extract_frames.py against the ffmpeg command line.

Needs the ffmpeg program (Debian package ffmpeg). Install it first:

    apt-get update && apt-get install -y ffmpeg

Then, from the repository root (after ``pip install -e .``):

    python benchmarks/bench_extract.py

What it does, in one run on the same videos and the same cores:

1. Writes test videos (no download): H.264 mp4 (x264 preset veryfast: CABAC,
   B-frames, like web video), 480x360 at 30 fps, 10 s each, a moving texture with
   noise.
2. Calibrates the JPEG quality: ffmpeg's ``-q:v 2`` has no exact libjpeg quality, so
   the PIL quality whose mean file size on the first video is closest to ffmpeg's is
   used for ``--quality`` (same bytes per frame = a fair comparison).
3. For each core count (1, then all cores): ffmpeg as
   ``ffmpeg -threads 1 -i V -filter_threads 1 -vf scale=-2:256 -threads 1 -q:v 2 OUT/%06d.jpg``,
   one process per video, as many at a time as there are cores; and
   ``extract_frames.py --short-side 256 --workers <cores>``. Both are pinned to the
   cores with sched_setaffinity; wall time includes process start-up; the best of
   ``--repeats`` runs counts.
4. Checks both wrote the same number of frames, prints a table and writes JSON.
"""

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_videos(folder: str, count: int, seconds: int, width: int, height: int, fps: int) -> List[str]:
    """Deterministic test videos: a drifting texture under a moving wave pattern, plus noise."""
    from cgnl_video.prep.synthetic import encode_mp4

    os.makedirs(folder, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for v in range(count):
        path = os.path.join(folder, f"video_{v:02d}.mp4")
        paths.append(path)
        if os.path.exists(path):
            continue
        rng = np.random.default_rng(v)
        texture = np.kron(rng.random((height // 8 + 2, width // 8 + 2, 3)).astype(np.float32) * 255,
                          np.ones((8, 8, 1), np.float32))
        frames = np.empty((seconds * fps, height, width, 3), np.uint8)
        for k in range(len(frames)):
            wave = 127 + 127 * np.sin((xx + 4 * k) / 23.0) * np.cos((yy - 2 * k) / 17.0)
            image = 0.6 * np.roll(texture, 2 * k, axis=1)[:height, :width] + 0.4 * wave[..., None]
            frames[k] = np.clip(image + rng.normal(0, 6, (height, width, 1)), 0, 255).astype(np.uint8)
        encode_mp4(path, frames, fps, preset="veryfast", crf=20)
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


def run_ours(src: str, dst: str, cores: Sequence[int], quality: int) -> float:
    command = [sys.executable, os.path.join(REPO, "data_prep", "extract_frames.py"), "--src", src, "--dst", dst,
               "--short-side", "256", "--quality", str(quality), "--workers", str(len(cores)), "--no-progress"]
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

    from cgnl_video.prep.video_io import frames_with_decord, output_size, probe

    out = os.path.join(work, "calibrate")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    subprocess.run(ffmpeg_command(video, out), check=True)
    names = sorted(os.listdir(out))
    ffmpeg_bytes = float(np.mean([os.path.getsize(os.path.join(out, n)) for n in names]))
    info = probe(video)
    frames = np.concatenate(list(frames_with_decord(video, output_size(info.width, info.height, 256), None, info.fps)))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="number of test videos (default: %(default)s)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each video (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting, best counts (default: %(default)s)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary folder)")
    parser.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results", "extract.json"),
                        help="where to write the results (default: %(default)s)")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg not found: install it with  apt-get update && apt-get install -y ffmpeg")
    cores = sorted(os.sched_getaffinity(0))
    work = args.work or tempfile.mkdtemp(prefix="bench_extract_")
    src = os.path.join(work, "videos")
    videos = make_videos(src, args.videos, args.seconds, 480, 360, 30)
    calibration = calibrate_quality(videos[0], work)
    quality = int(calibration["quality"])
    rows = []
    for n in sorted({1, len(cores)}):
        use = cores[:n]
        times: Dict[str, List[float]] = {"ffmpeg": [], "ours": []}
        cpu: Dict[str, List[float]] = {"ffmpeg": [], "ours": []}
        frames = {}
        for repeat in range(args.repeats):
            for tool in ("ffmpeg", "ours"):
                dst = os.path.join(work, f"{tool}_{n}_{repeat}")
                shutil.rmtree(dst, ignore_errors=True)
                os.makedirs(dst)
                before = children_cpu_seconds()
                if tool == "ffmpeg":
                    times[tool].append(run_ffmpeg(videos, dst, use))
                else:
                    times[tool].append(run_ours(src, dst, use, quality))
                cpu[tool].append(children_cpu_seconds() - before)
                frames[tool] = count_jpegs(dst)
                shutil.rmtree(dst)
        if frames["ffmpeg"] != frames["ours"]:
            sys.exit(f"frame counts differ: {frames}")
        best = {tool: min(t) for tool, t in times.items()}
        rows.append({
            "cores": n, "frames": frames["ours"],
            "ffmpeg_fps": frames["ffmpeg"] / best["ffmpeg"], "ours_fps": frames["ours"] / best["ours"],
            "ffmpeg_seconds": best["ffmpeg"], "ours_seconds": best["ours"],
            "ffmpeg_fps_per_cpu_second": frames["ffmpeg"] / min(cpu["ffmpeg"]),
            "ours_fps_per_cpu_second": frames["ours"] / min(cpu["ours"]),
        })
    for row in rows:
        row["ratio"] = row["ours_fps"] / row["ffmpeg_fps"]
        row["ours_scaling"] = row["ours_fps"] / rows[0]["ours_fps"]
        row["ffmpeg_scaling"] = row["ffmpeg_fps"] / rows[0]["ffmpeg_fps"]
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    result = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
        f"{len(cores)} cores, {platform.system()} {platform.release()}", "python": platform.python_version(),
        "ffmpeg": version, "videos": f"{args.videos} x {args.seconds} s H.264 480x360 30 fps",
        "calibration": calibration, "rows": rows, "load_average_1min_at_end": os.getloadavg()[0],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"{result['videos']}; short side 256; ffmpeg -q:v 2 ~ PIL quality {quality} "
          f"({calibration['ffmpeg_mean_bytes']:.0f} vs {calibration['pil_mean_bytes']:.0f} bytes/frame)")
    print("| cores | ffmpeg frames/s | extract_frames frames/s | ratio | scaling ours / ffmpeg "
          "| frames per CPU-second ffmpeg / ours |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['cores']} | {row['ffmpeg_fps']:.0f} | {row['ours_fps']:.0f} | {row['ratio']:.2f}x "
              f"| {row['ours_scaling']:.2f}x / {row['ffmpeg_scaling']:.2f}x "
              f"| {row['ffmpeg_fps_per_cpu_second']:.0f} / {row['ours_fps_per_cpu_second']:.0f} |")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (other processes on these cores slow both tools)")
    print(f"results written to {args.json}")
    if not args.work:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
