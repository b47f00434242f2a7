#!/usr/bin/env python
"""Pooled pre-classifier features of videos, per video or per sliding window, as .npy files.

    python tools/extract_features.py --cfg CONFIG.yaml --checkpoint CKPT --out DIR \\
        (--split test | --list FILE | VIDEO_OR_FRAME_FOLDER ...) \\
        [--window-stride FRAMES] [--layer NAME] [--root DIR] [--precision auto|fp32|bf16] [--opt KEY VALUE ...]
    torchrun --nproc_per_node N tools/extract_features.py ...   # each process takes every N-th input

Inputs, outputs and exit status: HELP_DETAILS below (the rest of --help).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import add_opt_argument, help_text, load_tool_config, tool_parser

#: The end of --help, after the synopsis of the module docstring: what the tool reads
#: and writes, and its exit status.
HELP_DETAILS = """\
Features: the classifier's input (res5) averaged over time and space, or with
--layer the output of another module (e.g. blocks.4 = res4), averaged the same
way. Per video (default): the mean over the config's test views
(TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS), shape (D,). With
--window-stride F: one row per window of DATA.NUM_FRAMES x DATA.SAMPLING_RATE
frames starting every F frames from frame 0, centre crop (DATA.VAL_SHORT_SIDE,
DATA.VAL_CROP_SIZE), shape (W, D); the rows' frame ranges [start, end) go into
the index.

Outputs under --out mirror each input's path (relative to DATA.PATH_PREFIX for
--split, to --root otherwise; a file's extension is replaced): PATH.npy and
PATH.json (its record), then index.jsonl (path, features, shape, frames or views,
label) and settings.json. A rerun skips complete outputs made with the same
settings. Runs on the GPU when there is one, with bf16 autocast where the GPU has
native bf16 (--precision).

Exit status: 0 when every input was extracted or already complete; 1 when some
input could not be read (each one is named on stderr, the others are still
extracted), or its output was made with other settings; 2 for bad arguments.
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = tool_parser(help_text(__doc__, HELP_DETAILS))
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("inputs", nargs="*", metavar="VIDEO_OR_FRAME_FOLDER")
    parser.add_argument("--split", choices=("train", "val", "test"),
                        help="the inputs are DATA.PATH_TO_DATA_DIR/SPLIT.txt (labels go into the index)")
    parser.add_argument("--list", dest="list_file", help="a file with one video or frame folder path per line")
    parser.add_argument("--root", default=".", help="outputs mirror input paths relative to this folder (default .)")
    parser.add_argument("--window-stride", type=int, metavar="FRAMES", help="sliding windows every FRAMES frames")
    parser.add_argument("--layer", help="module name whose output is pooled (default: the classifier's input)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="bf16 autocast; auto = bf16 on a GPU with native bf16 (Ampere and newer), else fp32")
    add_opt_argument(parser)
    args = parser.parse_args(argv)
    sources = [bool(args.split), bool(args.list_file), bool(args.inputs)]
    if sum(sources) != 1:
        parser.error("give exactly one of --split, --list or input paths")
    if args.window_stride is not None and args.window_stride <= 0:
        parser.error(f"--window-stride must be a positive number of frames, got {args.window_stride}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    import torch

    from cgnl_video.analysis import feature_extraction as fe
    from cgnl_video.analysis.features import PooledFeatures, resolve_precision
    from cgnl_video.config import ConfigError
    from cgnl_video.inference import load_model
    from cgnl_video.utils import distributed as du

    try:
        cfg = load_tool_config(args)
        if args.split:
            inputs, classes = fe.split_inputs(cfg, args.split)
        else:
            paths = fe.read_path_list(args.list_file) if args.list_file else args.inputs
            inputs, classes = fe.path_inputs(paths, args.root), ["unlabelled"]
        fe.check_unique_outputs(inputs)
        device = du.select_device()
    except (ConfigError, ValueError, FileNotFoundError, du.UnsupportedGPUError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank, _world = du.init_distributed(cfg.DIST.BACKEND)
    if cfg.NUM_THREADS > 0:
        torch.set_num_threads(cfg.NUM_THREADS)  # as run_net.py does
    try:
        settings = fe.extraction_settings(cfg, args.checkpoint, args.layer, args.window_stride,
                                          resolve_precision(args.precision, device))
        try:
            features = PooledFeatures(load_model(cfg, args.checkpoint, device), args.layer)
        except (ValueError, FileNotFoundError) as exc:  # the checkpoint, a --layer that is no module
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with features:
            outcome = fe.extract(cfg, features, inputs, classes, args.out, settings, device)
    finally:
        du.cleanup_distributed()
    if rank == 0:
        for _name, reason in outcome.failed:
            print(f"error: {reason}", file=sys.stderr)
        print(f"{len(inputs)} inputs: {outcome.extracted} extracted, {outcome.skipped} already complete, "
              f"{len(outcome.failed)} failed; index {os.path.join(args.out, fe.INDEX_FILE)}")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
