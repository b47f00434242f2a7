"""Docs that run: every shell command, console command and Python block of README.md,
docs/*.md, configs/README.md and MODEL_ZOO.md is executed, read from the markdown at
collection time (one test per block, id ``file:line``), so docs and tests cannot drift:
a block added to the docs is run by the next test session and fails until it runs.

Each block runs in its own sandbox, a copy of the repository's files without the
package (imported from this checkout through PYTHONPATH), outputs or data. What the
docs assume a user already has (downloaded videos and annotations, torchvision's
ImageNet weights, a trained demo run) is put in the sandbox from small real stand-ins
(``tests/docs_standins.py``) just before the command that reads it (``PROVIDED``); what
a block reads that an earlier block of the docs writes (a video, features, event files)
comes from that block's sandbox, after it ran. How a command may differ from the docs,
each with its reason:

* ``EXCEPTIONS``: not run (several GPUs or machines, the test suite itself, a system
  package install);
* ``REPLACED``: run as another command (a download by its stand-in, a long listing by
  one of its rows);
* ``APPENDED``: run with small overrides appended (a narrow network, one epoch, few
  test views; small benchmark sizes); the checkpoint a run starts from or tests is the
  untrained narrow network (``RUN_CHECKPOINT``);
* a usage synopsis (``[--option ...]``, placeholders) is checked against the tool's
  ``--help``: every option it names must exist;
* ``KNOWN_FAILURES``: a block that fails for a reported bug (it must fail so, and the
  entry must go when it runs).

Table entries are patterns matched against the commands (``a && b`` split, comments
stripped) or blocks, never line numbers, and every entry must still match something in
the docs (``test_every_table_entry_matches_the_docs``), so the tables cannot rot.

Checks besides the exit status (0, unless a console listing shows it with ``echo $?``):
where the docs show output (console blocks; the plain block after a code block listed
in ``FOLLOWING_OUTPUT``), the command's output must have its shape
(``docs_blocks.output_mismatch``: numbers and class names abstracted, lines in order,
JSON by keys; ``VARYING_OUTPUT``: parts that depend on the stand-in runs' results);
``OUTPUT_IN_FILE``: printed table rows must be in the docs' table; ``NOT_IN_OUTPUT``:
e.g. a manifest builder must find the stand-in clips.

The blocks run two at a time (the machine's cores) in a pool started by the first
test, a block after those whose output it reads; every test waits for its own block.
A block whose commands are all EXCEPTIONS is not run: its test skips at once.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pytest

from cgnl_video.prep.synthetic import CLASS_NAMES
from docs_blocks import Block, extract_blocks, output_mismatch, split_and, strip_comment, unquoted
from docs_standins import REPO, StandIns, make_sandbox, provide

DOC_FILES = ["README.md", "docs/*.md", "configs/README.md", "MODEL_ZOO.md"]
STEP_TIMEOUT_S = 280

# ----------------------------------------------------------------------------- how commands run

#: appended to ``run_net.py`` with a paper config: a narrow network on tiny clips, seconds instead of days
TINY_RUN = ("RESNET.WIDTH_PER_GROUP 4 RESNET.IMAGENET_WEIGHTS '' DATA.NUM_FRAMES 8 DATA.SAMPLING_RATE 1 "
            "DATA.TRAIN_CROP_SIZE 32 DATA.VAL_SHORT_SIDE 32 DATA.VAL_CROP_SIZE 32 DATA.TEST_CROP_SIZE 32 "
            "DATA_LOADER.NUM_WORKERS 0 SOLVER.MAX_EPOCH 1 SOLVER.WARMUP_EPOCHS 0.0 SOLVER.STEPS '[0]' "
            "SOLVER.LRS '[1.0]' TRAIN.BATCH_SIZE 2 TEST.BATCH_SIZE 2 TEST.NUM_ENSEMBLE_VIEWS 2 "
            "TEST.NUM_SPATIAL_CROPS 1")
#: appended to ``run_net.py`` with the demo config (the 40-epoch run is the ``tools_demo`` stand-in)
TINY_DEMO = "SOLVER.MAX_EPOCH 1 TEST.NUM_ENSEMBLE_VIEWS 2 TEST.NUM_SPATIAL_CROPS 1 DATA_LOADER.NUM_WORKERS 0"

#: the exceptions: command pattern -> why it is not run
EXCEPTIONS: Dict[str, str] = {
    r"^torchrun .*\btools/run_net\.py ": (
        "several GPUs or machines (nproc_per_node 4-8, nnodes 2, RESNET.NORM sync_batchnorm is GPU-only): "
        "tests/docs/test_launch_commands.py runs every documented torchrun command's start-up checks for its "
        "world size, tests/engine/test_distributed.py trains on 2 gloo processes"),
    r"^python -m pytest -q tests$": "the test suite itself (what CI runs, .ci/run): not run again from inside it",
    r"^apt-get install -y ffmpeg$": "installs a system package (needs root and the network)",
    r"^python benchmarks/bench_extract\.py$": (
        "needs the ffmpeg program, which the line before installs (not run here), and even at its smallest "
        "(--videos 1 --seconds 1 --repeats 1 --decode-repeats 1) takes about 30 s of CPU (every decoder at 1 and "
        "all cores, torchcodec's 3 s import in each process); tests/prep/test_extract.py and "
        "tests/data/test_torchcodec.py cover extract_frames' decoders"),
    # Blocks that landed together with this harness; each is covered by the test named.
    r"^python -m pytest -q tests -p no:cacheprovider$": (
        "the test suite itself (what CI runs): not run again from inside it"),
    r"^python -m pytest -q tests/engine/test_hand_computed\.py ": "runs two test files of the suite, which the suite "
                                                           "runs itself (the sandbox does not copy the tests)",
    r"^tensorboard --logdir ": ("starts a server that runs until stopped; tests/engine/test_tensorboard.py reads the "
                                "event files"),
    r"\b\w+_IN_pretrain_400k\.pkl\b": (
        "needs an official non-local Kinetics-400 checkpoint, which the tests cannot download (docs/MODELS.md "
        "says so); tests/models/test_caffe2_checkpoint.py loads stand-ins built from the official naming rules "
        "through the same reader (and tools/convert_checkpoint.py), tests/engine/test_fine_tune_by_name.py "
        "fine-tunes from one"),
    r"^python benchmarks/gpu_validation\.py --quick --device cpu$": (
        "the same command (plus --out) runs in tests/engine/test_gpu_validation.py "
        "(test_quick_cpu_run_reports_every_phase_ok_with_its_figures, which also checks every phase's figures): "
        "most of a minute of CPU, not spent twice"),
    # docs/TRAINING.md, "10. Clusters": what needs a SLURM cluster
    r"^python tools/submit\.py --cfg configs/": (
        "submits to SLURM (sbatch): tests/tools/test_submit.py checks the sbatch script such a command writes "
        "(with stand-in sbatch and srun programs), tests/engine/test_cluster.py the variables of each task of a "
        "2-node job and the requeue after a checkpoint; the --local line of that section runs the same job"),
    r"^squeue |^sacct ": "SLURM's queue and accounting commands: they need a cluster",
    r"^tail -f ": "follows the log of a cluster run until stopped (section 5 describes log.txt)",
    r"^trap .*\bscontrol requeue\b": "requeues a SLURM job: it needs a running job of a cluster",
    r"^srun torchrun ": (
        "starts torchrun on every node of a SLURM allocation (its first node's name from scontrol): "
        "tests/engine/test_distributed.py trains on 2 gloo "
        "processes, tests/docs/test_launch_commands.py checks the multi-machine torchrun commands of section 4"),
    r'^wait "\$pid"$': "waits for the srun of the sbatch script, which is not run",
    r"^python benchmarks/bench_claim\.py( --jobs \d+)?$": (
        "trains 15 small networks (25 min on 2 shared cores); the same script with --quick runs in "
        "tests/repo/test_bench_claim.py, which checks its table and JSON"),
    r"^python benchmarks/bench_blocks\.py$": (
        "the paper's res3/res4 shapes and an N sweep to 32x112x112: minutes of CPU; its --quick mode runs in "
        "gpu_validation's quick run (tests/engine/test_gpu_validation.py), tests/models/test_fast_path.py "
        "covers the blocks"),
}

#: command pattern -> (what runs instead, why)
REPLACED: Dict[str, Tuple[str, str]] = {
    r'^pip install -e "\.\[\w+\]"$': (
        "python -c 'import cgnl_video, pytest'",
        "the package and its extras are installed already (.ci/run installs the test extra, which holds "
        "tensorboard and torchcodec); a real install would repoint the editable install at the sandbox"),
    r"^unrar x UCF101\.rar data/ucf101/$": (
        "test -d data/ucf101/UCF-101",
        "no stand-in RAR archive can be written (no free RAR encoder): the sandbox holds the tree it "
        "extracts to, data/ucf101/UCF-101/<Class>/*.avi (PROVIDED)"),
    r"^python tools/model_info\.py --table configs/minikinetics/R50\*\.yaml configs/minikinetics/R101\*\.yaml$": (
        "python tools/model_info.py --table configs/minikinetics/R50_CGNL8.yaml",
        "fvcore traces 17 full-size models (a minute of CPU): one of them, whose row must be in the docs' table "
        "(OUTPUT_IN_FILE); tests/tools/test_model_info.py checks every row's parameters"),
}

#: command pattern -> (arguments appended, why)
APPENDED: Dict[str, Tuple[str, str]] = {
    # (not a fine-tune from an official checkpoint: EXCEPTIONS)
    r"^python tools/run_net\.py --cfg configs/(minikinetics|ucf101)/(?!.*_IN_pretrain_400k\.pkl)": (
        TINY_RUN, "a narrow network (width 4) on 8 x 32 x 32 clips, 1 epoch, 2 test views, on the stand-in data; "
                  "no ImageNet weights (they fit the full-width network only; configs/README.md's weights "
                  "commands run); a fine-tune starts from the untrained narrow network of its Mini-Kinetics "
                  "config (RUN_CHECKPOINT), 200 classes, and trains 101"),
    r"^python tools/run_net\.py --cfg configs/demo/": (
        TINY_DEMO, "1 epoch and 2 x 1 test views instead of 40 epochs and 10 x 3 (the full-length demo run is "
                   "the tools_demo stand-in)"),
    r"^python tools/submit\.py --local .*--cfg configs/demo/": (
        TINY_DEMO, "1 epoch and 2 x 1 test views, as for run_net.py's demo lines"),
    r"^python data_prep/make_synthetic\.py --out [^\s\[]+$": (
        "--videos-per-class 3 --test-videos-per-class 2 --frames 24", "30 short videos instead of 192"),
    r"^python benchmarks/bench_train_step\.py$": (
        "--depths 50 --variants baseline --modes eager --batch 2 --frames 8 --size 32 --width 8 --repeats 1 "
        "--warmup 1 --threads 1",
        "one small case"),
    r"^python benchmarks/bench_end_to_end\.py$": (
        "--quick --width 8 --batch 2 --frames 8 --size 32 --test-size 32 --steps 2 --workers 1", "one small case"),
    r"^python benchmarks/bench_loader\.py$": (
        "--videos 1 --clips 2 --repeats 1 --gops 30", "one small case"),
}


@dataclass(frozen=True)
class Provided:
    trigger: str  # pattern searched in a command (comments stripped)
    path: str  # in the sandbox (made before the command when it does not exist) and in its source
    standin: Optional[str]  # the stand-in holding it (tests/docs_standins.py, laid out as a sandbox)
    writer: Optional[str] = None  # the pattern of the block of the docs that writes it


def table_rows(text: str) -> List[List[str]]:
    """The rows of a text table: columns apart by two blanks or more, the header line and
    ``#`` comment lines left out."""
    lines = [line.strip() for line in text.strip().splitlines()[1:]]
    return [re.split(r"\s{2,}", line) for line in lines if line and not line.startswith("#")]


