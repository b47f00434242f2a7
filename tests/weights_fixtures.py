"""Fixtures for the weight tests (no tests here): an empty torch.hub cache in which any
download fails as it would offline, so that no test touches the network."""

import os
import urllib.error

import pytest
import torch

#: ResNet50_Weights.IMAGENET1K_V1, and the name torch.hub's cache keeps it under
RESNET50_V1_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """TORCH_HOME in a temporary folder (an empty cache); downloads fail like offline ones."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home


def cache_file(home) -> str:
    """Where torchvision's weights API keeps (and looks for) ResNet-50 IMAGENET1K_V1."""
    return os.path.join(str(home), "hub", "checkpoints", os.path.basename(RESNET50_V1_URL))
