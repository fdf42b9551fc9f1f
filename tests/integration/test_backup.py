"""``securepacs backup`` while two senders store, then ``restore`` into a new folder.

Every instance acknowledged before the backup started must come back byte-identical, the
restored server must start and its audit chain verify; ``backup --verify`` must find a
changed byte; ``restore`` must refuse a non-empty data folder.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from harness import HOST, ROOT, SECUREPACS, make_server, needs_dcmtk, tls_args, write_config

from factories import write_study

pytestmark = [pytest.mark.integration]

IMAGES = 100


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


class Sender(threading.Thread):
    """Stores `files` over TLS one by one, a little apart (so that the backup surely runs
    while it stores), counting the Success responses."""

    PACE = 0.03  # seconds between images: 100 images take at least 3 s

    def __init__(self, files: list[Path], port: int, pki) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.files, self.port, self.pki = files, port, pki
        self.acknowledged = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from pydicom import dcmread
        from scu import associate

        try:
            assoc = associate(self.port, self.pki.client.key, self.pki.client.cert,
                              self.pki.ca_cert)
            try:
                for path in self.files:
                    if self.stop.is_set():
                        break
                    status = assoc.send_c_store(dcmread(path))
                    if int(status.Status) != 0:
                        raise AssertionError(f"store of {path.name}: status {status.Status}")
                    self.acknowledged += 1
                    time.sleep(self.PACE)
            finally:
                assoc.release()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _blob_of(data_dir: Path) -> dict[str, bytes]:
    """SOP Instance UID -> stored bytes, read from a (stopped) data folder."""
    from securepacs.index.repository import SqlIndex

    index = SqlIndex(f"sqlite:///{data_dir / 'index.sqlite'}")
    try:
        import sqlite3

        with sqlite3.connect(data_dir / "index.sqlite") as conn:
            rows = conn.execute("SELECT sop_instance_uid, blob_key FROM instance").fetchall()
    finally:
        index.close()
    return {uid: (data_dir / "blobs" / key[:2] / key[2:4] / key).read_bytes()
            for uid, key in rows}


def test_backup_under_load_restores_every_acknowledged_instance(tmp_path: Path, pki) -> None:  # noqa: ANN001
    from pydicom import dcmread

    studies = [write_study(tmp_path / f"src{i}", IMAGES, rows=32, columns=32) for i in (1, 2)]
    server = make_server(tmp_path, pki).start()
    senders = [Sender(files, server.port, pki) for files in studies]
    backup = tmp_path / "backup"
    try:
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 60
        while min(s.acknowledged for s in senders) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        acked = [files[:s.acknowledged] for files, s in zip(studies, senders, strict=True)]
        made = cli("backup", "--to", backup, "--config", server.config)
        during = [s.acknowledged for s in senders]
        for sender in senders:
            sender.join(timeout=120)
    finally:
        for sender in senders:
            sender.stop.set()
            sender.join(timeout=30)
        server.stop()
    assert all(s.error is None for s in senders), [s.error for s in senders]
    assert all(s.acknowledged == IMAGES for s in senders)
    assert made.returncode == 0, made.stderr
    assert all(len(a) >= 20 for a in acked)
    # the backup really ran while the senders stored (else this tests nothing online)
    assert any(d < IMAGES for d in during), f"senders had finished before the backup: {during}"
    checked = cli("backup", "--verify", backup, "--config", server.config)
    assert checked.returncode == 0, checked.stderr
    assert "intact" in checked.stdout

    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    restored = make_server(restored_dir, pki)
    refused = cli("restore", "--from", backup, "--config", server.config)  # not empty
    assert refused.returncode == 2 and "not empty" in refused.stderr
    done = cli("restore", "--from", backup, "--config", restored.config)
    assert done.returncode == 0, done.stderr
    original = _blob_of(server.data_dir)
    copy = _blob_of(restored.data_dir)
    for files in acked:
        for path in files:
            uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
            assert uid in copy, f"acknowledged instance {uid} missing from the restore"
            assert copy[uid] == original[uid], f"instance {uid} differs after the restore"
    assert set(copy) <= set(original)
    restored.start()
    try:
        verified = cli("audit", "--config", restored.config, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "intact" in verified.stdout
    finally:
        restored.stop()


@needs_dcmtk
def test_verify_finds_a_changed_byte_and_restore_refuses_it(tmp_path: Path, pki) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "src", 3, rows=16, columns=16)
    server = make_server(tmp_path, pki).start()
    try:
        sent = subprocess.run(
            ["storescu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
             "-aec", "SECUREPACS", HOST, str(server.port), *map(str, files)],
            capture_output=True, text=True, timeout=60, env={"TCP_NODELAY": "1"})
        assert sent.returncode == 0, sent.stderr
        backup = tmp_path / "backup"
        assert cli("backup", "--to", backup, "--config", server.config).returncode == 0
    finally:
        server.stop()
    blob = next(p for p in (backup / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    checked = cli("backup", "--verify", backup, "--config", server.config)
    assert checked.returncode == 1
    assert "content differs from the manifest" in checked.stderr
    target = tmp_path / "new"
    cfg = write_config(tmp_path / "new.toml", data_dir=str(target))
    refused = cli("restore", "--from", backup, "--config", cfg)
    assert refused.returncode == 2 and "fails verification" in refused.stderr
    assert not target.exists(), "a refused restore left files behind"
    again = cli("backup", "--to", backup, "--config", server.config)
    assert again.returncode == 2 and "not empty" in again.stderr
