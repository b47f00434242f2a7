#!/usr/bin/env python
"""Export a trained model to ONNX, a torch.export program or TorchScript, for clips of a
fixed size and any batch size.

    python tools/export.py --cfg CONFIG.yaml --checkpoint CKPT --format onnx|export|torchscript \\
        --out FILE [--logits] [--frames T] [--size S] \\
        [--verify [--verify-video VIDEO_OR_FRAME_FOLDER] [--tolerance 1e-4]] [--opt KEY VALUE ...]

Inputs, outputs and exit status: HELP_DETAILS below (the rest of --help).
"""

import argparse
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import add_opt_argument, help_text, load_tool_config, tool_parser

FORMATS = ("onnx", "export", "torchscript")  # cgnl_video.export.FORMATS, kept here so that --help does not import torch

#: The end of --help, after the synopsis of the module docstring: what the tool reads
#: and writes, and its exit status.
HELP_DETAILS = """\
The file takes normalised clips `clip` (batch, 3, T, S, S) (T = --frames, default
DATA.NUM_FRAMES; S = --size, default DATA.TEST_CROP_SIZE; only the batch axis is
dynamic) and gives `probs` (batch, classes), the eval-mode model's output, which
tools/predict.py averages over a video's views; with --logits, `logits` (batch, T',
H', W', classes), the fc of every training-size window of the last feature map, whose
softmax over classes averaged over (T', H', W') is `probs`. The output and its shape,
the clip size, mean / std and class names are stored in the file (JSON under the key
cgnl_video). ONNX needs the optional extra: pip install -e ".[export]". `export` is
a torch.export ExportedProgram (.pt2, torch.export.load); TorchScript is traced
(deprecated by torch, for older runtimes).

--verify runs the exported file (onnxruntime for ONNX, torch.export.load for export,
torch.jit.load for TorchScript) on random clips (batch 2 and batch 1) and on the
centre clip of a real video (--verify-video, default the first video of the config's
test manifest) and prints the max abs difference from PyTorch of each. The file is
written to a temporary name and renamed to --out only once every difference is
at most --tolerance (default 1e-4), so a failed export never writes --out (a file already
there is left as it was).

Exit status: 0 when the file was written (and verified), 1 when the export or
the verification failed (nothing written), 2 for bad arguments or inputs (the
config, checkpoint, video or a missing extra, named on stderr).
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = tool_parser(help_text(__doc__, HELP_DETAILS))
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx (onnxruntime), export (torch.export .pt2) or torchscript")
    parser.add_argument("--out", required=True, help="the file to write (e.g. model.onnx, model.pt2, model.pt)")
    parser.add_argument("--logits", action="store_true",
                        help="export the logits of every window instead of probabilities")
    parser.add_argument("--frames", type=int, metavar="T", help="frames per clip (default DATA.NUM_FRAMES)")
    parser.add_argument("--size", type=int, metavar="S",
                        help="height and width of a clip (default DATA.TEST_CROP_SIZE)")
    check = parser.add_argument_group("verification")
    check.add_argument("--verify", action="store_true",
                       help="compare the file's output with PyTorch's before writing it")
    check.add_argument("--verify-video", metavar="VIDEO_OR_FRAME_FOLDER",
                       help="the real clip's video (default: the first of DATA.PATH_TO_DATA_DIR/test.txt)")
    check.add_argument("--tolerance", type=float, help="largest max abs difference accepted (default 1e-4)")
    add_opt_argument(parser)
    args = parser.parse_args(argv)
    for flag in ("frames", "size"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    if not args.verify and (args.verify_video is not None or args.tolerance is not None):
        parser.error(f"--{'verify-video' if args.verify_video is not None else 'tolerance'} needs --verify")
    if args.tolerance is not None and not args.tolerance >= 0:
        parser.error(f"--tolerance must be >= 0, got {args.tolerance}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video import export as ex
    from cgnl_video.config import ConfigError
    from cgnl_video.inference import InputError

    try:
        if args.format == "onnx":
            ex.require_onnx()  # before loading anything
        cfg = load_tool_config(args)
        job = ex.prepare_export(cfg, args.checkpoint, args.format, args.frames, args.size, args.logits,
                                args.verify, args.verify_video)
    except (ConfigError, InputError, ValueError, FileNotFoundError, ex.MissingExtraError) as exc:
        # ValueError: CheckpointError (the weights do not fit), a manifest, a clip size the model cannot take
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tolerance = ex.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    print(f"exporting {job.module.output_name} ({', '.join(map(str, job.metadata.output_shape))}) for clips "
          f"(batch, {', '.join(map(str, job.shape))}) to {args.format}: {args.out}")
    try:
        checks = job.write(args.out, tolerance)
    except ex.VerificationError as exc:
        for check in exc.checks:
            print(f"  {check.describe()}{'' if check.passed(tolerance) else '  FAILED'}")
        print(f"error: verification failed, {args.out} not written: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the exporter's own errors (e.g. an operator it cannot export)
        print(f"error: {args.format} export failed, {args.out} not written: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    for check in checks:
        print(f"  {check.describe()}")
    verified = f", verified: every max abs diff <= {tolerance:g}" if checks else ""
    print(f"wrote {args.out} ({ex.file_size(args.out)}){verified}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