#: what the docs assume exists, put in the sandbox from a stand-in just before a command that
#: reads it (not for a block that names the path as its OUTPUT_DIR: it makes it)
STANDINS = r"""
    pattern in a command                                path                                       stand-in
    # the demo's data: DATA.PREPARE_SYNTHETIC finds it and skips making it (tests/tools/test_demo.py and
    # DATA_PREP.md's demo block make it)
    configs/demo/C2D_CGNL_synthetic\.yaml                demo_data/synthetic                        synthetic
    output/tools_demo/                                  output/tools_demo/data                     tools_demo
    output/tools_demo/                                  output/tools_demo/demo_cgnl                tools_demo
    output/tools_demo/                                  output/tools_demo/demo_nl                  tools_demo
    # UCF-101: the downloads, and what the docs' commands make of them for the commands that read those
    unrar x UCF101\.rar|--src data/ucf101/UCF-101\b      data/ucf101/UCF-101                        ucf101
    UCF101TrainTestSplits-RecognitionTask\.zip           UCF101TrainTestSplits-RecognitionTask.zip  ucf101
    --annotations data/ucf101/ucfTrainTestlist\b         data/ucf101/ucfTrainTestlist               ucf101
    --root data/ucf101/frames\b|configs/ucf101/          data/ucf101/frames                         ucf101
    configs/ucf101/                                     data/ucf101/split1                         ucf101
    # Kinetics / Mini-Kinetics-200
    data/kinetics/videos\b                               data/kinetics/videos                       kinetics
    data/kinetics/annotations\b                          data/kinetics/annotations                  kinetics
    --ytid-lists data/minikinetics200\b                  data/minikinetics200/train_ytid_list.txt   kinetics
    --ytid-lists data/minikinetics200\b                  data/minikinetics200/val_ytid_list.txt     kinetics
    --root data/kinetics/frames\b|configs/minikinetics/  data/kinetics/frames                       kinetics
    configs/minikinetics/                               data/minikinetics200/manifests             kinetics
    # "your own videos"
    --src my_videos\b                                    my_videos                                  generic
    --list-dir my_lists\b                                my_lists                                   generic
"""

