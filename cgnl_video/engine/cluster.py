"""SLURM through submitit (the ``slurm`` extra): ``submit`` hands ``launch.run`` of a config
to a submitit executor (SLURM, or this machine with ``local``), one task per GPU.

Each task runs ``TrainingJob``: torchrun's variables from the job (``torch_env``), then
``launch.run``. Preemption: submitit's preemption signal is USR1 (``PREEMPT_SIGNAL``), one
of the signals ``launch.run`` stops on while training. SLURM sends it ``signal_delay_s``
before the time limit; every rank finishes its iteration, rank 0 writes a checkpoint,
``run`` raises ``RunInterrupted``, and only then does ``TrainingJob`` call submitit's own
handler, which requeues the job (``checkpoint``: the same job again) on rank 0. The
requeued job resumes from the newest checkpoint (TRAIN.AUTO_RESUME). SIGTERM (preemption
or scancel) also checkpoints and exits with ``EXIT_INTERRUPTED``; SLURM decides about a
requeue (``--requeue``). Outside training submitit's handlers act alone.
docs/TRAINING.md, "Clusters".
"""

import os
import signal
import time
import types
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from cgnl_video.utils.logging import get_logger

INSTALL = 'pip install -e ".[slurm]"'
#: submitit reads its preemption signal from this variable when it is imported
PREEMPT_ENV = "SUBMITIT_PREEMPT_SIGNAL"
PREEMPT_SIGNAL = "USR1"
#: submitit's files (pickles, one stdout / stderr per task) go to OUTPUT_DIR/<this>
SUBMITIT_DIR = "submitit"
#: rendezvous ports: below Linux's ephemeral range (32768-60999), so no client socket holds one
PORT_RANGE = (15000, 30000)
#: how long ranks other than 0 wait, after an interruption, for rank 0's requeue to end the job
REQUEUE_WAIT_S = 30


class MissingSubmititError(ImportError):
    """submitit is not installed; the message names the extra to install."""


class ClusterUnavailableError(RuntimeError):
    """SLURM was asked for where it cannot be reached (no ``srun``)."""


def import_submitit() -> types.ModuleType:
    """submitit, with USR1 as its preemption signal in this process and in the jobs it
    starts (they inherit the variable); MissingSubmititError naming the install command."""
    os.environ[PREEMPT_ENV] = PREEMPT_SIGNAL
    try:
        import submitit
    except ImportError as error:
        raise MissingSubmititError(f"submitting a run needs submitit ({error}): install the slurm extra, "
                                   f"{INSTALL} (or pip install submitit)") from error
    return submitit


def rendezvous_port(job_id: str) -> int:
    """MASTER_PORT of a job: a function of its id, so every task, and the job requeued
    under the same id, agree without talking, and two jobs on one node rarely collide."""
    low, high = PORT_RANGE
    return low + zlib.crc32(job_id.encode()) % (high - low)


def torch_env(job_env: Any) -> Dict[str, str]:
    """torchrun's variables for one task of a submitit job, which
    ``utils.distributed.init_distributed`` and ``select_device`` read.

    Args:
        job_env: submitit's ``JobEnvironment`` of the task (on SLURM from SLURM_PROCID,
            SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST and SLURM_JOB_ID).
    Returns:
        RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR (the job's first host) and MASTER_PORT
        (``rendezvous_port`` of the job id).
    """
    return {"RANK": str(job_env.global_rank), "WORLD_SIZE": str(job_env.num_tasks),
            "LOCAL_RANK": str(job_env.local_rank), "MASTER_ADDR": job_env.hostnames[0],
            "MASTER_PORT": str(rendezvous_port(job_env.job_id))}


def preemption_signal() -> signal.Signals:
    """The signal submitit treats as preemption / time limit in this process."""
    return signal.Signals["SIG" + import_submitit().JobEnvironment.USR_SIG]


class TrainingJob:
    """What every task of a submitted job runs: ``launch.run(load_config(cfg_file, opts))``.

    Pickled by submitit (by reference to this module) and loaded in each task; only the
    config's file and overrides travel, so a requeued job reads them again.
    """

    def __init__(self, cfg_file: Optional[str], opts: Sequence[str]) -> None:
        self.cfg_file = cfg_file
        self.opts = list(opts)

    def __call__(self) -> Optional[Dict]:
        # imported here: the submitting process needs neither torch nor the engine
        from cgnl_video.config import load_config
        from cgnl_video.engine.launch import run
        from cgnl_video.engine.preemption import EXIT_INTERRUPTED, STOP_SIGNALS, RunInterrupted

        job_env = import_submitit().JobEnvironment()
        preempt = preemption_signal()
        if preempt not in STOP_SIGNALS:
            raise RuntimeError(f"submitit's preemption signal is {preempt.name} ({PREEMPT_ENV}), which the run "
                               f"does not stop on: submit with tools/submit.py, or set {PREEMPT_ENV}={PREEMPT_SIGNAL}")
        os.environ.update(torch_env(job_env))
        # submitit installed this handler before calling us; launch.run replaces it while
        # training (checkpoint first) and puts it back afterwards
        submitit_handler = signal.getsignal(preempt)
        try:
            return run(load_config(self.cfg_file, self.opts))
        except RunInterrupted as stop:
            get_logger().warning("interrupted by %s; checkpoint %s", signal.Signals(stop.signum).name,
                                 stop.checkpoint)
            if stop.signum == preempt and callable(submitit_handler):
                requeue(submitit_handler, stop.signum, job_env)
            raise SystemExit(EXIT_INTERRUPTED) from stop

    def checkpoint(self) -> Any:
        """submitit's checkpointing hook: this job again (the run resumes on its own)."""
        return import_submitit().helpers.DelayedSubmission(self)


