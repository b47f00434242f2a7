"""Every torchrun command in README.md and docs/*.md passes its own preflight
(config loading and validation, ``check_run`` for its world size, no run
warnings), read from the markdown itself so docs and tests cannot drift; and the
test batch need not divide the number of processes."""

import glob
import os
import shlex
from typing import List, NamedTuple

import pytest
import torch

from cgnl_video.config import load_config
from cgnl_video.data.loader import build_loader
from cgnl_video.engine.preflight import check_run, run_warnings
from docs_blocks import extract_blocks
from repo_paths import ROOT

REPO = ROOT
LAUNCHER = "tools/run_net.py"


class Launch(NamedTuple):
    where: str  # file:line of the command
    world_size: int  # nnodes x nproc_per_node
    cfg_file: str
    opts: List[str]


def bash_commands(text: str) -> List[tuple]:
    """(line number, command) of every shell block's commands, continuation lines joined
    (read as tests/docs/test_blocks_run.py reads them: tests/docs_blocks.py)."""
    return [(command.line, command.text) for block in extract_blocks(text, "") if block.kind == "shell"
            for command in block.commands]


def parse_torchrun(where: str, command: str) -> Launch:
    """The world size and run_net arguments of one ``torchrun ... tools/run_net.py ...`` command."""
    tokens = shlex.split(command)
    assert tokens[0] == "torchrun" and LAUNCHER in tokens, f"{where}: not a run_net launch: {command}"
    split = tokens.index(LAUNCHER)
    options = {}
    launcher_args = tokens[1:split]
    for i, token in enumerate(launcher_args):
        if token.startswith("--"):
            name, _, value = token[2:].partition("=")
            options[name] = value or launcher_args[i + 1]
    args = tokens[split + 1:]
    assert args[0] == "--cfg", f"{where}: run_net needs --cfg first: {command}"
    world = int(options.get("nnodes", 1)) * int(options["nproc_per_node"])
    return Launch(where, world, os.path.join(REPO, args[1]), args[2:])


def documented_launches() -> List[Launch]:
    files = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
    launches = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        for line, command in bash_commands(text):
            if command.startswith("torchrun"):
                launches.append(parse_torchrun(f"{os.path.relpath(path, REPO)}:{line}", command))
    return launches


LAUNCHES = documented_launches()


def test_the_docs_document_multi_gpu_and_multi_machine_launches():
    assert len(LAUNCHES) >= 4
    assert {launch.world_size for launch in LAUNCHES} >= {8, 16}
    assert {launch.where.split(":")[0] for launch in LAUNCHES} >= {"README.md", "docs/TRAINING.md"}


@pytest.mark.parametrize("launch", LAUNCHES, ids=[launch.where for launch in LAUNCHES])
def test_documented_torchrun_command_passes_its_preflight(launch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # these commands run on GPUs
    cfg = load_config(launch.cfg_file, launch.opts)
    check_run(cfg, launch.world_size)
    assert run_warnings(cfg, launch.world_size) == []


def test_continuation_lines_and_comments_are_parsed():
    text = "x\n```bash\n# a comment\ntorchrun --nnodes 2 --nproc_per_node=8 tools/run_net.py \\\n" \
           "    --cfg configs/a.yaml \\\n    TRAIN.BATCH_SIZE 128\n\npython other.py\n```\n"
    (first, command), (second, _other) = bash_commands(text)
    assert (first, second) == (4, 8)
    launch = parse_torchrun("t", command)
    assert launch.world_size == 16 and launch.opts == ["TRAIN.BATCH_SIZE", "128"]
    assert launch.cfg_file.endswith("configs/a.yaml")


def test_test_batch_need_not_divide_the_processes_and_every_video_is_scored_once(monkeypatch):
    """7 videos, TEST.BATCH_SIZE 2 over 3 processes: shares of 3, 2, 2, one video per step."""
    from cgnl_video.data import loader as loader_module

    cfg = load_config(None, ["TEST.BATCH_SIZE", "2", "TRAIN.BATCH_SIZE", "6", "DATA_LOADER.NUM_WORKERS", "0"])
    check_run(cfg, 3)
    videos = [(torch.zeros(1, 3, 1, 2, 2, dtype=torch.uint8), 0, index) for index in range(7)]
    seen = []
    for rank in range(3):
        monkeypatch.setattr(loader_module, "world_and_rank", lambda rank=rank: (3, rank))
        batches = list(build_loader(cfg, "test", dataset=videos))
        assert all(len(indices) == 1 for _views, _labels, indices in batches)
        seen += [int(i) for _views, _labels, indices in batches for i in indices]
    assert sorted(seen) == list(range(7))
