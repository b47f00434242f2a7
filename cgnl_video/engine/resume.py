"""The state of a training run in a checkpoint, and where a run starts: what ``fit``
saves after an epoch or mid-epoch (model, optimizer, LR schedule, loss scaler, epoch,
iteration, every rank's epoch sums and RNG states, config), how a restarted run picks
it up again, and how a new run is initialised (``resume_or_initialise``), one of:

1. resume: the last checkpoint of OUTPUT_DIR (TRAIN.AUTO_RESUME), everything restored;
2. else fine-tune: the weights of TRAIN.CHECKPOINT_FILE_PATH (ours, PyTorchVideo's, a
   bare state dict or an official Caffe2 pickle); inserted blocks the file lacks keep
   their init; a classifier with another number of classes takes its rows by class name
   when this run's classes are among the checkpoint's (``classifier_rows_by_name``),
   else starts afresh;
3. else a fresh run: the backbone's pretrained weights (RESNET.IMAGENET_WEIGHTS),
   which are never read when resuming, fine-tuning or testing only.

The file I/O (atomic save, keep-K, last complete checkpoint) is ``engine.checkpoint``'s.
"""

import os
from typing import Dict, List, Optional

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.config import ConfigError
from cgnl_video.data import classes_path, read_classes
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.metrics import EpochMeter
from cgnl_video.engine.optim import EpochLRScheduler
from cgnl_video.models.build import load_pretrained
from cgnl_video.models.state_dict import CheckpointError, classifier_rows, model_state
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import get_logger


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: EpochLRScheduler,
                     scaler: torch.amp.GradScaler, epochs_done: int, cfg: CfgNode, iteration: int = 0,
                     meter: Optional[EpochMeter] = None) -> Dict:
    """Everything a resumed run needs; collective (gathers every rank's RNG states and,
    mid-epoch, every rank's ``meter``: the sums of the ``iteration`` iterations done of
    epoch ``epochs_done + 1``)."""
    state = {
        "model": cu.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "grad_scaler": scaler.state_dict(),
        "epoch": epochs_done,
        "iteration": iteration,
        "rng_states": du.all_gather_object(du.get_rng_states()),
        "world_size": du.get_world_size(),
        "cfg": cfg.dump(),
        "classes": dataset_classes(cfg),  # the classifier's rows, for fine-tuning by class name
    }
    if iteration:
        state["train_meters"] = du.all_gather_object((meter or EpochMeter()).state_dict())
    return state


def save_training_state(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler, epochs_done: int,
                        iteration: int = 0, meter: Optional[EpochMeter] = None) -> str:
    """Checkpoint the run after ``epochs_done`` epochs and ``iteration`` iterations of the
    next one (mid-epoch, with every rank's ``meter``) into OUTPUT_DIR (collective: every
    rank calls it, rank 0 writes, keeping TRAIN.CHECKPOINT_KEEP); returns the path."""
    state = checkpoint_state(model, optimizer, scheduler, scaler, epochs_done, cfg, iteration, meter)
    path = cu.checkpoint_path(cfg.OUTPUT_DIR, epochs_done, iteration)
    if du.is_main_process():
        cu.save_checkpoint(cfg.OUTPUT_DIR, epochs_done, state, cfg.TRAIN.CHECKPOINT_KEEP, iteration)
        get_logger().info("saved %s", path)
    du.barrier()
    return path


def restore_meter(state: Dict) -> EpochMeter:
    """This rank's sums of the iterations a mid-epoch checkpoint has done of its epoch
    (empty for an epoch checkpoint). Written by another number of processes: rank 0 takes
    all of them (the epoch's stats are their sum over the ranks), the others none."""
    meter = EpochMeter()
    meters = state.get("train_meters") or []
    if len(meters) == du.get_world_size():
        meter.load_state_dict(meters[du.get_rank()])
    elif meters and du.is_main_process():
        meter.load_state_dict({key: sum(m[key] for m in meters) for key in meters[0]})
    return meter


def resume_or_initialise(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler) -> Optional[Dict]:
    """Where training starts (see the module docstring): the last checkpoint of OUTPUT_DIR
    with TRAIN.AUTO_RESUME (returned, as ``resume_from_last``), else the weights of
    TRAIN.CHECKPOINT_FILE_PATH if set, else the pretrained weights the config names
    (None is returned in both cases: the run starts at epoch 0)."""
    resumed = resume_from_last(cfg, model, optimizer, scheduler, scaler) if cfg.TRAIN.AUTO_RESUME else None
    if resumed is None and cfg.TRAIN.CHECKPOINT_FILE_PATH:
        fine_tune_from(cfg, model)
    elif resumed is None:
        initialise_pretrained(cfg, model)
    return resumed


def fine_tune_from(cfg: CfgNode, model: nn.Module) -> None:
    """Initialise every weight from TRAIN.CHECKPOINT_FILE_PATH. Inserted blocks the file
    lacks keep their fresh init (the identity); a classifier with another number of classes
    takes its rows by class name where it can (``classifier_rows_by_name``), else keeps its
    fresh init. The log says which. ConfigError naming the key, the file and the keys for
    any other mismatch."""
    path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    try:
        checkpoint = cu.load_checkpoint(path)
        rows = classifier_rows_by_name(cfg, model, checkpoint)
        _, report = cu.load_model_weights(model, path, new_classifier=True, state=checkpoint,
                                          new_blocks=True, class_rows=rows)
    except CheckpointError as exc:
        raise ConfigError(f"TRAIN.CHECKPOINT_FILE_PATH: {exc}") from None
    logger = get_logger()
    logger.info("initialised the weights from %s (%d tensors)", path, len(report.loaded))
    if report.rows_by_name:
        logger.info("took %d classifier rows of %s by class name (every class of this run is one of its classes)",
                    report.rows_by_name, path)
    if report.skipped:
        logger.info("not loaded from %s (another number of classes; the classifier starts afresh, "
                    "MODEL.NUM_CLASSES %d): %s", path, cfg.MODEL.NUM_CLASSES, ", ".join(report.skipped))
    if report.new_blocks:
        logger.info("not in %s, keeping their initialisation (the identity): %s", path,
                    ", ".join(report.new_blocks))


