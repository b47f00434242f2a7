"""The blocks for image networks: inputs (B, C, H, W), as in the paper's image
experiments (CUB, Tables 2a, 2c, 3, 4b; ImageNet, appendix Table 5: one block goes
before the last residual block of res4 of a ResNet, Sec. 4.2).

Each 2D block is its spacetime block (``cgnl.py``, ``nonlocal_block.py``) built from
2D layers (``cgnl.IMAGE``: 1x1 convolutions, BatchNorm2d, MaxPool2d; Sec. 3.5): the
same options, defaults, forward and Eq. 12 code, so on an image it equals the
spacetime block on the same image as a one-frame clip (tests/models/test_blocks_2d.py).
Only NonLocalBlock2d's ``pool_size`` differs: (H, W), default (2, 2). State dicts have
the spacetime block's keys, with convolution weights lacking the T axis
(``unsqueeze(2)`` loads them into the spacetime block). The layers are native 2D, so
a network holding them converts with ``model.to(memory_format=torch.channels_last)``.
Details and the conversion code: docs/MODELS.md, "CGNL in image networks".
"""

from typing import ClassVar, Sequence

from cgnl_video.models.cgnl import IMAGE, CGNLBlock, Layers
from cgnl_video.models.nonlocal_block import NonLocalBlock, SimpleResidualBlock


class _OnImages:
    """What makes a block 2D: the ``IMAGE`` layers (whose ``check_input`` refuses
    anything but (B, C, H, W) in the block's forward)."""

    layers: ClassVar[Layers] = IMAGE


class CGNLBlock2d(_OnImages, CGNLBlock):
    """CGNL block on images (B, C, H, W): Z = norm(W_z(CGNL(theta, phi, g))) + X
    (Eqs. 7-13, one vector of length C' H W per group), with CGNLBlock's arguments
    and defaults; ``norm="bn"`` is BatchNorm2d (paper, Eq. 13), ``"gn"`` GroupNorm
    (official image code). State dict: module docstring."""


class NonLocalBlock2d(_OnImages, NonLocalBlock):
    """Non-local block of Wang et al. on images (B, C, H, W), with NonLocalBlock's
    arguments and defaults except ``pool_size``: the (H, W) max-pool kernel = stride
    of phi's and g's input, (2, 2) by default (the 3D default (1, 2, 2))."""

    def __init__(
        self,
        dim_in: int,
        dim_inner: int = 0,
        instantiation: str = "softmax",
        pool_size: Sequence[int] = (2, 2),
        scale: bool = True,
    ) -> None:
        if len(pool_size) != 2:
            raise ValueError(f"pool_size is (H, W) for a 2D block, got {tuple(pool_size)}")
        super().__init__(dim_in, dim_inner, instantiation, pool_size, scale)


class SimpleResidualBlock2d(_OnImages, SimpleResidualBlock):
    """The simple residual block of Table 3 / Fig. 4 (an image experiment, CUB) on
    images (B, C, H, W): Z = norm(W_z(theta(X))) + X, SimpleResidualBlock's arguments."""
