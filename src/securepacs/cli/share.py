"""``securepacs share``: share one organisation's study with another (docs/tenants.md).

``share study UID --with ORG [--from ORG] [--until DATE] [--read-only]``, ``share list``,
``share revoke ID``. Shares live in the index database's trust store: every server sharing
that database applies a change on its next query. Each change is audited as a Security
Alert with the local user who made it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from securepacs.cli.options import fail
from securepacs.errors import PacsError
from securepacs.settings import load

app = typer.Typer(help="Share a study with another organisation; list and revoke shares.",
                  no_args_is_help=True)


class _State:
    data_dir: Path | None = None
    config: Path | None = None


_state = _State()


@app.callback()
def share_options(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (as for serve)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (as for serve)."),
) -> None:
    """Shares of studies between organisations."""
    _state.data_dir, _state.config = data_dir, config


def _settings():  # noqa: ANN202 - securepacs.settings.Settings
    try:
        return load(_state.config, overrides={"data_dir": _state.data_dir})
    except PacsError as exc:
        raise fail(str(exc)) from None


def _run(action):  # noqa: ANN001, ANN202
    from securepacs.wiring import share_book

    settings = _settings()
    try:
        book, close = share_book(settings)
    except PacsError as exc:
        raise fail(str(exc)) from None
    try:
        return action(book)
    except (PacsError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        close()


def _date(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(f"--until: not a date or time (ISO 8601, e.g. 2027-01-31): {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _audit(alert: str, *, subject: str, detail: str) -> None:
    from securepacs.services.audit_events import Alert
    from securepacs.wiring import admin_audit

    try:
        audit = admin_audit(_settings())
    except PacsError as exc:
        typer.echo(f"warning: this change could not be audited: {exc}", err=True)
        return
    with audit:
        audit.changed(Alert(alert), subject=subject, detail=detail)


@app.command("study")
def study(
    uid: str = typer.Argument(..., help="Study Instance UID."),
    with_: str = typer.Option(..., "--with", help="The organisation that gains sight of it."),
    owner: str | None = typer.Option(None, "--from", help="The owner organisation (needed "
                                     "only when several hold this study UID)."),
    until: str | None = typer.Option(None, "--until", help="End of the share (ISO 8601 date or "
                                     "time, UTC if no zone); default: until revoked."),
    read_only: bool = typer.Option(False, "--read-only", help="Find and view only: no C-GET, "
                                   "C-MOVE, WADO-RS or media export."),
) -> None:
    """Share one study with another organisation."""
    end = _date(until)
    now = datetime.now(UTC)
    share = _run(lambda book: book.grant(uid, with_, at=now, owner=owner, until=end,
                                         read_only=read_only))
    ends = f"until {share.until.isoformat()}" if share.until else "until revoked"
    mode = " (read-only)" if share.read_only else ""
    typer.echo(f"share {share.share_id}: study {share.study_uid} of {share.owner} with "
               f"{share.grantee}{mode}, {ends}")
    _audit("share-granted", subject=f"study {share.study_uid}",
           detail=f"share {share.share_id}: {share.owner} -> {share.grantee}{mode}, {ends}")


@app.command("list")
def list_() -> None:
    """Every share, active or not."""
    now = datetime.now(UTC)
    for s in _run(lambda book: book.list()):
        state = ("revoked" if s.revoked_at else "ended" if not s.active(now) else "active")
        ends = s.until.isoformat() if s.until else "-"
        mode = "read-only" if s.read_only else "read"
        typer.echo(f"{s.share_id}  {s.study_uid}  {s.owner} -> {s.grantee}  {mode}  "
                   f"until {ends}  {state}")


@app.command("revoke")
def revoke(share_id: str = typer.Argument(..., help="The share's ID (from `share list`).")) -> None:
    """End a share now."""
    share = _run(lambda book: book.revoke(share_id, at=datetime.now(UTC)))
    typer.echo(f"share {share.share_id} revoked: study {share.study_uid} no longer shared "
               f"with {share.grantee}")
    _audit("share-revoked", subject=f"study {share.study_uid}",
           detail=f"share {share.share_id}: {share.owner} -> {share.grantee} revoked")
