"""Small parsers shared by the command modules (durations, secrets from files)."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import typer

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> timedelta:
    """``30d``, ``24h``, ``90m``, ``2w``, ``45s`` -> timedelta (BadParameter otherwise)."""
    found = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not found:
        raise typer.BadParameter(f"{text!r} is not a duration like 30d, 24h, 90m")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def read_secret(path: Path | None, *, what: str = "password") -> bytes | None:
    """A secret from a file (first line, without its newline), or ``-`` for stdin."""
    if path is None:
        return None
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the {what} file {path}: {exc.strerror}") from None
    line = raw.splitlines()[0] if raw else ""
    if not line:
        raise typer.BadParameter(f"the {what} file {path} is empty")
    return line.encode()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error for a person and return the Exit to raise."""
    typer.echo(f"securepacs: {message}", err=True)
    return typer.Exit(code)
