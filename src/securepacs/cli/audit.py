"""``securepacs audit``: read and check the audit trail of a data folder (PS3.15 A.5).

``audit [--data-dir DIR] [--config FILE] list [--since ISO] [--until ISO] [--identity X]
[--patient X] [--type T] [--limit N] [--json]``; ``audit export [--format xml|json] [--out
FILE]`` (same filters); ``audit verify [--checkpoints [FILE]] [--checkpoint-key PUB]`` checks
the hash chain of the ``audit_event`` table and names the first broken link (exit status 1),
and with ``--checkpoints`` compares it with the signed checkpoints kept outside the database;
``audit checkpoint`` writes one now.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from securepacs.audit.serialize import from_json, to_dict, to_xml
from securepacs.audit.sinks import columns_of
from securepacs.cli.options import fail
from securepacs.errors import PacsError
from securepacs.settings import load

KINDS = ("application-activity", "user-authentication", "security-alert",
         "instances-accessed", "instances-transferred", "begin-transferring", "query", "export", "import",
         "emergency-override")

app = typer.Typer(help="Audit trail: list, export, verify the hash chain.", no_args_is_help=True)


class _State:
    data_dir: Path | None = None
    config: Path | None = None


_state = _State()


@app.callback()
def audit_options(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (as for serve)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (as for serve)."),
) -> None:
    """Audit trail of a data folder."""
    _state.data_dir, _state.config = data_dir, config


def _log():  # noqa: ANN202 - securepacs.index.audit.SqlAuditLog
    from securepacs.wiring import audit_log

    try:
        settings = load(_state.config, overrides={"data_dir": _state.data_dir})
        index = settings.data_dir / "index.sqlite"
        if settings.database_url is None and not index.exists():  # reading creates nothing
            raise fail(f"no audit trail in {settings.data_dir} (no index database {index}): "
                       "give the data folder of a server or of the `ca`/`media` commands "
                       "with --data-dir")
        return audit_log(settings)
    except PacsError as exc:
        raise fail(str(exc)) from None


def _when(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{what} {text!r} is not an ISO 8601 date or time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _rows(since: str | None, until: str | None, identity: str | None, patient: str | None,
          kind: str | None, limit: int | None, organization: str | None = None) -> list[Any]:
    if kind is not None and kind not in KINDS:
        raise typer.BadParameter(f"unknown type {kind!r} (valid: {', '.join(KINDS)})")
    log = _log()
    try:
        return log.records(since=_when(since, "--since"), until=_when(until, "--until"),
                           identity=identity, patient=patient, kind=kind, limit=limit,
                           organization=organization)
    except PacsError as exc:
        raise fail(str(exc)) from None
    finally:
        log.close()


_SINCE = typer.Option(None, "--since", help="From this time (ISO 8601, UTC if no zone).")
_UNTIL = typer.Option(None, "--until", help="Before this time (ISO 8601).")
_IDENTITY = typer.Option(None, "--identity", help="A participant's user ID contains this "
                         "(CN=ws1, an AE title).")
_PATIENT = typer.Option(None, "--patient", help="This Patient ID.")
_TYPE = typer.Option(None, "--type", help=f"Event type: {', '.join(KINDS)}.")
_LIMIT = typer.Option(None, "--limit", help="Only the newest N records.")
_ORG = typer.Option(None, "--org", help="Records naming this organisation (its identities, "
                    "its cross-organisation reads and shares).")


@app.command("list")
def list_(
    since: str | None = _SINCE, until: str | None = _UNTIL, identity: str | None = _IDENTITY,
    patient: str | None = _PATIENT, kind: str | None = _TYPE, limit: int | None = _LIMIT,
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line."),
    organization: str | None = _ORG,
) -> None:
    """The audit records, oldest first."""
    for row in _rows(since, until, identity, patient, kind, limit, organization):
        if as_json:
            typer.echo(json.dumps({"seq": row.seq, **json.loads(row.body)}, sort_keys=True))
            continue
        outcome = "ok" if row.outcome == 0 else f"fail({row.outcome})"
        who = ", ".join(row.user_ids)
        patients = f" patient {', '.join(row.patient_ids)}" if row.patient_ids else ""
        typer.echo(f"{row.seq:>6} {row.event_time.isoformat(timespec='seconds')} "
                   f"{row.kind:<22} {outcome:<8} {who}{patients}{_what(row)}")


def _what(row: Any) -> str:
    """For alerts: the alert type (CID 403), its subject and the description; for a
    deletion (Instances Accessed): what was deleted, and why."""
    if row.kind not in ("security-alert", "emergency-override", "instances-accessed"):
        return ""
    record = from_json(row.body)
    if row.kind == "instances-accessed":
        return f" | {record.outcome_description}" if record.outcome_description else ""
    types = ", ".join(t.meaning for t in record.event_types)
    subjects = ", ".join(o.object_id for o in record.objects)
    detail = f": {record.outcome_description}" if record.outcome_description else ""
    return f" | {types} [{subjects}]{detail}"


@app.command("export")
def export(
    fmt: str = typer.Option("xml", "--format", help="xml (PS3.15 A.5.1 AuditMessage "
                            "elements in one AuditMessages document) or json (JSON lines)."),
    out: Path | None = typer.Option(None, "--out", help="File to write (default: stdout)."),
    since: str | None = _SINCE, until: str | None = _UNTIL, identity: str | None = _IDENTITY,
    patient: str | None = _PATIENT, kind: str | None = _TYPE, limit: int | None = _LIMIT,
) -> None:
    """Write the audit records as DICOM audit message XML or JSON."""
    if fmt not in ("xml", "json"):
        raise typer.BadParameter(f"--format must be xml or json, not {fmt!r}")
    rows = _rows(since, until, identity, patient, kind, limit)
    if fmt == "json":
        data = "".join(json.dumps({"seq": r.seq, **to_dict(from_json(r.body))}, sort_keys=True)
                       + "\n" for r in rows).encode()
    else:
        root = ET.Element("AuditMessages")
        for r in rows:
            root.append(ET.fromstring(to_xml(from_json(r.body))))
        data = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)
        typer.echo(f"{len(rows)} audit records written to {out}", err=True)


@app.command("verify")
def verify(
    checkpoints: bool = typer.Option(False, "--checkpoints", help="Also compare the chain with "
                                     "the signed checkpoints (the data folder's checkpoint "
                                     "file, or FILE: a copy, or the collector's log)."),
    file: Path | None = typer.Argument(None, metavar="[FILE]", show_default=False,
                                       help="Checkpoint file or syslog log (with --checkpoints)."),
    checkpoint_key: Path | None = typer.Option(None, "--checkpoint-key", help="The checkpoint "
                                               "key's public key (PEM) kept elsewhere (default: "
                                               "the data folder's audit-key/checkpoint.pub)."),
) -> None:
    """Check the hash chain; name the first broken link (exit status 1).

    With --checkpoints, every signed checkpoint must verify and agree with the chain: records
    deleted (the newest, or all of them) or rewritten up to the last checkpoint are found.
    """
    if file is not None and not checkpoints:
        raise typer.BadParameter("a FILE goes with --checkpoints")
    if checkpoints:
        _verify_checkpoints(file, checkpoint_key)
        return
    log = _log()
    try:
        report = log.verify(columns=columns_of)
    except PacsError as exc:
        raise fail(str(exc)) from None
    finally:
        log.close()
    if report.ok:
        typer.echo(f"audit chain intact: {report.checked} records")
        return
    _broken(report)
    raise typer.Exit(1)


def _broken(report: Any) -> None:
    where = f" (first broken link: row {report.broken_seq})" if report.broken_seq else ""
    typer.echo(f"audit chain BROKEN{where}: {report.reason}", err=True)


def _verify_checkpoints(file: Path | None, key: Path | None) -> None:
    from securepacs.audit.checkpoint import CheckpointFile, verify_against
    from securepacs.pki.checkpointkey import load_verifier

    try:
        settings = load(_state.config, overrides={"data_dir": _state.data_dir})
    except PacsError as exc:
        raise fail(str(exc)) from None
    path = file or settings.checkpoint_file_path
    key_path = key or settings.checkpoint_key_path.with_suffix(".pub")
    if key is None and not key_path.exists():
        key_path = settings.checkpoint_key_path
    try:
        verifier = load_verifier(key_path)
        lines = CheckpointFile(path).lines()
    except PacsError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot read the checkpoint file {path}: {exc.strerror or exc} (if it was "
                   "deleted, use the collector's copy)", 1) from None
    log = _log()
    try:
        walk, report = verify_against(log, lines, verifier, columns=columns_of)
    except PacsError as exc:
        raise fail(str(exc)) from None
    finally:
        log.close()
    if not walk.ok:
        _broken(walk)
    for problem in report.problems:
        typer.echo(f"CHECKPOINT {problem}", err=True)
    if walk.ok and report.ok:
        last = report.last
        assert last is not None
        typer.echo(f"audit chain intact: {walk.checked} records; {report.checkpoints} signed "
                   f"checkpoint(s) agree (key {verifier.key_id}); the last, {last.at}, anchors "
                   f"records 1-{last.seq}; {walk.checked - last.seq} newer record(s) are not "
                   "anchored yet")
        return
    raise typer.Exit(1)


@app.command("checkpoint")
def checkpoint() -> None:
    """Write a signed checkpoint of the chain now (the server writes them periodically)."""
    from securepacs.wiring import audit_checkpoints

    try:
        settings = load(_state.config, overrides={"data_dir": _state.data_dir})
        sink = audit_checkpoints(settings, interval=0)
    except PacsError as exc:
        raise fail(str(exc)) from None
    try:
        written = sink.write()
    except (PacsError, OSError) as exc:
        raise fail(f"checkpoint not written: {exc}") from None
    finally:
        sink.stop_quietly()
    if written is None:
        typer.echo("the chain has not grown since the last checkpoint: nothing written")
        return
    typer.echo(f"checkpoint written to {settings.checkpoint_file_path}: {written.seq} records, "
               f"head {written.head[:16]}..., key {written.key_id}")
