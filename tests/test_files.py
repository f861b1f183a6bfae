"""Atomic writes: the files they leave behind, and what a failed write leaves."""

from __future__ import annotations

import os
import stat

import pytest

from tritonnet.files import atomic_write


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores the previous one."""
    previous = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("mode", ["w", "wb"])
def test_new_files_follow_the_umask(tmp_path, umask, mask, mode):
    # The oracle is open(): a file made by any other tool gets 0666 & ~umask.
    umask(mask)
    with open(tmp_path / "plain", mode) as handle:
        handle.write("x" if mode == "w" else b"x")
    with atomic_write(tmp_path / "atomic", mode) as handle:
        handle.write("x" if mode == "w" else b"x")
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == expected


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as handle:
            handle.write("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.txt"]


def test_a_bad_mode_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"mode.*'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
