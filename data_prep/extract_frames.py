#!/usr/bin/env python
"""Extract every frame of every video under --src as JPEGs under --dst.

VIDEOS/a/b.mp4 -> FRAMES/a/b/000001.jpg, 000002.jpg, ... (1-based), plus
FRAMES/extraction_index.tsv (path, num_frames, fps, width, height of each finished
video) and FRAMES/failures.txt (path, status, reason). Rerunning skips finished
videos and redoes unfinished ones. Videos are decoded with decord where it is
installed, else with PyAV; --decoding-backend torchcodec uses torchcodec (the
optional extra, which needs FFmpeg's shared libraries), pyav PyAV only. See
docs/DATA_PREP.md.
"""

import argparse
import logging
import os
import sys

from cgnl_video.config.choices import DECODING_BACKENDS
from cgnl_video.prep.extract import ExtractOptions, default_workers, extract_all, read_video_list
from cgnl_video.utils.torchcodec_support import TorchCodecUnavailable, load_torchcodec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder of videos (searched recursively)")
    parser.add_argument("--dst", required=True, help="folder for the frame folders, index and failures file")
    parser.add_argument("--list", help="file of video paths relative to --src, one per line (default: all "
                        "videos below --src with extension .mp4 .avi .mkv .webm .mov)")
    parser.add_argument("--short-side", type=int, default=256,
                        help="resize so that the short side has this many pixels, keeping the aspect "
                        "ratio; 0 keeps the size (default: 256)")
    parser.add_argument("--fps", type=float, default=None,
                        help="output frame rate (default: the native rate, every frame)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-95 (default: 90)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="videos processed in parallel (default: all cores, here %(default)s)")
    parser.add_argument("--decoding-backend", choices=DECODING_BACKENDS, default="decord",
                        help="video decoder tried first; PyAV decodes what it cannot (default: decord, "
                        "PyAV where decord is not installed; torchcodec resizes bilinearly, the others bicubically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 95:
        parser.error("--quality must be in 1..95")
    if args.short_side < 0 or (args.fps is not None and args.fps <= 0) or args.workers < 1:
        parser.error("--short-side must be >= 0, --fps > 0 and --workers >= 1")
    if not os.path.isdir(args.src):
        parser.error(f"--src {args.src} is not a folder")
    if args.decoding_backend == "torchcodec":
        try:
            load_torchcodec()
        except TorchCodecUnavailable as error:
            parser.error(f"--decoding-backend torchcodec: {error}; or use --decoding-backend decord or pyav")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    videos = read_video_list(args.list) if args.list else None
    options = ExtractOptions(short_side=args.short_side, fps=args.fps, quality=args.quality)
    summary = extract_all(args.src, args.dst, videos, options, args.workers, progress=not args.no_progress,
                          decoder=args.decoding_backend)
    print(summary.line())
    if summary.failures:
        print(f"{len(summary.failures)} problem(s) listed in {os.path.join(args.dst, 'failures.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
