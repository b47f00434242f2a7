#!/usr/bin/env python
"""Generate the small synthetic action dataset (mp4 videos + train/test lists).

OUT/videos/{train,test}/<class>/<class>_<i>.mp4, OUT/annotations/classes.txt and
OUT/annotations/{train,test}.txt ('<path relative to OUT/videos> <class name>').
Deterministic for a seed. Class design: see docs/DATA_PREP.md.
"""

import argparse
import sys
import time

from cgnl_video.prep.synthetic import CLASS_NAMES, SyntheticSpec, make_synthetic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = SyntheticSpec()
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--classes", type=int, default=default.num_classes,
                        help=f"number of classes, 2..{len(CLASS_NAMES)} (default: %(default)s)")
    parser.add_argument("--videos-per-class", type=int, default=default.train_per_class,
                        help="training videos per class (default: %(default)s)")
    parser.add_argument("--test-videos-per-class", type=int, default=default.test_per_class,
                        help="test videos per class (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=default.num_frames,
                        help="frames per video (default: %(default)s)")
    parser.add_argument("--width", type=int, default=default.width, help="frame width, even (default: %(default)s)")
    parser.add_argument("--height", type=int, default=default.height, help="frame height, even (default: %(default)s)")
    parser.add_argument("--fps", type=int, default=default.fps, help="frame rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=default.seed, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    spec = SyntheticSpec(args.classes, args.videos_per_class, args.test_videos_per_class, args.frames,
                         args.width, args.height, args.fps, args.seed)
    start = time.perf_counter()
    try:
        counts = make_synthetic(args.out, spec)
    except ValueError as error:
        parser.error(str(error))
    print(f"{counts['train']} train and {counts['test']} test videos of {args.classes} classes in "
          f"{args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
