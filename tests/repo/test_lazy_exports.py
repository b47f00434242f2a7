"""Lazy package exports: light imports stay light, every public name resolves."""

import subprocess
import sys

import pytest

import cgnl_video.data
import cgnl_video.models


@pytest.mark.parametrize("package", [cgnl_video.data, cgnl_video.models])
def test_every_public_name_resolves_and_unknown_names_fail(package):
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018


def test_manifest_and_config_import_without_torch():
    code = "import sys, cgnl_video.data.manifest, cgnl_video.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
