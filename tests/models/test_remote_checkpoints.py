"""Checkpoint and weight files given as http(s) URLs: downloaded once into iopath's
cache (a local HTTP server on 127.0.0.1 stands in for the web), then read like files."""

import contextlib
import functools
import http.server
import os
import threading

import pytest
import torch

from cgnl_video.config import ConfigError, load_config
from cgnl_video.engine.preflight import check_files
from cgnl_video.models import build_model
from cgnl_video.models.state_dict import read_state_dict
from cgnl_video.models.weights import imagenet_state_dict


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def do_GET(self):  # noqa: N802 (the http.server name)
        _CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    """An HTTP server on 127.0.0.1 (a free port) serving ``folder``; yields its base URL."""
    handler = functools.partial(_CountingHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "iopath_cache"
    monkeypatch.setenv("FVCORE_CACHE", str(folder))
    _CountingHandler.requests = []
    return folder


def _tiny_cfg(*opts):
    return load_config(None, ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "3", *opts])


def test_a_checkpoint_url_is_downloaded_once_then_read_from_the_cache(tmp_path, cache):
    model = build_model(_tiny_cfg())
    served = tmp_path / "served" / "runs"
    served.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epoch": 3}, served / "checkpoint_epoch_00003.pyth")
    with serve(tmp_path / "served") as base:
        url = f"{base}/runs/checkpoint_epoch_00003.pyth"
        state = read_state_dict(url)
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        assert _CountingHandler.requests == ["/runs/checkpoint_epoch_00003.pyth"]
        assert (cache / "runs" / "checkpoint_epoch_00003.pyth").is_file()
    # the server is gone: the second read comes from the cache
    assert read_state_dict(url).keys() == state.keys() and len(_CountingHandler.requests) == 1


def test_weights_url_and_a_missing_url_named_by_the_config_key(tmp_path, cache):
    import torchvision

    resnet = torchvision.models.resnet50()
    (tmp_path / "served").mkdir()
    torch.save(resnet.state_dict(), tmp_path / "served" / "resnet50.pth")
    with serve(tmp_path / "served") as base:
        state = imagenet_state_dict(f"{base}/resnet50.pth", 50)
        assert torch.equal(state["conv1.weight"], resnet.state_dict()["conv1.weight"])
        cfg = _tiny_cfg("TRAIN.CHECKPOINT_FILE_PATH", f"{base}/no_such_checkpoint.pyth")
        with pytest.raises(ConfigError, match=r"^TRAIN\.CHECKPOINT_FILE_PATH: could not download .*no_such"):
            check_files(cfg)
        assert not os.path.exists(cache / "no_such_checkpoint.pyth")  # no half file taken for a whole one
