"""The ``securepacs`` command: its entry point and the list of commands.

Start-up time is part of every command (``securepacs send`` of a few images is mostly
start-up), so nothing here imports a command's module before that command runs, nor Typer:
:func:`main` first offers a ``send`` or ``echo`` command line to the short path of
:mod:`securepacs.cli.fast` (no Typer, no Click), then gives Typer
(:mod:`securepacs.cli.app`) the root with only the command named on the command line; the
whole CLI (``securepacs --help``, an unknown command, tests) is built on first use of
``app``. All have the same root options and the same commands, so help, errors and
exit codes are the same either way. :func:`defer_import` spares every command the import of
``requests`` that pydicom makes at start-up for its test-data downloader (about a tenth of a
second, urllib3 compiling its regular expressions) until something really uses it, and
:func:`main` spares the interpreter its last full garbage collection at exit (another tenth).
"""

from __future__ import annotations

import gc
import importlib.machinery
import sys
import threading
import types
from importlib import import_module
from typing import Any

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
    "delete": ("delete", "delete", False),
    "restore-deleted": ("delete", "restore_deleted", False),
    "db": ("db", "app", True),
    "check": ("db", "check", False),
    "backup": ("backup", "backup", False),
    "restore": ("backup", "restore", False),
}


def __getattr__(name: str) -> Any:
    """``app`` (the whole CLI), ``build`` and the rest of :mod:`securepacs.cli.app`, which
    imports Typer, on first use (PEP 562): the short path of ``send`` and ``echo`` never
    needs them."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = import_module("securepacs.cli.app")
    try:
        return getattr(app, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


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
    import importlib.util  # here: the short path of send and echo defers nothing

    spec = importlib.util.find_spec(name)
    if spec is not None:
        sys.modules[name] = _Deferred(name, spec)


def main() -> None:
    """The ``securepacs`` console script (and ``python -m securepacs``)."""
    from securepacs.datafolder import private_umask

    private_umask()  # everything this process writes is 0600 / 0700 (data folder, keys, media)
    command = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        if command in ("send", "echo"):  # they import neither pydicom nor cli.media
            from securepacs.cli import fast

            fast.run(sys.argv[1:])  # exits, unless it declines this command line
        defer_import("requests")  # pydicom.data.download: `import requests` for test data only
        # cli.media names its service module at import time; `--help` must not pay for
        # pydicom, numpy and the CMS code it pulls in (0.4 s) when no media command runs
        defer_import("securepacs.services.media")
        from securepacs.cli.app import build

        cli = build(only=command if command in COMMANDS else None)
        cli()
    finally:
        # The process ends here. The interpreter's last garbage collection would walk every
        # object of pydicom, pynetdicom and pydantic (about 0.1 s, a tenth of a small send);
        # frozen, they go back to the operating system with the process. atexit handlers
        # (temporary folders, logging) still run.
        gc.freeze()
