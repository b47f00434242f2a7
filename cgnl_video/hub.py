"""Models for torch.hub (see hubconf.py): built from an experiment config, with
an optional local checkpoint (ours or a bare state dict)."""

from typing import Optional, Sequence

from torch import nn

from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.models import build_model
from cgnl_video.models.c2d import HEAD_BLOCK_INDEX

HEAD_WEIGHT = f"blocks.{HEAD_BLOCK_INDEX}.proj.weight"


def hub_model(config_file: str, num_classes: Optional[int] = None, checkpoint: Optional[str] = None,
              opts: Sequence[str] = ()) -> nn.Module:
    """The model of ``config_file`` on the CPU, in eval mode (it returns class
    probabilities; ``.train()`` gives logits).

    ``num_classes``: default the checkpoint's (from its classifier) or the
    config's. ``checkpoint``: a local file, loaded weights-only and strictly.
    ``opts``: KEY VALUE config overrides. No ImageNet file is read unless
    ``opts`` sets RESNET.IMAGENET_WEIGHTS, and BatchNorm stays plain (no
    SyncBatchNorm, which needs a process group) unless ``opts`` sets RESNET.NORM.
    """
    state = cu.model_state_from(cu.load_checkpoint(checkpoint)) if checkpoint else None
    if num_classes is None and state is not None and HEAD_WEIGHT in state:
        num_classes = int(state[HEAD_WEIGHT].shape[0])
    overrides = ["RESNET.IMAGENET_WEIGHTS", "", "RESNET.NORM", "batchnorm"]  # a standalone model
    if num_classes is not None:
        overrides += ["MODEL.NUM_CLASSES", str(num_classes)]
    cfg = load_config(config_file, overrides + [str(x) for x in opts])
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()

