"""``securepacs echo | send | find | get | move``: the client tools (SCU), TLS by default.

Common options (a contract shared by every client command): ``--server HOST:PORT``,
``--aec CALLED_AE``, ``--aet CALLING_AE``, ``--cert PEM --key PEM --ca PEM``, ``--no-tls``,
``--profile FILE`` and ``--timeout S``. Anything not given comes from the client profile
written by ``securepacs enroll`` (:mod:`securepacs.clientprofile`).

This module wires the DICOM client of :mod:`securepacs.dimse.client` into the client
services and renders their results; exit codes: 0 all done, 1 some files or
sub-operations failed, 2 bad arguments or configuration, 3 no connection / association /
permission, 130 interrupted.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from securepacs.cli import client_run
from securepacs.cli.client_run import (
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageProblem,
    endpoint,
)
from securepacs.cli.deid_options import (
    CleanAllowlist,
    Deidentify,
    DeidOption,
    IncludeBurnedIn,
    MappingKey,
    deidentifier,
)
from securepacs.model.levels import Level

# The services (and with them pydicom), rich and the wiring are imported by the command that
# uses them, when it runs: see securepacs.cli.main on start-up time.
if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from rich.progress import Progress, TaskID

    from securepacs.services import fetch
    from securepacs.services.deidentify import Deidentifier
    from securepacs.services.scuport import RetrieveProgress

__all__ = ["EXIT_CONNECTION", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "echo", "endpoint",
           "find", "get", "move", "send"]

Server = Annotated[str | None, typer.Option(
    "--server", help="HOST:PORT of the DICOM server [profile, else 127.0.0.1:2762].")]
Aec = Annotated[str | None, typer.Option("--aec", help="Called AE title [profile, else SECUREPACS].")]
Aet = Annotated[str | None, typer.Option("--aet", help="Calling AE title (ours) [profile].")]
Cert = Annotated[Path | None, typer.Option("--cert", help="Our certificate, PEM [profile].")]
Key = Annotated[Path | None, typer.Option("--key", help="Its private key, PEM [profile].")]
Ca = Annotated[Path | None, typer.Option(
    "--ca", help="CA certificate(s) that issued the server's certificate, PEM [profile].")]
NoTls = Annotated[bool, typer.Option("--no-tls", help="Plain TCP, no TLS (unsafe; only when asked).")]
ProfileOpt = Annotated[Path | None, typer.Option(
    "--profile", help="Client profile (TOML) [$SECUREPACS_PROFILE or ~/.config/securepacs/client.toml].")]
Timeout = Annotated[float, typer.Option("--timeout", min=1.0,
                                        help="Seconds to wait for any answer from the server.")]


def _fail(command: str, message: str, code: int) -> NoReturn:
    client_run.fail(command, message, code)


_errors = client_run.errors


# ------------------------------------------------------------------------------------ echo


def echo(server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None,
         key: Key = None, ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None,
         timeout: Timeout = 30.0) -> None:
    """Check the connection: TLS, certificates, AE titles and the association (C-ECHO)."""
    client_run.run_echo(server=server, aec=aec, aet=aet, cert=cert, key=key, ca=ca,
                        no_tls=no_tls, profile=profile, timeout=timeout)


# ------------------------------------------------------------------------------------ send


AuditDataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="With --deidentify: the data folder whose audit trail records the "
    "de-identified transfer (default: the usual data folder, as for media create).")]


def _audit_deidentified(data_dir: Path | None, deid: Deidentifier, *, target: str,
                        endpoint: object, received: bool, success: bool) -> None:
    """Record a de-identified get in the local audit trail (see :mod:`client_run`)."""
    client_run.audit_deidentified("send" if not received else "get", data_dir, deid,
                                  target=target, endpoint=endpoint, received=received,
                                  success=success)


def send(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders (recursive) and zip archives.")],
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1, max=32,
                                          help="Associations in parallel.")] = 1,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Skip instances the server already holds (C-FIND by SOP Instance UID).")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Coerce TAG=VALUE on the way out (e.g. PatientID=123); originals go "
                      "to Original Attributes Sequence. Repeatable.")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0,
                                         help="New associations per file after a lost one.")] = 3,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List skipped files.")] = False,
    deidentify: Deidentify = False, option: DeidOption = None,
    include_burned_in: IncludeBurnedIn = False, mapping_key: MappingKey = None,
    clean_allowlist: CleanAllowlist = None, data_dir: AuditDataDir = None,
    server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None, key: Key = None,
    ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None, timeout: Timeout = 30.0,
) -> None:
    """Send DICOM files (C-STORE): progress, retries, a summary; exit 1 if any file failed."""
    try:
        client_run.run_send(
            paths, parallel=parallel, resume=resume, set_=set_, retries=retries,
            verbose=verbose, data_dir=data_dir, server=server, aec=aec, aet=aet, cert=cert,
            key=key, ca=ca, no_tls=no_tls, profile=profile, timeout=timeout,
            deidentifier=lambda: deidentifier(deidentify, option, include_burned_in,
                                              mapping_key, clean_allowlist))
    except UsageProblem as exc:
        raise typer.BadParameter(str(exc)) from None


# ------------------------------------------------------------------------------------ find


#: Columns of ``find`` kept longest after the UIDs and the keys matched on.
_IDENTITY = {"PatientID", "PatientName", "StudyDate", "Modality", "ModalitiesInStudy"}


def _cell(match: Dataset, keyword: str) -> str:
    from securepacs.services.part10 import as_text

    return as_text(match.get(keyword))


def find(
    level: Annotated[Level, typer.Option("--level", "-L", case_sensitive=False,
                                         help="Query/Retrieve level.")] = Level.STUDY,
    keys: Annotated[list[str] | None, typer.Option(
        "--key", "-k", help="TAG=VALUE to match (wildcards * ?, ranges A-B) or TAG to return; "
                            "TAG is a keyword or gggg,eeee. Repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="DICOM JSON (PS3.18 F.2) on stdout.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout: a header row of keywords, "
                                         "then one row per match.")] = False,
    server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None, key: Key = None,
    ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None, timeout: Timeout = 30.0,
) -> None:
    """Query the server (C-FIND) at any level; a table (whole UIDs), or --json / --csv for scripts."""
    from securepacs.cli import table
    from securepacs.services import identifier

    with _errors("find"):
        if as_json and as_csv:
            raise ValueError("--json and --csv: choose one")
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
        query = identifier.query(level, keys or [])
        matches = list(identifier.results(ep, level, query))
    if as_json:
        import json

        typer.echo(json.dumps([m.to_json_dict() for m in matches], indent=2))
        return
    names = identifier.columns(query)
    rows = [[_cell(match, n) for n in names] for match in matches]
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return
    uids = {e.keyword for e in query if e.VR == "UI"}
    matched = {e.keyword for e in query if e.value not in (None, "", [])}
    columns = [table.Column(n, uid=n in uids,
                            priority=2 if n in matched else 1 if n in _IDENTITY else 0)
               for n in names]
    width = shutil.get_terminal_size((240, 24)).columns
    lines, left_out = table.render(columns, rows, width)
    typer.echo(f"{len(matches)} match(es) at {level.value} level")
    for line in lines:
        typer.echo(line)
    if left_out:
        typer.echo(f"({width} columns: left out {', '.join(left_out)}; use --json or --csv, "
                   "or a wider terminal)", err=True)


# ------------------------------------------------------------------------------------ get / move


class _RetrieveProgress:
    """Progress of a C-GET (files written) or C-MOVE (sub-operations)."""

    def __init__(self, verb: str, tty: bool):
        self.verb = verb
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.last = 0.0
        if tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn(f"[bold]{verb}"), BarColumn(),
                                     TextColumn("{task.fields[count]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task(verb, total=None, count="")

    def __enter__(self) -> _RetrieveProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def show(self, done: int, total: int | None) -> None:
        shown = f"{done}/{total if total is not None else '?'}"
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done, total=total, count=shown)
            return
        now = time.monotonic()
        if now - self.last >= 2.0 or (total is not None and done >= total):
            self.last = now
            typer.echo(f"{self.verb}: {shown}", err=True)

    def notice(self, text: str) -> None:
        typer.echo(f"{self.verb}: {text}", err=True)


def _check_study(study: str) -> None:
    if not study.strip():
        raise ValueError("--study needs a Study Instance UID")


def _nothing_retrieved(command: str, summary: fetch.RetrieveSummary, query: Dataset,
                       study: str, series: str | None, image: str | None) -> None:
    """Fail in one line (exit 1) when the server retrieved nothing because nothing it lets
    the caller retrieve matches: an unknown UID, or a study shared read-only (found, not
    retrieved: docs/tenants.md); a C-GET and a C-MOVE say the same."""
    named = (f"--study {study}" + (f" --series {series}" if series else "")
             + (f" --image {image}" if image else ""))
    if summary.expected == 0:
        _fail(command, f"nothing on the server matches {query.QueryRetrieveLevel} level "
                       f"{named}", EXIT_FAILED)
    if summary.withheld:
        _fail(command, f"the server lists {summary.expected} instance(s) under {named} but "
                       "sends none: you may find and view them, not retrieve them (a study "
                       "shared with your organisation read-only); ask its owner for a full "
                       "share", EXIT_FAILED)
    if summary.moved_nothing:
        _fail(command, f"the server moved nothing: nothing it lets you retrieve matches "
                       f"{query.QueryRetrieveLevel} level {named}", EXIT_FAILED)


def get(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID.")],
    to: Annotated[Path, typer.Option("--to", help="Folder for Patient/Study/Series/Instance.dcm.")],
    series: Annotated[str | None, typer.Option("--series", help="Series Instance UID.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="SOP Instance UID.")] = None,
    deidentify: Deidentify = False, option: DeidOption = None,
    include_burned_in: IncludeBurnedIn = False, mapping_key: MappingKey = None,
    clean_allowlist: CleanAllowlist = None, data_dir: AuditDataDir = None,
    server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None, key: Key = None,
    ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None, timeout: Timeout = 30.0,
) -> None:
    """Retrieve a study, series or instance (C-GET) into DIR/Patient/Study/Series/."""
    from securepacs.services import fetch, identifier

    with _errors("get"):
        _check_study(study)
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
        deid = deidentifier(deidentify, option, include_burned_in, mapping_key,
                            clean_allowlist)
        level, query = identifier.retrieve(study, series, image)
        with _RetrieveProgress("get", sys.stderr.isatty()) as bar:
            expected: list[int | None] = [None]
            writer = fetch.InstanceWriter(to, source_ae=ep.endpoint.called_ae, deidentify=deid)
            writer.on_written = lambda _: bar.show(len(writer.written), expected[0])

            def on_expected(n: int) -> None:
                expected[0] = n
                bar.show(0, n)

            def on_progress(p: RetrieveProgress) -> None:
                if expected[0] is None and p.total is not None:
                    expected[0] = p.total

            summary = fetch.get(ep, ep, query, level, writer, on_progress=on_progress,
                                notice=bar.notice, on_expected=on_expected)
    if deid is not None and summary.written:
        _audit_deidentified(data_dir, deid, target=str(to.absolute()), endpoint=ep.endpoint,
                            received=True, success=summary.ok)
    final = summary.final
    _nothing_retrieved("get", summary, query, study, series, image)
    typer.echo(f"retrieved {len(summary.written)} instance(s) into {to} "
               f"(completed {final.completed}, failed {final.failed}, warning {final.warning}, "
               f"final status 0x{final.status.status:04X})")
    for error in summary.errors:
        typer.echo(f"  failed {error}")
    if writer.left_out:
        typer.echo(f"left out {len(writer.left_out)} instance(s) with burned-in annotation "
                   "(--include-burned-in writes them)")
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


def move(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID.")],
    dest: Annotated[str, typer.Option("--dest", help="Destination AE title, as the server knows it.")],
    series: Annotated[str | None, typer.Option("--series", help="Series Instance UID.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="SOP Instance UID.")] = None,
    server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None, key: Key = None,
    ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None, timeout: Timeout = 30.0,
) -> None:
    """Ask the server to send a study, series or instance to another AE (C-MOVE)."""
    from securepacs.clientprofile import valid_ae_title
    from securepacs.services import fetch, identifier

    with _errors("move"):
        _check_study(study)
        destination = valid_ae_title(dest, "--dest")
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
        _, query = identifier.retrieve(study, series, image)
        with _RetrieveProgress("move", sys.stderr.isatty()) as bar:
            def show(p: RetrieveProgress) -> None:
                bar.show(p.completed + p.failed + p.warning, p.total)

            summary = fetch.move(ep, query, destination, on_progress=show, finder=ep)
    _nothing_retrieved("move", summary, query, study, series, image)
    final = summary.final
    typer.echo(f"moved to {destination}: completed {final.completed}, failed {final.failed}, "
               f"warning {final.warning} (final status 0x{final.status.status:04X})")
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)
