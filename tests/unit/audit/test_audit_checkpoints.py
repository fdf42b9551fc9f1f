"""Signed checkpoints of the audit chain, outside the database (issue 14 item 11).

Each attack of the issue is made with plain SQL on the SQLite index, the way whoever can write
the database would: it passes ``audit verify`` and fails ``audit verify --checkpoints``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from securepacs.audit import messages as m
from securepacs.audit.checkpoint import (
    GENESIS,
    Checkpoint,
    CheckpointFile,
    CheckpointSink,
    check,
    parse_lines,
)
from securepacs.audit.record import AuditSource
from securepacs.audit.syslog import format_checkpoint
from securepacs.cli.main import app
from securepacs.pki.checkpointkey import load_or_create_signer, load_verifier
from securepacs.settings import load
from securepacs.wiring import build_audit_trail

runner = CliRunner()
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SRC = AuditSource("SECUREPACS")
WS1 = m.Peer("CN=ws1,O=Clinic", ae_title="WS1", address="192.0.2.10")
PACS = m.Peer.application("SECUREPACS")


def record(i: int) -> m.AuditRecord:
    return m.instances_transferred(action="C", outcome=0, source=WS1, destination=PACS,
                                   patient_id=f"PAT-{i}", study_uids=[f"1.2.3.{i}"],
                                   at=T0 + timedelta(minutes=i), audit_source=SRC)


def settings_for(data_dir: Path):  # noqa: ANN201 - Settings
    return load(overrides={"data_dir": data_dir, "audit_checkpoint_seconds": 0}, environ={})


def fill(data_dir: Path, start: int, n: int) -> None:
    """Records through the real trail; closing it writes a checkpoint."""
    trail = build_audit_trail(settings_for(data_dir), hostname="pacs.example")
    for i in range(start, start + n):
        trail.record(record(i))
    trail.close()


def sql(data_dir: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(data_dir / "index.sqlite")
    with conn:
        for statement, args in statements:
            conn.execute(statement, args)
    conn.close()


def rows(data_dir: Path) -> list[tuple[int, bytes, str, str]]:
    conn = sqlite3.connect(data_dir / "index.sqlite")
    out = conn.execute("SELECT seq, body, prev_hash, hash FROM audit_event ORDER BY seq").fetchall()
    conn.close()
    return out


def audit(data_dir: Path, *args: str | Path):  # noqa: ANN201 - click Result
    return runner.invoke(app, ["audit", "--data-dir", str(data_dir), *map(str, args)])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    fill(folder, 0, 6)  # checkpoint 1: 6 records
    fill(folder, 6, 4)  # checkpoint 2: 10 records
    return folder


def test_checkpoints_are_written_signed_and_verify(data_dir: Path) -> None:
    s = settings_for(data_dir)
    lines = s.checkpoint_file_path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [6, 10]
    assert json.loads(lines[1])["prev"] == hashlib.sha256(lines[0].encode()).hexdigest()
    key = s.checkpoint_key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.with_suffix(".pub").stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(s.checkpoint_file_path.stat().st_mode) == 0o600
    assert not (data_dir / "pki").exists()  # left to the CA bootstrap, which wants it empty
    conn = sqlite3.connect(data_dir / "index.sqlite")  # the key is nowhere in the database
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert key.read_text().splitlines()[1] not in dump
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 0, result.output
    assert "10 records; 2 signed checkpoint(s) agree" in result.stdout
    assert "anchors records 1-10; 0 newer record(s)" in result.stdout


def test_deleted_newest_rows_and_rewritten_head_are_detected(data_dir: Path) -> None:
    kept = rows(data_dir)[7]
    sql(data_dir, ("DELETE FROM audit_event WHERE seq > 8", ()),
        ("UPDATE audit_head SET last_seq = 8, last_hash = ?", (kept[3],)))
    assert audit(data_dir, "verify").exit_code == 0  # the chain alone cannot tell
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1
    assert ("anchors 10 records, but the database's chain ends at record 8 (records were "
            "deleted)") in result.stderr


def test_deleting_everything_is_detected(data_dir: Path) -> None:
    sql(data_dir, ("DELETE FROM audit_event", ()),
        ("UPDATE audit_head SET last_seq = 0, last_hash = ?", (GENESIS,)))
    assert audit(data_dir, "verify").exit_code == 0
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1
    assert "the database holds no audit record (everything was deleted)" in result.stderr


def test_an_edited_row_with_the_chain_recomputed_is_detected(data_dir: Path) -> None:
    chain = rows(data_dir)
    statements: list[tuple[str, tuple[object, ...]]] = []
    prev = chain[2][2]
    for seq, body, _prev, _hash in chain[2:]:
        if seq == 3:
            body = body.replace(b"PAT-2", b"PAT-X")
        digest = hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()
        statements.append(("UPDATE audit_event SET body = ?, prev_hash = ?, hash = ?, "
                           "patient_ids = replace(patient_ids, 'PAT-2', 'PAT-X') WHERE seq = ?",
                           (body, prev, digest, seq)))
        prev = digest
    statements.append(("UPDATE audit_head SET last_hash = ?", (prev,)))
    sql(data_dir, *statements)
    assert audit(data_dir, "verify").exit_code == 0
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1
    assert "record 6 differs from the signed checkpoint (the chain was rewritten)" in result.stderr
    assert "record 10 differs" in result.stderr


def test_tampered_checkpoint_files_are_detected(data_dir: Path) -> None:
    path = settings_for(data_dir).checkpoint_file_path
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["seq"] = 8  # to cover rows deleted after row 8
    path.write_text(lines[0] + "\n" + json.dumps(edited) + "\n")
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1 and "signature does not verify" in result.stderr
    path.write_text(lines[1] + "\n")  # the first checkpoint removed
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1 and "does not follow the checkpoint before it" in result.stderr
    path.unlink()
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1 and "cannot read the checkpoint file" in result.stderr
    path.write_text("")
    result = audit(data_dir, "verify", "--checkpoints")
    assert result.exit_code == 1 and "no checkpoint: nothing anchors" in result.stderr


def test_a_key_swapped_in_the_data_folder_is_caught_by_a_public_key_kept_elsewhere(
        data_dir: Path, tmp_path: Path) -> None:
    s = settings_for(data_dir)
    kept = tmp_path / "kept.pub"
    kept.write_bytes(s.checkpoint_key_path.with_suffix(".pub").read_bytes())
    s.checkpoint_key_path.unlink()
    s.checkpoint_key_path.with_suffix(".pub").unlink()
    s.checkpoint_file_path.unlink()
    fill(data_dir, 10, 1)  # an insider re-keys and re-signs from scratch
    assert audit(data_dir, "verify", "--checkpoints").exit_code == 0
    result = audit(data_dir, "verify", "--checkpoints", "--checkpoint-key", kept)
    assert result.exit_code == 1 and "signed by key" in result.stderr


def test_the_collector_copy_verifies_as_a_checkpoint_file(data_dir: Path, tmp_path: Path) -> None:
    """A syslog collector's log (RFC 5424 lines, other messages between, a duplicate)."""
    s = settings_for(data_dir)
    lines = s.checkpoint_file_path.read_text().splitlines()
    logged = [format_checkpoint(line, T0, hostname="pacs").decode() for line in lines]
    copy = tmp_path / "collector.log"
    copy.write_text("\n".join(["<85>1 other message", logged[0], logged[0], "noise",
                               logged[1]]) + "\n")
    result = audit(data_dir, "verify", "--checkpoints", copy)
    assert result.exit_code == 0, result.output
    assert "2 signed checkpoint(s) agree" in result.stdout
    s.checkpoint_file_path.unlink()  # the local file is gone: the copy still speaks
    sql(data_dir, ("DELETE FROM audit_event", ()),
        ("UPDATE audit_head SET last_seq = 0, last_hash = ?", (GENESIS,)))
    assert audit(data_dir, "verify", "--checkpoints", copy).exit_code == 1


