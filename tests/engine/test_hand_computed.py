"""The engine's numbers against values computed by hand.

* Epoch metrics: a stand-in model whose logits are known for every video (it
  recognises the video by its colour) trains one epoch, validates and tests; the
  logged train / val / test loss, top-1 / top-5 errors and the mean-class accuracy
  are compared with values computed here from those logits (classes of unequal
  size and unequal accuracy, so mean-class and overall accuracy differ).
* A real 3-epoch run: the learning rate the optimizer holds at every step (read by
  an optimizer hook) against the warmup + steps schedule worked out by hand; the
  clips each epoch trains on (read by a forward hook) against the dataset's items
  of that epoch; validation and checkpoints on the period and at the last epoch.
* A run killed in epoch 2 (after the epoch-1 checkpoint) and resumed, with dropout
  drawing from the global RNG, ends with the weights of an uninterrupted run; in 2
  gloo processes too (each rank restores its own RNG states).
* Test-only mode scores the checkpoint it is given: its predictions are the
  checkpoint model's mean view probabilities (computed here) and not those of a
  freshly initialised model.
"""

import itertools
import json
import logging
import math
import os
import shutil
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from cgnl_video.config import load_config
from cgnl_video.data import ManifestEntry, build_dataset, build_loader, write_classes, write_manifest
from cgnl_video.data.manifest import frame_file_name
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.launch import run
from cgnl_video.engine.multiview import run_test, video_metrics
from cgnl_video.engine.optim import lr_at
from cgnl_video.engine.trainer import fit
from cgnl_video.models import C2DResNet, build_model
from cgnl_video.utils.logging import read_json_stats
from engine_helpers import one_thread, run_distributed, tiny_opts

pytestmark = pytest.mark.usefixtures("single_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def data_root(tiny_data_root):
    return tiny_data_root  # 12 train videos (3 classes), 6 val / test videos


def _cfg(data_root, out, **overrides):
    return load_config(None, tiny_opts(data_root, str(out), **overrides))


def _final_weights(out):
    return cu.load_checkpoint(cu.list_checkpoints(str(out))[-1])["model"]


class _StepRecorder:
    """Calls ``on_step(optimizer)`` before every optimizer step of any optimizer."""

    def __init__(self, on_step):
        self.on_step = on_step

    def __enter__(self):
        self.handle = register_optimizer_step_pre_hook(
            lambda optimizer, args, kwargs: self.on_step(optimizer))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ----------------------------------------------------------------------------- a 3-epoch run


@pytest.fixture(scope="module")
def three_epochs(data_root, tmp_path_factory):
    """A 3-epoch run: 12 clips, batch 4 (3 iterations per epoch, so iteration i of epoch e
    is at epoch e + i / 3); warmup 1 epoch from 0.005 to 0.05, then 0.05, then x0.1 from
    epoch 2; validation and checkpoints every 2 epochs. Records the optimizer's learning
    rates before every step and the clips the model trains on."""
    cfg = _cfg(data_root, tmp_path_factory.mktemp("three"), SOLVER__MAX_EPOCH=3, SOLVER__BASE_LR=0.05,
               SOLVER__WARMUP_EPOCHS=1.0, SOLVER__WARMUP_START_LR=0.005, SOLVER__STEPS="[0, 2]",
               SOLVER__LRS="[1.0, 0.1]", TRAIN__EVAL_PERIOD=2, TRAIN__CHECKPOINT_PERIOD=2, TEST__ENABLE=False)
    lrs: List[List[float]] = []
    clips: List[torch.Tensor] = []

    def record_clips(module, args):
        if isinstance(module, C2DResNet) and module.training:
            clips.extend(args[0].detach().clone())

    hook = register_module_forward_pre_hook(record_clips)
    try:
        with one_thread(), _StepRecorder(lambda optimizer: lrs.append([g["lr"] for g in optimizer.param_groups])):
            run(cfg)
    finally:
        hook.remove()
    return cfg, lrs, clips


def test_optimizer_lr_follows_warmup_and_steps_at_every_iteration(three_epochs):
    _, seen, _ = three_epochs
    by_hand = [0.005, 0.02, 0.035,  # 0.005 + 0.045 * i / 3
               0.05, 0.05, 0.05,
               0.005, 0.005, 0.005]
    assert len(seen) == 9
    for step, (lrs, lr) in enumerate(zip(seen, by_hand)):
        assert len(lrs) == 2 and lrs == pytest.approx([lr, lr], rel=1e-9), step  # weights; norms and biases


def test_each_epoch_trains_on_that_epochs_clips_in_a_new_order(three_epochs):
    cfg, _, clips = three_epochs
    dataset = build_dataset(cfg, "train")
    assert len(clips) == 3 * len(dataset)
    orders = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        items = [dataset[i][0] for i in range(len(dataset))]
        seen = clips[epoch * len(dataset):(epoch + 1) * len(dataset)]
        order = [next((i for i, item in enumerate(items) if torch.equal(clip, item)), None) for clip in seen]
        assert None not in order and sorted(order) == list(range(len(dataset))), epoch  # each item once
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]


