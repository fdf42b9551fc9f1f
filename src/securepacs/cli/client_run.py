"""What ``securepacs echo`` and ``securepacs send`` do once their options are parsed.

One responsibility: run those two client commands (SCU: C-ECHO, PS3.7 9.1.5; C-STORE,
PS3.4 B.2) from plain Python values and report the result as lines on stdout/stderr and an
exit code, without Typer, Click or rich (rich only for a progress bar on a terminal). Both
command lines reach these functions: Typer's (:mod:`securepacs.cli.client`, which declares
the options and their help) and the short path of :mod:`securepacs.cli.fast`, which parses
the common command lines itself so that a send of a few images does not spend most of its
time importing Typer.

Exit codes (the contract of every client command): 0 all done, 1 some files or
sub-operations failed, 2 bad arguments or configuration, 3 no connection / association /
permission, 130 interrupted.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from securepacs.errors import ConfigError, PacsError, PkiError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from securepacs.dimse.client import DicomClient as Client
    from securepacs.services.deidentify import Deidentifier
    from securepacs.services.send import SendProgress, SendSummary

EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION, EXIT_INTERRUPTED = 1, 2, 3, 130
_MB = 1_000_000


class UsageProblem(Exception):
    """Options that do not go together: Typer shows it as a usage error (exit 2)."""


def say(text: str, *, err: bool = False) -> None:
    """One line on stdout (or stderr), flushed: what ``typer.echo`` writes for plain text."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:  # no console (pythonw)
        return
    stream.write(f"{text}\n")
    stream.flush()


def fail(command: str, message: str, code: int) -> NoReturn:
    """``securepacs COMMAND: message`` on stderr, then exit with `code`."""
    say(f"securepacs {command}: {message}", err=True)
    raise SystemExit(code)


def endpoint(*, profile: Path | None, server: str | None, aec: str | None, aet: str | None,
             cert: Path | None, key: Path | None, ca: Path | None, no_tls: bool,
             timeout: float) -> Client:
    """Flags over profile over defaults -> the DICOM client for that server (see wiring)."""
    from securepacs.wiring import dicom_client

    return dicom_client(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                        ca=ca, no_tls=no_tls, timeout=timeout)