def test_checkpoint_command_and_nothing_new(data_dir: Path) -> None:
    same = audit(data_dir, "checkpoint")
    assert same.exit_code == 0 and "nothing written" in same.stdout
    fill(data_dir, 10, 1)
    assert len(settings_for(data_dir).checkpoint_file_path.read_text().splitlines()) == 3


class _GrowingChain:
    def __init__(self) -> None:
        self.seq = 0

    def head(self) -> tuple[int, str]:
        self.seq += 1
        return self.seq, hashlib.sha256(str(self.seq).encode()).hexdigest()


def test_the_timer_writes_periodically_and_publishes(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "pki" / "cp.key")
    published: list[str] = []
    sink = CheckpointSink(_GrowingChain(), signer, CheckpointFile(tmp_path / "cp.jsonl"),
                          source="PACS", interval=0.02,
                          publish=lambda line, at: published.append(line))
    deadline = time.monotonic() + 10
    while sink.written < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close()
    entries = parse_lines(CheckpointFile(tmp_path / "cp.jsonl").lines())
    assert len(entries) >= 4 and published == [e.line() for _n, e in entries]  # type: ignore[union-attr]
    seqs = [e.seq for _n, e in entries]  # type: ignore[union-attr]
    hashes = {s: hashlib.sha256(str(s).encode()).hexdigest() for s in seqs}
    report = check(entries, load_verifier(tmp_path / "pki" / "cp.pub"), records=max(seqs),
                   chain_intact=True, hashes=hashes)
    assert report.ok, report.problems


