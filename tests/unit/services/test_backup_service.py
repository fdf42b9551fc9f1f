"""services.backup on a small real SQLite index and blob folder (no server)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from securepacs.blobs.copy import copy_blob
from securepacs.blobs.filesystem import FileBlobStore
from securepacs.errors import ConfigError
from securepacs.index import backup as index_backup
from securepacs.services import backup

AT = datetime(2026, 12, 3, tzinfo=UTC)


def tools() -> backup.BackupTools:
    return backup.BackupTools(
        snapshot=index_backup.snapshot_sqlite, check_index=index_backup.check_sqlite,
        blob_keys=index_backup.blob_keys,
        copy_blob=lambda src, dst, key, expect: copy_blob(src, FileBlobStore(dst), key,
                                                          expect_sha256=expect),
        trashed_keys=index_backup.trashed_blob_keys)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    store = FileBlobStore(data / "blobs")
    keys = [store.new_key() for _ in range(3)]
    for n, key in enumerate(keys):
        store.put(key, f"blob {n}".encode() * 100)
    store.put(store.new_key(), b"orphan: not indexed, not backed up")
    with sqlite3.connect(data / "index.sqlite") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE instance (sop_instance_uid TEXT, blob_key TEXT)")
        conn.executemany("INSERT INTO instance VALUES (?, ?)",
                         [(f"1.2.{n}", k) for n, k in enumerate(keys)])
    (data / "pki").mkdir()
    (data / "pki" / "ca.pem").write_text("certificate")
    return data


def test_backup_verify_restore_round_trip(data_dir: Path, tmp_path: Path) -> None:
    done = backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs",
                         to=tmp_path / "bk", tools=tools(), at=AT)
    assert done.instances == 3 and done.files == 5  # 3 blobs, the index, pki/ca.pem
    assert backup.verify(tmp_path / "bk", tools()).ok
    new = tmp_path / "new"
    backup.restore(folder=tmp_path / "bk", data_dir=new, blob_root=new / "blobs", tools=tools())
    assert (new / "pki" / "ca.pem").read_text() == "certificate"
    restored = {p.name: p.read_bytes() for p in (new / "blobs").rglob("*") if p.is_file()}
    original = {p.name: p.read_bytes() for p in (data_dir / "blobs").rglob("*") if p.is_file()}
    assert len(restored) == 3 and all(original[k] == v for k, v in restored.items())
    assert (new.stat().st_mode & 0o077) == 0
    with pytest.raises(ConfigError, match="not empty"):
        backup.restore(folder=tmp_path / "bk", data_dir=new, blob_root=new / "blobs",
                       tools=tools())


def test_verify_finds_added_and_missing_files(data_dir: Path, tmp_path: Path) -> None:
    bk = tmp_path / "bk"
    backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs", to=bk, tools=tools(), at=AT)
    (bk / "files" / "extra").write_text("planted")
    blob = next(p for p in (bk / "blobs").rglob("*") if p.is_file())
    blob.unlink()
    problems = backup.verify(bk, tools()).problems
    assert any("extra: not in the manifest" in p for p in problems)
    assert any(p.endswith(": missing") for p in problems)
    with pytest.raises(ConfigError, match="fails verification"):
        backup.restore(folder=bk, data_dir=tmp_path / "new", blob_root=tmp_path / "new" / "blobs",
                       tools=tools())
    assert not (tmp_path / "new").exists()


def test_a_manifest_that_climbs_out_is_refused(data_dir: Path, tmp_path: Path) -> None:
    bk = tmp_path / "bk"
    backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs", to=bk, tools=tools(), at=AT)
    manifest = (bk / "MANIFEST.sha256").read_bytes() + b"0" * 64 + b"  files/../../escape\n"
    (bk / "MANIFEST.sha256").write_bytes(manifest)
    described = json.loads((bk / "BACKUP.json").read_text())
    described["manifest_sha256"] = hashlib.sha256(manifest).hexdigest()
    (bk / "BACKUP.json").write_text(json.dumps(described))
    assert any("bad manifest line" in p for p in backup.verify(bk, tools()).problems)


def test_backup_refuses_a_target_that_is_not_new(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs", to=tmp_path / "full",
                      tools=tools(), at=AT)
    with pytest.raises(ConfigError, match="inside the data folder"):
        backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs", to=data_dir / "bk",
                      tools=tools(), at=AT)


def test_a_torn_last_line_of_an_append_only_log_is_left_out(data_dir: Path, tmp_path: Path) -> None:
    """A checkpoint line being appended while the backup copies the file: the copy ends at
    the last whole line (else the restored file holds a line no reader can parse)."""
    whole = b'{"format": "securepacs-audit-checkpoint/1", "n": 1}\n' * 3
    (data_dir / "audit-checkpoints.jsonl").write_bytes(whole + b'{"format": "secur')
    (data_dir / "notes.txt").write_bytes(b"no newline at the end")
    backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs", to=tmp_path / "bk",
                  tools=tools(), at=AT)
    assert (tmp_path / "bk" / "files" / "audit-checkpoints.jsonl").read_bytes() == whole
    assert (tmp_path / "bk" / "files" / "notes.txt").read_bytes() == b"no newline at the end"
    assert backup.verify(tmp_path / "bk", tools()).ok


def test_trashed_blobs_are_backed_up_for_restore_deleted(data_dir: Path, tmp_path: Path) -> None:
    """A deleted study kept in the trash (trash_days) survives a backup and restore."""
    store = FileBlobStore(data_dir / "blobs")
    kept, purged = store.new_key(), store.new_key()
    store.put(kept, b"deleted, still restorable")
    with sqlite3.connect(data_dir / "index.sqlite") as conn:
        conn.execute("CREATE TABLE blob_trash (blob_key TEXT, study_uid TEXT)")
        # `purged`: its trash time ended (blob deleted) after the index copy was taken
        conn.executemany("INSERT INTO blob_trash VALUES (?, '1.2.9')", [(kept,), (purged,)])
    done = backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs",
                         to=tmp_path / "bk", tools=tools(), at=AT)
    assert (done.instances, done.trashed, done.files) == (3, 1, 6)
    described = json.loads((tmp_path / "bk" / "BACKUP.json").read_text())
    assert described["purged_trash"] == [purged] and described["missing_blobs"] == []
    assert backup.verify(tmp_path / "bk", tools()).ok
    new = tmp_path / "new"
    backup.restore(folder=tmp_path / "bk", data_dir=new, blob_root=new / "blobs", tools=tools())
    assert FileBlobStore(new / "blobs").read(kept) == b"deleted, still restorable"
    # a backup that lost the trashed blob, manifest and all, no longer verifies
    folder = tmp_path / "bk"
    FileBlobStore(folder / "blobs").path(kept).unlink()
    manifest = b"".join(line for line in (folder / "MANIFEST.sha256").read_bytes()
                        .splitlines(keepends=True) if kept.encode() not in line)
    (folder / "MANIFEST.sha256").write_bytes(manifest)
    described["manifest_sha256"] = hashlib.sha256(manifest).hexdigest()
    (folder / "BACKUP.json").write_text(json.dumps(described))
    problems = backup.verify(folder, tools()).problems
    assert problems == [f"blob {kept} of a trashed instance is not in the backup"], problems


def test_the_index_writer_lock_is_not_backed_up(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / (backup.INDEX + "-writer.lock")).write_bytes(b"")  # the workers' turn lock
    done = backup.backup(data_dir=data_dir, blob_root=data_dir / "blobs",
                         to=tmp_path / "bk", tools=tools(), at=AT)
    assert done.files == 5
    assert not list((tmp_path / "bk").rglob("*-writer.lock"))
