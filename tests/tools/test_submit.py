"""tools/submit.py: a --local run of the demo config on the tiny data set (2 processes
through submitit's local executor), the sbatch script it submits to SLURM (with FAKE
sbatch and srun programs: no cluster here), and its errors."""

import os
import re
import stat
import subprocess
import sys

from cgnl_video.engine import cluster
from engine_helpers import tiny_opts
from repo_paths import ROOT
from tools_fixtures import run_tool

DEMO_CFG = os.path.join(ROOT, "configs", "demo", "C2D_CGNL_synthetic.yaml")
TOOL = os.path.join(ROOT, "tools", "submit.py")


def _submit(args, env=None, timeout=240):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_local_run_of_the_demo_config(tiny_data_root, tmp_path):
    out = str(tmp_path / "run")
    opts = tiny_opts(tiny_data_root, out, SOLVER__MAX_EPOCH=1, DATA__PREPARE_SYNTHETIC=False)
    done = _submit(["--local", "--gpus-per-node", "2", "--cfg", DEMO_CFG, *opts])
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = re.search(r"^submitted job (\d+) on this machine: 1 node\(s\) x 2 task\(s\)$", done.stdout, re.M)
    assert job_id, done.stdout
    folder = os.path.join(out, cluster.SUBMITIT_DIR)
    task0_log = os.path.join(folder, f"{job_id.group(1)}_0_log.out")
    assert f"logs: {task0_log} " in done.stdout  # the log files it names are the job's
    assert os.path.isfile(task0_log) and os.path.isfile(os.path.join(folder, f"{job_id.group(1)}_1_log.out"))
    assert os.listdir(os.path.join(out, "checkpoints")) == ["checkpoint_epoch_00001.pyth"]
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as handle:
        assert "2 process(es)" in handle.read()  # the two tasks joined one process group
    with open(os.path.join(out, "json_stats.log"), encoding="utf-8") as handle:
        stats = handle.read()
    assert '"split": "train", "epoch": 1' in stats and '"split": "test"' in stats
    assert os.path.isfile(os.path.join(out, "test_metrics.json"))


def _fake_slurm(folder: str) -> str:
    """FAKE sbatch (prints what sbatch prints, starts nothing) and srun (submitit looks for
    it) in ``folder``; returns a PATH with them first."""
    os.makedirs(folder)
    for name, text in (("sbatch", "echo 'Submitted batch job 4242'"), ("srun", "exit 0")):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"#!/bin/sh\n{text}\n")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return folder + os.pathsep + os.environ["PATH"]


def test_slurm_job_script(tmp_path):
    out = str(tmp_path / "run")
    env = {**os.environ, "PATH": _fake_slurm(str(tmp_path / "bin"))}
    done = _submit(["--cfg", DEMO_CFG, "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                    "--account", "vision", "--time", "90", "--mem", "64", "--cpus-per-task", "10",
                    "OUTPUT_DIR", out, "SOLVER.MAX_EPOCH", "3"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted job 4242 to SLURM: 2 node(s) x 4 task(s)" in done.stdout
    folder = os.path.join(out, cluster.SUBMITIT_DIR)
    with open(os.path.join(folder, "4242_submission.sh"), encoding="utf-8") as handle:
        script = handle.read()
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=vision",
                 "--time=90", "--mem=64GB", "--cpus-per-task=10", "--signal=USR1@120", "--requeue"):
        assert f"#SBATCH {line}\n" in script, line
    # the tasks' submitit takes USR1 as its preemption signal: exported before srun starts them
    assert script.index("export SUBMITIT_PREEMPT_SIGNAL=USR1") < script.index("srun ")
    assert script.rstrip().endswith(f"-m submitit.core._submit {folder}")
    submitted = cluster.import_submitit().helpers.DelayedSubmission.load(os.path.join(folder, "4242_submitted.pkl"))
    assert isinstance(submitted.function, cluster.TrainingJob)
    assert (submitted.function.cfg_file, submitted.function.opts) == (DEMO_CFG, ["OUTPUT_DIR", out,
                                                                                "SOLVER.MAX_EPOCH", "3"])


def test_errors_before_anything_is_submitted(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    no_slurm = _submit(["--cfg", DEMO_CFG, "OUTPUT_DIR", out], env={**os.environ, "PATH": empty})
    assert no_slurm.returncode == 2 and "--local" in no_slurm.stderr, no_slurm.stderr
    bad = _submit(["--local", "--cfg", DEMO_CFG, "OUTPUT_DIR", out, "SOLVER.BASE_LR", "-1"])
    assert bad.returncode == 2 and "SOLVER.BASE_LR" in bad.stderr, bad.stderr
    assert not os.path.exists(out)

    monkeypatch.setitem(sys.modules, "submitit", None)  # an environment without the extra
    assert run_tool("submit", ["--local", "--cfg", DEMO_CFG, "OUTPUT_DIR", out]) == 2
    assert 'pip install -e ".[slurm]"' in capsys.readouterr().err
    assert not os.path.exists(out)


def test_local_runs_on_one_node(tmp_path):
    done = _submit(["--local", "--nodes", "2", "--cfg", DEMO_CFG, "OUTPUT_DIR", str(tmp_path / "run")])
    assert done.returncode == 2 and "one node" in done.stderr, done.stderr
