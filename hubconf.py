"""torch.hub entry points: C2D ResNet-50/101 baselines, +NL and +CGNL (paper Table 4a),
and the layouts of the official non-local Kinetics-400 models (docs/MODELS.md).

    model = torch.hub.load("/path/to/cgnl_video", "c2d_r50_cgnl8", source="local",
                           num_classes=200, checkpoint="R50_CGNL8.pyth")

Each entry builds the model of its configs/minikinetics (or configs/kinetics400) YAML
file (the single source of the architecture). Pass a local ``checkpoint`` (ours,
PyTorchVideo's, a bare state dict or an official Caffe2 pickle); nothing is downloaded
unless ``opts`` names ImageNet weights (``opts=["RESNET.IMAGENET_WEIGHTS",
"IMAGENET1K_V1"]``). Returned in eval mode on the CPU.
"""

import os as _os

dependencies = ["torch", "torchvision", "pytorchvideo", "fvcore", "yaml"]

_CONFIGS = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "configs")


def _entry(config_name: str, description: str, folder: str = "minikinetics"):
    def entry(num_classes=None, checkpoint=None, opts=()):
        from cgnl_video.hub import hub_model

        return hub_model(_os.path.join(_CONFIGS, folder, f"{config_name}.yaml"), num_classes, checkpoint, opts)

    entry.__doc__ = (
        f"C2D {description}: configs/{folder}/{config_name}.yaml.\n\n"
        "num_classes: default the checkpoint's, else the config's. checkpoint: a local file (ours,\n"
        "PyTorchVideo's, a bare state dict or an official Caffe2 pickle), loaded strictly (weights-only,\n"
        "or a restricted unpickler for pickles). opts: KEY VALUE config\n"
        "overrides. Returns the model on the CPU in eval mode: clips (B, 3, T, H, W) -> class\n"
        "probabilities; call .train() for logits."
    )
    return entry


c2d_r50 = _entry("R50", "ResNet-50 baseline")
c2d_r50_nl = _entry("R50_NL", "ResNet-50 + 1 NL block (res4)")
c2d_r50_nl_5b = _entry("R50_NL_5B", "ResNet-50 + 5 NL blocks (res3, res4)")
c2d_r50_cgnl8 = _entry("R50_CGNL8", "ResNet-50 + 1 CGNL block (res4, dot product, 8 groups)")
c2d_r50_cgnl8_5b = _entry("R50_CGNL8_5B", "ResNet-50 + 5 CGNL blocks (res3, res4, dot product, 8 groups)")
c2d_r101 = _entry("R101", "ResNet-101 baseline")
c2d_r101_nl = _entry("R101_NL", "ResNet-101 + 1 NL block (res4)")
c2d_r101_nl_5b = _entry("R101_NL_5B", "ResNet-101 + 5 NL blocks (res3, res4)")
c2d_r101_cgnl8 = _entry("R101_CGNL8", "ResNet-101 + 1 CGNL block (res4, dot product, 8 groups)")
c2d_r101_cgnl8_5b = _entry("R101_CGNL8_5B", "ResNet-101 + 5 CGNL blocks (res3, res4, dot product, 8 groups)")
c2d_r50_k400_32x2 = _entry("C2D_R50_32x2", "ResNet-50, Kinetics-400 32x2 (official c2d_baseline_32x2)", "kinetics400")
c2d_r50_nl5_k400_32x2 = _entry("C2D_R50_NL5_32x2", "ResNet-50 + 5 NL blocks, Kinetics-400 32x2 (official "
                               "c2d_nonlocal_32x2)", "kinetics400")
c2d_r50_k400_8x8 = _entry("C2D_R50_8x8", "ResNet-50, Kinetics-400 8x8 (official c2d_baseline_8x8)", "kinetics400")
c2d_r50_nl5_k400_8x8 = _entry("C2D_R50_NL5_8x8", "ResNet-50 + 5 NL blocks, Kinetics-400 8x8 (official "
                              "c2d_nonlocal_8x8)", "kinetics400")
