"""engine/cluster.py: torchrun's variables from a (fake) SLURM job, the missing-extra
message, and the interruption path: ``TrainingJob`` lets the run checkpoint, then hands
the requeue to submitit's own handler (in process, and through submitit's local executor).

Only ``launch.run`` is faked in the interruption tests (marked FAKE): it raises
``RunInterrupted`` as the engine does after its checkpoint (tests/engine for that part).
"""

import os
import signal
import sys

import cloudpickle
import pytest

from cgnl_video.engine import cluster, launch
from cgnl_video.engine.cluster import TrainingJob
from cgnl_video.engine.preemption import EXIT_INTERRUPTED, RunInterrupted

submitit = cluster.import_submitit()

#: a fake SLURM job: 2 nodes x 2 tasks, as srun sets it for each task
SLURM_JOB = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu-a[07-08]"}


def _slurm_task(monkeypatch, procid: int, nodeid: int, localid: int):
    for key, value in {**SLURM_JOB, "SLURM_PROCID": str(procid), "SLURM_NODEID": str(nodeid),
                       "SLURM_LOCALID": str(localid)}.items():
        monkeypatch.setenv(key, value)
    return submitit.JobEnvironment()


def test_slurm_tasks_get_torchrun_variables(monkeypatch):
    tasks = [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)]
    envs = [cluster.torch_env(_slurm_task(monkeypatch, *task)) for task in tasks]
    assert [env["RANK"] for env in envs] == ["0", "1", "2", "3"]
    assert [env["LOCAL_RANK"] for env in envs] == ["0", "1", "0", "1"]
    assert {env["WORLD_SIZE"] for env in envs} == {"4"}
    assert {env["MASTER_ADDR"] for env in envs} == {"gpu-a07"}  # the first host of the node list
    ports = {env["MASTER_PORT"] for env in envs}
    assert len(ports) == 1 and cluster.PORT_RANGE[0] <= int(ports.pop()) < cluster.PORT_RANGE[1]


def test_rendezvous_port_follows_the_job_id(monkeypatch):
    first = cluster.torch_env(_slurm_task(monkeypatch, 0, 0, 0))["MASTER_PORT"]
    assert cluster.torch_env(_slurm_task(monkeypatch, 0, 0, 0))["MASTER_PORT"] == first  # requeued: same id
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    assert cluster.torch_env(submitit.JobEnvironment())["MASTER_PORT"] != first
    assert len({cluster.rendezvous_port(str(job)) for job in range(1000, 1100)}) > 95


def test_missing_submitit_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # what an environment without it imports
    with pytest.raises(cluster.MissingSubmititError, match=r'pip install -e "\.\[slurm\]"'):
        cluster.import_submitit()


def test_checkpoint_hook_resubmits_the_same_job():
    job = TrainingJob("configs/demo/C2D_CGNL_synthetic.yaml", ["SOLVER.MAX_EPOCH", "3"])
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is job and (again.args, again.kwargs) == ((), {})


# ----------------------------------------------------------------------------- interruptions


@pytest.fixture
def local_task(monkeypatch, tmp_path):
    """This process as task ``rank`` of 2 of a submitit local job (folder tmp_path), with
    USR1 as submitit's preemption signal; the signal handlers and the environment are put
    back afterwards (the job sets RANK, WORLD_SIZE, ...: left behind, the next test's
    single-process run would wait for a process group that never forms)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCONT)}
    environ = dict(os.environ)
    monkeypatch.setattr(submitit.JobEnvironment, "USR_SIG", cluster.PREEMPT_SIGNAL)  # as in a submitted job

    def make(rank: int):
        for key, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_FOLDER": str(tmp_path),
                           "SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2",
                           "SUBMITIT_LOCAL_GLOBALID": str(rank), "SUBMITIT_LOCAL_LOCALID": str(rank)}.items():
            monkeypatch.setenv(key, value)
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)  # not monkeypatch.delenv: its undo would bring back an earlier job's value
        return submitit.JobEnvironment()

    yield make
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    os.environ.clear()
    os.environ.update(environ)


def _submitit_handlers(job_env, job: TrainingJob):
    """Install submitit's handlers as its process_job does before calling the job."""
    delayed = submitit.helpers.DelayedSubmission(job)
    delayed.set_timeout(60, 3)
    job_env._handle_signals(job_env.paths, delayed)
    return delayed


