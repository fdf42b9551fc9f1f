"""Slot folders of `serve` parents that died without cleaning up are removed at the next start."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from securepacs.cli import workers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_a_dead_parents_slot_folder_goes_a_live_ones_stays(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{workers.SLOTS_PREFIX}{_dead_pid()}-abc123"
    live = tmp_path / f"{workers.SLOTS_PREFIX}{os.getpid()}-def456"
    other = tmp_path / "securepacs-slots-notapid"
    for folder in (dead, live, other):
        folder.mkdir(mode=0o700)
        (folder / "total.0").write_bytes(b"")
    assert workers._sweep_slot_folders() == 1
    assert not dead.exists() and live.exists() and other.exists()


def test_workers_make_their_folder_named_after_the_parent(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{workers.SLOTS_PREFIX}{_dead_pid()}-zz"
    dead.mkdir(mode=0o700)
    pool = workers.Workers(0, [])
    try:
        assert pool.slots.parent == tmp_path
        assert pool.slots.name.startswith(f"{workers.SLOTS_PREFIX}{os.getpid()}-")
        assert (pool.slots.stat().st_mode & 0o777) == 0o700
        assert not dead.exists()
    finally:
        pool.stop()
    assert not pool.slots.exists()