#: what a block of the docs writes that later blocks read: path -> pattern of the block writing it.
#: A block naming the path gets it from that block's sandbox, after it ran (it runs first).
WRITTEN_BY: Dict[str, str] = {
    "output/tools_demo/long_video.mp4": r'encode_mp4\("output/tools_demo/long_video\.mp4"',
    "output/tools_demo/features_test": r"--out output/tools_demo/features_test\n",
    "output/demo_tb/tensorboard": r"OUTPUT_DIR output/demo_tb\n",
}

PROVIDED = [Provided(*row) for row in table_rows(STANDINS)] + \
    [Provided(re.escape(path) + r"(?![\w.])", path, None, writer) for path, writer in WRITTEN_BY.items()]

#: torchvision ImageNet weights named in a command: a stand-in goes into torchvision's cache (TORCH_HOME)
IMAGENET_WEIGHTS = re.compile(r"\b(IMAGENET1K_V\d)\b")
#: a checkpoint of a paper config's run named in a command or in the config file it names (``--cfg``):
#: to test, or to start from; the untrained weights of that config's network with TINY_RUN are put there
RUN_CHECKPOINT = re.compile(r"\boutput/(minikinetics|ucf101)/(\w+)/checkpoints/checkpoint_epoch_(\d+)\.pyth\b")

#: block pattern -> (text its failure output must contain, the bug): run, and must fail so
KNOWN_FAILURES: Dict[str, Tuple[str, str]] = {
}

