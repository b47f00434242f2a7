"""Initialise a C2D ResNet from pretrained weights.

* ``imagenet_state_dict``: the torchvision ResNet-50/101 state dict that
  RESNET.IMAGENET_WEIGHTS names: torchvision weights by name (``IMAGENET1K_V1``),
  fetched through torchvision's weights API into torch.hub's cache on first use,
  or a local file.
* ``load_imagenet_weights``: a torchvision ResNet-50/101 state dict (2D) into a C2D
  model. Each 2D kernel k x k becomes the 1 x k x k kernel of the C2D conv (a
  temporal kernel t > 1 gets the 2D kernel repeated and divided by t), so a
  clip of identical frames gives the 2D network's output on that frame.
* ``load_pytorchvideo_state_dict``: a PyTorchVideo / PySlowFast C2D checkpoint
  (keys ``blocks.*``; the model-zoo files wrap them in ``model_state``).

Files of every layout are read by ``models.state_dict`` (weights-only).
"""

import os
import re
from typing import Any, Dict, Optional, Union
from urllib.parse import urlparse

import torch
from torch import nn

from cgnl_video.config.backbones import STAGE_NAMES
from cgnl_video.config.registry import is_weights_name
from cgnl_video.models.c2d import C2DResNet
from cgnl_video.models.state_dict import LoadReport, StateDict, read_state_dict
from cgnl_video.utils.remote import is_url

_BRANCH2 = {"conv1": "conv_a", "conv2": "conv_b", "conv3": "conv_c", "bn1": "norm_a", "bn2": "norm_b", "bn3": "norm_c"}
_LAYER_KEY = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
_INSERTED = ".inserted."


class WeightsUnavailableError(FileNotFoundError):
    """Named weights are not in torch.hub's cache and could not be downloaded; the
    message names the URL, the file name and the cache path to place it at."""


def torchvision_weights(name: str, depth: int) -> Any:
    """torchvision's ``ResNet{depth}_Weights.{name}`` (its URL, metadata, ``get_state_dict``)."""
    from torchvision.models import get_weight

    try:
        return get_weight(f"ResNet{depth}_Weights.{name}")
    except (KeyError, ValueError):
        raise ValueError(f"RESNET.IMAGENET_WEIGHTS: torchvision has no weights {name!r} for ResNet-{depth}") from None


def hub_cache_path(url: str) -> str:
    """Where torch.hub keeps the download of ``url``: ``<torch.hub.get_dir()>/checkpoints/<file
    name of the URL>`` (torch.hub.get_dir() is $TORCH_HOME/hub, by default ~/.cache/torch/hub)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def torchvision_state_dict(name: str, depth: int) -> Dict[str, torch.Tensor]:
    """The state dict of torchvision's ResNet-``depth`` weights ``name``, read from torch.hub's
    cache, downloaded into it first (with a progress bar) when absent.

    Raises WeightsUnavailableError when the file is absent and cannot be downloaded (offline).
    """
    weights = torchvision_weights(name, depth)
    cached = hub_cache_path(weights.url)
    try:
        return weights.get_state_dict(progress=True, map_location="cpu", weights_only=True)
    except OSError as exc:  # URLError, timeouts, DNS: the download failed
        if os.path.exists(cached):
            raise
        raise WeightsUnavailableError(
            f"RESNET.IMAGENET_WEIGHTS {name}: the torchvision ResNet-{depth} weights are not in torch.hub's "
            f"cache and could not be downloaded ({exc}). On a machine with internet access download\n"
            f"  {weights.url}\nand copy that file, keeping its name {os.path.basename(cached)}, to\n  {cached}\n"
            "(torch.hub's cache is $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to ~/.cache/torch), "
            "or set RESNET.IMAGENET_WEIGHTS to a local file"
        ) from exc


def imagenet_state_dict(source: str, depth: int) -> Dict[str, torch.Tensor]:
    """The ResNet-``depth`` state dict RESNET.IMAGENET_WEIGHTS ``source`` names: torchvision
    weights by name (``is_weights_name``), else a file of any layout (local, or an http(s) URL)."""
    if is_weights_name(source):
        return torchvision_state_dict(source, depth)
    if not is_url(source) and not os.path.isfile(source):
        raise FileNotFoundError(f"RESNET.IMAGENET_WEIGHTS: file not found: {source} (a torchvision "
                                "weights name such as IMAGENET1K_V1 needs no file; see configs/README.md)")
    return read_state_dict(source)


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
    """Load a PyTorchVideo-layout C2D state dict; only inserted blocks may be absent from it.

    Args:
        model: a C2D model (``build_model``), changed in place.
        path_or_state: a checkpoint file or a state dict (``read_state_dict``).
    Returns:
        The ``LoadReport``: the keys loaded and skipped, inserted blocks left at their init.
    """
    state = read_state_dict(path_or_state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if _INSERTED not in k]
    if missing or unexpected:
        raise ValueError(f"state dict does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return LoadReport(loaded=sorted(state), skipped=[])


def load_c2d_pretrained(cfg: Any, model: nn.Module) -> Optional[LoadReport]:
    """RESNET.IMAGENET_WEIGHTS (a torchvision weights name or a local file) into a built
    C2D model; None when it is "" (random weights)."""
    source = cfg.RESNET.IMAGENET_WEIGHTS
    if not source:
        return None
    report = load_imagenet_weights(model, imagenet_state_dict(source, cfg.RESNET.DEPTH))
    report.source = f"RESNET.IMAGENET_WEIGHTS {source}"
    return report
