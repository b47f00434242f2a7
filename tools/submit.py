#!/usr/bin/env python
"""Submit a run of tools/run_net.py's job to SLURM through submitit (--local: run it on this machine).

    python tools/submit.py --cfg CFG --nodes N --gpus-per-node G [--partition P] [--time MIN]
        [--account A] [--mem GB] [--local] [KEY VALUE ...]
    python tools/submit.py --cfg configs/minikinetics/R101_CGNL8.yaml --nodes 2 --gpus-per-node 8 --partition gpu

One task per GPU (--gpus-per-node 0: one task, no GPU; --local on a machine without
GPUs: G processes on the CPU, with gloo). Logs and submitit's files go to
OUTPUT_DIR/submitit; the tool prints the job id and the log files, and with --local
waits for the job. Time limit and preemption: USR1 --signal-delay s before the limit,
a checkpoint, then a requeue; the job resumes from the newest checkpoint. Needs
pip install -e ".[slurm]". Exit status 2 for a bad config, no submitit or no SLURM;
1 when a --local job fails. See docs/TRAINING.md, "Clusters".
"""

import argparse
import sys
from typing import Optional, Sequence

from cgnl_video.utils.cli import docstring_parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = docstring_parser(__doc__)
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment YAML file")
    parser.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per machine, one task each (default 0)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account")
    parser.add_argument("--time", type=int, default=24 * 60, help="time limit in minutes (default 1440)")
    parser.add_argument("--mem", type=float, help="memory per machine in GB")
    parser.add_argument("--cpus-per-task", type=int, help="CPU cores per task (the loader workers need them)")
    parser.add_argument("--signal-delay", type=int, default=120,
                        help="seconds before the time limit at which SLURM sends USR1 (default 120)")
    parser.add_argument("--max-timeouts", type=int, default=20,
                        help="requeues after a time limit before giving up (preemptions do not count; default 20)")
    parser.add_argument("--local", action="store_true", help="run on this machine (submitit's local executor)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the file")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # imported after parsing, so that --help answers quickly; no torch in this process
    from cgnl_video.config import ConfigError, load_config
    from cgnl_video.engine.cluster import ClusterUnavailableError, MissingSubmititError, Resources, log_paths, submit

    resources = Resources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, time_min=args.time,
                          partition=args.partition, account=args.account, mem_gb=args.mem,
                          cpus_per_task=args.cpus_per_task, signal_delay_s=args.signal_delay,
                          max_timeouts=args.max_timeouts)
    try:
        cfg = load_config(args.cfg_file, args.opts)  # a bad config stops here, not in the queue
        job = submit(args.cfg_file, args.opts, cfg.OUTPUT_DIR, resources, local=args.local)
    except (ConfigError, MissingSubmititError, ClusterUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = "on this machine" if args.local else "to SLURM"
    print(f"submitted job {job.job_id} {where}: {args.nodes} node(s) x {resources.tasks_per_node} task(s)")
    print(f"logs: {' '.join(log_paths(job))} (task 0; the others' next to them), training log: "
          f"{cfg.OUTPUT_DIR}/log.txt", flush=True)
    if not args.local:
        return 0
    try:
        job.results()
    except Exception as exc:  # submitit raises the job's error, or that it ended without a result
        print(f"error: job {job.job_id} failed: {exc}", file=sys.stderr)
        return 1
    print(f"job {job.job_id} finished: outputs in {cfg.OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
