"""Initialise a C2D ResNet from local weight files.

* ``load_imagenet_weights``: a torchvision ResNet-50/101 state dict (2D).
  Each 2D kernel k x k becomes the 1 x k x k kernel of the C2D conv (a
  temporal kernel t > 1 gets the 2D kernel repeated and divided by t), so a
  clip of identical frames gives the 2D network's output on that frame.
* ``load_pytorchvideo_state_dict``: a PyTorchVideo / PySlowFast C2D checkpoint
  (keys ``blocks.*``; the model-zoo files wrap them in ``model_state``).

Nothing is downloaded: both read a local file (or take a state dict).
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from cgnl_video.config.backbones import STAGE_NAMES
from cgnl_video.models.c2d import C2DResNet

StateDict = Mapping[str, torch.Tensor]
_BRANCH2 = {"conv1": "conv_a", "conv2": "conv_b", "conv3": "conv_c", "bn1": "norm_a", "bn2": "norm_b", "bn3": "norm_c"}
_LAYER_KEY = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
_INSERTED = ".inserted."


@dataclass
class LoadReport:
    """What a loader did: keys of the model it set, and source keys it left unused."""

    loaded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)


def read_state_dict(path_or_state: Union[str, StateDict]) -> Dict[str, torch.Tensor]:
    """A plain state dict from a file or mapping; unwraps ``model_state``,
    ``state_dict`` and ``model`` entries and a DataParallel ``module.`` prefix."""
    state = path_or_state
    if isinstance(state, str):
        state = torch.load(state, map_location="cpu", weights_only=True)
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def torchvision_key_to_c2d(key: str) -> Optional[str]:
    """The C2D parameter name for a torchvision ResNet key (None if it has no counterpart);
    torchvision's layer1..layer4 are res2..res5."""
    if key.startswith("conv1.") or key.startswith("bn1."):
        module, attr = key.split(".", 1)
        return f"{C2DResNet.part_path('stem')}.{'conv' if module == 'conv1' else 'norm'}.{attr}"
    if key.startswith("fc."):
        return f"{C2DResNet.part_path('head')}.proj.{key[3:]}"
    match = _LAYER_KEY.match(key)
    if not match:
        return None
    layer, block, module, attr = match.groups()
    prefix = f"{C2DResNet.part_path(STAGE_NAMES[int(layer) - 1])}.res_blocks.{block}"
    if module.startswith("downsample"):
        return f"{prefix}.branch1_{'conv' if module.endswith('0') else 'norm'}.{attr}"
    return f"{prefix}.branch2.{_BRANCH2[module]}.{attr}"


def _inflate(weight: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    """2D kernel (O, I, kh, kw) -> (O, I, t, kh, kw), averaged over t."""
    if weight.dim() == 4 and len(target_shape) == 5:
        t = target_shape[2]
        weight = weight.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    return weight


def load_imagenet_weights(model: nn.Module, path_or_state: Union[str, StateDict]) -> LoadReport:
    """Copy a torchvision ResNet state dict into the C2D backbone (and the fc when shapes agree).

    Raises ValueError naming the key if a backbone tensor is missing from the
    file or has another shape (e.g. ResNet depth or RESNET.WIDTH_PER_GROUP
    differ). Inserted blocks and a differently sized fc keep their init.
    """
    source = read_state_dict(path_or_state)
    target = model.state_dict()
    report, updates = LoadReport(), {}
    for key, value in source.items():
        name = torchvision_key_to_c2d(key)
        if name is None or name not in target:
            report.skipped.append(key)
            continue
        value = _inflate(value, target[name].shape)
        if value.shape != target[name].shape:
            if ".proj." in name:  # another number of classes: keep the new fc
                report.skipped.append(key)
                continue
            raise ValueError(f"{key} -> {name}: shape {tuple(value.shape)} != {tuple(target[name].shape)}")
        updates[name] = value
    backbone = [k for k in target if _INSERTED not in k and ".proj." not in k and "num_batches_tracked" not in k]
    missing = [k for k in backbone if k not in updates]
    if missing:
        raise ValueError(f"the ImageNet weights lack {len(missing)} backbone tensors, e.g. {missing[0]}")
    model.load_state_dict(updates, strict=False)
    report.loaded = sorted(updates)
    return report


def load_pytorchvideo_state_dict(model: nn.Module, path_or_state: Union[str, StateDict]) -> LoadReport:
    """Load a PyTorchVideo-layout C2D state dict; only inserted blocks may be absent from it."""
    state = read_state_dict(path_or_state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if _INSERTED not in k]
    if missing or unexpected:
        raise ValueError(f"state dict does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return LoadReport(loaded=sorted(state), skipped=[])
