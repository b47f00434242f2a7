#!/usr/bin/env python
"""Build train/val/test manifests and classes.txt for a dataset.

Manifest lines: '<path relative to ROOT> <num_frames> <label>' for frame folders,
'<path relative to ROOT> <label>' for video files; labels are 0-based indices into
classes.txt. Clips are found by name at any depth under --root (flat, a folder per
class, per split and class, per split), as video files or frame folders. Clips that
are missing, empty or unreadable are left out and listed in OUT/missing.txt; a split
with no clip found is an error (exit code 2), one with fewer than half a warning.
See docs/DATA_PREP.md.

  ucf101        official UCF-101 split files (classInd.txt, trainlistNN.txt, testlistNN.txt)
  kinetics400   Kinetics-400 annotation CSVs (train.csv, validate.csv): all 400 classes
  minikinetics  Kinetics-400 annotation CSVs filtered by the Mini-Kinetics-200 id lists
  generic       lists of '<relative path> <class name>' (the synthetic set, your own videos)
"""

import argparse
import logging
import sys

from cgnl_video.data.manifest import ManifestError
from cgnl_video.prep.generic import build_generic
from cgnl_video.prep.kinetics import build_kinetics400, build_minikinetics
from cgnl_video.prep.ucf101 import build_ucf101


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="dataset", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--root", required=True,
                         help="folder of the videos or of the extracted frame folders (searched at any depth)")
        sub.add_argument("--out", required=True,
                         help="folder for train.txt, val.txt, test.txt, classes.txt, missing.txt")
        sub.add_argument("--no-check-videos", action="store_true",
                         help="do not open each video file to check that it is readable (faster)")
        return sub

    ucf = command("ucf101", "UCF-101 from the official split files")
    ucf.add_argument("--annotations", required=True, help="folder with classInd.txt, trainlistNN.txt, testlistNN.txt")
    ucf.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official split (default: 1)")

    def kinetics(name: str, help_text: str, num_classes: int) -> argparse.ArgumentParser:
        sub = command(name, help_text)
        sub.add_argument("--k400-annotations", nargs="+", required=True,
                         help="Kinetics-400 annotation CSV files, or folders of them (train.csv, validate.csv)")
        sub.add_argument("--splits", nargs="+", choices=("train", "val"), default=["train", "val"],
                         help="splits to build (default: train val; test.txt is always the val videos)")
        sub.add_argument("--num-classes", type=int, default=num_classes,
                         help=f"expected number of classes, 0 = any (default: {num_classes})")
        return sub

    kinetics("kinetics400", "Kinetics-400 from its annotation CSVs (split column: train, val)", 400)
    mk = kinetics("minikinetics", "Mini-Kinetics-200 from Kinetics-400 CSVs and the YouTube id lists", 200)
    mk.add_argument("--ytid-lists", required=True, help="folder with train_ytid_list.txt and val_ytid_list.txt")

    gen = command("generic", "any dataset given as lists of '<relative path> <class name>'")
    gen.add_argument("--list-dir", required=True,
                     help="folder with train.txt, val.txt and/or test.txt (and optionally classes.txt)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    check = not args.no_check_videos
    try:
        if args.dataset == "ucf101":
            summary = build_ucf101(args.annotations, args.split, args.root, args.out, check)
        elif args.dataset == "kinetics400":
            summary = build_kinetics400(args.k400_annotations, args.root, args.out, args.splits,
                                        args.num_classes, check)
        elif args.dataset == "minikinetics":
            summary = build_minikinetics(args.k400_annotations, args.ytid_lists, args.root, args.out,
                                         args.splits, args.num_classes, check)
        else:
            summary = build_generic(args.list_dir, args.root, args.out, check)
    except (ManifestError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
