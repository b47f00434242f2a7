#!/usr/bin/env python
"""Analyse a run's multi-view test: confusion matrix, per-class accuracy, confused pairs, two runs compared.

    python tools/analyze_test.py OUTPUT_DIR --out DIR [--compare OTHER_OUTPUT_DIR] \\
        [--classes classes.txt] [--top-classes 30] [--pairs 10]

Inputs, outputs and exit status: HELP_DETAILS below (the rest of --help).
"""

import argparse
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import docstring_parser, help_text

#: The end of --help, after the synopsis of the module docstring: what the tool reads
#: and writes, and its exit status.
HELP_DETAILS = """\
Reads OUTPUT_DIR/test_predictions.jsonl (the top-5 labels of every scored
video, written by run_net.py's test) and the class list (DATA.PATH_TO_DATA_DIR/
classes.txt of OUTPUT_DIR/config.yaml, or --classes). Prints top-1, top-5,
mean class accuracy, the worst classes and the most confused pairs, and writes
to --out:

  confusion.png       top-1 confusion of all classes, or of --top-classes classes:
                      those of the most confused pairs; counts in the cells,
                      colour = share of the true class's videos
  confusion.csv       the full confusion matrix (rows true, columns predicted)
  per_class.csv       per class: videos, correct, top-1 / top-5 accuracy, the class
                      most often predicted instead; worst first
  confused_pairs.csv  (true, predicted) pairs off the diagonal, most videos first
  summary.json        top-1, top-5, mean class accuracy (and the comparison)

With --compare OTHER: per_class_gain.csv (top-1 of this run minus OTHER's, in
points, largest gain first), per_class_gain.png, and the videos right in one
run only. Accuracies are over the scored videos, as in test_metrics.json.
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = docstring_parser(help_text(__doc__, HELP_DETAILS))
    parser.add_argument("run", metavar="OUTPUT_DIR", help="run folder with test_predictions.jsonl")
    parser.add_argument("--out", required=True, help="folder for the figures and tables")
    parser.add_argument("--compare", metavar="OTHER_OUTPUT_DIR", help="a second run with the same classes")
    parser.add_argument("--classes", help="class list (default: from OUTPUT_DIR/config.yaml)")
    parser.add_argument("--top-classes", type=int, default=30, help="classes in the figures (default 30)")
    parser.add_argument("--pairs", type=int, default=10, help="confused pairs to print (default 10)")
    args = parser.parse_args(argv)
    if args.top_classes < 2:
        parser.error(f"--top-classes must be at least 2, got {args.top_classes}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.analysis import test_report as tr

    try:
        run = tr.read_test_run(args.run, args.classes)
        other = tr.read_test_run(args.compare, args.classes) if args.compare else None
        lines = tr.summary_lines(run, pairs=args.pairs)
        if other is not None:
            result, rows = tr.compare(run, other)
            lines += tr.comparison_lines(run, result, rows)
        written = tr.write_report(run, args.out, args.top_classes, other)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(f"wrote {args.out}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
