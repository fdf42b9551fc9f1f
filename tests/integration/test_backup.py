"""``securepacs backup`` while four DCMTK ``storescu`` senders store, then ``restore`` into a
new folder.

Every instance acknowledged before the backup started must come back byte-identical, the
restored server must start and answer ``findscu``, its audit chain and checkpoints verify
with the restore recorded in it, and the backup and its verification must be in the
original trail; ``backup --verify`` must find a changed byte; ``restore`` must refuse a
non-empty data folder.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import Result
from harness import (
    HOST,
    ROOT,
    SECUREPACS,
    dcmtk,
    make_server,
    needs_dcmtk,
    tls_args,
    write_config,
)
from typer.testing import CliRunner

from factories import write_study

pytestmark = [pytest.mark.integration]

IMAGES = 150  # per sender
SENDERS = 4


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


class StoreScu:
    """One DCMTK ``storescu -v`` storing `files` over TLS on one association; a thread reads
    its log and notes each file whose Success response arrived, in order."""

    def __init__(self, files: list[Path], port: int, pki) -> None:  # noqa: ANN001
        self.files = files
        self.acknowledged: list[Path] = []
        self.failures: list[str] = []
        self.proc = subprocess.Popen(
            ["storescu", "-v", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
             "-aec", "SECUREPACS", HOST, str(port), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, TCP_NODELAY="1"))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        current: Path | None = None
        for line in self.proc.stdout:  # ends when storescu exits
            if "Sending file: " in line:
                current = Path(line.split("Sending file: ", 1)[1].strip())
            elif "Received Store Response" in line:
                if "(Success)" in line and current is not None:
                    self.acknowledged.append(current)
                else:
                    self.failures.append(line.strip())
                current = None

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return code


def _blob_of(data_dir: Path) -> dict[str, bytes]:
    """SOP Instance UID -> stored bytes, read from a (stopped) data folder's index and blobs."""
    with sqlite3.connect(data_dir / "index.sqlite") as conn:
        rows = conn.execute("SELECT sop_instance_uid, blob_key FROM instance").fetchall()
    return {uid: (data_dir / "blobs" / key[:2] / key[2:4] / key).read_bytes()
            for uid, key in rows}


def audit(config: Path, *args: str) -> Result:
    """``securepacs audit --config CONFIG ARGS`` in this process (no start-up to pay)."""
    from securepacs.cli.main import app

    return CliRunner().invoke(app, ["audit", "--config", str(config), *args])


def _events(config: Path) -> list[tuple[str, str]]:
    """(EventID code, first participant object ID) of every record of a data folder, each
    record valid against the PS3.15 A.5.1 schema."""
    from lxml import etree

    from auditschema import assert_valid

    done = audit(config, "export")
    assert done.exit_code == 0, done.output
    out = []
    for message in etree.fromstring(done.stdout_bytes):
        assert_valid(etree.tostring(message))
        obj = message.find("ParticipantObjectIdentification")
        out.append((message.find("EventIdentification/EventID").get("csd-code"),
                    "" if obj is None else obj.get("ParticipantObjectID")))
    return out


@needs_dcmtk
def test_backup_under_four_senders_restores_every_acknowledged_instance(
        tmp_path: Path, pki) -> None:  # noqa: ANN001
    from pydicom import dcmread

    studies = [write_study(tmp_path / f"src{i}", IMAGES, rows=32, columns=32,
                           patient_id=f"PAT-{i}") for i in range(SENDERS)]
    server = make_server(tmp_path, pki, audit_checkpoint_seconds=1).start()
    backup = tmp_path / "backup"
    senders: list[StoreScu] = []
    try:
        senders = [StoreScu(files, server.port, pki) for files in studies]
        deadline = time.monotonic() + 60
        while min(len(s.acknowledged) for s in senders) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        acked = [list(s.acknowledged) for s in senders]  # before the backup starts
        made = cli("backup", "--to", backup, "--config", server.config)
        codes = [s.finish(timeout=120) for s in senders]
    finally:
        for sender in senders:
            sender.finish(timeout=5)
        server.stop()
    assert codes == [0] * SENDERS and not any(s.failures for s in senders), \
        [s.failures[:3] for s in senders]
    assert [len(s.acknowledged) for s in senders] == [IMAGES] * SENDERS
    assert made.returncode == 0, made.stderr
    assert all(len(a) >= 5 for a in acked)
    # the index was copied while the senders stored (else this tests nothing online)
    taken = json.loads((backup / "BACKUP.json").read_text())["instances"]
    assert sum(map(len, acked)) <= taken < SENDERS * IMAGES, taken
    checked = cli("backup", "--verify", backup, "--config", server.config)
    assert checked.returncode == 0 and "intact" in checked.stdout, checked.stderr
    uri = backup.absolute().as_uri()
    events = _events(server.config)
    assert ("110106", uri) in events  # backup taken: Export
    assert ("110103", uri) in events  # backup verified: DICOM Instances Accessed

    (tmp_path / "restored").mkdir()
    restored = make_server(tmp_path / "restored", pki)
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
        (tmp_path / "found").mkdir()
        found = dcmtk("findscu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert), "-S",
                      "-aec", restored.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                      "-k", "StudyInstanceUID", "-X", "-od", str(tmp_path / "found"), HOST,
                      str(restored.port), timeout=60)
        assert found.returncode == 0, found.stderr
        answers = {str(dcmread(p).StudyInstanceUID) for p in (tmp_path / "found").glob("rsp*")}
        assert answers == {str(dcmread(files[0]).StudyInstanceUID) for files in studies}
    finally:
        restored.stop()
    # the restore is in the restored folder's trail, whose chain and signed checkpoints
    # (copied with the backup, continued by the restore and the restored server) hold
    assert ("110107", uri) in _events(restored.config)
    for args in (["verify"], ["verify", "--checkpoints"]):
        verified = audit(restored.config, *args)
        assert verified.exit_code == 0, verified.output
        assert "intact" in verified.stdout or "checkpoint" in verified.stdout, verified.stdout


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
