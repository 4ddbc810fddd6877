"""The one file writer and folder publisher: all or nothing, durable when asked, umask modes."""

from __future__ import annotations

import os
import stat

import pytest

from auroragpt import atomic
from auroragpt.atomic import atomic_folder, atomic_path, write_atomically


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_file_is_all_or_nothing_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    write_atomically(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"


def test_third_party_writers_get_umask_modes(tmp_path, umask_027):
    """tempfile-style 0600 files (safetensors, mkstemp) are published with the mode open() gives."""
    target = tmp_path / "w.bin"
    with atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert _mode(target) == 0o640
    with atomic_folder(tmp_path / "folder") as tmp:
        (tmp / "x").write_text("x")
        os.chmod(tmp, 0o700)
    assert _mode(tmp_path / "folder") == 0o750
    assert _mode(tmp_path / "folder" / "x") == 0o640


def test_folder_replaces_whole_or_not_at_all(tmp_path):
    final = tmp_path / "model"
    with atomic_folder(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError), atomic_folder(final) as tmp:
        (tmp / "b").write_text("2")
        raise ValueError("export failed")
    assert sorted(p.name for p in final.iterdir()) == ["a"]
    with atomic_folder(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp or old folder left


def test_durable_writes_fsync_the_data_and_the_parent(tmp_path, monkeypatch):
    synced = []
    real = atomic.fsync_path
    monkeypatch.setattr(atomic, "fsync_path", lambda p: (synced.append(os.path.basename(p)), real(p)))
    write_atomically(tmp_path / "meta.json", "{}", durable=True)
    assert synced[0].startswith("meta.json.tmp") and synced[-1] == tmp_path.name
    synced.clear()
    write_atomically(tmp_path / "plain.json", "{}")
    assert synced == []
    with atomic_folder(tmp_path / "ckpt", durable=True) as tmp:
        (tmp / "w").write_text("w")
    assert "w" in synced and synced[-1] == tmp_path.name
