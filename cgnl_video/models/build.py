"""build_model(cfg): the registered backbone of MODEL.ARCH with the registered
blocks of NONLOCAL.TYPE inserted. The shipped builders sit next to their modules
(``build_c2d`` in models/c2d.py, ``build_cgnl`` in models/cgnl.py, ...).

A backbone builder ``builder(cfg) -> nn.Module`` returns a model with

* ``stages``: its stages in the order of the entry's ``stages(cfg)``, each with
  ``insert_after(index, block)`` (blocks run after residual block ``index``);
* ``parts()``: part name -> module path, in forward order (model_info's rows);
* ``classifier_key``: the state dict key of the classifier weight, one row per
  class (torch.hub reads a checkpoint's number of classes there);
* ``head``: the classifier module; its input is the feature map that
  ``analysis.features`` pools (export's ``logits`` needs a ``C2DHead``);
* train mode returning logits (B, classes) and eval mode class probabilities
  (``C2DResNet`` in models/c2d.py is the shipped one).
"""

from typing import Any, Callable, Dict, Optional, Protocol, Sequence

import torch
from torch import nn

from cgnl_video.config.registry import backbone_entry, block_entry
from cgnl_video.models.state_dict import LoadReport


class Backbone(Protocol):
    """What ``build_model`` and the tools need of a backbone model (see the module
    docstring); what they need before a model exists (stages, SyncBatchNorm, the
    pretrained weights' key) is in its registry entry (``register_backbone``)."""

    stages: Sequence[Any]
    classifier_key: str
    head: nn.Module

    def parts(self) -> Dict[str, str]: ...


# ----------------------------------------------------------------------------- assembly
def insert_blocks(model: Backbone, locations: Sequence[Sequence[int]], make_block: Callable[[int], nn.Module]) -> None:
    """For stage s of ``model.stages`` and each index i in ``locations[s]``, insert
    ``make_block(channels_of_stage_s)`` after residual block i."""
    if len(locations) != len(model.stages):
        raise ValueError(f"need one index list per stage ({len(model.stages)}), got {len(locations)}")
    for stage, indices in zip(model.stages, locations):
        for index in sorted(indices):
            stage.insert_after(index, make_block(stage.out_channels))


def build_backbone(cfg: Any) -> nn.Module:
    """The backbone of MODEL.ARCH, without inserted blocks."""
    return backbone_entry(cfg.MODEL.ARCH).build(cfg)


def build_model(cfg: Any) -> nn.Module:
    """The model of a (validated) config, on CPU, in train mode, freshly initialised:
    it reads no file (pretrained weights: ``load_pretrained``).

    Train mode returns logits (B, MODEL.NUM_CLASSES); eval mode returns class
    probabilities averaged over the positions of the last feature map (see
    ``C2DResNet``). Blocks of NONLOCAL.TYPE go after the residual blocks listed
    in NONLOCAL.LOCATION; the backbone's ``norm_key`` (C2D: RESNET.NORM) set to
    "sync_batchnorm" converts every BatchNorm, the inserted blocks' too (the model
    then needs an initialised process group to train).
    """
    model = build_backbone(cfg)
    if cfg.NONLOCAL.TYPE != "none":
        block = block_entry(cfg.NONLOCAL.TYPE)
        insert_blocks(model, cfg.NONLOCAL.LOCATION, lambda channels: block.build(cfg, channels))
    if backbone_entry(cfg.MODEL.ARCH).sync_batchnorm(cfg):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def load_pretrained(cfg: Any, model: nn.Module) -> Optional[LoadReport]:
    """Load the pretrained weights ``cfg`` names for its backbone (C2D: RESNET.IMAGENET_WEIGHTS)
    into the built ``model``; None when it names none. The engine calls this at the start of
    a fresh run only (see ``engine.resume.resume_or_initialise``)."""
    return backbone_entry(cfg.MODEL.ARCH).load_pretrained(cfg, model)


def standalone_config(cfg: Any) -> Any:
    """A thawed copy of ``cfg`` whose model runs on its own: plain BatchNorm
    (SyncBatchNorm needs a process group), no pretrained weights named (the
    backbone entry's ``standalone_opts``)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(backbone_entry(cfg.MODEL.ARCH).standalone_opts())
    return cfg


def prepare_for_speed(model: nn.Module, cfg: Any) -> nn.Module:
    """Apply MODEL.CHANNELS_LAST (channels_last_3d weights; feed inputs in the
    same format) and MODEL.COMPILE (torch.compile). Call after moving to the device."""
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last_3d)
    if cfg.MODEL.COMPILE:
        model = torch.compile(model)
    return model
