"""The fixtures shared by the tests in tests/<area>/ (no tests here).

pytest imports this file with tests/ on sys.path (prepend import mode, no __init__.py),
so the helper modules next to it (engine_helpers, data_fixtures, ...) import by name
from every folder. A fixture here applies only where a test or a module's
``pytestmark = pytest.mark.usefixtures(...)`` asks for it: none is autouse.
"""

import urllib.error

import pytest
import torch

from engine_helpers import make_tiny_dataset, one_thread


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread (as in DataLoader workers) avoids thread hand-off
    costs that dominate on a busy 2-core machine; for a whole module (``pytestmark``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def single_thread():
    """The test runs with torch on one thread (see ``engine_helpers.one_thread``)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def tiny_data_root(tmp_path_factory) -> str:
    """A ``make_tiny_dataset`` root shared by the tests of a module."""
    root = str(tmp_path_factory.mktemp("tiny"))
    make_tiny_dataset(root)
    return root


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """TORCH_HOME in a temporary folder (an empty cache); downloads fail like offline ones,
    so that no test touches the network."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home
