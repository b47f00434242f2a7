#!/usr/bin/env python
"""Plot train loss, learning rate and val top-1 per epoch of one or more runs.

    python tools/plot_curves.py output/minikinetics/R50 output/minikinetics/R50_CGNL8 --out curves.png

Reads OUTPUT_DIR/json_stats.log of every run and writes one PNG with three
panels, the runs overlaid (legend: run folder and its multi-view test top-1).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import docstring_parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = docstring_parser(__doc__)
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="run folders with json_stats.log")
    parser.add_argument("--out", default="curves.png", help="output PNG (default curves.png)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.analysis.curves import plot_curves, read_run, run_names, summary_lines

    try:
        runs = [read_run(d, name) for d, name in zip(args.runs, run_names(args.runs))]
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(runs)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot_curves(runs).savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
