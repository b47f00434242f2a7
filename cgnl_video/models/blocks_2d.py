"""The blocks for image networks: inputs (B, C, H, W), as in the paper's image
experiments (CUB, Tables 2a, 2c, 3, 4b; ImageNet, appendix Table 5: one block goes
before the last residual block of res4 of a ResNet, Sec. 4.2; docs/MODELS.md "CGNL in
image networks").

Each 2D block is its spacetime block (``cgnl.py``, ``nonlocal_block.py``) built from
2D layers (``cgnl.IMAGE``: 1x1 convolutions, BatchNorm2d, MaxPool2d; Sec. 3.5: "a 1x1
or 1x1x1 convolution", N = HW or THW): the same constructor options and defaults, the
same forward and Eq. 12 code, so on an image it equals the spacetime block on the same
image as a one-frame clip (T = 1; tests/models/test_blocks_2d.py). The one difference is
NonLocalBlock2d's ``pool_size``, which is (H, W): (2, 2) is the 3D default (1, 2, 2).

State dicts have the spacetime block's keys (``theta.weight``, ..., ``norm.bias``,
BatchNorm buffers). The convolution weights lack the T axis ((O, I, 1, 1) instead of
(O, I, 1, 1, 1)); ``{k: v.unsqueeze(2) if v.dim() == 4 else v for k, v in sd.items()}``
makes a 2D block's state dict load strictly into the spacetime block with the same
options (``squeeze(2)`` the other way).

The layers are native 2D, not a spacetime block on an added T axis, so a network
holding them converts with ``model.to(memory_format=torch.channels_last)`` (which
refuses 5-D weights) like any torchvision network.
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
