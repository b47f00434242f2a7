"""Two gloo processes on the CPU against one process with the same global batch.

With per-sample normalisation (GroupNorm swapped in for BatchNorm) the two runs
see the same global batches with the same augmentation (the loader seeds every
sample by (seed, epoch, index) and shards each global batch over the ranks), and
DDP averages the per-rank mean gradients into the global mean, so the weights
agree up to float summation order. With BatchNorm they cannot: each process
normalises over its own half batch (torch's SyncBatchNorm has no CPU path), so
there the test checks what does hold: every rank ends with the same parameters
(the BN running statistics stay per rank; rank 0's are checkpointed).
"""

import json
import os

import torch
from torch import nn

from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine import launch
from cgnl_video.utils.tensorboard import read_scalars
from engine_helpers import make_tiny_dataset, one_thread, run_distributed, tiny_opts

REAL_BUILD = launch.build_model


def _group_norm_everywhere(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.GroupNorm(1, child.num_features))
        else:
            _group_norm_everywhere(child)
    return module


def _build_without_bn(cfg):
    return _group_norm_everywhere(REAL_BUILD(cfg))


def _opts(root, out, **overrides):
    base = dict(SOLVER__MAX_EPOCH=2, TRAIN__BATCH_SIZE=4, TEST__BATCH_SIZE=2, TRAIN__EVAL_PERIOD=1)
    base.update(overrides)
    return tiny_opts(root, out, **base)


def _run_one_process(opts, monkeypatch):
    monkeypatch.setattr(launch, "build_model", _build_without_bn)
    with one_thread():
        return launch.run(load_config(None, opts))


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    make_tiny_dataset(root)
    one = _opts(root, str(tmp_path / "one"))
    two = _opts(root, str(tmp_path / "two"), TENSORBOARD__ENABLE=True)
    metrics_one = _run_one_process(one, monkeypatch)
    run_distributed(_rank_train_and_test, 2, two)

    first_one, weights_one = [cu.load_checkpoint(p)["model"] for p in cu.list_checkpoints(str(tmp_path / "one"))]
    weights_two = cu.load_checkpoint(cu.list_checkpoints(str(tmp_path / "two"))[-1])["model"]
    # float32 sums in another order drift by ~1e-5 over the 6 steps; the second epoch
    # alone moves the weights by far more, so a wrong gradient average would show
    moved = max((weights_one[k].float() - first_one[k].float()).abs().max().item() for k in weights_one)
    assert moved > 1e-2
    for key, value in weights_one.items():
        assert torch.allclose(value.float(), weights_two[key].float(), rtol=1e-3, atol=2e-4), key
    # the multi-view test sharded over 2 ranks: every video scored exactly once
    metrics_two = json.loads((tmp_path / "two" / "test_metrics.json").read_text())
    assert (metrics_two["videos_scored"], metrics_two["videos_listed"]) == (6, 6)
    preds_one = _predictions(tmp_path / "one")
    preds_two = _predictions(tmp_path / "two")
    assert sorted(preds_two) == sorted(preds_one) and len(preds_two) == 6
    for path, record in preds_one.items():
        assert record["top5_labels"][0] == preds_two[path]["top5_labels"][0]
        assert torch.allclose(torch.tensor(record["top5_scores"]), torch.tensor(preds_two[path]["top5_scores"]),
                              atol=1e-4)
    assert metrics_two["top1_acc"] == metrics_one["top1_acc"]
    # only rank 0 wrote: one log, one stats file, one TensorBoard event file per phase (train, test)
    stats = (tmp_path / "two" / "json_stats.log").read_text().splitlines()
    assert len(stats) == 5
    assert len(os.listdir(tmp_path / "two" / "tensorboard")) == 2
    scalars = read_scalars(str(tmp_path / "two" / "tensorboard"))
    assert [step for step, _ in scalars["train_iter/loss"]] == [1, 2, 3, 4, 5, 6]  # 2 epochs x 3 global batches


def _predictions(out):
    lines = (out / "test_predictions.jsonl").read_text().splitlines()
    return {record["path"]: record for record in map(json.loads, lines)}


def _rank_train_and_test(rank, opts):
    launch.build_model = _build_without_bn
    launch.run(load_config(None, opts))


def _rank_train_with_batchnorm(rank, opts, out_dir):
    from cgnl_video.utils import distributed as du

    cfg = load_config(None, opts)
    du.init_distributed("gloo")  # stay in the group after run() to collect both ranks' weights
    model = launch.build_model_on(cfg, torch.device("cpu"))
    du.seed_everything(cfg.RNG_SEED + rank)
    launch.fit(cfg, model, torch.device("cpu"))
    torch.save(dict(model.named_parameters()), os.path.join(out_dir, f"rank{rank}.pt"))
    du.cleanup_distributed()


def test_with_batchnorm_every_rank_ends_with_the_same_weights(tmp_path):
    root = str(tmp_path / "data")
    make_tiny_dataset(root)
    opts = _opts(root, str(tmp_path / "bn"), SOLVER__MAX_EPOCH=1, TEST__ENABLE=False)
    run_distributed(_rank_train_with_batchnorm, 2, opts, str(tmp_path))
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # DDP keeps the parameters of the replicas equal; BN running statistics are each
    # rank's own (rank 0's go into the checkpoint)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert len(cu.list_checkpoints(str(tmp_path / "bn"))) == 1