def test_time_limit_signal_requeues_after_the_run_stopped(local_task, monkeypatch, tmp_path):
    job_env = local_task(0)
    job = TrainingJob(None, ["OUTPUT_DIR", str(tmp_path / "run")])
    _submitit_handlers(job_env, job)
    calls = []

    def fake_run(cfg):  # FAKE launch.run: stopped by USR1 after its checkpoint
        calls.append({key: os.environ[key] for key in ("RANK", "WORLD_SIZE", "MASTER_PORT")})
        raise RunInterrupted(signal.SIGUSR1, str(tmp_path / "run" / "checkpoint.pyth"))

    monkeypatch.setattr(launch, "run", fake_run)
    with pytest.raises(SystemExit) as stopped:
        job()
    # rank 0: submitit's handler dumped the job's checkpoint() as the new pickle and requeued
    # (the local executor's requeue is this exit status; SLURM's is scontrol requeue)
    assert stopped.value.code == submitit.local.local.LOCAL_REQUEUE_RETURN_CODE
    assert calls == [{"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": str(cluster.rendezvous_port("77"))}]
    requeued = submitit.helpers.DelayedSubmission.load(job_env.paths.submitted_pickle)
    assert isinstance(requeued.function, TrainingJob) and requeued.function.opts == job.opts


def test_other_ranks_and_sigterm_exit_interrupted_without_requeue(local_task, monkeypatch, tmp_path):
    job = TrainingJob(None, ["OUTPUT_DIR", str(tmp_path / "run")])
    for rank, signum in ((1, signal.SIGUSR1), (0, signal.SIGTERM)):
        job_env = local_task(rank)
        _submitit_handlers(job_env, job)

        def fake_run(cfg, signum=signum):  # FAKE launch.run
            raise RunInterrupted(signum, "")

        monkeypatch.setattr(launch, "run", fake_run)
        with pytest.raises(SystemExit) as stopped:
            job()
        assert stopped.value.code == EXIT_INTERRUPTED, (rank, signum)
        assert not job_env.paths.submitted_pickle.exists(), "requeued although rank 0 did not ask"


def test_a_preemption_signal_the_run_ignores_is_refused(local_task, monkeypatch, tmp_path):
    local_task(0)
    monkeypatch.setattr(submitit.JobEnvironment, "USR_SIG", "USR2")
    monkeypatch.setattr(launch, "run", lambda cfg: pytest.fail("ran"))  # FAKE: must not be reached
    with pytest.raises(RuntimeError, match=cluster.PREEMPT_ENV):
        TrainingJob(None, ["OUTPUT_DIR", str(tmp_path)])()


class InterruptedOnceJob(TrainingJob):
    """FAKE engine for the local executor's processes: each rank's first run stops as
    on USR1 (after the engine's checkpoint), the requeued one finishes."""

    def __call__(self):
        launch.run = self.fake_run
        return super().__call__()

    @staticmethod
    def fake_run(cfg):
        marker = os.path.join(cfg.OUTPUT_DIR, f"interrupted_rank{os.environ['RANK']}")
        if os.path.exists(marker):
            return {"rank": os.environ["RANK"], "resumed": True}
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        open(marker, "w").close()
        raise RunInterrupted(signal.SIGUSR1, marker)


def test_local_executor_requeues_an_interrupted_job(tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks cannot import this test file
    try:
        executor = cluster.make_executor(str(tmp_path / "submitit"), cluster.Resources(), local=True)
        job = executor.submit(InterruptedOnceJob(None, ["OUTPUT_DIR", str(tmp_path / "run")]))
        results = job.results()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert results == [{"rank": "0", "resumed": True}]  # (other ranks: the in-process test above)
    with open(job.paths.stdout, encoding="utf-8") as handle:  # submitit's log of task 0
        log = handle.read()
    assert "Requeued job" in log and log.count("Loading pickle") == 2
