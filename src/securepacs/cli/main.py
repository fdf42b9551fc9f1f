"""The ``securepacs`` command: global options and the command groups.

Start-up time is part of every command (``securepacs send`` of a few images is mostly
start-up), so nothing here imports a command's module before that command runs:
:func:`main` gives Typer the root with only the command named on the command line, and
the whole CLI (``securepacs --help``, an unknown command, tests) is built on first use of
:data:`app`. Both have the same root options and the same commands, so help, errors and
exit codes are the same either way. :func:`defer_import` spares every command the import of
``requests`` that pydicom makes at start-up for its test-data downloader (about a tenth of a
second, urllib3 compiling its regular expressions) until something really uses it, and
:func:`main` spares the interpreter its last full garbage collection at exit (another tenth).
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import threading
import types
from importlib import import_module

import typer

from securepacs import __version__

#: Top-level name -> (module of securepacs.cli, attribute, a group?), in help order.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "serve": ("serve", "serve", False),
    "echo": ("client", "echo", False),
    "send": ("client", "send", False),
    "find": ("client", "find", False),
    "get": ("client", "get", False),
    "move": ("client", "move", False),
    "ca": ("ca", "app", True),
    "enroll": ("enroll", "enroll", False),
    "media": ("media", "app", True),
    "view": ("view", "view", False),
    "audit": ("audit", "app", True),
    "share": ("share", "app", True),
    "db": ("db", "app", True),
    "check": ("db", "check", False),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"securepacs {__version__}")
        raise typer.Exit()


def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """A secure PACS: DICOM archive over mutual TLS, its own CA, encrypted media."""


#: How an option's value is named in ``--help`` instead of Typer's Python types
#: (``<list[Path]>``, ``<int range>``, ``<str>``): the words of Click and of the README.
_METAVARS = {"str": "TEXT", "int": "N", "int range": "N", "float": "NUMBER",
             "float range": "NUMBER", "path": "PATH", "Path": "PATH", "file": "FILE",
             "directory": "DIR", "bool": ""}


def _plain_metavars() -> None:
    """Make Typer name option values as Click does (``PATH``, ``N``), not as Python types."""
    import re

    from typer import core

    for cls in {c for c in (getattr(core, "TyperArgument", None), getattr(core, "TyperOption", None))
                if c is not None}:
        original = getattr(cls, "display_type", None)
        if original is None or getattr(original, "_securepacs", False):
            continue

        def display_type(self: object, ctx: object, _original: object = original) -> str:
            label = _original(self, ctx)  # type: ignore[operator]
            inner = label[1:-1] if label.startswith("<") and label.endswith(">") else label
            listed = re.fullmatch(r"list\[(.*)\]", inner)
            inner = listed.group(1) if listed else inner
            shown = _METAVARS.get(inner, inner)
            # a list argument takes several values; a list option is repeated, one each
            many = listed and shown and not isinstance(self, core.TyperOption)
            return f"{shown}..." if many else shown

        display_type._securepacs = True  # type: ignore[attr-defined]
        cls.display_type = display_type  # type: ignore[method-assign]


def build(only: str | None = None) -> typer.Typer:
    """The ``securepacs`` Typer app: every command, or only the top-level command `only`."""
    _plain_metavars()
    cli = typer.Typer(
        name="securepacs",
        help="A secure PACS: DICOM archive over mutual TLS, its own CA, encrypted media.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    cli.callback()(root)
    for name, (module, attribute, group) in COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(import_module(f"securepacs.cli.{module}"), attribute)
        if group:
            cli.add_typer(target, name=name)
        else:
            cli.command(name)(target)
    return cli


def __getattr__(name: str) -> typer.Typer:
    """``app``, the whole CLI, built once on first use (PEP 562)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = build()
    globals()["app"] = app
    return app


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is first read.

    An ``import`` statement finds this stand-in (with the real module's spec, so the import
    system sees an initialised module) and runs nothing; the first attribute read imports
    the real module, which then replaces the stand-in in ``sys.modules`` and lends it its
    namespace, so earlier importers see the same objects.
    """

    def __init__(self, name: str, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(name)
        self.__spec__ = spec
        self.__dict__["_deferred_lock"] = threading.Lock()

    def __getattr__(self, attribute: str) -> object:
        with self.__dict__["_deferred_lock"]:
            module = sys.modules.get(self.__name__)
            if module is self or module is None:
                sys.modules.pop(self.__name__, None)
                try:
                    module = import_module(self.__name__)
                except BaseException:
                    sys.modules.setdefault(self.__name__, self)
                    raise
                self.__dict__.update(module.__dict__)
        return getattr(module, attribute)


def defer_import(name: str) -> None:
    """Import the top-level module `name` only when an attribute of it is first used.

    Nothing happens when it is already imported or not installed (``import`` then raises
    ImportError as before).
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is not None:
        sys.modules[name] = _Deferred(name, spec)


def main() -> None:
    from securepacs.datafolder import private_umask

    private_umask()  # everything this process writes is 0600 / 0700 (data folder, keys, media)
    defer_import("requests")  # pydicom.data.download: `import requests` for test data only
    # cli.media names its service module at import time; `--help` must not pay for pydicom,
    # numpy and the CMS code it pulls in (0.4 s) when no media command runs
    defer_import("securepacs.services.media")
    command = sys.argv[1] if len(sys.argv) > 1 else None
    cli = build(only=command if command in COMMANDS else None)
    try:
        cli()
    finally:
        # The process ends here. The interpreter's last garbage collection would walk every
        # object of pydicom, pynetdicom and pydantic (about 0.1 s, a tenth of a small send);
        # frozen, they go back to the operating system with the process. atexit handlers
        # (temporary folders, logging) still run.
        gc.freeze()
