"""Registries of inserted blocks (NONLOCAL.TYPE) and backbones (MODEL.ARCH).

One entry per name holds everything the package needs to know about it:
``builder`` makes the module (a block: ``builder(cfg, stage_channels)``, once per
inserted block; a backbone: ``builder(cfg)``, contract in ``cgnl_video.models.build``),
possibly as a "module:function" string imported on first use, which keeps the shipped
entries (``config/blocks.py``, ``config/backbones.py``) free of torch; ``defaults``,
the entry's own keys, which ``get_cfg`` adds as soon as it is registered (register
before ``load_config``); ``validate``, which raises ``ConfigError`` naming the key and
runs for every registered entry, selected or not; ``describe``, for model_info,
MODEL_ZOO.md and ``summary.describe``; and for backbones ``pretrained(cfg, model)``,
called by the engine once at the start of a fresh run (``build_model`` reads no
weights). This module imports no torch; ``cgnl_video.models`` re-exports
``register_block`` and ``register_backbone`` for user code (docs/ARCHITECTURE.md).
"""

import copy
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from fvcore.common.config import CfgNode

from cgnl_video.config.defaults import base_cfg
from cgnl_video.config.rules import ConfigError

Builder = Union[Callable[..., Any], str]
#: the values of a backbone's ``norm_key``
BATCHNORM, SYNC_BATCHNORM = "batchnorm", "sync_batchnorm"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BlockDescription:
    """How a block shows in reports: ``text`` for model_info ("CGNL (dot, G=8)"),
    and the MODEL_ZOO.md columns blocks (``label``), kernel and groups ("-" if empty)."""

    label: str
    kernel: str = ""
    groups: Optional[int] = None

    @property
    def text(self) -> str:
        details = [d for d in (self.kernel, "" if self.groups is None else f"G={self.groups}") if d]
        return f"{self.label} ({', '.join(details)})" if details else self.label


@dataclass(frozen=True)
class BackboneDescription:
    """How a backbone shows in reports: ``label`` ("R-101") and the MODEL_ZOO.md depth column."""

    label: str
    depth: Optional[int] = None


@dataclass(frozen=True)
class Stage:
    """A stage of a backbone that blocks can be inserted into: ``depth`` residual
    blocks (NONLOCAL.LOCATION[i] lists indices 0..depth-1 of stage i) of
    ``channels`` output channels (what an inserted block gets)."""

    name: str
    depth: int
    channels: int


def _resolve(builder: Builder) -> Callable[..., Any]:
    if callable(builder):
        return builder
    module, _, attr = builder.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class BlockEntry:
    """A registered NONLOCAL.TYPE (see the module docstring)."""

    name: str
    builder: Builder
    defaults: CfgNode
    validate: Callable[[CfgNode, Tuple[int, ...]], None]
    describe: Callable[[CfgNode], BlockDescription]

    def build(self, cfg: CfgNode, stage_channels: int) -> Any:
        return _resolve(self.builder)(cfg, stage_channels)


@dataclass(frozen=True)
class BackboneEntry:
    """A registered MODEL.ARCH (see the module docstring); ``stages(cfg)`` lists the
    stages blocks can go into, without building the model."""

    name: str
    builder: Builder
    defaults: CfgNode
    validate: Callable[[CfgNode], None]
    describe: Callable[[CfgNode], BackboneDescription]
    stages: Callable[[CfgNode], Sequence[Stage]]
    pretrained: Optional[Builder] = None
    norm_key: Optional[str] = None
    weights_key: Optional[str] = None

    def build(self, cfg: CfgNode) -> Any:
        return _resolve(self.builder)(cfg)

    def sync_batchnorm(self, cfg: CfgNode) -> bool:
        """Whether ``cfg`` asks for SyncBatchNorm (its ``norm_key`` is "sync_batchnorm")."""
        return bool(self.norm_key) and _value(cfg, self.norm_key) == SYNC_BATCHNORM

    def weights_file(self, cfg: CfgNode) -> Optional[str]:
        """The file its ``weights_key`` names; None for a weights name, "" or no such key."""
        value = _value(cfg, self.weights_key) if self.weights_key else ""
        return value if value and not is_weights_name(value) else None

    def standalone_opts(self) -> List[str]:
        """KEY VALUE overrides that make the model run on its own: plain BatchNorm (no
        process group) and no pretrained weights read."""
        return [*([self.norm_key, BATCHNORM] if self.norm_key else []),
                *([self.weights_key, ""] if self.weights_key else [])]

    def load_pretrained(self, cfg: CfgNode, model: Any) -> Any:
        """Load the pretrained weights ``cfg`` names into ``model``; None without a ``pretrained`` hook."""
        return _resolve(self.pretrained)(cfg, model) if self.pretrained else None


