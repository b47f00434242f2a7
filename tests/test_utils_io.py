"""Atomic writes: all or nothing, with ordinary file permissions."""

import os

import pytest

from cgnl_video.utils.io import atomic_open, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(str(path), "first\n")
    atomic_write_text(str(path), "second\n")
    assert path.read_text() == "second\n"
    assert os.listdir(path.parent) == ["out.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(path)) as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_permissions_match_a_plain_open(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"\x00")
    path = tmp_path / "out.bin"
    with atomic_open(str(path), "wb") as handle:
        handle.write(b"\x00")
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
