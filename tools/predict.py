#!/usr/bin/env python
"""Score videos or frame folders with a trained model and the multi-view test protocol,
or score sliding windows over long videos (--timeline).

    python tools/predict.py --cfg configs/minikinetics/R50_CGNL8.yaml \\
        --checkpoint output/minikinetics/R50_CGNL8/checkpoints/checkpoint_epoch_00100.pyth \\
        video1.mp4 frames/video2/ [--json] [--top-k 5] [--opt KEY VALUE ...]
    python tools/predict.py --cfg CONFIG.yaml --checkpoint CKPT --timeline OUT.png \\
        [--window 64f|2.5s] [--stride 32f|1s] [--fps FPS] long_video.mp4 [...] [--json] [--top-k 5]

Inputs, outputs and exit status: HELP_DETAILS below (the rest of --help).
"""

import argparse
import os
import sys
from typing import List, Optional, Sequence, Tuple

import simplejson

from cgnl_video.utils.cli import add_opt_argument, help_text, load_tool_config, tool_parser

#: The end of --help, after the synopsis of the module docstring: what the tool reads
#: and writes, and its exit status.
HELP_DETAILS = """\
The views are those of the config's test (TEST.NUM_ENSEMBLE_VIEWS clips x
TEST.NUM_SPATIAL_CROPS crops, DATA.TEST_CROP_SIZE); the score is the mean of
their softmax. Class names come from DATA.PATH_TO_DATA_DIR/classes.txt. An
input that cannot be read is reported on stderr (exit status 1) and the others
are still scored. Runs on the GPU when there is one.

With --timeline OUT.png: windows of --window (default one clip, DATA.NUM_FRAMES
x DATA.SAMPLING_RATE frames) every --stride (default half the window), in
frames (64f, or 64) or seconds (2.5s, at the video's frame rate, or --fps); a
table of the windows ([start, end) in seconds and frames, top-k classes) per
input, and OUT.png, the probability of the top classes over time (one panel
per input; --timeline-classes of them, default top-k, those that are the top-1
of the most windows first). A window's score is the mean softmax of the centre-crop validation
clips spread over it (one clip at the default window). The windows are decoded
and scored a chunk at a time (TEST.VIEWS_PER_FORWARD clips), so memory does
not grow with the video's length.

Exit status: 0 when every input was scored, 1 when some input could not be
(each one named on stderr), 2 for bad arguments.
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = tool_parser(help_text(__doc__, HELP_DETAILS))
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FRAME_FOLDER")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--top-k", type=int, default=5,
                        help="classes to show per input or window, and in the timeline figure (default 5)")
    windows = parser.add_argument_group("sliding windows over long videos")
    windows.add_argument("--timeline", metavar="OUT.png", help="score sliding windows; write the timeline figure here")
    windows.add_argument("--timeline-classes", type=int, metavar="N",
                         help="classes drawn in the figure: those top-1 in the most windows (default --top-k)")
    windows.add_argument("--window", metavar="LENGTH", help="window length: 64f (frames) or 2.5s (seconds); "
                         "default one clip, DATA.NUM_FRAMES x DATA.SAMPLING_RATE frames")
    windows.add_argument("--stride", metavar="LENGTH", help="a window starts every LENGTH (64f or 2.5s); "
                         "default half the window")
    windows.add_argument("--fps", type=float, help="frame rate for lengths and times in seconds "
                         "(default: the video's own; a frame folder's from its extraction index)")
    add_opt_argument(parser)
    args = parser.parse_args(argv)
    if args.timeline is None:
        given = [flag for flag in ("window", "stride", "fps", "timeline_classes") if getattr(args, flag) is not None]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --timeline OUT.png")
    else:
        from cgnl_video.analysis.timeline import Span  # imported once --help has been answered

        try:
            args.window, args.stride = [Span.parse(v) if v else None for v in (args.window, args.stride)]
        except ValueError as error:
            parser.error(str(error))
        if args.fps is not None and args.fps <= 0:
            parser.error(f"--fps must be positive, got {args.fps:g}")
    for flag in ("top_k", "timeline_classes"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.inference import class_names, load_model, predict
    from cgnl_video.utils.distributed import UnsupportedGPUError, select_device

    try:
        cfg = load_tool_config(args)
        if args.timeline is not None:
            check_lengths(cfg, args)  # before the model is loaded
        device = select_device()
    except (ValueError, UnsupportedGPUError) as exc:  # a ConfigError, a --window shorter than one clip, the GPU
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = load_model(cfg, args.checkpoint, device)
    if args.timeline is not None:
        return score_timelines(cfg, model, device, class_names(cfg), args)
    predictions, failures = predict(cfg, model, args.inputs, device, class_names(cfg), args.top_k)
    report_failures(failures)
    if args.json:
        document = {"predictions": [p.to_json() for p in predictions], "failed": failed_json(failures)}
        print_out(simplejson.dumps(document, indent=2))
    else:
        lines: List[str] = []
        for p in predictions:
            lines.append(f"{p.path} ({p.views} views)")
            lines.extend(f"  {prob:7.2%}  {name}" for name, prob in p.top)
        print_out("\n".join(lines))
    return 1 if failures else 0


def print_out(text: str) -> None:
    """``text`` on stdout. A reader that stops early (``predict.py ... | head``) ends the
    output: the rest is dropped quietly and the exit status stays the run's."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor an error when Python flushes at exit


def report_failures(failures: Sequence[Tuple[str, str]]) -> None:
    for _path, reason in failures:
        print(f"error: {reason}", file=sys.stderr)


def failed_json(failures: Sequence[Tuple[str, str]]) -> List[dict]:
    return [{"path": path, "error": reason} for path, reason in failures]


def check_lengths(cfg, args: argparse.Namespace) -> None:
    """ValueError for a --window in frames shorter than one clip (in seconds it is checked per input)."""
    from cgnl_video.analysis.timeline import check_window

    if args.window is not None and args.window.unit == "f":
        check_window(args.window.frames(None), cfg)


def score_timelines(cfg, model, device, classes: Sequence[str], args: argparse.Namespace) -> int:
    """--timeline: the window table of every input (or the JSON document) and the figure."""
    from cgnl_video.analysis.timeline import timelines
    from cgnl_video.analysis.timeline_figure import timeline_figure

    done, failures = timelines(cfg, model, args.inputs, device, args.window, args.stride, args.fps)
    report_failures(failures)
    if done:
        figure = timeline_figure(done, classes, args.timeline_classes or args.top_k)
        figure.savefig(args.timeline, dpi=120)
    if args.json:
        document = {"timelines": [t.to_json(classes, args.top_k) for t in done], "failed": failed_json(failures),
                    "figure": args.timeline if done else None}
        print_out(simplejson.dumps(document, indent=2))
    else:
        lines: List[str] = []
        for t in done:
            lines.extend([f"{t.path}: {t.summary()}", *t.table(classes, args.top_k), ""])
        if done:
            lines.append(f"timeline figure: {args.timeline}")
        print_out("\n".join(lines))
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