@contextmanager
def errors(command: str) -> Iterator[None]:
    """Turn every expected error into one line on stderr and an exit code."""
    from securepacs.services.scuport import ConnectionFailed

    try:
        yield
    except ConnectionFailed as exc:
        fail(command, str(exc), EXIT_CONNECTION)
    except (ConfigError, PkiError, ValueError, FileNotFoundError) as exc:
        fail(command, str(exc), EXIT_USAGE)
    except PacsError as exc:
        fail(command, str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        fail(command, "interrupted", EXIT_INTERRUPTED)


# ------------------------------------------------------------------------------------ echo


def run_echo(*, server: str | None = None, aec: str | None = None, aet: str | None = None,
             cert: Path | None = None, key: Path | None = None, ca: Path | None = None,
             no_tls: bool = False, profile: Path | None = None, timeout: float = 30.0) -> None:
    """C-ECHO: prove TLS, certificates, AE titles and the association; one line."""
    with errors("echo"):
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
        result = ep.echo()
    if result.status.category != "success":
        fail("echo", f"{ep.endpoint.where} answered C-ECHO with status 0x{result.status.status:04X}",
             EXIT_FAILED)
    say(f"C-ECHO to {ep.endpoint.where}: success in {result.seconds * 1000:.0f} ms "
        f"({result.cipher}, calling AE {ep.endpoint.calling_ae})")


# ------------------------------------------------------------------------------------ send


class SendBar:
    """A rich progress bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, total: int, total_bytes: int, tty: bool, every: float = 2.0):
        self.tty = tty
        self.every = every
        self.last = 0.0
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        if tty and total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]send"), BarColumn(),
                TextColumn("{task.fields[images]} images"), DownloadColumn(),
                TransferSpeedColumn(), TextColumn("{task.fields[rate]} img/s"),
                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task("send", total=total_bytes,
                                               images=f"0/{total}", rate="0")

    def __enter__(self) -> SendBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, p: SendProgress) -> None:
        rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=p.bytes_done, images=f"{p.done}/{p.total}",
                                 rate=f"{rate:.0f}")
            return
        now = time.monotonic()
        if p.done != p.total and now - self.last < self.every:
            return
        self.last = now
        left = (p.total - p.done) / rate if rate else 0.0
        say(f"send: {p.done}/{p.total} images, {p.bytes_done / _MB:.1f}/"
            f"{p.bytes_total / _MB:.1f} MB, {rate:.0f} images/s, {left:.0f} s left", err=True)

    def notice(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"send: {text}", markup=False, highlight=False)
        else:
            say(f"send: {text}", err=True)


def print_summary(s: SendSummary, verbose: bool) -> None:
    """The summary of a send: counts, rate, and each file that was not simply sent."""
    rate = s.sent / s.seconds if s.seconds > 0 else 0.0
    say(f"found {s.found} instance(s); skipped {len(s.skipped)} non-DICOM file(s)")
    if verbose:
        for label, reason in s.skipped:
            say(f"  skipped {label}: {reason}")
    if s.on_server:
        say(f"resume: {s.on_server} already on the server, not sent again")
    say(f"sent {s.sent}, already present {s.already_present}, failed {len(s.failed)}, "
        f"not sent {s.not_sent} ({s.bytes_sent / _MB:.1f} MB in {s.seconds:.2f} s, "
        f"{rate:.0f} images/s, {s.reconnects} reconnect(s))")
    if s.meta_disagreed:
        say(f"{len(s.meta_disagreed)} file(s) whose File Meta Information disagreed with "
            "the data set were sent with the data set's UIDs:")
        for label, how in s.meta_disagreed:
            say(f"  meta disagreed {label}: {how}")
    for item in s.warnings:
        say(f"  warning {item.label} ({item.sop_instance_uid}): {item.reason}")
    for item in s.failed:
        say(f"  failed {item.label} ({item.sop_instance_uid}): {item.reason}")
    if s.stopped:
        say(f"stopped: {s.stopped}", err=True)


def audit_deidentified(command: str, data_dir: Path | None, deid: Deidentifier, *, target: str,
                       endpoint: object, received: bool, success: bool) -> None:
    """Record a de-identified send or get (DICOM Instances Transferred, PS3.15 A.5.3.5)
    in the local data folder's audit trail: the original patients and studies, marked
    Anonymized. Exit 1 when it cannot be written."""
    from securepacs.settings import load
    from securepacs.wiring import media_audit

    try:
        with media_audit(load(None, overrides={"data_dir": data_dir})) as audit:
            audit.deidentified(target, deid.originals(), method=deid.method_codes(),
                               success=success, received=received,
                               peer_ae=getattr(endpoint, "called_ae", None) or "unknown",
                               peer_address=f"{getattr(endpoint, 'host', '')}")
    except (PacsError, OSError) as exc:
        fail(command, "the de-identified transfer could not be recorded in the audit trail: "
             f"{exc}", EXIT_FAILED)


def run_send(paths: list[Path], *, parallel: int = 1, resume: bool = False,
             set_: list[str] | None = None, retries: int = 3, verbose: bool = False,
             deidentifier: Callable[[], Deidentifier | None] = lambda: None,
             data_dir: Path | None = None, server: str | None = None, aec: str | None = None,
             aet: str | None = None, cert: Path | None = None, key: Path | None = None,
             ca: Path | None = None, no_tls: bool = False, profile: Path | None = None,
             timeout: float = 30.0) -> None:
    """Send DICOM files (C-STORE): progress, retries, a summary; exit 1 if any file failed.

    `deidentifier` builds the de-identification the options ask for (None: none), after
    the endpoint, so that errors come in the same order whichever parser called; it and
    the check that ``--deidentify`` goes without ``--set`` / ``--resume`` raise
    :class:`UsageProblem` (or the caller's own usage error).
    """
    # pydicom only for --set, --deidentify or --resume (securepacs.services.send)
    from securepacs.services.discovery import discover
    from securepacs.services.send import SendOptions
    from securepacs.services.send import send as send_all

    with errors("send"):
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
        deid = deidentifier()
        if deid is not None and (set_ or resume):
            raise UsageProblem("--deidentify does not go with --set or --resume")
        coercion = None
        if set_:
            from securepacs.services.coerce import Coercion

            coercion = Coercion.parse(set_)
        options = SendOptions(parallel=parallel, retries=retries, resume=resume,
                              coercion=coercion, deidentify=deid)
        found = discover(paths)
        if not found.instances:
            for label, reason in found.skipped[:5]:
                say(f"  skipped {label}: {reason}", err=True)
            raise ValueError(f"no DICOM Part 10 file to send among {len(found.skipped)} file(s) "
                             "found")
        with SendBar(len(found.instances), found.total_bytes, sys.stderr.isatty()) as bar:
            summary = send_all(found, ep, options=options, finder=ep,
                               on_progress=bar, notice=bar.notice)
    if deid is not None and (summary.sent or not summary.ok):
        audit_deidentified("send", data_dir, deid, target=" ".join(map(str, paths))[:200],
                           endpoint=ep.endpoint, received=False, success=summary.ok)
    print_summary(summary, verbose)
    if summary.interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    if summary.stopped and not (summary.sent or summary.already_present):
        raise SystemExit(EXIT_CONNECTION)
    if not summary.ok:
        raise SystemExit(EXIT_FAILED)
