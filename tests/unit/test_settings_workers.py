"""`workers` (issue 19 item 3): 0 is one serving process per core when the index lets
several processes write at once (PostgreSQL, SQLite in WAL mode), else one; the default
stays 1 (measured on the shared 2-core machine, see docs/deployment.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from securepacs.errors import ConfigError
from securepacs.settings import load


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _settings(tmp_path: Path, text: str):  # noqa: ANN202 - Settings
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n{text}\n')
    return load(cfg, environ={})


def test_0_is_one_process_per_core_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    assert _settings(tmp_path, "").worker_count == 1  # the default
    assert _settings(tmp_path, "workers = 0").worker_count == _cores()
    pg = 'workers = 0\ndatabase_url = "postgresql+psycopg://pacs@db/pacs"'
    assert _settings(tmp_path, pg).worker_count == _cores()
    wal = f'workers = 0\ndatabase_url = "sqlite:///{tmp_path / "i.db"}"'
    assert _settings(tmp_path, wal).worker_count == _cores()


def test_a_private_database_or_another_engine_gets_one(tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:", "mysql://u@h/db"):
        assert _settings(tmp_path, f'workers = 0\ndatabase_url = "{url}"').worker_count == 1


def test_an_explicit_number_wins(tmp_path: Path) -> None:
    assert _settings(tmp_path, "workers = 1").worker_count == 1
    assert _settings(tmp_path, "workers = 3").worker_count == 3
    with pytest.raises(ConfigError, match="workers"):
        _settings(tmp_path, "workers = -1")