#: block pattern -> why the next plain (or ``text``) block is the output of its last command
FOLLOWING_OUTPUT: Dict[str, str] = {
    r"python tools/run_net\.py --cfg configs/demo/C2D_CGNL_synthetic\.yaml\n": "the demo's last line",
    r'torch\.hub\.load\("\.", "c2d_r50_cgnl8"': "what the hub example prints",
    r"model\.layer3 = nn\.Sequential\(\*model\.layer3\[:-1\], block": "what the image-network example prints",
    r'custom_metadata_map\["cgnl_video"\]': "what the onnxruntime example prints",
    r'root = "output/tools_demo/features_test"': "what the nearest-neighbour example prints",
    r"python -m cgnl_video\.utils\.tensorboard output/demo_tb/tensorboard\n": "the scalars of the demo run",
    r"--cfg configs/ucf101/R50_CGNL1_from_minikinetics\.yaml\n": "the fine-tune's log lines on its checkpoint",
}

#: command pattern -> (pattern of the parts of the docs' listing that depend on the runs' results, why):
#: compared as "..." (anything); a line that is nothing else is not compared
VARYING_OUTPUT: Dict[str, Tuple[str, str]] = {
    r"^python tools/analyze_test\.py ": (
        r"(?<=largest gains: ).*|(?<=largest losses: ).*|^ *\w+ -> \w+: .*",
        "how many classes gain, lose or are confused depends on the results: the stand-in runs are smaller "
        "(12 test videos, not 96)"),
}

#: command pattern -> its output lines starting with "|" must be lines of the block's markdown file
OUTPUT_IN_FILE: Dict[str, str] = {
    r"^python tools/model_info\.py --table ": "the sizes table of docs/MODELS.md",
}

#: command pattern -> (pattern its output must not have, why)
NOT_IN_OUTPUT: Dict[str, Tuple[str, str]] = {
    r"^python data_prep/build_manifests\.py \w+ ": (
        r"\bfound 0/", "every split must find clips of the stand-in data (a layout the docs describe)"),
}

#: words abstracted when output shapes are compared (the demo set's class names)
CLASS_WORDS = CLASS_NAMES

SYNOPSIS = re.compile(r"(?:^|\s)\[(?:--|[A-Z]|\.\.\.)")


# ----------------------------------------------------------------------------- the docs' blocks


def documented_blocks() -> List[Block]:
    paths = sorted({p for pattern in DOC_FILES for p in glob.glob(os.path.join(REPO, pattern))})
    blocks = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            blocks += extract_blocks(handle.read(), os.path.relpath(path, REPO))
    return blocks


ALL_BLOCKS = documented_blocks()
RUNNABLE = [block for block in ALL_BLOCKS if block.kind]


def command_parts(block: Block) -> List[str]:
    """The commands of a shell or console block, ``a && b`` split, comments stripped."""
    return [part for command in block.commands for part in split_and(strip_comment(command.text))]


def first_match(table: Dict[str, object], text: str) -> Optional[str]:
    return next((pattern for pattern in table if re.search(pattern, text)), None)


def block_match(table: Dict[str, object], block: Block) -> Optional[str]:
    return next((pattern for pattern in table if re.search(pattern, block.text)), None)


def writer_of(entry: Provided) -> Block:
    """The block that writes ``entry.path`` (WRITTEN_BY): exactly one must match."""
    blocks = [block for block in RUNNABLE if re.search(entry.writer, block.text)]
    if len(blocks) != 1:
        raise ValueError(f"WRITTEN_BY {entry.path}: {len(blocks)} blocks match {entry.writer!r}, not one")
    return blocks[0]


def makes(block: Block, entry: Provided) -> bool:
    """Whether ``block`` makes ``entry.path`` itself: it writes it, or trains into it."""
    if entry.writer and re.search(entry.writer, block.text):
        return True
    return re.search(rf"\bOUTPUT_DIR {re.escape(entry.path)}(?![\w/])", block.text) is not None


def texts_run(block: Block) -> List[str]:
    """What runs of ``block``: its Python text, or its commands that are not EXCEPTIONS."""
    if block.kind == "python":
        return [block.text]
    return [command for command in command_parts(block) if not first_match(EXCEPTIONS, command)]


def writers_read_by(block: Block) -> List[Block]:
    """The blocks whose output ``block`` reads (WRITTEN_BY)."""
    return [writer_of(entry) for entry in PROVIDED if entry.writer and not makes(block, entry)
            and any(re.search(entry.trigger, text) for text in texts_run(block))]


def not_run(block: Block) -> Optional[str]:
    """Why ``block`` is not run (every command is one of the EXCEPTIONS), or None."""
    if texts_run(block):
        return None
    return "; ".join(sorted({plan(command).note for command in command_parts(block)})) or "no command"


# ----------------------------------------------------------------------------- running a block


