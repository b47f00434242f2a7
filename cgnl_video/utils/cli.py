"""What the model tools (predict, extract_features, visualize_attention, export) share on the command line.

Each tool documents itself in its module docstring: the first paragraph is the
``--help`` description, the rest its epilog. Each names a model by ``--cfg`` and
``--checkpoint`` and takes config overrides as repeatable ``--opt KEY VALUE``.
Torch-free, so that ``--help`` answers quickly.
"""

import argparse
from typing import List

from fvcore.common.config import CfgNode

from cgnl_video.config import load_config
from cgnl_video.utils.torchcodec_support import check_decoding_backend


def tool_parser(doc: str, checkpoint_help: str = "checkpoint (ours or a bare state dict)") -> argparse.ArgumentParser:
    """A parser described by a tool's module docstring, with ``--cfg`` and ``--checkpoint``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc.split("\n\n", 1)[1])
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment YAML file of the model")
    parser.add_argument("--checkpoint", required=True, help=checkpoint_help)
    return parser


def add_opt_argument(parser: argparse.ArgumentParser, help_text: str = (
        "config override, repeatable (e.g. --opt TEST.NUM_ENSEMBLE_VIEWS 2)")) -> None:
    """Repeatable ``--opt KEY VALUE``, collected as pairs in ``args.opt``."""
    parser.add_argument("--opt", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help=help_text)


def opt_list(args: argparse.Namespace) -> List[str]:
    """``args.opt``'s pairs as the flat KEY VALUE list that ``load_config`` takes."""
    return [x for pair in args.opt for x in pair]


def load_tool_config(args: argparse.Namespace) -> CfgNode:
    """The config of ``--cfg`` with the ``--opt`` overrides, its decoding backend
    checked; raises ConfigError naming the key."""
    cfg = load_config(args.cfg_file, opt_list(args))
    check_decoding_backend(cfg.DATA.DECODING_BACKEND)
    return cfg
