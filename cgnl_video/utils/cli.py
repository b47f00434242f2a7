"""What the model tools (predict, extract_features, visualize_attention, export) share on the command line.

Each tool documents itself in its module docstring: the first paragraph is the
``--help`` description, the rest its epilog. Each names a model by ``--cfg`` and
``--checkpoint`` and takes config overrides as repeatable ``--opt KEY VALUE``.
Imports nothing heavy (the config is loaded on call), so that ``--help`` answers quickly.
"""

import argparse
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from fvcore.common.config import CfgNode


def docstring_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of a tool's docstring ``doc``
    and whose epilog is the rest, laid out as written."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def help_text(doc: str, details: str) -> str:
    """A tool's --help text, for a tool whose docstring would be too long with all of it.

    Args:
        doc: the module docstring: description, synopsis, and a last paragraph that
            points to ``details``.
        details: the rest of --help (inputs, outputs, exit status).
    Returns:
        ``doc`` without its last paragraph, then ``details``: the text ``docstring_parser`` takes.
    """
    return doc.rstrip().rsplit("\n\n", 1)[0] + "\n\n" + details


def tool_parser(doc: str, checkpoint_help: str = "checkpoint (ours, a bare state dict or an official Caffe2 pickle)"
                ) -> argparse.ArgumentParser:
    """``docstring_parser`` with the model's ``--cfg`` and ``--checkpoint``."""
    parser = docstring_parser(doc)
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


def load_tool_config(args: argparse.Namespace, cfg_file: Optional[str] = None) -> "CfgNode":
    """The config of ``cfg_file`` (default ``--cfg``) with the ``--opt`` overrides, its
    decoding backend checked; raises ConfigError naming the key."""
    from cgnl_video.config import load_config
    from cgnl_video.utils.torchcodec_support import check_decoding_backend

    cfg = load_config(cfg_file or args.cfg_file, opt_list(args))
    check_decoding_backend(cfg.DATA.DECODING_BACKEND)
    return cfg
