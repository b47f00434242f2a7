"""Helpers for the weight tests (no tests here): where torch.hub's cache keeps ResNet-50
weights (the empty, offline cache itself is the ``torch_home`` fixture of conftest.py)."""

import os

#: ResNet50_Weights.IMAGENET1K_V1, and the name torch.hub's cache keeps it under
RESNET50_V1_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


def cache_file(home) -> str:
    """Where torchvision's weights API keeps (and looks for) ResNet-50 IMAGENET1K_V1."""
    return os.path.join(str(home), "hub", "checkpoints", os.path.basename(RESNET50_V1_URL))