def test_last_epoch_is_validated_and_checkpointed_off_the_period(three_epochs):
    cfg = three_epochs[0]
    records = read_json_stats(os.path.join(cfg.OUTPUT_DIR, "json_stats.log"))
    assert [(r["split"], r["epoch"]) for r in records] == [
        ("train", 1), ("train", 2), ("val", 2), ("train", 3), ("val", 3)]
    assert [os.path.basename(p) for p in cu.list_checkpoints(cfg.OUTPUT_DIR)] == [
        "checkpoint_epoch_00002.pyth", "checkpoint_epoch_00003.pyth"]


# ----------------------------------------------------------------------------- resume


def test_resume_with_dropout_restores_the_global_rng(data_root, tmp_path):
    """Dropout 0.5 draws its masks from the global torch RNG: the resumed run only
    matches the uninterrupted one if that generator is restored from the checkpoint.
    The kill comes at the first optimizer step of epoch 2 (after its forward pass
    has drawn a dropout mask), once the epoch-1 checkpoint is on disk."""
    opts = dict(SOLVER__MAX_EPOCH=2, MODEL__DROPOUT_RATE=0.5, DETERMINISTIC=True, TEST__ENABLE=False,
                TRAIN__EVAL_PERIOD=0)
    run(_cfg(data_root, tmp_path / "straight", **opts))

    steps = itertools.count(1)

    def die_in_epoch_2(_optimizer):
        if next(steps) == 4:  # 3 iterations per epoch
            raise KeyboardInterrupt("killed in epoch 2")

    killed = _cfg(data_root, tmp_path / "resumed", **opts)
    with _StepRecorder(die_in_epoch_2), pytest.raises(KeyboardInterrupt):
        run(killed)
    assert [os.path.basename(p) for p in cu.list_checkpoints(killed.OUTPUT_DIR)] == ["checkpoint_epoch_00001.pyth"]
    run(killed)  # the same command again: resumes after epoch 1

    straight, resumed = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def _run_rank(rank: int, opts: List[str]) -> None:
    run(load_config(None, opts))


