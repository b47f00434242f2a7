#!/usr/bin/env python
"""Train (TRAIN.ENABLE) and then run the multi-view test (TEST.ENABLE).

    python tools/run_net.py --cfg configs/minikinetics/R101_CGNL8.yaml [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/run_net.py --cfg ... [KEY VALUE ...]
    python tools/run_net.py --cfg configs/demo/C2D_CGNL_synthetic.yaml SOLVER.MAX_EPOCH 5 OUTPUT_DIR output/demo

Exit status 2 for a bad config, missing data (checked before any work), a
checkpoint that does not fit the model or ImageNet weights that are neither in
torch.hub's cache nor downloadable; 1 when the training loss becomes non-finite;
75 (EX_TEMPFAIL) when SIGTERM or SIGUSR1 stopped training: the run finished its
iteration and saved a checkpoint, and running the same command again resumes from
it; 0 otherwise. The job itself is
``cgnl_video.engine.launch.run``. See docs/TRAINING.md.
"""

import argparse
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import docstring_parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = docstring_parser(__doc__)
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment YAML file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the file")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly
    from cgnl_video.config import ConfigError, load_config
    from cgnl_video.engine.launch import run
    from cgnl_video.engine.preemption import EXIT_INTERRUPTED, RunInterrupted
    from cgnl_video.engine.preflight import DataMissingError
    from cgnl_video.engine.train_loop import NonFiniteLossError
    from cgnl_video.models.weights import WeightsUnavailableError
    from cgnl_video.utils.distributed import UnsupportedGPUError

    try:
        cfg = load_config(args.cfg_file, args.opts)
        metrics = run(cfg)
    except (ConfigError, DataMissingError, WeightsUnavailableError, UnsupportedGPUError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RunInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if metrics is not None:
        print(f"Multi-view test top-1: {metrics['top1_acc']:.2f}%  top-5: {metrics['top5_acc']:.2f}%  "
              f"({metrics['videos_scored']}/{metrics['videos_listed']} videos, "
              f"{metrics['views_per_video']} views each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
