"""``securepacs db migrate`` and ``securepacs check``: the index database's schema, and a
health check for operators (one line per check, exit status 1 when any fails)."""

from __future__ import annotations

from pathlib import Path

import typer

from securepacs.errors import PacsError
from securepacs.settings import Settings, load

app = typer.Typer(help="The index database: schema migrations (Alembic).", no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", help="TOML config file (as for serve).")
_DATA_DIR = typer.Option(None, "--data-dir", help="Data folder (as for serve).")
_DATABASE_URL = typer.Option(None, "--database-url",
                             help="Index database URL (default: SQLite in the data folder).")


def _settings(config: Path | None, data_dir: Path | None, database_url: str | None) -> Settings:
    try:
        return load(config, overrides={"data_dir": data_dir, "database_url": database_url})
    except PacsError as exc:
        typer.echo(f"securepacs: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("migrate")
def migrate(
    config: Path | None = _CONFIG,
    data_dir: Path | None = _DATA_DIR,
    database_url: str | None = _DATABASE_URL,
) -> None:
    """Create or upgrade the index, trust and audit tables to the newest revision.

    A schema made earlier by `serve` is recognised and stamped, not re-created. Safe to
    run again, and from several hosts at once (PostgreSQL serialises the runs).
    """
    settings = _settings(config, data_dir, database_url)
    from securepacs.checks import migrate as run

    try:
        done = run(settings)
    except PacsError as exc:
        typer.echo(f"securepacs db migrate: {exc}", err=True)
        raise typer.Exit(1) from None
    if done.stamped:
        typer.echo("existing schema (made by serve) stamped as revision 0001")
    if done.before == done.after:
        typer.echo(f"database already at revision {done.after}")
    else:
        typer.echo(f"database upgraded from {done.before or 'empty'} to revision {done.after}")


def check(
    config: Path | None = _CONFIG,
    data_dir: Path | None = _DATA_DIR,
    database_url: str | None = _DATABASE_URL,
) -> None:
    """Check the database, its schema version, the blob store and certificate expiry.

    Prints one line per check; a failing check goes to stderr and makes the exit status 1.
    """
    settings = _settings(config, data_dir, database_url)
    from securepacs.checks import run_checks
    from securepacs.wiring import now

    failed = 0
    for result in run_checks(settings, at=now()):
        typer.echo(result.line(), err=not result.ok)
        failed += not result.ok
    if failed:
        raise typer.Exit(1)