def dataset_classes(cfg: CfgNode) -> Optional[List[str]]:
    """The class names of DATA.PATH_TO_DATA_DIR/classes.txt (label = position); None without one."""
    path = classes_path(cfg)
    return read_classes(path) if os.path.isfile(path) else None


def checkpoint_classes(cfg: CfgNode, checkpoint: Dict) -> Optional[List[str]]:
    """The class names of the rows of the fine-tuning checkpoint's classifier: the file
    TRAIN.CHECKPOINT_CLASSES names, else the ``classes`` our checkpoints store; None if unknown."""
    path = cfg.TRAIN.CHECKPOINT_CLASSES
    if not path:
        return checkpoint.get("classes")
    try:
        return read_classes(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TRAIN.CHECKPOINT_CLASSES: {exc}") from None


def classifier_rows_by_name(cfg: CfgNode, model: nn.Module, checkpoint: Dict) -> Optional[List[int]]:
    """The checkpoint classifier's row of each class of this run when every class of the run
    (DATA.PATH_TO_DATA_DIR/classes.txt) is a class of the checkpoint (``checkpoint_classes``);
    None when a name or the names are unknown (the classifier then loads as the shapes allow).

    Raises ConfigError (CheckpointError for stored names) when the checkpoint's class names
    are not one per row of its classifier.
    """
    names, classes = checkpoint_classes(cfg, checkpoint), dataset_classes(cfg)
    path, key = cfg.TRAIN.CHECKPOINT_FILE_PATH, getattr(cu.unwrap_model(model), "classifier_key", "")
    if names is None or classes is None or key not in model_state(checkpoint, path):
        return None
    state = model_state(checkpoint, path)
    rows = int(state[key].shape[0])
    if len(names) != rows and cfg.TRAIN.CHECKPOINT_CLASSES:
        raise ConfigError(f"TRAIN.CHECKPOINT_CLASSES: {cfg.TRAIN.CHECKPOINT_CLASSES} lists {len(names)} classes, "
                          f"but the classifier of {path} ({key}) has {rows} rows")
    if len(names) != rows:
        raise CheckpointError(f"{path} stores {len(names)} class names for the {rows} rows of its classifier ({key})")
    return classifier_rows(names, classes)


def initialise_pretrained(cfg: CfgNode, model: nn.Module) -> None:
    """A fresh run: the backbone's pretrained weights (C2D: RESNET.IMAGENET_WEIGHTS). The
    main process reads them first (a first use downloads them into torch.hub's cache),
    then the other processes (on its machine, they find them in that cache)."""
    if not du.is_main_process():
        du.barrier()
    try:
        report = load_pretrained(cfg, cu.unwrap_model(model))
    finally:
        if du.is_main_process():
            du.barrier()
    if report is not None:
        get_logger().info("initialised the backbone from %s (%d tensors; not used: %s)", report.source,
                          len(report.loaded), ", ".join(report.skipped) or "none")


def resume_from_last(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler) -> Optional[Dict]:
    """Load the last complete checkpoint of OUTPUT_DIR (rank 0 chooses it); None if there is none.

    RNG states are restored later, right before training goes on (``restore_rng``); the
    epoch's stats sums of a mid-epoch checkpoint by ``restore_meter``.
    """
    last = cu.load_last_checkpoint(cfg.OUTPUT_DIR) if du.is_main_process() else None
    path = du.broadcast_object(last["path"] if last else None)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"rank {du.get_rank()} cannot read checkpoint {path}: with several machines, "
            "OUTPUT_DIR must be on a file system that every machine shares"
        )
    try:
        state, _ = cu.load_model_weights(model, path, state=last)  # rank 0 has read it already
    except CheckpointError as exc:
        raise ConfigError(f"OUTPUT_DIR: resuming from its last checkpoint: {exc} (a run with another "
                          "model needs another OUTPUT_DIR, or TRAIN.AUTO_RESUME False)") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["grad_scaler"] and scaler.is_enabled():  # empty when saved without fp16
        scaler.load_state_dict(state["grad_scaler"])
    state["path"] = path
    state.setdefault("iteration", 0)  # checkpoints written before mid-epoch ones have none
    # epoch: the (1-based) epoch the run goes on with; iteration: how many of its iterations are done
    get_logger().info("resuming from epoch %d, iteration %d (%s)", state["epoch"] + 1, state["iteration"], path)
    return state


def restore_rng(state: Dict) -> None:
    """Restore this rank's RNG states from a checkpoint written by the same number of processes."""
    states = state["rng_states"]
    if len(states) == du.get_world_size():
        du.set_rng_states(states[du.get_rank()])
    else:
        get_logger().warning("checkpoint was written by %d processes, this run has %d: "
                             "RNG states are not restored", len(states), du.get_world_size())
