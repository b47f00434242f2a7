"""Models for torch.hub (see hubconf.py): built from an experiment config, with
an optional local checkpoint (any layout ``models.state_dict`` reads: ours,
PyTorchVideo's, a bare state dict, an official Caffe2 pickle)."""

from typing import List, Mapping, Optional, Sequence

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.config import load_config
from cgnl_video.config.registry import backbone_entry
from cgnl_video.models import build_model, standalone_config
from cgnl_video.models.build import load_pretrained
from cgnl_video.models.state_dict import load_state, read_state_dict


def standalone_opts(config_file: str, opts: Sequence[str]) -> List[str]:
    """Overrides that make the model of ``config_file`` run on its own: plain BatchNorm,
    no pretrained weights (its backbone's ``standalone_opts``; C2D: RESNET.NORM and
    RESNET.IMAGENET_WEIGHTS)."""
    return backbone_entry(load_config(config_file, list(opts)).MODEL.ARCH).standalone_opts()


def checkpoint_classes(cfg: CfgNode, state: Mapping[str, torch.Tensor]) -> Optional[int]:
    """Rows of the checkpoint's classifier weight, at the key the backbone of ``cfg``
    names (its model is built on the meta device: no memory, no initialisation);
    None if the checkpoint has no such key."""
    with torch.device("meta"):
        key = build_model(standalone_config(cfg)).classifier_key
    return int(state[key].shape[0]) if key in state else None


def hub_model(config_file: str, num_classes: Optional[int] = None, checkpoint: Optional[str] = None,
              opts: Sequence[str] = ()) -> nn.Module:
    """The model of ``config_file`` on the CPU, in eval mode (it returns class
    probabilities; ``.train()`` gives logits).

    ``num_classes``: default the checkpoint's (from its classifier) or the
    config's. ``checkpoint``: a local file, loaded strictly (``models.state_dict``).
    ``opts``: KEY VALUE config overrides. Without a checkpoint, ImageNet weights
    initialise the backbone only if ``opts`` sets RESNET.IMAGENET_WEIGHTS (a
    torchvision weights name or a local file); BatchNorm stays plain (no
    SyncBatchNorm, which needs a process group) unless ``opts`` sets RESNET.NORM.
    """
    opts = [str(x) for x in opts]
    standalone = standalone_opts(config_file, opts)
    state = read_state_dict(checkpoint) if checkpoint else None
    if num_classes is None and state is not None:
        num_classes = checkpoint_classes(load_config(config_file, standalone + opts), state)
    overrides = list(standalone)
    if num_classes is not None:
        overrides += ["MODEL.NUM_CLASSES", str(num_classes)]
    cfg = load_config(config_file, overrides + opts)
    model = build_model(cfg)
    if state is not None:
        load_state(model, state, source=checkpoint)
    else:
        load_pretrained(cfg, model)
    return model.eval()
