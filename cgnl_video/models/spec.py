"""Layout facts of the ResNet backbones (FACTS section 3), shared by the model
builder and the config validation."""

from typing import Dict, List, Tuple

#: residual blocks per stage res2..res5
STAGE_DEPTHS: Dict[int, Tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
#: output channels of res2..res5 at the standard width 64 (bottleneck width is a quarter)
STAGE_OUT_CHANNELS: Tuple[int, int, int, int] = (256, 512, 1024, 2048)
STAGE_NAMES: Tuple[str, str, str, str] = ("res2", "res3", "res4", "res5")


def stage_out_channels(width_per_group: int = 64) -> Tuple[int, ...]:
    """Output channels of res2..res5 for a stem width of ``width_per_group``."""
    return tuple(c * width_per_group // 64 for c in STAGE_OUT_CHANNELS)


def placement_preset(depth: int, num_blocks: int) -> List[List[int]]:
    """NONLOCAL.LOCATION of the paper's placements (FACTS section 1).

    ``num_blocks=1``: one block before the last residual block of res4.
    ``num_blocks=5``: after res3 blocks {1, 3} and res4 blocks {1, 3, 5}.
    """
    if depth not in STAGE_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(STAGE_DEPTHS)}, got {depth}")
    if num_blocks == 1:
        return [[], [], [STAGE_DEPTHS[depth][2] - 2], []]
    if num_blocks == 5:
        return [[], [1, 3], [1, 3, 5], []]
    raise ValueError(f"presets exist for 1 and 5 blocks, got {num_blocks}")
