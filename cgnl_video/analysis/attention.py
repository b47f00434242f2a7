"""What an NL or CGNL block relates to one reference position (paper Figs. 5 and 6).

The block's input is captured with a forward pre-hook during an ordinary eval-mode
forward pass; the maps are computed from the block's own projections
(``CGNLBlock.embed``; ``NonLocalBlock.theta / phi / pool / affinity``) over its whole
(T, H, W) grid. NL (one map): the reference position's row of the affinity matrix
(softmax, or theta^T phi / M), each position given the value of its pooled cell.
CGNL (one map per group k): the Eq. 9 matrix summed over the group's channel pairs,

    a_k(j) = sum_p alpha_p^2 (sum_c theta_{c,r}^p) (sum_{c'} phi_{c',j}^p),

exact, in O(C' N (P+1)), with USE_SCALE's 1/sqrt(L). Why this map and what it shows
per kernel: docs/TOOLS.md, "Attention heatmaps". Maps are returned raw;
``normalize_maps`` scales each to [0, 1] for display (the p = 0 term adds a constant
that a threshold relative to the raw maximum would not remove).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

Position = Tuple[int, int, int]


@dataclass
class AttentionMaps:
    """Maps of one block for one reference position.

    ``maps``: (M, T, H, W) raw values on the block's grid (M = 1 for NL, G for
    CGNL); ``ref``: the reference position on that grid; ``labels``: one per map.
    """

    block: str
    kind: str
    ref: Position
    maps: torch.Tensor
    labels: List[str]

    @property
    def grid(self) -> Position:
        return tuple(self.maps.shape[1:])


def attention_blocks(model: nn.Module) -> Dict[str, nn.Module]:
    """Name -> block that gives attention maps, in forward order: a module with
    ``attention_map(x, ref) -> (maps, labels)`` (x: the block's input, ref: a flat
    index into its grid; maps: (M, *grid)) and ``attention_kind`` (e.g. "cgnl")."""
    return {name: m for name, m in model.named_modules() if callable(getattr(m, "attention_map", None))}


def pick_block(model: nn.Module, name: Optional[str] = None) -> Tuple[str, nn.Module]:
    """The block called ``name``, or the last NL / CGNL block of the model."""
    blocks = attention_blocks(model)
    if not blocks:
        raise ValueError("the model has no NL or CGNL block (NONLOCAL.TYPE nl or cgnl)")
    if name is None:
        name = list(blocks)[-1]
    if name not in blocks:
        raise ValueError(f"no NL / CGNL block {name!r}; the model has {list(blocks)}")
    return name, blocks[name]


@torch.no_grad()
def capture_input(model: nn.Module, block: nn.Module, clips: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` in eval mode on ``clips``; return (its output, ``block``'s input)."""
    seen: List[torch.Tensor] = []
    hook = block.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0].detach()))
    was_training = model.training
    try:
        output = model.eval()(clips)
    finally:
        hook.remove()
        model.train(was_training)
    if not seen:
        raise RuntimeError("the block did not run in the forward pass")
    return output, seen[0]


def _flat_index(ref: Position, grid: Sequence[int]) -> int:
    t, y, x = ref
    if not all(0 <= v < n for v, n in zip(ref, grid)):
        raise ValueError(f"reference {tuple(ref)} is outside the block grid {tuple(grid)}")
    return (t * grid[1] + y) * grid[2] + x


def grid_position(clip_position: Position, clip_shape: Sequence[int], grid: Sequence[int]) -> Position:
    """The block-grid cell of an input position (frame, row, column of the clip)."""
    if not all(0 <= v < n for v, n in zip(clip_position, clip_shape)):
        raise ValueError(f"reference {tuple(clip_position)} (T, Y, X) is outside the clip {tuple(clip_shape)}")
    return tuple(v * g // n for v, g, n in zip(clip_position, grid, clip_shape))


def attention_maps(model: nn.Module, clip: torch.Tensor, ref: Position,
                   block_name: Optional[str] = None) -> Tuple[torch.Tensor, AttentionMaps]:
    """Class probabilities of ``clip`` (C, T, H, W) and the maps of one block
    for the reference ``ref`` = (frame, row, column) of the clip."""
    name, block = pick_block(model, block_name)
    device = next(model.parameters()).device
    probs, x = capture_input(model, block, clip.unsqueeze(0).to(device))
    grid_ref = grid_position(ref, clip.shape[1:], x.shape[2:])
    maps, labels = block.attention_map(x, _flat_index(grid_ref, x.shape[2:]))
    return probs[0].cpu(), AttentionMaps(name, block.attention_kind, grid_ref, maps.float().cpu(), labels)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map (first dimension) scaled to [0, 1] over all its positions."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)
