"""Models: C2D ResNet backbones with CGNL / NL / simple residual blocks.

Public entry points: ``build_model(cfg)``, ``CGNLBlock``, ``NonLocalBlock``,
``SimpleResidualBlock``, ``placement_preset`` (see docs/MODELS.md).

Names are imported lazily on first use, so ``cgnl_video.config`` (whose
validation reads ``cgnl_video.models.spec``) stays light and free of import
cycles; this package never imports ``cgnl_video.config``.
"""

from typing import Dict

from cgnl_video.utils.lazy import lazy_exports

#: public name -> submodule that defines it
_EXPORTS: Dict[str, str] = {
    "BLOCK_BUILDERS": "build",
    "build_backbone": "build",
    "build_model": "build",
    "prepare_for_speed": "build",
    "C2DHead": "c2d",
    "C2DResNet": "c2d",
    "C2DStage": "c2d",
    "create_c2d": "c2d",
    "insert_blocks": "c2d",
    "CGNLBlock": "cgnl",
    "exact_generalized_nonlocal": "cgnl",
    "taylor_coefficients": "cgnl",
    "NonLocalBlock": "nonlocal_block",
    "SimpleResidualBlock": "nonlocal_block",
    "STAGE_DEPTHS": "spec",
    "placement_preset": "spec",
    "stage_out_channels": "spec",
    "load_imagenet_weights": "weights",
    "load_pytorchvideo_state_dict": "weights",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
