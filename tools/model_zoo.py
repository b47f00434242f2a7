#!/usr/bin/env python
"""Write MODEL_ZOO.md: every experiment config with its depth, blocks, groups, kernel,
parameters, multiply-adds and, where a finished run exists, its test accuracy.

    python tools/model_zoo.py --configs configs --out MODEL_ZOO.md [--runs OUTPUT_ROOT]

Accuracy comes from test_metrics.json in RUNS/<config path without .yaml> or
RUNS/<config name> (with --runs), else in the config's OUTPUT_DIR; it is left
blank when there is none. Counting multiply-adds takes a few seconds per config.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import docstring_parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = docstring_parser(__doc__)
    parser.add_argument("--configs", default="configs", help="folder searched for *.yaml (default configs)")
    parser.add_argument("--runs", default=None, help="root of the run folders (default: each config's OUTPUT_DIR)")
    parser.add_argument("--out", default="MODEL_ZOO.md", help="output markdown file (default MODEL_ZOO.md)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.analysis.model_zoo import find_configs, zoo_markdown, zoo_row
    from cgnl_video.config import ConfigError
    from cgnl_video.utils.io import atomic_write_text

    files = find_configs(args.configs)
    if not files:
        print(f"error: no experiment config under {args.configs}", file=sys.stderr)
        return 2
    rows = []
    try:
        for path in files:
            rows.append(zoo_row(path, args.configs, args.runs))
            row = rows[-1]
            print(f"{row.config}: {row.params:,} params, {row.gmacs:.2f} GMACs"
                  + (f", top-1 {row.top1:.2f}% ({row.run})" if row.top1 is not None else ""), flush=True)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python tools/model_zoo.py --configs {}{} --out {}".format(
        os.path.normpath(args.configs), f" --runs {args.runs}" if args.runs else "", os.path.basename(args.out))
    atomic_write_text(args.out, zoo_markdown(rows, command))
    print(f"wrote {args.out} ({len(rows)} configs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
