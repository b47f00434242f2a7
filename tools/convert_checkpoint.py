#!/usr/bin/env python
"""Convert a checkpoint of another layout (an official non-local Caffe2 pickle) into ours, once.

    python tools/convert_checkpoint.py IN.pkl --cfg CONFIG.yaml --out OUT.pyth \\
        [--classes CLASSES.txt] [--opt KEY VALUE ...]

The weights of IN (any layout the package reads; docs/MODELS.md, "Official non-local
models") are loaded strictly into the model of --cfg, as every run would load them,
and written as {"model": state dict} (plus "classes": the names of --classes, one per
classifier row, which fine-tuning by class name then reads from the file itself). The
file is written under a temporary name, read back and compared tensor by tensor, and
only then renamed to --out; a failure leaves --out as it was.

Exit status: 0 when --out was written, 1 when reading it back differed (nothing
written), 2 for bad arguments or inputs (the config, the checkpoint and the blobs or
keys that do not fit, the class list, named on stderr).
"""

import argparse
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import add_opt_argument, docstring_parser, load_tool_config


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = docstring_parser(__doc__)
    parser.add_argument("checkpoint", metavar="IN", help="the checkpoint to convert (e.g. an official .pkl)")
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment YAML file of its model")
    parser.add_argument("--out", required=True, help="the file to write (our layout, e.g. OUT.pyth)")
    parser.add_argument("--classes", help="classes.txt naming the classifier's rows, stored in --out")
    add_opt_argument(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    import torch

    from cgnl_video.config import ConfigError
    from cgnl_video.data import read_classes
    from cgnl_video.engine.checkpoint import load_model_weights
    from cgnl_video.models import build_model, read_state_dict, standalone_config
    from cgnl_video.utils.io import atomic_path

    try:
        model = build_model(standalone_config(load_tool_config(args)))
        _, report = load_model_weights(model, args.checkpoint)
        state = {"model": model.state_dict()}
        if args.classes:
            state["classes"] = read_classes(args.classes)
            rows = state["model"][model.classifier_key].shape[0]
            if len(state["classes"]) != rows:
                raise ValueError(f"--classes {args.classes} lists {len(state['classes'])} classes, the classifier "
                                 f"of {args.checkpoint} has {rows} rows")
    except (ConfigError, ValueError, FileNotFoundError) as exc:  # ValueError: CheckpointError, a class list
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with atomic_path(args.out) as tmp:
            torch.save(state, tmp)
            back = read_state_dict(tmp)
            differ = [k for k, v in state["model"].items() if k not in back or not torch.equal(back[k], v)]
            if differ or len(back) != len(state["model"]):
                raise RuntimeError(f"reading the converted file back differs at {len(differ)} tensors: "
                                   f"{', '.join(differ[:5])}")
    except RuntimeError as exc:
        print(f"error: {exc}; {args.out} not written", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(report.loaded)} tensors of {args.checkpoint}"
          + (f", {len(state['classes'])} class names" if args.classes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