def is_weights_name(value: str) -> bool:
    """Whether a ``weights_key`` value (e.g. RESNET.IMAGENET_WEIGHTS) names weights rather than a file.

    The rule: a file path has a path separator or a dot (``pretrained/resnet50.pth``,
    ``resnet50.pth``), a name has neither (``IMAGENET1K_V1``); "" is neither.
    """
    return bool(value) and not any(c in value for c in "/\\.")


def _value(cfg: Mapping, key: str) -> Any:
    """The value of dotted ``key`` ("RESNET.NORM") in ``cfg``."""
    value: Any = cfg
    for part in key.split("."):
        value = value[part]
    return value


_BLOCKS: Dict[str, BlockEntry] = {}
_BACKBONES: Dict[str, BackboneEntry] = {}


def _flat_keys(node: Mapping, prefix: str = "") -> List[str]:
    keys = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        keys += _flat_keys(value, f"{name}.") if isinstance(value, Mapping) else [name]
    return keys


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults: the package's keys (``config/defaults.py``) plus
    the keys of every registered backbone and block."""
    cfg = base_cfg()
    for entry in [*_BACKBONES.values(), *_BLOCKS.values()]:
        _merge_new_keys(cfg, copy.deepcopy(entry.defaults))
    return cfg


def _merge_new_keys(target: CfgNode, source: Mapping) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and key in target:
            _merge_new_keys(target[key], value)
        else:
            target[key] = CfgNode(value) if isinstance(value, Mapping) else value


def _as_defaults(name: str, defaults: Optional[Mapping], existing: CfgNode) -> CfgNode:
    """``defaults`` as a CfgNode; ValueError if it redefines a key that exists already
    (a key of the base defaults or of another registered entry)."""
    node = CfgNode(copy.deepcopy(dict(defaults or {})))
    for key in _flat_keys(node):
        if _taken(existing, key):
            raise ValueError(f"{name!r}: default {key} collides with an existing key; use a new key")
    return node


def _taken(cfg: Mapping, key: str) -> bool:
    """Whether dotted ``key`` or a prefix of it is a key of ``cfg`` already."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def _register(table: Dict[str, Any], kind: str, name: str, make: Callable[[CfgNode], Any],
              replace: bool) -> None:
    if not isinstance(name, str) or not name or name == "none":
        raise ValueError(f"a {kind} name must be a non-empty string other than 'none', got {name!r}")
    if name in table and not replace:
        raise ValueError(f"{kind} {name!r} is registered already; pass replace=True to redefine it")
    previous = table.pop(name, None)
    try:  # get_cfg() without this entry: its defaults may only add keys
        table[name] = make(get_cfg())
    except Exception:
        if previous is not None:
            table[name] = previous
        raise


def _no_check(*_args: Any) -> None:
    return None


def register_block(
    name: str,
    builder: Optional[Builder] = None,
    *,
    defaults: Optional[Mapping] = None,
    validate: Optional[Callable[[CfgNode, Tuple[int, ...]], None]] = None,
    describe: Optional[Callable[[CfgNode], BlockDescription]] = None,
    replace: bool = False,
) -> Any:
    """Register the inserted block ``NONLOCAL.TYPE name``.

    ``builder(cfg, stage_channels) -> nn.Module`` (or "module:function"); without
    it, ``register_block`` returns a decorator for the builder. ``defaults``: the
    block's own keys (new keys only), e.g. ``CfgNode({"SE": {"REDUCTION": 16}})``.
    ``validate(cfg, stage_channels)``: raise ``ConfigError`` naming the key for any
    value the builder would reject; it runs on every validated config, with the
    channels of the stages that get this block (empty when another NONLOCAL.TYPE
    is selected or NONLOCAL.LOCATION is empty). ``describe(cfg)``: a
    BlockDescription (default: the name). ``replace``: redefine a registered name.
    """
    if builder is None:
        def decorator(function: F) -> F:
            register_block(name, function, defaults=defaults, validate=validate, describe=describe,
                           replace=replace)
            return function

        return decorator

    def make(existing: CfgNode) -> BlockEntry:
        return BlockEntry(name, builder, _as_defaults(name, defaults, existing), validate or _no_check,
                          describe or (lambda _cfg: BlockDescription(name)))

    _register(_BLOCKS, "block", name, make, replace)
    return builder


