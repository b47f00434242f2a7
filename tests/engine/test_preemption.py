"""Stopping on SIGTERM / SIGUSR1 and resuming mid-epoch (engine.preemption, issue 23).

Real signals at iterations drawn by a seeded generator: the run finishes the iteration
in flight, writes a mid-epoch checkpoint and raises RunInterrupted; the rerun of the
same command ends with the weights of an uninterrupted run, bit for bit (DETERMINISTIC
on the CPU, dropout 0.5 so the global RNG matters), the same json_stats records (times
aside) and no iteration computed twice. Also: 2 gloo processes with one of them
signalled, a signal during validation and during a checkpoint write (TensorBoard
without duplicated steps), kill -9 inside a mid-epoch write, tools/run_net.py's exit
status 75 (loader workers ignoring the signal), TRAIN.CHECKPOINT_ITERS.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from cgnl_video.config import ConfigError, load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine import train_loop as train_module
from cgnl_video.engine import validation as validation_module
from cgnl_video.engine.launch import run
from cgnl_video.engine.preemption import EXIT_INTERRUPTED, STOP_SIGNALS, RunInterrupted
from cgnl_video.utils.logging import read_json_stats
from cgnl_video.utils.tensorboard import read_scalars
from engine_helpers import one_thread, run_distributed, tiny_opts
from repo_paths import ROOT
from tools_fixtures import run_tool

pytestmark = pytest.mark.usefixtures("single_thread")

ITERS = 3  # per epoch: 12 training videos, TRAIN.BATCH_SIZE 4
EPOCHS = 2
BASE = dict(SOLVER__MAX_EPOCH=EPOCHS, MODEL__DROPOUT_RATE=0.5, DETERMINISTIC=True, TEST__ENABLE=False,
            TRAIN__EVAL_PERIOD=1)
TIMES = {"data_time", "iter_time", "epoch_time", "eta", "mem_mb"}  # json_stats fields that are clock readings
PICK = random.Random(23)  # where the signals come: reproducible, not always the same place
AT = {sig: PICK.randint(1, EPOCHS * ITERS) for sig in STOP_SIGNALS}
AT_2PROC, RANK_2PROC = PICK.randint(1, EPOCHS * ITERS), PICK.randint(0, 1)


def _cfg(root, out, **overrides):
    return load_config(None, tiny_opts(root, str(out), **{**BASE, **overrides}))


def _weights(out):
    return cu.load_checkpoint(cu.list_checkpoints(str(out))[-1])["model"]


def _records(out):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in read_json_stats(str(out / "json_stats.log"))]


def _assert_same_run(out, straight):
    """Final weights bit for bit and json_stats records (times aside) of the uninterrupted
    run; with DATA.DECODE_ON device (the same pixels on the CPU) its records' extra
    ``device_rejects`` count aside, which must be 0."""
    ours, theirs = _weights(out), straight["weights"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    records = _records(out)
    assert [r.pop("device_rejects", 0) for r in records] == [0] * len(records)
    assert records == straight["records"]


def _position(done):
    """(epochs done, iterations done of the next) after ``done`` iterations of the run, stopped
    in training: the last iteration of an epoch leaves its validation owed."""
    epochs = (done - 1) // ITERS
    return epochs, done - epochs * ITERS


def _resume_lines(out):
    return [line[line.index("resuming from"):] for line in (out / "log.txt").read_text().splitlines()
            if "resuming from" in line]


def _hook_forwards(monkeypatch, signals_at):
    """Count the training forward passes (one cross-entropy each) and send this process
    ``signals_at[n]`` during the n-th (before the loop reads the stop flag)."""
    calls, real = [], train_module.F.cross_entropy

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) in signals_at:
            os.kill(os.getpid(), signals_at[len(calls)])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module.F, "cross_entropy", counted)
    return calls


@pytest.fixture(scope="module")
def straight(tiny_data_root, tmp_path_factory):
    """The uninterrupted run: its final weights, json_stats records (times aside), forward passes."""
    out = tmp_path_factory.mktemp("straight") / "run"
    mp = pytest.MonkeyPatch()
    try:
        calls = _hook_forwards(mp, {})
        with one_thread():
            run(_cfg(tiny_data_root, out))
    finally:
        mp.undo()
    assert len(calls) == EPOCHS * ITERS
    return {"out": out, "weights": _weights(out), "records": _records(out), "forwards": len(calls)}


@pytest.mark.parametrize("sig, decode_on", [(signal.SIGTERM, "worker"), (signal.SIGUSR1, "worker"),
                                             (signal.SIGTERM, "device")], ids=["SIGTERM", "SIGUSR1", "SIGTERM-device"])
def test_a_signal_at_a_random_iteration_stops_there_and_the_rerun_ends_bit_identical(
        sig, decode_on, straight, tiny_data_root, tmp_path, monkeypatch):
    at, out = AT[sig], tmp_path / "run"
    handlers_before = [signal.getsignal(s) for s in STOP_SIGNALS]
    calls = _hook_forwards(monkeypatch, {at: sig})
    cfg = _cfg(tiny_data_root, out, DATA__DECODE_ON=decode_on)
    with pytest.raises(RunInterrupted) as stopped:
        run(cfg)
    assert [signal.getsignal(s) for s in STOP_SIGNALS] == handlers_before  # put back, also on the exception
    epochs, iteration = _position(at)
    assert stopped.value.signum == sig and len(calls) == at  # the iteration in flight was finished, no more
    assert stopped.value.checkpoint == cu.checkpoint_path(str(out), epochs, iteration)
    assert cu.list_checkpoints(str(out))[-1] == stopped.value.checkpoint
    assert cu.load_checkpoint(stopped.value.checkpoint)["iteration"] == iteration

    run(cfg)  # the same command again
    assert len(calls) == straight["forwards"]  # no iteration computed twice
    assert _resume_lines(out) == [f"resuming from epoch {epochs + 1}, iteration {iteration} "
                                  f"({stopped.value.checkpoint})"]
    _assert_same_run(out, straight)


def _rank_runs(rank, phases, signal_rank, at, report_dir):
    """One rank of three 2-process runs in a row (one spawn: starting processes is the
    slow part): ``phases`` is [(name, opts)] of the uninterrupted run, the run where rank
    ``signal_rank`` sends itself SIGTERM during its forward pass ``at``, and its rerun.
    Writes what each run saw to report_dir/<name>-rank<rank>.json."""
    real = torch.nn.functional.cross_entropy
    for name, opts in phases:
        calls = []

        def counted(*args, **kwargs):
            calls.append(1)
            if name == "interrupted" and rank == signal_rank and len(calls) == at:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kwargs)

        torch.nn.functional.cross_entropy = counted
        report = {}
        try:
            run(load_config(None, opts))
        except RunInterrupted as stopped:
            report = {"signum": stopped.signum, "checkpoint": stopped.checkpoint}
        report["forwards"] = len(calls)
        with open(os.path.join(report_dir, f"{name}-rank{rank}.json"), "w") as handle:
            json.dump(report, handle)


def test_two_processes_one_signalled_both_stop_at_the_same_iteration_and_resume_bit_identical(
        tiny_data_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    opts = tiny_opts(tiny_data_root, str(resumed), **BASE)
    phases = [("straight", tiny_opts(tiny_data_root, str(straight), **BASE)), ("interrupted", opts),
              ("rerun", opts)]
    run_distributed(_rank_runs, 2, phases, RANK_2PROC, AT_2PROC, str(tmp_path))
    reports = {name: [json.loads((tmp_path / f"{name}-rank{rank}.json").read_text()) for rank in (0, 1)]
               for name, _ in phases}
    expected = cu.checkpoint_path(str(resumed), *_position(AT_2PROC))
    # both ranks stopped after the same iteration, the signalled one's; the rerun did the rest
    assert reports["interrupted"] == [{"signum": signal.SIGTERM, "checkpoint": expected, "forwards": AT_2PROC}] * 2
    assert [r["forwards"] for r in reports["rerun"]] == [EPOCHS * ITERS - AT_2PROC] * 2
    assert len(_resume_lines(resumed)) == 1
    ours, theirs = _weights(resumed), _weights(straight)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert _records(resumed) == _records(straight)


def test_a_signal_during_validation_stops_it_and_the_rerun_validates_again(
        straight, tiny_data_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = validation_module.F.nll_loss
    batches = []

    def signal_in_first_batch(*args, **kwargs):
        batches.append(1)
        if len(batches) == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(*args, **kwargs)

    monkeypatch.setattr(validation_module.F, "nll_loss", signal_in_first_batch)
    cfg = _cfg(tiny_data_root, out, TENSORBOARD__ENABLE=True)
    with pytest.raises(RunInterrupted) as stopped:
        run(cfg)
    # the second of the 2 validation batches was not run; epoch 1's training is kept, its validation owed
    assert len(batches) == 1 and stopped.value.signum == signal.SIGUSR1
    assert stopped.value.checkpoint == cu.checkpoint_path(str(out), 0, ITERS)
    assert not (out / "json_stats.log").exists()  # the epoch's records come with its validation
    run(cfg)
    _assert_same_run(out, straight)
    scalars = read_scalars(str(out / "tensorboard"))
    assert [step for step, _ in scalars["train_iter/loss"]] == list(range(1, EPOCHS * ITERS + 1))
    assert [step for step, _ in scalars["train/loss"]] == [step for step, _ in scalars["val/loss"]] == [1, 2]


def test_signals_during_checkpoint_writes_leave_whole_files_and_no_duplicated_steps(
        straight, tiny_data_root, tmp_path, monkeypatch):
    """SIGUSR1 inside the periodic write after iteration 2: the run stops after iteration 3;
    SIGTERM inside that stop checkpoint's write changes nothing."""
    out = tmp_path / "run"
    real, saved = cu.save_checkpoint, []

    def signal_inside(output_dir, epoch, state, keep, iteration=0):
        saved.append((epoch, iteration))
        os.kill(os.getpid(), signal.SIGUSR1 if len(saved) == 1 else signal.SIGTERM)
        return real(output_dir, epoch, state, keep, iteration)

    monkeypatch.setattr(cu, "save_checkpoint", signal_inside)
    cfg = _cfg(tiny_data_root, out, TENSORBOARD__ENABLE=True, TRAIN__CHECKPOINT_ITERS=2)
    with pytest.raises(RunInterrupted) as stopped:
        run(cfg)
    assert saved == [(0, 2), (0, 3)] and stopped.value.signum == signal.SIGUSR1
    assert cu.load_checkpoint(stopped.value.checkpoint)["iteration"] == 3
    assert sorted(os.listdir(cu.checkpoint_dir(str(out)))) == [os.path.basename(cu.checkpoint_path(str(out), 0, i))
                                                             for i in (2, 3)]  # no temporary file left
    monkeypatch.setattr(cu, "save_checkpoint", real)
    run(cfg)
    _assert_same_run(out, straight)
    scalars = read_scalars(str(out / "tensorboard"))
    for tag in ("train_iter/loss", "train_iter/lr"):
        assert [step for step, _ in scalars[tag]] == list(range(1, EPOCHS * ITERS + 1)), tag
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]


