"""The short path of ``securepacs send`` and ``securepacs echo``: their usual command lines
parsed without Typer.

One responsibility: recognise a command line of ``send`` or ``echo`` that uses only plain
options with plain values, and run the command (:mod:`securepacs.cli.client_run`) as the
Typer command would, with the same values, output and exit code. Importing Typer (and the
Click it carries) is about a third of the start-up of these commands; ``send`` of a few
images is mostly start-up.

Anything else is declined (:func:`run` returns False) and goes the usual way, through
Typer: ``--help``, an unknown or misspelt option, a value out of range or in an unusual
form, a path that Typer would refuse, the options that need pydicom anyway (``--set``,
``--resume``, ``--deidentify`` and its companions). So help texts and usage errors are
Typer's own, by construction; the unit tests hold the option tables here to the Typer
commands' parameters.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

#: Parsed values in the forms Click accepts for these options, and nothing doubtful.
_INTEGER = re.compile(r"[0-9]{1,6}")
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{0,9})?|\.[0-9]{1,9}")

#: What an option takes: "flag", "str", "path", or a (number type, low, high) range.
Kind = str | tuple[type, float | None, float | None]

#: Options common to every client command: name -> (parameter, kind).
COMMON: dict[str, tuple[str, Kind]] = {
    "--server": ("server", "str"),
    "--aec": ("aec", "str"),
    "--aet": ("aet", "str"),
    "--cert": ("cert", "path"),
    "--key": ("key", "path"),
    "--ca": ("ca", "path"),
    "--no-tls": ("no_tls", "flag"),
    "--profile": ("profile", "path"),
    "--timeout": ("timeout", (float, 1.0, None)),
}

#: The options each command takes on the short path (every other one is declined).
OPTIONS: dict[str, dict[str, tuple[str, Kind]]] = {
    "echo": dict(COMMON),
    "send": {
        "--parallel": ("parallel", (int, 1, 32)),
        "-j": ("parallel", (int, 1, 32)),
        "--retries": ("retries", (int, 0, None)),
        "--verbose": ("verbose", "flag"),
        "-v": ("verbose", "flag"),
        **COMMON,
    },
}


class _Declined(Exception):
    """Not a command line for the short path."""


def _value(kind: Kind, text: str) -> object:
    """`text` as the Typer command would receive it, or :class:`_Declined`."""
    if kind == "str":
        return text
    if kind == "path":
        return _path(text)
    assert isinstance(kind, tuple)
    number, low, high = kind
    if not (_INTEGER if number is int else _NUMBER).fullmatch(text):
        raise _Declined
    value = number(text)
    if (low is not None and value < low) or (high is not None and value > high):
        raise _Declined
    return value


def _path(text: str) -> Path:
    """A path Typer would accept as it is (it refuses an existing one it cannot read)."""
    if not text or text == "-":
        raise _Declined
    path = Path(text)
    try:
        os.stat(path)
    except (OSError, ValueError):
        return path
    if not os.access(path, os.R_OK):
        raise _Declined
    return path


def parse(command: str, args: list[str]) -> dict[str, object] | None:
    """The keyword arguments of the command for `args` (after the command's name), or
    None when the short path declines them."""
    table = OPTIONS.get(command)
    if table is None:
        return None
    values: dict[str, object] = {}
    paths: list[Path] = []
    try:
        at = 0
        while at < len(args):
            arg = args[at]
            at += 1
            if not arg.startswith("-") or arg == "-":
                if command != "send":
                    raise _Declined
                paths.append(_path(arg))
                continue
            name, given = arg, None
            if arg.startswith("--") and "=" in arg:
                name, given = arg.split("=", 1)
            elif not arg.startswith("--") and len(arg) > 2:
                name, given = arg[:2], arg[2:]  # -j4
            if name not in table:
                raise _Declined
            parameter, kind = table[name]
            if kind == "flag":
                if given is not None:
                    raise _Declined
                values[parameter] = True
                continue
            if given is None:
                if at >= len(args) or args[at].startswith("-"):
                    raise _Declined
                given = args[at]
                at += 1
            values[parameter] = _value(kind, given)
    except _Declined:
        return None
    if command == "send":
        if not paths:
            return None
        values["paths"] = paths
    return values


def run(argv: list[str]) -> bool:
    """Run ``securepacs`` `argv` (without the program name) on the short path and exit as
    Typer would (:class:`SystemExit`); False, having done nothing, when it declines."""
    if not argv:
        return False
    values = parse(argv[0], argv[1:])
    if values is None:
        return False
    from securepacs.cli import client_run

    command: Callable[..., None] = (client_run.run_send if argv[0] == "send"
                                    else client_run.run_echo)
    _as_typer_would(lambda: command(**values))


def _as_typer_would(body: Callable[[], None]) -> NoReturn:
    """Run `body` and end the process as a Typer command's ends (typer.core._main)."""
    try:
        body()
    except EOFError:
        sys.stderr.write("\nAborted!\n")
        sys.stderr.flush()
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = _Quiet(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _Quiet(sys.stderr)  # type: ignore[assignment]
        raise SystemExit(1) from None
    raise SystemExit(0)


class _Quiet:
    """A stream whose flush ignores a closed pipe (Click's PacifyFlushWrapper)."""

    def __init__(self, wrapped: object):
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> object:
        return getattr(self.wrapped, name)
