"""The filesystem blob store: durable writes, nothing left behind on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from securepacs.blobs.filesystem import FileBlobStore
from securepacs.errors import StorageFullError


def test_put_read_delete(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = store.new_key()
    assert store.put(key, [b"abc", b"def"]) == 6
    assert store.read(key) == b"abcdef"
    assert list(store.keys()) == [key]
    assert (tmp_path / "tmp").is_dir() and not list((tmp_path / "tmp").iterdir())
    store.delete(key)
    assert list(store.keys()) == []


def test_keys_respect_age(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = store.new_key()
    store.put(key, b"x")
    assert list(store.keys(older_than=60)) == []
    assert list(store.keys(older_than=60, now=os.path.getmtime(store.path(key)) + 61)) == [key]


def test_invalid_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileBlobStore(tmp_path).path("../../etc/passwd")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)

    def chunks():  # noqa: ANN202
        yield b"partial"
        raise OSError(28, "No space left on device")

    with pytest.raises(StorageFullError):
        store.put(store.new_key(), chunks())
    assert list(store.keys()) == []
    assert not list((tmp_path / "tmp").iterdir())


def test_sweep_removes_only_dead_writers_temp_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "tmp" / f"{'a' * 32}.{dead_pid}.tmp").write_bytes(b"half")
    (tmp_path / "tmp" / f"{'b' * 32}.1.tmp").write_bytes(b"pid 1 lives")
    assert store.sweep_temp() == 1
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"{'b' * 32}.1.tmp"]