def test_two_process_resume_restores_each_ranks_own_rng(data_root, tmp_path):
    """2 gloo processes (seeded RNG_SEED + rank, so their dropout masks differ): the run
    resumed from the epoch-1 checkpoint (copied into a fresh OUTPUT_DIR: what a run killed
    in epoch 2 leaves) ends with the weights of the uninterrupted run only if every rank
    gets its own RNG states back; DDP averages both ranks' gradients into the weights."""
    opts = dict(SOLVER__MAX_EPOCH=2, MODEL__DROPOUT_RATE=0.5, DETERMINISTIC=True, TEST__ENABLE=False,
                TRAIN__EVAL_PERIOD=0)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_distributed(_run_rank, 2, tiny_opts(data_root, str(straight), **opts))
    first = cu.list_checkpoints(str(straight))[0]
    states = cu.load_checkpoint(first)["rng_states"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    copy = resumed / os.path.relpath(first, straight)
    copy.parent.mkdir(parents=True)
    shutil.copy(first, copy)
    run_distributed(_run_rank, 2, tiny_opts(data_root, str(resumed), **opts))
    assert [r["epoch"] for r in read_json_stats(str(resumed / "json_stats.log"))] == [2]  # only epoch 2 trained
    ours, theirs = _final_weights(straight), _final_weights(resumed)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# ----------------------------------------------------------------------------- test-only mode


def _trained_like(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial norms and a confident classifier, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (tensor.ndim == 1 and name.endswith("weight")):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif tensor.ndim == 1:  # biases, running means
                tensor.copy_(0.2 * torch.randn(tensor.shape, generator=generator))
        model.head.proj.weight.normal_(0.0, 0.03, generator=generator)
    return model


def _view_probabilities(model: nn.Module, cfg) -> List[torch.Tensor]:
    """Per test video: the mean over its views of the eval-mode model's probabilities,
    views normalised here as (x / 255 - mean) / std."""
    dataset = build_dataset(cfg, "test")
    mean = torch.tensor(cfg.DATA.MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.DATA.STD).view(1, 3, 1, 1, 1)
    model.eval()
    scores = []
    with torch.no_grad():
        for index in range(len(dataset)):
            views = dataset[index][0]
            scores.append(model((views.float() / 255.0 - mean) / std).mean(dim=0).double())
    return scores


def test_test_only_mode_scores_the_checkpoint_it_is_given(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "test", TRAIN__ENABLE=False, TEST__NUM_SPATIAL_CROPS=1)
    torch.manual_seed(123)
    trained = _trained_like(build_model(cfg), seed=5)
    path = cu.save_checkpoint(str(tmp_path / "given"), 3, {"model": trained.state_dict(), "epoch": 3}, keep=1)
    cfg.defrost()
    cfg.TEST.CHECKPOINT_FILE_PATH = path
    cfg.freeze()

    metrics = run(cfg)

    classes = [f"class{c}" for c in range(3)]
    records = [json.loads(line) for line in (tmp_path / "test" / "test_predictions.jsonl").read_text().splitlines()]
    logged = []
    for record in records:
        score = torch.zeros(3, dtype=torch.float64)
        for label, value in zip(record["top5_labels"], record["top5_scores"]):
            score[classes.index(label)] = value
        logged.append(score)
    expected = _view_probabilities(trained, cfg)
    assert len(logged) == len(expected) == 6
    for got, want in zip(logged, expected):
        assert torch.allclose(got, want, atol=2e-6)
    labels = [e.label for e in build_dataset(cfg, "test").entries]
    nll = sum(-math.log(score[label]) for score, label in zip(expected, labels)) / 6
    assert metrics["loss"] == pytest.approx(nll, rel=1e-4) and metrics["epoch"] == 3
    torch.manual_seed(cfg.RNG_SEED)  # the weights the run would have without the checkpoint
    fresh = _view_probabilities(build_model(cfg), cfg)
    assert max((f - g).abs().max().item() for f, g in zip(fresh, logged)) > 0.05


# ----------------------------------------------------------------------------- epoch metrics

NUM_CLASSES = 6
#: label of each video: classes of 3, 2, 2, 2, 2 and 1 videos
LABELS = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
#: rank (1 = top) of the true class among the logits of each video
RANKS = [1, 1, 1, 1, 2, 3, 6, 2, 1, 1, 1, 6]
BASE_LOGITS = [2.0, 1.2, 0.5, -0.3, -1.1, -2.0]  # the k-th largest logit of every video
PALETTE = [colour for colour in itertools.product((30, 110, 190), repeat=3)][:12]


def _logits(label: int, rank: int) -> List[float]:
    """BASE_LOGITS spread over the classes so that ``label`` has rank ``rank``."""
    order = [c for c in range(NUM_CLASSES) if c != label]
    order.insert(rank - 1, label)
    row = [0.0] * NUM_CLASSES
    for value, cls in zip(BASE_LOGITS, order):
        row[cls] = value
    return row


class _ColourLookup(nn.Module):
    """Recognises a video by its (uniform) colour and returns that video's logits in
    train mode, their softmax in eval mode (the C2D contract)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("palette", torch.tensor(PALETTE, dtype=torch.float32))
        self.register_buffer("table", torch.tensor([_logits(lb, r) for lb, r in zip(LABELS, RANKS)]))
        self.unused = nn.Linear(1, 1)  # something for the optimizer; never changes the output

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        rgb = clips.float().mean(dim=(2, 3, 4)) * 255.0  # DATA.MEAN 0, DATA.STD 1: clips are pixels / 255
        video = torch.cdist(rgb, self.palette).argmin(dim=1)
        logits = self.table[video] + 0.0 * self.unused.weight.sum()
        return logits if self.training else logits.softmax(dim=1)


def _nll_by_hand(rank: int) -> float:
    """-log softmax(BASE_LOGITS)[rank - 1]."""
    return math.log(sum(math.exp(v) for v in BASE_LOGITS)) - BASE_LOGITS[rank - 1]


def _uniform_videos(root: str) -> str:
    manifests = os.path.join(root, "lists")
    entries = []
    for video, (colour, label) in enumerate(zip(PALETTE, LABELS)):
        folder = os.path.join(root, f"v{video}")
        os.makedirs(folder)
        for t in range(8):
            image = Image.fromarray(np.full((40, 40, 3), colour, np.uint8))
            image.save(os.path.join(folder, frame_file_name(t)), quality=100, subsampling=0)
        entries.append(ManifestEntry(f"v{video}", label, 8))
    write_classes(os.path.join(manifests, "classes.txt"), [f"c{k}" for k in range(NUM_CLASSES)])
    write_manifest(os.path.join(manifests, "train.txt"), entries)
    write_manifest(os.path.join(manifests, "val.txt"), entries[:10])  # batches of 4, 4 and 2
    write_manifest(os.path.join(manifests, "test.txt"), entries)
    return manifests


@pytest.fixture(scope="module")
def lookup_run(tmp_path_factory):
    """One epoch of training and validation, then the multi-view test, of the stand-in."""
    root = str(tmp_path_factory.mktemp("uniform"))
    opts = {
        "DATA.PATH_TO_DATA_DIR": _uniform_videos(root), "DATA.PATH_PREFIX": root,
        "DATA.NUM_FRAMES": 8, "DATA.SAMPLING_RATE": 1, "DATA.TRAIN_CROP_SIZE": 32,
        "DATA.VAL_SHORT_SIDE": 32, "DATA.VAL_CROP_SIZE": 32, "DATA.TEST_CROP_SIZE": 32,
        "DATA.MEAN": "[0.0, 0.0, 0.0]", "DATA.STD": "[1.0, 1.0, 1.0]", "DATA_LOADER.NUM_WORKERS": 0,
        "MODEL.NUM_CLASSES": NUM_CLASSES, "SOLVER.MAX_EPOCH": 1, "SOLVER.WARMUP_EPOCHS": 0.0,
        "TRAIN.BATCH_SIZE": 4, "TEST.BATCH_SIZE": 5, "TEST.NUM_ENSEMBLE_VIEWS": 2,
        "OUTPUT_DIR": os.path.join(root, "out"),
    }
    cfg = load_config(None, [str(x) for pair in opts.items() for x in pair])
    model, device = _ColourLookup(), torch.device("cpu")
    fit(cfg, model, device)
    stats = {r["split"]: r for r in read_json_stats(os.path.join(cfg.OUTPUT_DIR, "json_stats.log"))}
    metrics, _merged = run_test(model, build_loader(cfg, "test"), cfg, device)
    return stats, metrics


def test_train_epoch_loss_and_errors_match_the_logits(lookup_run):
    train = lookup_run[0]["train"]
    assert train["samples"] == 12
    assert train["loss"] == pytest.approx(sum(_nll_by_hand(r) for r in RANKS) / 12, abs=2e-6)
    assert train["top1_err"] == pytest.approx(100 * 5 / 12, abs=1e-5)  # ranks > 1: 5 of 12
    assert train["top5_err"] == pytest.approx(100 * 2 / 12, abs=1e-5)  # ranks > 5: 2 of 12


def test_validation_loss_is_the_nll_of_the_probabilities(lookup_run):
    val, ranks = lookup_run[0]["val"], RANKS[:10]
    assert val["samples"] == 10
    assert val["loss"] == pytest.approx(sum(_nll_by_hand(r) for r in ranks) / 10, abs=2e-6)
    assert val["top1_err"] == pytest.approx(100 * 4 / 10, abs=1e-5)
    assert val["top5_err"] == pytest.approx(100 * 1 / 10, abs=1e-5)


def test_multi_view_test_metrics_and_mean_class_accuracy(lookup_run):
    metrics = lookup_run[1]
    assert (metrics["videos_scored"], metrics["videos_listed"]) == (12, 12)
    assert metrics["loss"] == pytest.approx(sum(_nll_by_hand(r) for r in RANKS) / 12, rel=1e-6)
    assert metrics["top1_acc"] == pytest.approx(100 * 7 / 12)
    assert metrics["top5_acc"] == pytest.approx(100 * 10 / 12)
    # Per class: 3/3, 1/2, 0/2, 1/2, 2/2, 0/1 -> mean of 100, 50, 0, 50, 100, 0.
    assert [v["top1"] for v in metrics["per_class"].values()] == pytest.approx([100, 50, 0, 50, 100, 0])
    assert metrics["mean_class_acc"] == pytest.approx(50.0)


def test_run_leaves_package_logging_as_it_found_it(data_root, tmp_path):
    """A run called from Python closes its log file and gives the package logger back
    (handlers, level, propagation): later code, pytest's caplog included, still sees
    the package's records."""
    logger = logging.getLogger("cgnl_video")
    before = (list(logger.handlers), logger.propagate, logger.level)
    run(_cfg(data_root, tmp_path, SOLVER__MAX_EPOCH=1, TEST__ENABLE=False))
    assert (list(logger.handlers), logger.propagate, logger.level) == before


# ----------------------------------------------------------------------------- mean-class accuracy


def test_mean_class_accuracy_leaves_out_classes_without_a_scored_video():
    """Four classes: "a" 2 of 3 right, "b" 1 of 1, "c" listed with no test video, "d"
    whose only video could not be read. The mean is over the classes that have a scored
    video, (200 / 3 + 100) / 2; counting "c" and "d" as 0 % would halve it."""
    classes = ["a", "b", "c", "d"]
    labels = [0, 0, 0, 1, 3]
    scores = {0: torch.tensor([0.7, 0.1, 0.1, 0.1]), 1: torch.tensor([0.4, 0.3, 0.2, 0.1]),
              2: torch.tensor([0.2, 0.5, 0.2, 0.1]), 3: torch.tensor([0.1, 0.6, 0.2, 0.1])}
    metrics = video_metrics(scores, labels, classes, failed=[4])
    assert metrics["per_class"]["c"] == {"correct": 0, "videos": 0, "top1": None}
    assert metrics["per_class"]["d"] == {"correct": 0, "videos": 0, "top1": None}
    assert metrics["top1_acc"] == pytest.approx(75.0)
    assert metrics["mean_class_acc"] == pytest.approx((200 / 3 + 100) / 2)


# ----------------------------------------------------------------------------- cosine schedule


def test_cosine_schedule_ends_at_solver_cosine_end_lr():
    """lr(e) = end + (base - end) (1 + cos(pi e / MAX_EPOCH)) / 2 with base 0.1 and
    SOLVER.COSINE_END_LR 0.01: 0.1 at 0, 0.055 halfway, 0.01 at the end; the warmup
    (2 of 20 epochs from 0.001) ends on that curve."""
    cfg = load_config(None, ["SOLVER.LR_POLICY", "cosine", "SOLVER.BASE_LR", "0.1", "SOLVER.COSINE_END_LR",
                             "0.01", "SOLVER.MAX_EPOCH", "20", "SOLVER.WARMUP_EPOCHS", "2.0",
                             "SOLVER.WARMUP_START_LR", "0.001"])
    on_curve = 0.01 + 0.09 * (1 + math.cos(math.pi * 2 / 20)) / 2
    assert lr_at(cfg, 0.0) == pytest.approx(0.001)
    assert lr_at(cfg, 1.0) == pytest.approx((0.001 + on_curve) / 2)
    assert lr_at(cfg, 2.0) == pytest.approx(on_curve)
    assert lr_at(cfg, 10.0) == pytest.approx(0.055)
    assert lr_at(cfg, 15.0) == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 0.75)) / 2)
    assert lr_at(cfg, 20.0) == pytest.approx(0.01)
