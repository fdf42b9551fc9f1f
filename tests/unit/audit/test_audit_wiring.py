"""``wiring.build_audit_trail``: settings -> database + JSON-lines (+ syslog) sinks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from securepacs.audit import messages as m
from securepacs.errors import ConfigError
from securepacs.settings import load
from securepacs.wiring import audit_log, build_audit_trail


def test_database_and_jsonl_from_settings(tmp_path: Path) -> None:
    settings = load(overrides={"data_dir": tmp_path, "audit_jsonl": tmp_path / "audit.jsonl",
                               "ae_title": "ARCHIVE1"}, environ={})
    trail = build_audit_trail(settings, hostname="pacs.test")
    trail.check_writable()
    records = [m.application_activity(started=True, application=m.Peer.application("ARCHIVE1"),
                                      at=datetime.now(UTC)),
               m.security_alert(alert=m.Alert.PERMISSION_REFUSED,
                                reporter=m.Peer.application("ARCHIVE1"),
                                subject="CN=ws1,O=Clinic", at=datetime.now(UTC))]
    for record in records:
        trail.record(record)
    trail.close()
    log = audit_log(settings)
    rows = log.records()
    assert [r.record_id for r in rows] == [r.record_id for r in records]
    assert [r.kind for r in rows] == ["application-activity", "security-alert"]
    assert log.verify().ok
    log.close()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["audit_source"]["source_id"] == "ARCHIVE1"


def test_audit_settings_from_toml_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "securepacs.toml"
    config.write_text('audit_required = false\naudit_syslog = "127.0.0.1:6514"\n')
    settings = load(config, environ={"SECUREPACS_AUDIT_QUEUE_SIZE": "50"})
    assert settings.audit_required is False
    assert settings.audit_syslog == "127.0.0.1:6514"
    assert settings.audit_queue_size == 50
    assert settings.audit_jsonl is None and settings.audit_spool_dir is None


@pytest.mark.parametrize("bad", ["collector", "host:port", "host:70000", ":6514"])
def test_bad_syslog_address(tmp_path: Path, bad: str) -> None:
    settings = load(overrides={"data_dir": tmp_path, "audit_syslog": bad}, environ={})
    with pytest.raises(ConfigError, match="host:port"):
        build_audit_trail(settings)