def test_concurrent_writers_never_fork_the_checkpoint_chain(tmp_path: Path) -> None:
    signer = load_or_create_signer(tmp_path / "cp.key")
    chain = _GrowingChain()
    lock = threading.Lock()

    class Locked:
        def head(self) -> tuple[int, str]:
            with lock:
                return chain.head()

    sinks = [CheckpointSink(Locked(), signer, CheckpointFile(tmp_path / "cp.jsonl"),
                            source=f"W{i}", interval=0) for i in range(4)]
    threads = [threading.Thread(target=lambda s=s: [s.write() for _ in range(10)])
               for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    entries = parse_lines(CheckpointFile(tmp_path / "cp.jsonl").lines())
    assert len(entries) == 40
    seqs = [e.seq for _n, e in entries]  # type: ignore[union-attr]
    hashes = {s: hashlib.sha256(str(s).encode()).hexdigest() for s in seqs}
    report = check(entries, signer, records=40, chain_intact=True, hashes=hashes)
    assert report.ok, report.problems


def test_two_processes_making_the_key_at_once_share_one(tmp_path: Path) -> None:
    path = tmp_path / "pki" / "cp.key"
    code = ("import sys; from securepacs.pki.checkpointkey import load_or_create_signer as f; "
            "print(f(sys.argv[1]).key_id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    ids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(ids) == 1
    key_id = load_or_create_signer(path).key_id
    assert ids == {key_id}
    assert load_verifier(path.with_suffix(".pub")).key_id == key_id
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_checkpoint_line_round_trips() -> None:
    class Fixed:
        key_id = "k1"

        def sign(self, payload: bytes) -> bytes:
            return hashlib.sha512(payload).digest()

    cp = Checkpoint.make(seq=3, head="a" * 64, at=T0, source="PACS", signer=Fixed(),
                         previous=None)
    assert Checkpoint.from_json(cp.line()) == cp and cp.prev == GENESIS
    with pytest.raises(ValueError):
        Checkpoint.from_json(cp.line().replace('"seq":3', '"seq":"3"'))
