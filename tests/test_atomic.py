"""Atomic writes: nothing half-written, normal permissions, no overwrite unless asked."""
from __future__ import annotations

import os
import stat

import pytest

from src_model.atomic import OutputExistsError, atomic_dir, atomic_file, atomic_path


def test_exports_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "a.bin") as handle:
            handle.write(b"x")
        with atomic_path(tmp_path / "b.tif") as tmp:
            tmp.write_bytes(b"y")
        with atomic_dir(tmp_path / "c") as tmp:
            (tmp / "f").write_text("z")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.tif").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o755


def test_failure_leaves_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_refuses_overwrite_unless_asked(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputExistsError, match="overwrite"):
        with atomic_dir(tmp_path / "d"):
            pass
    with atomic_dir(tmp_path / "d", overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
