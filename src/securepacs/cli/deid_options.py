"""The de-identification options shared by ``media create``, ``send`` and ``get``.

One responsibility: turn ``--deidentify``, ``--option NAME``, ``--include-burned-in``,
``--mapping-key FILE`` and ``--clean-allowlist FILE`` into a
:class:`~securepacs.services.deidentify.Deidentifier` (PS3.15 Annex E), with one-line errors
for bad values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from securepacs.services.deidentify import Deidentifier

OPTION_NAMES = ("retain-uids, retain-device-identity, retain-institution-identity, "
                "retain-patient-characteristics, retain-longitudinal-full-dates, "
                "retain-longitudinal-modified-dates, clean-descriptors, "
                "clean-structured-content, clean-graphics (clean-pixel-data and "
                "clean-recognizable-visual-features are refused: they cannot be done "
                "automatically)")

Deidentify = Annotated[bool, typer.Option(
    "--deidentify", help="De-identify on the way out (PS3.15 Annex E Basic Profile): new UIDs "
    "mapped consistently, names, IDs and dates removed, Patient Identity Removed = YES.")]
DeidOption = Annotated[list[str] | None, typer.Option(
    "--option", help=f"A PS3.15 E.3 option with --deidentify (repeatable): {OPTION_NAMES}.")]
IncludeBurnedIn = Annotated[bool, typer.Option(
    "--include-burned-in", help="With --deidentify, also export images with burned-in "
    "annotation (left out by default: their pixels are not cleaned).")]
MappingKey = Annotated[Path | None, typer.Option(
    "--mapping-key", help="With --deidentify, a secret key file (at least 16 bytes): the same "
    "source then gets the same new UIDs and pseudonyms in every export made with it.")]
CleanAllowlist = Annotated[Path | None, typer.Option(
    "--clean-allowlist", help="With the clean-* options, a text file of values known to hold "
    "no identifying information (one a line, e.g. CHEST PA): descriptors and free text with "
    "such a value are kept, any other value is removed or replaced. Needed by "
    "clean-descriptors.")]

_MAX_ALLOWLIST = 1 << 20


def _allowlist(path: Path) -> frozenset[str]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_ALLOWLIST + 1)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the allowlist {path}: "
                                 f"{exc.strerror or exc}") from None
    if len(raw) > _MAX_ALLOWLIST:
        raise typer.BadParameter(f"the allowlist {path} is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter(f"the allowlist {path} is not UTF-8 text") from None
    return frozenset(line.strip() for line in text.splitlines() if line.strip()
                     and not line.lstrip().startswith("#"))


def deidentifier(enabled: bool, options: list[str] | None, include_burned_in: bool,
                 mapping_key: Path | None, clean_allowlist: Path | None = None
                 ) -> Deidentifier | None:
    """The Deidentifier the options ask for, or None without ``--deidentify``.

    Raises
    ------
    typer.BadParameter
        An option without ``--deidentify``, an unknown option name, a key file that cannot
        be read or is too short.
    """
    if not enabled:
        if options or include_burned_in or mapping_key is not None \
                or clean_allowlist is not None:
            raise typer.BadParameter("--option, --include-burned-in, --mapping-key and "
                                     "--clean-allowlist go with --deidentify")
        return None
    from securepacs.services.deidentify import MIN_KEY_BYTES, Deidentifier, Option

    try:
        chosen = frozenset(Option.from_cli(o) for o in options or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    key = None
    if mapping_key is not None:
        try:
            key = mapping_key.read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read the mapping key {mapping_key}: "
                                     f"{exc.strerror or exc}") from None
        if len(key) < MIN_KEY_BYTES:
            raise typer.BadParameter(f"the mapping key {mapping_key} holds fewer than "
                                     f"{MIN_KEY_BYTES} bytes")
    if clean_allowlist is not None and not any(o.cli_name.startswith("clean-") for o in chosen):
        raise typer.BadParameter("--clean-allowlist goes with a clean-* option (clean-"
                                 "descriptors, clean-structured-content, clean-graphics)")
    allowed = _allowlist(clean_allowlist) if clean_allowlist is not None else frozenset()
    try:
        return Deidentifier(chosen, mapping_key=key, include_burned_in=include_burned_in,
                            allowlist=allowed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