KILLED_INSIDE_A_WRITE = """
import io, os, signal, sys, torch
from cgnl_video.config import load_config
from cgnl_video.engine.launch import run
real = torch.save
def half_then_kill(obj, handle, *args, **kwargs):
    if os.path.basename(getattr(handle, "name", "")).startswith(".checkpoint_epoch_00000_iter_000002"):
        buffer = io.BytesIO()
        real(obj, buffer, *args, **kwargs)
        handle.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, handle, *args, **kwargs)
torch.save = half_then_kill
torch.set_num_threads(1)
run(load_config(None, sys.argv[1:]))
"""


def test_kill_9_inside_a_mid_epoch_write_leaves_the_previous_checkpoint_usable(straight, tiny_data_root, tmp_path):
    out = tmp_path / "run"
    opts = tiny_opts(tiny_data_root, str(out), **BASE, TRAIN__CHECKPOINT_ITERS=1)
    done = subprocess.run([sys.executable, "-c", KILLED_INSIDE_A_WRITE, *opts], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    names = os.listdir(cu.checkpoint_dir(str(out)))
    assert [n for n in names if n.endswith(".tmp")]  # the half-written file, under its temporary name
    assert cu.list_checkpoints(str(out)) == [cu.checkpoint_path(str(out), 0, 1)]
    assert cu.load_last_checkpoint(str(out))["iteration"] == 1
    run(load_config(None, opts))
    assert _resume_lines(out) == [f"resuming from epoch 1, iteration 1 ({cu.checkpoint_path(str(out), 0, 1)})"]
    _assert_same_run(out, straight)


def test_records_of_epochs_after_the_checkpoint_are_logged_once(straight, tiny_data_root, tmp_path):
    """kill -9 after an epoch's json_stats records but before its checkpoint (the same state
    as a kill between checkpoints with CHECKPOINT_PERIOD > 1): the resumed run logs that
    epoch again, and json_stats.log holds it once, as the uninterrupted run's."""
    out = tmp_path / "run"
    shutil.copytree(straight["out"], out)
    last, before = cu.checkpoint_path(str(out), EPOCHS), cu.checkpoint_path(str(out), EPOCHS - 1)
    assert os.path.isfile(before)
    os.remove(last)
    assert max(r["epoch"] for r in _records(out)) == EPOCHS  # the killed run's records, checkpoint gone
    run(_cfg(tiny_data_root, out))
    assert _resume_lines(out) == [f"resuming from epoch {EPOCHS}, iteration 0 ({before})"]
    _assert_same_run(out, straight)


def test_run_net_exits_75_on_sigterm_to_every_process_and_the_same_command_resumes(tiny_data_root, tmp_path):
    """SIGTERM to the whole process group, loader workers included (as SLURM sends it):
    the workers ignore it, the run checkpoints, says so on stderr and exits with 75."""
    out = tmp_path / "run"
    argv = ["--cfg", "", *tiny_opts(tiny_data_root, str(out), **{**BASE, "SOLVER__MAX_EPOCH": 6,
                                                                 "TRAIN__EVAL_PERIOD": 0,
                                                                 "DATA_LOADER__NUM_WORKERS": 1})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "run_net.py"), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log, deadline = out / "log.txt", time.monotonic() + 240
    while not (log.exists() and "epoch 1/6 iter 1/3" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED == 75, err[-2000:]
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted:")]
    checkpoint = cu.list_checkpoints(str(out))[-1]
    assert f"stopped by SIGTERM; the run is saved in {checkpoint}" in line and "run the same command again" in line
    epochs, iteration = cu.checkpoint_position(checkpoint)
    assert iteration > 0 and epochs * ITERS + iteration < 6 * ITERS  # mid-epoch, well before the end
    assert run_tool("run_net", argv) == 0
    assert _resume_lines(out) == [f"resuming from epoch {epochs + 1}, iteration {iteration} ({checkpoint})"]
    assert [r["epoch"] for r in read_json_stats(str(out / "json_stats.log"))] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_iters_writes_named_mid_epoch_checkpoints_and_keeps_k(straight, tiny_data_root, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "run"
    real, written = cu.save_checkpoint, []
    monkeypatch.setattr(cu, "save_checkpoint", lambda *args: written.append(os.path.basename(real(*args))))
    run(_cfg(tiny_data_root, out, TRAIN__CHECKPOINT_ITERS=2, TRAIN__CHECKPOINT_KEEP=3))
    # every 2 iterations of the run (global 2, 4; 6 ends epoch 2: the epoch checkpoint's place), and the epochs
    assert written == ["checkpoint_epoch_00000_iter_000002.pyth", "checkpoint_epoch_00001.pyth",
                       "checkpoint_epoch_00001_iter_000001.pyth", "checkpoint_epoch_00002.pyth"]
    assert [os.path.basename(p) for p in cu.list_checkpoints(str(out))] == written[1:]  # keep 3, in training order
    mid = cu.load_checkpoint(cu.list_checkpoints(str(out))[1])
    assert (mid["epoch"], mid["iteration"], mid["train_meters"][0]["count"]) == (1, 1, 4.0)
    _assert_same_run(out, straight)  # the writes change nothing
    with pytest.raises(ConfigError, match=r"TRAIN\.CHECKPOINT_ITERS.*>= 0"):
        _cfg(tiny_data_root, out, TRAIN__CHECKPOINT_ITERS=-1)


def test_checkpoints_sort_in_training_order_and_old_ones_without_an_iteration_resume(
        straight, tiny_data_root, tmp_path):
    folder = tmp_path / "names"
    for epoch, iteration in [(4, 0), (3, 375), (3, 0), (10, 0), (3, 1_200_000), (3, 2)]:
        cu.save_checkpoint(str(folder), epoch, {"model": {}}, keep=10, iteration=iteration)
    assert [cu.checkpoint_position(p) for p in cu.list_checkpoints(str(folder))] == [
        (3, 0), (3, 2), (3, 375), (3, 1_200_000), (4, 0), (10, 0)]
    # an epoch checkpoint written before mid-epoch ones existed (no "iteration") still resumes
    first = cu.load_checkpoint(cu.list_checkpoints(str(straight["out"]))[0])
    del first["iteration"]
    out = tmp_path / "run"
    cu.save_checkpoint(str(out), 1, first, keep=3)
    run(_cfg(tiny_data_root, out))
    assert _resume_lines(out) == [f"resuming from epoch 2, iteration 0 ({cu.checkpoint_path(str(out), 1)})"]
    ours = _weights(out)
    assert all(torch.equal(ours[k], straight["weights"][k]) for k in ours)
    # a mid-epoch checkpoint further into an epoch than this run's epochs are long (another batch size)
    first["iteration"] = 7
    other = tmp_path / "other"
    cu.save_checkpoint(str(other), 1, first, keep=3, iteration=7)
    with pytest.raises(ConfigError, match=r"OUTPUT_DIR: .*_iter_000007\.pyth was written 7 iterations into an epoch, "
                                          r"this run's epochs have 3"):
        run(_cfg(tiny_data_root, other))
