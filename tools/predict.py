#!/usr/bin/env python
"""Score videos or frame folders with a trained model and the multi-view test protocol.

    python tools/predict.py --cfg configs/minikinetics/R50_CGNL8.yaml \\
        --checkpoint output/minikinetics/R50_CGNL8/checkpoints/checkpoint_epoch_00100.pyth \\
        video1.mp4 frames/video2/ [--json] [--top-k 5] [--opt KEY VALUE ...]

The views are those of the config's test (TEST.NUM_ENSEMBLE_VIEWS clips x
TEST.NUM_SPATIAL_CROPS crops, DATA.TEST_CROP_SIZE); the score is the mean of
their softmax. Class names come from DATA.PATH_TO_DATA_DIR/classes.txt. An
input that cannot be read is reported on stderr (exit status 1) and the others
are still scored. Runs on the GPU when there is one.
"""

import argparse
import json
import sys
from typing import List, Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment YAML file of the model")
    parser.add_argument("--checkpoint", required=True, help="checkpoint (ours or a bare state dict)")
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FRAME_FOLDER")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per input (default 5)")
    parser.add_argument("--opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="config override, repeatable (e.g. --opt TEST.NUM_ENSEMBLE_VIEWS 2)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.config import ConfigError, load_config
    from cgnl_video.inference import class_names, load_model, predict
    from cgnl_video.utils.distributed import select_device
    from cgnl_video.utils.torchcodec_support import check_decoding_backend

    try:
        cfg = load_config(args.cfg_file, [x for pair in args.opt for x in pair])
        check_decoding_backend(cfg.DATA.DECODING_BACKEND)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = select_device()
    model = load_model(cfg, args.checkpoint, device)
    predictions, failures = predict(cfg, model, args.inputs, device, class_names(cfg), args.top_k)
    for path, reason in failures:
        print(f"error: {reason}", file=sys.stderr)
    if args.json:
        document = {"predictions": [p.to_json() for p in predictions],
                    "failed": [{"path": path, "error": reason} for path, reason in failures]}
        print(json.dumps(document, indent=2))
    else:
        lines: List[str] = []
        for p in predictions:
            lines.append(f"{p.path} ({p.views} views)")
            lines.extend(f"  {prob:7.2%}  {name}" for name, prob in p.top)
        print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