def register_backbone(
    name: str,
    builder: Optional[Builder] = None,
    *,
    stages: Callable[[CfgNode], Sequence[Stage]],
    defaults: Optional[Mapping] = None,
    validate: Optional[Callable[[CfgNode], None]] = None,
    describe: Optional[Callable[[CfgNode], BackboneDescription]] = None,
    pretrained: Optional[Builder] = None,
    norm_key: Optional[str] = None,
    weights_key: Optional[str] = None,
    replace: bool = False,
) -> Any:
    """Register the backbone ``MODEL.ARCH name``; as ``register_block`` (a decorator
    without ``builder``), with ``builder(cfg) -> nn.Module`` and ``validate(cfg)``.
    ``stages(cfg)``: the Stage list blocks can be inserted into (torch-free, so that
    NONLOCAL.LOCATION and the block checks are validated without building the model).
    ``pretrained(cfg, model)`` (or "module:function"): loads the pretrained weights the
    config names into a built model, at the start of a fresh run (not when resuming,
    fine-tuning from TRAIN.CHECKPOINT_FILE_PATH or testing). ``norm_key``: the backbone's
    key whose value ``SYNC_BATCHNORM`` makes ``build_model`` convert every BatchNorm (and
    ``BATCHNORM`` keeps them), e.g. "RESNET.NORM". ``weights_key``: the key naming the
    pretrained weights (a file path when it has a '/' or a dot, else a name the
    ``pretrained`` hook knows); the engine checks that such a file exists before a fresh
    run. Generic code (engine, hub, tools) reads the backbone's keys only through these.
    """
    if builder is None:
        def decorator(function: F) -> F:
            register_backbone(name, function, stages=stages, defaults=defaults, validate=validate,
                              describe=describe, pretrained=pretrained, norm_key=norm_key,
                              weights_key=weights_key, replace=replace)
            return function

        return decorator

    def make(existing: CfgNode) -> BackboneEntry:
        own = _as_defaults(name, defaults, existing)
        for key in filter(None, (norm_key, weights_key)):
            if not _taken(own, key):
                raise ValueError(f"{name!r}: {key} (norm_key / weights_key) is not one of its defaults")
        return BackboneEntry(name, builder, own, validate or _no_check,
                             describe or (lambda _cfg: BackboneDescription(name)), stages, pretrained,
                             norm_key, weights_key)

    _register(_BACKBONES, "backbone", name, make, replace)
    return builder


def unregister_block(name: str) -> None:
    """Remove NONLOCAL.TYPE ``name`` and its keys (e.g. after an interactive session or a test)."""
    block_entry(name)
    del _BLOCKS[name]


def unregister_backbone(name: str) -> None:
    """Remove MODEL.ARCH ``name`` and its keys."""
    backbone_entry(name)
    del _BACKBONES[name]


def block_entries() -> List[BlockEntry]:
    """Every registered block, in registration order."""
    return list(_BLOCKS.values())


def backbone_entries() -> List[BackboneEntry]:
    """Every registered backbone, in registration order."""
    return list(_BACKBONES.values())


def block_entry(name: str) -> BlockEntry:
    """The entry of NONLOCAL.TYPE ``name``; ConfigError naming the registered ones."""
    if name not in _BLOCKS:
        raise ConfigError(f"NONLOCAL.TYPE: {name!r} is not a registered block; registered: {sorted(_BLOCKS)}")
    return _BLOCKS[name]


def backbone_entry(name: str) -> BackboneEntry:
    """The entry of MODEL.ARCH ``name``; ConfigError naming the registered ones."""
    if name not in _BACKBONES:
        raise ConfigError(f"MODEL.ARCH: {name!r} is not a registered backbone; registered: {sorted(_BACKBONES)}")
    return _BACKBONES[name]
