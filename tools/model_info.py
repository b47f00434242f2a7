#!/usr/bin/env python
"""Parameters, fvcore multiply-adds and per-stage output shapes of a configured model.

    python tools/model_info.py --cfg configs/minikinetics/R101_CGNL8.yaml [KEY VALUE ...]
    python tools/model_info.py --table configs/minikinetics/*.yaml    # markdown table

The input is one clip of DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE^2; counts are
taken in eval mode; no weights are read (structure only).
"""

import argparse
import os
import sys
from typing import List, Optional, Sequence

from cgnl_video.config import ConfigError, load_config
from cgnl_video.models.summary import describe, format_summary, markdown_table, summarize_config


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--cfg", dest="cfg_file", help="experiment YAML file: full report")
    mode.add_argument("--table", nargs="+", metavar="CFG",
                      help="YAML files: one markdown table row each (no overrides in this mode)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the file(s)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.table is None:
            cfg = load_config(args.cfg_file, args.opts)
            print(f"{args.cfg_file}: {describe(cfg)}, {cfg.MODEL.NUM_CLASSES} classes")
            print(format_summary(summarize_config(cfg)))
            return 0
        rows: List = []
        for path in args.table:
            cfg = load_config(path, args.opts)
            name = os.path.splitext(os.path.basename(path))[0]
            rows.append((name, describe(cfg), summarize_config(cfg)))
        print(markdown_table(rows))
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
