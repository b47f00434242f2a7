"""Collectives whatever device the process group serves, and the GPU-facing parts
of joining it (device choice, backend, device binding), on the CPU.

Plain NCCL serves CUDA tensors only. Its CPU stand-in is a gloo group registered
for CUDA only (``init_process_group("cuda:gloo")``): any collective on a CPU
tensor or a pickled object through it fails with "No backend type associated
with device type cpu", as it would under NCCL. Two such processes run the real
engine (a training epoch, validation, checkpoint with the RNG states of both
ranks, auto-resume's broadcast, the sharded multi-view test and its gather).
"""

import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine import launch
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import read_json_stats
from engine_helpers import make_tiny_dataset, run_distributed, tiny_opts


def _rank_under_a_cuda_only_group(rank, opts, out_dir):
    dist.init_process_group("cuda:gloo", init_method="env://", timeout=timedelta(minutes=2))
    assert dist.get_backend_config() == "cuda:gloo"  # no CPU backend, like plain "nccl"
    results = {
        "sum": du.all_reduce_sum(torch.tensor([rank + 1.0, 10.0], dtype=torch.float64)).tolist(),
        "gathered": du.all_gather_object({"rank": rank}),
        "broadcast": du.broadcast_object(f"from rank {rank}"),
    }
    du.barrier()
    launch.run(load_config(None, opts))  # joins the existing group, leaves it at the end
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)


def test_engine_runs_when_the_default_group_serves_cuda_tensors_only(tmp_path):
    root = str(tmp_path / "data")
    make_tiny_dataset(root, per_class=2)  # 6 training clips; 3 test videos: shares of 2 and 1
    out = tmp_path / "out"
    # TEST.BATCH_SIZE 3 over 2 processes: not a multiple, each rank takes 1 video per step
    opts = tiny_opts(root, str(out), SOLVER__MAX_EPOCH=1, TEST__BATCH_SIZE=3, TEST__NUM_SPATIAL_CROPS=1)
    run_distributed(_rank_under_a_cuda_only_group, 2, opts, str(tmp_path))

    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert results["sum"] == [3.0, 20.0]
        assert results["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert results["broadcast"] == "from rank 0"
    records = read_json_stats(str(out / "json_stats.log"))
    assert [r["split"] for r in records] == ["train", "val", "test"]
    assert records[0]["samples"] == 4  # the epoch meters summed over both ranks (2 clips each)
    assert records[1]["samples"] == 4  # val: 3 videos, padded to 2 per rank by its sampler
    state = cu.load_checkpoint(cu.list_checkpoints(str(out))[-1])
    assert state["world_size"] == 2 and len(state["rng_states"]) == 2
    assert not torch.equal(state["rng_states"][0]["torch"], state["rng_states"][1]["torch"])
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert (metrics["videos_scored"], metrics["videos_listed"]) == (3, 3)
    lines = (out / "test_predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == ["test/0_0", "test/1_0", "test/2_0"]


def _fake_cuda(monkeypatch, device_count):
    """torch.cuda as a machine with ``device_count`` visible GPUs; returns set_device's calls."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: device_count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100s
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90"])
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    return calls


def test_one_visible_gpu_per_process_is_used_whatever_the_local_rank(monkeypatch):
    """A launcher that sets CUDA_VISIBLE_DEVICES per process: LOCAL_RANK 3 sees one GPU, index 0."""
    calls = _fake_cuda(monkeypatch, device_count=1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert du.select_device() == torch.device("cuda", 0)
    assert calls == [0]


def test_every_gpu_visible_gives_local_rank_its_own_gpu(monkeypatch):
    calls = _fake_cuda(monkeypatch, device_count=8)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert du.select_device() == torch.device("cuda", 3)
    assert calls == [3]


def test_on_gpus_the_group_has_a_cpu_backend_and_is_bound_to_the_device(monkeypatch):
    _fake_cuda(monkeypatch, device_count=4)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "7")
    monkeypatch.setenv("LOCAL_RANK", "3")
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: joined.append(kwargs))
    for backend in ("auto", "nccl"):
        du.init_distributed(backend)
    assert [call["backend"] for call in joined] == ["cpu:gloo,cuda:nccl"] * 2
    assert all(call["device_id"] == torch.device("cuda", 3) for call in joined)


def test_without_cuda_auto_is_gloo_and_no_device_is_bound(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: joined.append(kwargs))
    du.init_distributed("auto")
    assert joined[0]["backend"] == "gloo" and joined[0]["device_id"] is None
