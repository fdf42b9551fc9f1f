"""The ``securepacs`` Typer application: the root options and every command, built on demand.

One responsibility: make the Typer app of :mod:`securepacs.cli.main` (which owns the list of
commands and the entry point), with the help in Click's and the README's words and Typer's
pydantic coercion spared where it changes nothing. :func:`build` with `only` gives the root
with just the command named on the command line; ``app`` (PEP 562) is the whole CLI, built
on first use. Both have the same root options and the same commands, so help, errors and
exit codes are the same either way.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import typer

from securepacs import __version__
from securepacs.cli.main import COMMANDS


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


def _plain_arguments() -> None:
    """Name arguments as Click and the README do: ``send [OPTIONS] PATHS...``, ``MEDIA``.

    Typer writes ``{paths}...`` in the usage line and ``paths... PATH...`` in the list.
    """
    from typer import core

    cls = getattr(core, "TyperArgument", None)
    if cls is None or getattr(cls, "_securepacs", False) or not all(
            hasattr(cls, a) for a in ("display_name_raw", "_usage_display_name", "get_help_record")):
        return
    help_record = cls.get_help_record

    def name(self: object) -> str:
        return str(getattr(self, "metavar", None) or str(getattr(self, "name", "")).upper())

    def usage(self: object) -> str:
        shown = name(self) if getattr(self, "required", False) else f"[{name(self)}]"
        return shown + ("..." if getattr(self, "nargs", 1) != 1 else "")

    def get_help_record(self: object, ctx: object) -> tuple[str, str] | None:
        record = help_record(self, ctx)
        if record is None:
            return None
        return name(self) + ("..." if getattr(self, "nargs", 1) != 1 else ""), record[1]

    cls.display_name_raw = property(name)
    cls._usage_display_name = usage
    cls.get_help_record = get_help_record
    cls._securepacs = True


def _range_in_words(low: float | None, high: float | None) -> str | None:
    """``1 to 32``, ``at least 1``, ``at most 9``: an option's range as the help shows it."""
    def shown(value: float) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    if low is not None and high is not None:
        return f"{shown(low)} to {shown(high)}"
    if low is not None:
        return f"at least {shown(low)}"
    return None if high is None else f"at most {shown(high)}"


def _plain_ranges() -> None:
    """Say option ranges in words, not Click's ``x>=1.0`` / ``1<=x<=32``."""
    from typer import core

    if hasattr(core, "describe_number_range"):
        core.describe_number_range = _range_in_words  # type: ignore[assignment]


def _whole_short_help() -> None:
    """List each command with its whole first sentence, wrapped, not cut off with "..."."""
    from typer._click import core

    original = getattr(core.Command, "get_short_help_str", None)
    if original is None or getattr(original, "_securepacs", False):
        return

    def get_short_help_str(self: object, limit: int = 45) -> str:
        return original(self, max(limit, 1000))  # type: ignore[no-any-return]

    get_short_help_str._securepacs = True  # type: ignore[attr-defined]
    core.Command.get_short_help_str = get_short_help_str  # type: ignore[method-assign]


_SLOW = object()


def _plain_value(param: object, value: object, ctx: object) -> object:
    """`value` coerced as Typer would for the plain types of our commands, or ``_SLOW``.

    Typer coerces each value through a pydantic TypeAdapter built on first use: importing
    pydantic and building the adapters is a tenth of a second or more of every command
    (``securepacs echo`` is mostly start-up). Values that are already what they should be
    (None, a str for ``str``, a number within its range) and paths (Typer's own path check,
    given a :class:`~pathlib.Path`) need none of it; anything else takes Typer's way.
    """
    from typer._param_types import coerce_cli_path

    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.file_annotation is not None:
        return _SLOW
    info, annotation = descriptor.parameter_info, descriptor.annotation
    many = getattr(param, "multiple", False) or getattr(param, "nargs", 1) == -1
    if value is None:
        return () if many else None
    if info.parser is not None or info.path_type is not None:
        return _SLOW

    def path(item: object) -> object:
        if not isinstance(item, str):
            return _SLOW
        return coerce_cli_path(Path(item), info, path_type=Path, param=param, ctx=ctx)  # type: ignore[arg-type]

    if many:
        if annotation in (list[str], list[Path]) and isinstance(value, (list, tuple)):
            items = [item if annotation == list[str] and type(item) is str
                     else path(item) if annotation == list[Path] else _SLOW for item in value]
            return _SLOW if any(item is _SLOW for item in items) else items
        return _SLOW
    if annotation is str and type(value) is str:
        return value
    if annotation is Path:
        return path(value)
    if annotation in (int, float) and type(value) is annotation and not info.clamp:
        if (info.min is None or value >= info.min) and (info.max is None or value <= info.max):  # type: ignore[operator]
            return value
    return _SLOW


def _fast_coercion() -> None:
    """Let :func:`_plain_value` spare Typer's pydantic coercion where it changes nothing."""
    from typer import core

    try:  # Typer's own path check, which _plain_value calls
        from typer._param_types import coerce_cli_path  # noqa: F401
    except ImportError:
        return
    cls = getattr(core, "_TyperParameter", None)
    original = getattr(cls, "process_value", None)
    if cls is None or original is None or getattr(original, "_securepacs", False):
        return

    def process_value(self: object, ctx: object, value: object) -> object:
        coerced = _plain_value(self, value, ctx)
        if coerced is _SLOW:
            return original(self, ctx, value)
        if self.required and self.value_is_missing(coerced):  # type: ignore[attr-defined]
            from typer._click.exceptions import MissingParameter

            raise MissingParameter(ctx=ctx, param=self)  # type: ignore[arg-type]
        if self.callback is not None:  # type: ignore[attr-defined]
            coerced = self.callback(ctx, self, coerced)  # type: ignore[attr-defined]
        return coerced

    process_value._securepacs = True  # type: ignore[attr-defined]
    cls.process_value = process_value


def build(only: str | None = None) -> typer.Typer:
    """The ``securepacs`` Typer app: every command, or only the top-level command `only`."""
    _plain_metavars()
    _plain_arguments()
    _plain_ranges()
    _whole_short_help()
    _fast_coercion()
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