def requeue(submitit_handler: Callable, signum: int, job_env: Any) -> None:
    """Requeue the job the way submitit would on its preemption signal, now that the
    checkpoint is written: its handler (``SignalHandler.checkpoint_and_try_requeue``)
    tells preemption from time limit (it counts the time limits against
    ``max_num_timeout``), and on rank 0 dumps ``TrainingJob.checkpoint()`` as the job's
    pickle, requeues (``scontrol requeue``; the local executor restarts the tasks) and
    exits; on the other ranks it returns. Those wait for the requeue to end them on
    SLURM: exiting first could make srun kill rank 0 before it requeues (KillOnBadExit).
    """
    submitit_handler(signum, None)
    if job_env.global_rank != 0 and job_env.cluster != "local":
        time.sleep(REQUEUE_WAIT_S)


@dataclass
class Resources:
    """What a job asks for (``tools/submit.py``'s options)."""

    nodes: int = 1
    gpus_per_node: int = 0  # one task per GPU; 0: one task without a GPU
    time_min: int = 24 * 60
    partition: Optional[str] = None
    account: Optional[str] = None
    mem_gb: Optional[float] = None  # per node
    cpus_per_task: Optional[int] = None
    signal_delay_s: int = 120  # USR1 this long before the time limit
    max_timeouts: int = 20  # requeues after a time limit (preemptions do not count)

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus_per_node)


def slurm_parameters(resources: Resources) -> Dict[str, Any]:
    """The SLURM-only parameters of submitit's AutoExecutor: partition and account,
    ``--signal=USR1@delay`` and ``--requeue``, and the preemption signal exported for the
    job's tasks (also where sbatch does not pass the submitting environment on)."""
    params: Dict[str, Any] = {
        "slurm_setup": [f"export {PREEMPT_ENV}={PREEMPT_SIGNAL}"],
        "slurm_additional_parameters": {"signal": f"{PREEMPT_SIGNAL}@{resources.signal_delay_s}", "requeue": True},
    }
    if resources.partition:
        params["slurm_partition"] = resources.partition
    if resources.account:
        params["slurm_account"] = resources.account
    return params


def make_executor(folder: str, resources: Resources, local: bool = False) -> Any:
    """submitit's AutoExecutor for SLURM (``local``: this machine, one node) writing into ``folder``."""
    submitit = import_submitit()
    if local and resources.nodes != 1:
        raise ValueError(f"the local executor runs on this machine: one node, not {resources.nodes}")
    cluster = "local" if local else "slurm"
    try:
        executor = submitit.AutoExecutor(folder, cluster=cluster, **{f"{cluster}_max_num_timeout":
                                                                      resources.max_timeouts})
    except RuntimeError as error:  # submitit's SlurmExecutor without srun
        raise ClusterUnavailableError(f"no SLURM here ({error}): submit from a machine of the cluster, or run "
                                      f"on this one with --local") from error
    params: Dict[str, Any] = {
        "name": "cgnl_video", "timeout_min": resources.time_min, "nodes": resources.nodes,
        "tasks_per_node": resources.tasks_per_node, "gpus_per_node": resources.gpus_per_node,
        "mem_gb": resources.mem_gb, "cpus_per_task": resources.cpus_per_task,
    }
    if not local:
        params.update(slurm_parameters(resources))
    executor.update_parameters(**params)
    return executor


def submit(cfg_file: Optional[str], opts: Sequence[str], output_dir: str, resources: Resources,
           local: bool = False) -> Any:
    """Submit ``TrainingJob(cfg_file, opts)``; submitit's files go to OUTPUT_DIR/submitit.

    Args:
        cfg_file, opts: the run, as ``load_config`` takes it.
        output_dir: the run's OUTPUT_DIR.
        resources: nodes, GPUs, time, ...
        local: submitit's local executor (this machine) instead of SLURM.
    Returns:
        submitit's Job (``job_id``; ``paths.stdout`` / ``stderr``: task 0's logs; ``results()`` waits).
    """
    folder = os.path.join(os.path.abspath(output_dir), SUBMITIT_DIR)
    return make_executor(folder, resources, local).submit(TrainingJob(cfg_file, opts))


def log_paths(job: Any) -> List[str]:
    """Task 0's stdout and stderr files of ``job`` (the other tasks' differ by their number)."""
    return [str(job.paths.stdout), str(job.paths.stderr)]
