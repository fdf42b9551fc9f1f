"""The hash-chained audit table (index/audit.py) and ``securepacs audit`` on top of it."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditschema import assert_valid
from securepacs.audit import messages as m
from securepacs.audit.record import AuditSource
from securepacs.audit.sinks import DatabaseSink, columns_of
from securepacs.cli.main import app
from securepacs.index.audit import SqlAuditLog

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SRC = AuditSource("SECUREPACS")
WS1 = m.Peer("CN=ws1,O=Clinic", ae_title="WS1", address="192.0.2.10")
WS2 = m.Peer("CN=ws2,O=Other", ae_title="WS2", address="192.0.2.11")
PACS = m.Peer.application("SECUREPACS")


def _fill(data_dir: Path, n: int = 5) -> SqlAuditLog:
    log = SqlAuditLog(f"sqlite:///{data_dir / 'index.sqlite'}")
    log.create_schema()
    sink = DatabaseSink(log)
    for i in range(n):
        sink.emit(m.instances_transferred(
            action="C", outcome=0, source=WS1 if i % 2 == 0 else WS2, destination=PACS,
            patient_id=f"PAT-{i % 3}", study_uids=[f"1.2.3.{i}"], at=T0 + timedelta(minutes=i),
            audit_source=SRC))
    return log


def _sql(data_dir: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(data_dir / "index.sqlite")
    with conn:
        conn.execute(statement, args)
    conn.close()


def test_intact_chain_verifies(tmp_path: Path) -> None:
    log = _fill(tmp_path)
    report = log.verify(columns=columns_of)
    assert report.ok and report.checked == 5


def test_edited_body_is_caught(tmp_path: Path) -> None:
    log = _fill(tmp_path)
    row = log.records()[2]
    body = row.body.replace(b"PAT-2", b"PAT-X")
    _sql(tmp_path, "UPDATE audit_event SET body = ? WHERE seq = 3", body)
    report = log.verify()
    assert not report.ok and report.broken_seq == 3 and "edited" in report.reason


def test_edited_row_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    from securepacs.index.audit import chain_hash

    log = _fill(tmp_path)
    row = log.records()[1]
    body = row.body.replace(b"PAT-1", b"PAT-X")
    _sql(tmp_path, "UPDATE audit_event SET body = ?, hash = ? WHERE seq = 2", body,
         chain_hash(row.prev_hash, body))
    report = log.verify()
    assert not report.ok and report.broken_seq == 3


def test_edited_filter_column_is_caught(tmp_path: Path) -> None:
    log = _fill(tmp_path)
    _sql(tmp_path, "UPDATE audit_event SET patient_ids = 'NOBODY' WHERE seq = 4")
    assert log.verify().ok  # the hash covers the body only ...
    report = log.verify(columns=columns_of)  # ... the columns are checked against it
    assert not report.ok and report.broken_seq == 4 and "patient_ids" in report.reason


def test_deleted_row_is_caught(tmp_path: Path) -> None:
    log = _fill(tmp_path)
    _sql(tmp_path, "DELETE FROM audit_event WHERE seq = 2")
    report = log.verify()
    assert not report.ok and report.broken_seq == 3 and "deleted" in report.reason


def test_deleted_newest_row_is_caught_by_the_head(tmp_path: Path) -> None:
    log = _fill(tmp_path)
    _sql(tmp_path, "DELETE FROM audit_event WHERE seq = 5")
    report = log.verify()
    assert not report.ok and "newest rows deleted" in report.reason


def test_reordered_rows_are_caught(tmp_path: Path) -> None:
    log = _fill(tmp_path)
    _sql(tmp_path, "UPDATE audit_event SET seq = 100 WHERE seq = 2")
    _sql(tmp_path, "UPDATE audit_event SET seq = 2 WHERE seq = 3")
    _sql(tmp_path, "UPDATE audit_event SET seq = 3 WHERE seq = 100")
    report = log.verify()
    assert not report.ok and report.broken_seq == 2


def test_append_is_idempotent_per_record_id(tmp_path: Path) -> None:
    log = _fill(tmp_path, 1)
    record = m.application_activity(started=True, application=PACS, at=T0, audit_source=SRC)
    sink = DatabaseSink(log)
    sink.emit(record)
    sink.emit(record)  # a retried write
    assert len(log.records()) == 2 and log.verify().ok


def test_filters(tmp_path: Path) -> None:
    log = _fill(tmp_path, 6)
    assert [r.seq for r in log.records(identity="ws2")] == [2, 4, 6]
    assert [r.seq for r in log.records(patient="PAT-1")] == [2, 5]
    assert [r.seq for r in log.records(since=T0 + timedelta(minutes=2),
                                       until=T0 + timedelta(minutes=4))] == [3, 4]
    assert [r.seq for r in log.records(limit=2)] == [5, 6]
    assert log.records(kind="query") == []
    assert len(log.records(kind="instances-transferred")) == 6


# --------------------------------------------------------------------------- CLI

def _cli(data_dir: Path, *args: str):  # noqa: ANN202
    return CliRunner().invoke(app, ["audit", "--data-dir", str(data_dir), *args])


def test_cli_verify_names_the_first_broken_link(tmp_path: Path) -> None:
    _fill(tmp_path)
    ok = _cli(tmp_path, "verify")
    assert ok.exit_code == 0 and "5 records" in ok.output
    _sql(tmp_path, "UPDATE audit_event SET body = replace(body, 'PAT-0', 'PAT-9') WHERE seq = 4")
    broken = _cli(tmp_path, "verify")
    assert broken.exit_code == 1
    assert "row 4" in broken.output


def test_cli_list_and_export(tmp_path: Path) -> None:
    _fill(tmp_path)
    listed = _cli(tmp_path, "list", "--identity", "CN=ws1", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [r["seq"] for r in rows] == [1, 3, 5]
    text = _cli(tmp_path, "list", "--patient", "PAT-0", "--type", "instances-transferred")
    assert text.exit_code == 0 and "PAT-0" in text.output and len(text.output.splitlines()) == 2
    bad = _cli(tmp_path, "list", "--type", "nonsense")
    assert bad.exit_code != 0
    out = tmp_path / "audit.xml"
    exported = _cli(tmp_path, "export", "--format", "xml", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    from lxml import etree

    root = etree.fromstring(out.read_bytes())
    assert root.tag == "AuditMessages" and len(root) == 5
    for message in root:
        assert_valid(etree.tostring(message))
    as_json = _cli(tmp_path, "export", "--format", "json", "--since", "2026-11-21T12:03:00Z")
    assert as_json.exit_code == 0
    assert [json.loads(x)["seq"] for x in as_json.output.splitlines()] == [4, 5]


@pytest.mark.parametrize("bad", ["yesterday"])
def test_cli_rejects_bad_times(tmp_path: Path, bad: str) -> None:
    _fill(tmp_path, 1)
    assert _cli(tmp_path, "list", "--since", bad).exit_code != 0