@dataclass
class Step:
    docs: str  # the command as the docs write it
    run: Optional[str]  # what runs (None: skipped)
    note: str = ""  # how and why it differs from the docs
    rc: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    problems: List[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        """stdout, then stderr: the order of most of the docs' listings."""
        return joined(self.stdout, self.stderr)

    @property
    def stderr_first(self) -> str:
        """stderr, then stdout: a listing where a tool reports a failed input before its results."""
        return joined(self.stderr, self.stdout)


def joined(first: str, second: str) -> str:
    """Two outputs one after the other, the second on a line of its own."""
    return first + ("" if first.endswith("\n") or not first else "\n") + second


def plan(command: str) -> Step:
    """How one command of the docs runs (EXCEPTIONS / REPLACED / APPENDED / a synopsis)."""
    if re.match(r"^[A-Za-z_]\w*=", command):
        return Step(command, command)
    if SYNOPSIS.search(unquoted(command)):
        return Step(command, command, "usage synopsis: its options are checked against --help")
    pattern = first_match(EXCEPTIONS, command)
    if pattern:
        return Step(command, None, f"skipped: {EXCEPTIONS[pattern]}")
    pattern = first_match(REPLACED, command)
    if pattern:
        replacement, why = REPLACED[pattern]
        return Step(command, replacement, f"replaced: {why}")
    pattern = first_match(APPENDED, command)
    if pattern:
        extra, why = APPENDED[pattern]
        return Step(command, f"{command} {extra}", f"appended: {why}")
    return Step(command, command)


class Runner:
    """Runs blocks in ``pool``, in sandboxes under ``root``, with the session's stand-ins;
    ``futures``: ``{block id: Future of its steps}``."""

    def __init__(self, root: str, standins: StandIns, env: Dict[str, str], pool: ThreadPoolExecutor):
        self.root, self.standins, self.env, self.pool = root, standins, env, pool
        self.futures: Dict[str, Future] = {}
        self.writers = {writer_of(entry).id for entry in PROVIDED if entry.writer}

    def submit(self, block: Block) -> None:
        """Run ``block`` in the pool, after the blocks whose output it reads (submitted first:
        the pool starts blocks in order, so a block never waits for one not started)."""
        if block.id in self.futures:
            return
        for writer in writers_read_by(block):
            self.submit(writer)
        self.futures[block.id] = self.pool.submit(self.run_block, block)

    def sandbox_path(self, block_id: str) -> str:
        return os.path.join(self.root, re.sub(r"\W+", "_", block_id))

    def remove_writers_sandboxes(self) -> None:
        """The sandboxes kept for the blocks reading them, unless something failed there."""
        for block_id in self.writers & set(self.futures):
            future = self.futures[block_id]
            if future.done() and not future.cancelled() and not future.exception() \
                    and not any(step.problems for step in future.result()):
                shutil.rmtree(self.sandbox_path(block_id), ignore_errors=True)

    def source(self, entry: Provided) -> str:
        """Where ``entry.path`` comes from: its stand-in, or the sandbox of the block that
        writes it, once that block has run without problems."""
        if entry.standin:
            return os.path.join(self.standins.get(entry.standin), entry.path)
        writer = writer_of(entry)
        if any(step.problems for step in self.futures[writer.id].result()):
            raise RuntimeError(f"{entry.path} is written by the block {writer.id}, which failed")
        return os.path.join(self.sandbox_path(writer.id), entry.path)

    def provide_for(self, command: str, block: Block, sandbox: str) -> None:
        """Put what ``command`` of ``block`` reads into ``sandbox``: PROVIDED paths, run
        checkpoints (RUN_CHECKPOINT) and ImageNet weights (IMAGENET_WEIGHTS)."""
        for entry in PROVIDED:
            target = os.path.join(sandbox, entry.path)
            if re.search(entry.trigger, command) and not os.path.lexists(target) and not makes(block, entry):
                provide(self.source(entry), target)
        for match in RUN_CHECKPOINT.finditer(with_configs(command, sandbox)):
            target = os.path.join(sandbox, match.group(0))
            if not os.path.lexists(target):
                dataset, name, epoch = match.groups()
                weights = self.standins.get(f"checkpoint_{dataset}_{name}",
                                            lambda folder: tiny_checkpoint(folder, dataset, name, int(epoch)))
                provide(os.path.join(weights, "weights.pyth"), target)
        for weights in IMAGENET_WEIGHTS.findall(command):
            archs = re.findall(r"\b(resnet(?:50|101))\(", command) or ["resnet50", "resnet101"]
            for arch in archs:
                self.standins.imagenet_standin(arch, weights)

    def shell(self, step: Step, text: str, sandbox: str, previous_status: int = 0) -> None:
        """Run ``text`` with bash in ``sandbox`` (``$?`` = ``previous_status``) into ``step``."""
        script = f"set -o pipefail\n(exit {previous_status})\n{text}\n"
        try:
            result = subprocess.run(["bash", "-c", script], cwd=sandbox, env=self.env, capture_output=True,
                                    text=True, timeout=STEP_TIMEOUT_S)
            step.rc, step.stdout, step.stderr = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired as error:
            step.rc, step.stdout = -1, f"{error.stdout or ''}\n[timed out after {STEP_TIMEOUT_S} s]"

    def synopsis(self, step: Step, sandbox: str) -> None:
        """Every ``--option`` of a usage synopsis is in the tool's ``--help`` (and its
        subcommands' for ``{a,b,c}``)."""
        tokens = step.docs.split()
        program = " ".join(tokens[:2])
        helps = [program]
        choices = re.search(r"\{([\w,]+)\}", step.docs)
        if choices:
            helps += [f"{program} {choice}" for choice in choices.group(1).split(",")]
        text = ""
        for command in helps:
            self.shell(step, f"{command} --help", sandbox)
            if step.rc:
                step.problems.append(f"`{command} --help` failed ({step.rc}):\n{step.output[-2000:]}")
            text += step.stdout
        step.stdout, step.stderr = text, ""
        for option in sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", step.docs))):
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                step.problems.append(f"the synopsis names {option}, which `{program} --help` does not list")

    def run_block(self, block: Block) -> List[Step]:
        """Run ``block`` in a fresh sandbox, removed afterwards unless something failed or
        later blocks read from it."""
        sandbox = make_sandbox(self.sandbox_path(block.id))
        steps = [self._python(block, sandbox)] if block.kind == "python" else self._commands(block, sandbox)
        if not any(step.problems for step in steps) and block.id not in self.writers:
            shutil.rmtree(sandbox, ignore_errors=True)
        return steps

    def _commands(self, block: Block, sandbox: str) -> List[Step]:
        """The commands of a shell or console block in order, until one has a problem;
        ``NAME=value`` assignments stay in effect for the commands after them."""
        steps: List[Step] = []
        assignments: List[str] = []
        status = 0
        for number, command in enumerate(block.commands):
            parts = split_and(strip_comment(command.text))
            following = block.commands[number + 1].text if number + 1 < len(block.commands) else ""
            for index, part in enumerate(parts):
                step = plan(part)
                steps.append(step)
                if step.run is None:
                    continue
                self.provide_for(part, block, sandbox)
                if step.note.startswith("usage synopsis"):
                    self.synopsis(step, sandbox)
                elif part.startswith("echo $?") and command.output:
                    self.shell(step, step.run, sandbox, status)
                    if step.stdout.split() != [line.strip() for line in command.output if line.strip()]:
                        step.problems.append(f"the docs show {command.output}, the exit status was {status}")
                else:
                    self.shell(step, "\n".join(assignments + [step.run]), sandbox, status)
                    status = step.rc
                    if re.match(r"^[A-Za-z_]\w*=", part):
                        assignments.append(part)
                    last = index == len(parts) - 1
                    self._check(step, block, command.output if last else [],
                                shows_status=last and following.startswith("echo $?"))
            if any(step.problems for step in steps):
                break
        if steps and steps[-1].run is not None and not steps[-1].problems:
            self._following_output(block, steps[-1])
        return steps

    def _check(self, step: Step, block: Block, shown: List[str], shows_status: bool) -> None:
        """Exit status 0 (unless the docs show it), the output the docs show, and the
        OUTPUT_IN_FILE / NOT_IN_OUTPUT rules."""
        if step.rc != 0 and not shows_status:
            step.problems.append(f"exit status {step.rc}")
        if shown:
            self._compare(step, compared_lines(step.docs, shown))
        pattern = first_match(NOT_IN_OUTPUT, step.docs)
        if pattern and re.search(NOT_IN_OUTPUT[pattern][0], step.output):
            step.problems.append(f"the output has {NOT_IN_OUTPUT[pattern][0]!r}: {NOT_IN_OUTPUT[pattern][1]}")
        self._check_rows(step, block)

    def _python(self, block: Block, sandbox: str) -> Step:
        self.provide_for(block.text, block, sandbox)
        with open(os.path.join(sandbox, "docs_block.py"), "w", encoding="utf-8") as handle:
            handle.write(block.text)
        step = Step(block.text, "python docs_block.py")
        self.shell(step, step.run, sandbox)
        if step.rc:
            step.problems.append(f"exit status {step.rc}")
        else:
            self._following_output(block, step)
        return step

    def _compare(self, step: Step, expected: List[str]) -> None:
        """The output has the shape of the docs' listing, which shows stdout and stderr one
        after the other, in either order."""
        mismatch = output_mismatch(expected, step.output.splitlines(), CLASS_WORDS)
        if mismatch and output_mismatch(expected, step.stderr_first.splitlines(), CLASS_WORDS):
            step.problems.append(f"output differs in shape from the docs: {mismatch}")

    def _following_output(self, block: Block, step: Step) -> None:
        if not block_match(FOLLOWING_OUTPUT, block):
            return
        position = ALL_BLOCKS.index(block)
        following = ALL_BLOCKS[position + 1] if position + 1 < len(ALL_BLOCKS) else None
        if following is None or following.path != block.path or following.lang not in ("", "text"):
            step.problems.append("FOLLOWING_OUTPUT: the next block of the file is not a plain or text block")
            return
        self._compare(step, following.text.splitlines())

    def _check_rows(self, step: Step, block: Block) -> None:
        if not first_match(OUTPUT_IN_FILE, step.docs) or step.rc:
            return
        with open(os.path.join(REPO, block.path), encoding="utf-8") as handle:
            lines = set(handle.read().splitlines())
        rows = [line for line in step.stdout.splitlines() if line.startswith("|")]
        if not rows:
            step.problems.append("OUTPUT_IN_FILE: the command printed no table row")
        step.problems += [f"the row {row!r} is not in {block.path}" for row in rows if row not in lines]


def with_configs(command: str, sandbox: str) -> str:
    """``command`` and the text of the config files it names with ``--cfg`` (in ``sandbox``)."""
    text = command
    for path in re.findall(r"--cfg (\S+\.yaml)\b", command):
        if os.path.isfile(os.path.join(sandbox, path)):
            with open(os.path.join(sandbox, path), encoding="utf-8") as handle:
                text += "\n" + handle.read()
    return text


def compared_lines(command: str, shown: List[str]) -> List[str]:
    """The docs' listing of ``command`` as compared: VARYING_OUTPUT parts as ``...``."""
    pattern = first_match(VARYING_OUTPUT, command)
    if not pattern:
        return shown
    lines = [re.sub(VARYING_OUTPUT[pattern][0], "...", line) for line in shown]
    return [line for line in lines if line.strip() != "..."]


def describe(block: Block, steps: List[Step]) -> str:
    lines = [f"{block.id} ({block.kind} block)"]
    for step in steps:
        lines.append(f"$ {step.docs if step.run == step.docs else step.docs + '   # docs'}")
        if step.run is not None and step.run != step.docs:
            lines.append(f"$ {step.run}   # run")
        if step.note:
            lines.append(f"  ({step.note})")
        if step.problems:
            lines.append("  output (last 4000 characters):\n" + step.output[-4000:])
            lines += [f"  PROBLEM: {problem}" for problem in step.problems]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- stand-ins and pool


def tiny_checkpoint(folder: str, dataset: str, name: str, epoch: int) -> None:
    """``folder/weights.pyth``: a checkpoint of ``configs/<dataset>/<name>.yaml``'s network with
    TINY_RUN (untrained: a test-only command scores it, a fine-tuning one starts from it)."""
    import shlex

    import torch

    from cgnl_video.config import load_config
    from cgnl_video.models import build_model

    cfg = load_config(os.path.join(REPO, "configs", dataset, f"{name}.yaml"), shlex.split(TINY_RUN))
    torch.manual_seed(0)
    os.makedirs(folder)
    torch.save({"model": build_model(cfg).state_dict(), "epoch": epoch}, os.path.join(folder, "weights.pyth"))


def docs_env(torch_home: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(TORCH_HOME=torch_home, MPLBACKEND="Agg", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@pytest.fixture(scope="module")
def docs_runs(request, tmp_path_factory):
    """``{block id: Future of its steps}`` for the blocks selected in this session that run
    (and the blocks whose output they read), two at a time in file order."""
    this_module = sys.modules[__name__]
    selected = [item.callspec.params["block"] for item in request.session.items
                if getattr(item, "module", None) is this_module and hasattr(item, "callspec")
                and "block" in item.callspec.params]
    standins_root = str(tmp_path_factory.mktemp("docs_standins"))
    env = docs_env(os.path.join(standins_root, "torch_home"))
    standins = StandIns(standins_root, env)
    pool = ThreadPoolExecutor(max_workers=2)
    runner = Runner(str(tmp_path_factory.mktemp("docs_sandboxes")), standins, env, pool)
    for block in selected:
        if not not_run(block):
            runner.submit(block)
    yield runner.futures
    pool.shutdown(wait=True, cancel_futures=True)
    runner.remove_writers_sandboxes()
    shutil.rmtree(standins_root, ignore_errors=True)  # ImageNet stand-ins and trained runs: hundreds of MB


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_documented_block_runs(block, docs_runs):
    skipped = not_run(block)
    if skipped:
        pytest.skip(skipped)
    steps = docs_runs[block.id].result()
    report = describe(block, steps)
    print(report)  # shown with -rP: what ran, and how it differs from the docs
    known = block_match(KNOWN_FAILURES, block)
    failed = any(step.problems for step in steps)
    if known:
        needle, bug = KNOWN_FAILURES[known]
        assert failed, f"KNOWN_FAILURES entry {known!r} now runs: remove it ({bug})\n{report}"
        assert any(needle in step.output for step in steps), \
            f"fails, but not with {needle!r} as KNOWN_FAILURES expects:\n{report}"
        pytest.xfail(bug)
    assert not failed, report


def test_the_docs_have_blocks_of_every_kind():
    kinds = {block.kind for block in RUNNABLE}
    assert kinds == {"shell", "console", "python"}
    files = {block.path for block in RUNNABLE}
    assert {"README.md", "docs/TOOLS.md", "docs/TRAINING.md", "docs/DATA_PREP.md", "configs/README.md"} <= files


def test_every_table_entry_matches_the_docs():
    """No entry of EXCEPTIONS, REPLACED, APPENDED, PROVIDED, WRITTEN_BY, KNOWN_FAILURES,
    FOLLOWING_OUTPUT, VARYING_OUTPUT or OUTPUT_IN_FILE outlives the command or block it was
    written for."""
    commands = [part for block in RUNNABLE for part in command_parts(block)]
    commands += [block.text for block in RUNNABLE if block.kind == "python"]
    texts = [block.text for block in RUNNABLE]
    stale = [f"{name}: {pattern}" for name, table in
             (("EXCEPTIONS", EXCEPTIONS), ("REPLACED", REPLACED), ("APPENDED", APPENDED),
              ("OUTPUT_IN_FILE", OUTPUT_IN_FILE), ("NOT_IN_OUTPUT", NOT_IN_OUTPUT), ("VARYING_OUTPUT", VARYING_OUTPUT))
             for pattern in table if not any(re.search(pattern, command) for command in commands)]
    stale += [f"PROVIDED: {entry.trigger} -> {entry.path}" for entry in PROVIDED
              if not any(re.search(entry.trigger, command) for command in commands)]
    stale += [f"WRITTEN_BY: {entry.path} is read by no other block" for entry in PROVIDED
              if entry.writer and not any(writer_of(entry) in writers_read_by(block) for block in RUNNABLE)]
    stale += [f"provider: {pattern.pattern}" for pattern in (RUN_CHECKPOINT, IMAGENET_WEIGHTS)
              if not any(pattern.search(command) for command in commands)]
    stale += [f"{name}: {pattern}" for name, table in (("KNOWN_FAILURES", KNOWN_FAILURES),
                                                      ("FOLLOWING_OUTPUT", FOLLOWING_OUTPUT))
              for pattern in table if not any(re.search(pattern, text) for text in texts)]
    assert not stale, "table entries that match no command of the docs any more:\n" + "\n".join(stale)


def test_no_command_is_both_skipped_and_changed():
    for block in RUNNABLE:
        for command in command_parts(block):
            tables = (("EXCEPTIONS", EXCEPTIONS), ("REPLACED", REPLACED), ("APPENDED", APPENDED))
            rules = [name for name, table in tables
                     if first_match(table, command)]
            assert len(rules) <= 1, f"{block.id}: {command} matches {rules}"


def test_extraction_of_the_markdown_forms():
    text = ("# t\n\n1. step\n\n   ```bash\n   python a.py --x 1 \\\n       --y 2   # note\n   ```\n\n"
            "```console\n$ printf 'x' > f && python b.py \\\n    --z\nline one\n   12.50%  disc\n$ echo $?\n1\n```\n"
            "```python\nprint(1)\n```\n\n```\nplain\n```\n")
    shell, console, python, plain = extract_blocks(text, "t.md")
    assert (shell.line, shell.kind, shell.first_line) == (5, "shell", "python a.py --x 1 \\")
    assert [(c.line, c.text) for c in shell.commands] == [(6, "python a.py --x 1 --y 2   # note")]
    assert strip_comment(shell.commands[0].text) == "python a.py --x 1 --y 2"
    first, echo = console.commands
    assert (first.line, first.text, first.output) == (11, "printf 'x' > f && python b.py --z",
                                                      ["line one", "   12.50%  disc"])
    assert split_and(first.text) == ["printf 'x' > f", "python b.py --z"]
    assert split_and("python -c 'a && b' && ls") == ["python -c 'a && b'", "ls"]
    assert (echo.text, echo.output) == ("echo $?", ["1"])
    assert (python.kind, python.text, plain.kind) == ("python", "print(1)\n", None)


def test_output_shapes():
    docs = ["x.mp4 (30 views)", "   81.10%  ring", "[mov @ 0x56] moov atom not found",
            "error: cannot open /work/main/output/b.mp4", "top-1: ...%"]
    run = ["warning: something", "x.mp4 (2 views)", "    9.00%  disc", "error: cannot open /tmp/s/output/b.mp4",
           "top-1: 12.5%"]
    assert output_mismatch(docs, run, CLASS_WORDS) is None
    assert output_mismatch(docs, run[:2], CLASS_WORDS) is not None  # a line missing
    assert output_mismatch(["a 1", "b 2"], ["b 2", "a 1"]) is not None  # order matters
    assert output_mismatch(["(2, 6) tensor([1.0000, 1.0000])"], ["(2, 6) tensor([1., 1.])"]) is None
    assert output_mismatch(['{"p": [{"k": 1}]}'], ['{"p": [{"k": 0.5}]}']) is None
    assert output_mismatch(['{"p": [{"k": 1}]}'], ['{"p": [{"q": 1}]}']) is not None
    assert output_mismatch(["train/lr  40  1..40  4.7e-07"], ["train/lr  1  1..1  0.01"]) is None
    logged = ["[05/11 23:59:01 INFO resume.py:86] initialised the weights from a.pyth (3 tensors)"]
    assert output_mismatch(["initialised the weights from a.pyth (327 tensors)"], logged) is None
    assert output_mismatch(["initialised the weights from b.pyth (327 tensors)"], logged) is not None
    analysis = ["worst classes: a 1%", "  largest gains: a +1, b +2", "  largest losses: none", "  a -> b: 1 videos"]
    assert compared_lines("python tools/analyze_test.py x", analysis) == \
        ["worst classes: a 1%", "  largest gains: ...", "  largest losses: ..."]
    assert "--json" in plan("python tools/predict.py --cfg C [--json]").docs
    assert plan("python tools/predict.py --cfg C [--json]").note.startswith("usage synopsis")
    assert plan("torchrun --nproc_per_node 8 tools/run_net.py --cfg c.yaml").run is None
    assert plan("python -c 'print([A])'").note == ""  # brackets in quotes are no synopsis
