"""Atomic writes: all or nothing, with ordinary file permissions."""

import os

import pytest

from cgnl_video.utils.io import atomic_open, atomic_path, atomic_write_text


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


def test_atomic_path_renames_what_a_writer_wrote_there_only_on_success(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier")
    with pytest.raises(ValueError):
        with atomic_path(str(path)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp != str(path)
            with open(tmp, "wb") as handle:  # a writer that takes a file name
                handle.write(b"rejected")
            raise ValueError("verification failed")
    assert path.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["model.onnx"]
    with atomic_path(str(path)) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(b"accepted")
    assert path.read_bytes() == b"accepted" and os.listdir(tmp_path) == ["model.onnx"]
