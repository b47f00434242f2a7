#!/usr/bin/env python
"""Heatmaps of the positions an NL / CGNL block relates to a reference position (paper Figs. 5, 6).

    python tools/visualize_attention.py --cfg configs/minikinetics/R50_CGNL8.yaml \\
        --checkpoint CKPT VIDEO_OR_FRAME_FOLDER --ref 16,112,112 --out attention.png \\
        [--threshold 0.7] [--block blocks.4.inserted.4] [--frames 0,8,16,24] \\
        [--nl-cfg configs/minikinetics/R50_NL.yaml --nl-checkpoint CKPT2]

The input is the validation clip of the video (centre window, DATA.VAL_SHORT_SIDE,
centre crop DATA.VAL_CROP_SIZE). --ref is (frame, row, column) in that clip; it
selects the block-grid cell that contains it. Columns: the input frame (reference
cell in green), then the maps of the model's block (NL: its affinity row; CGNL: one
map per group, see cgnl_video/analysis/attention.py), then those of the optional
second model (--nl-cfg / --nl-checkpoint, usually the +NL model) on the same clip.
Rows: one input frame per block time step unless --frames is given. Each map is
scaled to [0, 1] over all frames; --threshold 0.7 shows only the top as in the paper.
"""

import argparse
import os
import sys
from typing import List, Optional, Sequence

from cgnl_video.utils.cli import add_opt_argument, load_tool_config, tool_parser


def int_list(text: str) -> List[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = tool_parser(__doc__, checkpoint_help="its checkpoint")
    parser.add_argument("video", metavar="VIDEO_OR_FRAME_FOLDER")
    parser.add_argument("--ref", type=int_list, default=None, metavar="T,Y,X",
                        help="reference (frame, row, column) in the clip (default: centre of the middle frame)")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--threshold", type=float, default=None,
                        help="colour only values >= this fraction of each map's range (paper: 0.7)")
    parser.add_argument("--block", default=None, help="module name of the block (default: the last NL / CGNL block)")
    parser.add_argument("--frames", type=int_list, default=None, metavar="F1,F2,...",
                        help="clip frames to show, one row each (default: one per block time step)")
    parser.add_argument("--nl-cfg", default=None, help="a second model's YAML file (e.g. the +NL model)")
    parser.add_argument("--nl-checkpoint", default=None, help="the second model's checkpoint")
    parser.add_argument("--nl-block", default=None, help="block of the second model (default: its last)")
    add_opt_argument(parser, "config override for both models, repeatable")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.analysis.attention import attention_maps
    from cgnl_video.analysis.attention_figure import attention_figure, display_frames
    from cgnl_video.config import ConfigError
    from cgnl_video.inference import InputError, class_names, load_clip, load_model
    from cgnl_video.utils.distributed import UnsupportedGPUError, select_device

    if (args.nl_cfg is None) != (args.nl_checkpoint is None):
        print("error: --nl-cfg and --nl-checkpoint go together", file=sys.stderr)
        return 2
    try:
        device = select_device()
        cfg = load_tool_config(args)
        models = [(cfg, args.checkpoint, args.block)]
        if args.nl_cfg:
            models.append((load_tool_config(args, args.nl_cfg), args.nl_checkpoint, args.nl_block))
        clip = load_clip(cfg, args.video)
    except (ConfigError, InputError, UnsupportedGPUError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ref = tuple(args.ref) if args.ref else (clip.shape[1] // 2, clip.shape[2] // 2, clip.shape[3] // 2)
    if len(ref) != 3:
        print("error: --ref takes T,Y,X", file=sys.stderr)
        return 2
    map_sets, titles = [], []
    for model_cfg, checkpoint, block in models:
        try:
            probs, maps = attention_maps(load_model(model_cfg, checkpoint, device), clip, ref, block)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        names = class_names(model_cfg)
        best = int(probs.argmax())
        print(f"{checkpoint}: {maps.block} ({maps.kind.upper()}), grid {maps.grid}, reference cell {maps.ref}, "
              f"prediction {names[best]} ({float(probs[best]):.2%})")
        map_sets.append(maps)
        titles.append(f"{maps.kind.upper()}: {names[best]} {float(probs[best]):.0%}")
    frames = display_frames(clip, cfg.DATA.MEAN, cfg.DATA.STD)
    title = f"{os.path.basename(os.path.normpath(args.video))}  reference (t, y, x) = {ref}  |  " + "  |  ".join(titles)
    figure = attention_figure(frames, ref, map_sets, args.frames, args.threshold, title)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
