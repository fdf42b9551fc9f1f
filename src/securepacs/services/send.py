"""Sending instances to a Storage SCP (PS3.4 B.2): plan, send in parallel, retry, summarise.

One responsibility: given what :func:`~securepacs.services.discovery.discover` found, group
the (SOP Class, Transfer Syntax) pairs into associations of at most 128 presentation
contexts (PS3.8 9.3.2.2), skip what the server already holds (``resume``), send each
instance's bytes as they are (or coerced, :mod:`~securepacs.services.coerce`) over `parallel`
associations, open a new association when one is lost (A-ABORT, reset, DIMSE timeout), and
report per file what happened. Network code comes in through
:class:`~securepacs.services.scuport.StoreConnector`.

Status handling (PS3.4 B.2.3): Success -> sent; Warning 0xB006 whose comment says
"Duplicate" (what securepacs answers for an instance it already holds) -> already present;
other Warnings -> sent, listed; 0x0124 Refused: Not Authorized -> stop (every other file
would be refused too); other Failures -> failed, with status and comment.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import TYPE_CHECKING

from securepacs.errors import InvalidInstanceError, QueryError
from securepacs.services.discovery import Discovery, Instance, Sources
from securepacs.services.scuport import (
    STATUS_NOT_AUTHORIZED,
    ConnectionFailed,
    DimseStatus,
    Finder,
    PermissionRefused,
    StoreConnector,
    StoreRequest,
    StoreSession,
)

# A plain send reads only the File Meta Information and sends the bytes as they are: it
# needs no pydicom (and numpy, its pixel decoders), about half a second of start-up of
# ``securepacs send``. Coercion, de-identification, resume and the names of refused
# syntaxes import it when they run.
if TYPE_CHECKING:
    from securepacs.services.coerce import Coercion
    from securepacs.services.deidentify import Deidentifier

MAX_CONTEXTS = 128

_STORE_STATUS = {  # PS3.4 Table B.2-1, PS3.7 C
    0x0110: "Processing failure",
    0x0117: "Invalid SOP Instance",
    0x0122: "SOP Class not supported",
    0x0124: "Refused: Not Authorized",
    0x0211: "Unrecognized operation",
    0xB000: "Coercion of data elements",
    0xB006: "Elements discarded",
    0xB007: "Data set does not match SOP Class",
}


def status_text(status: int) -> str:
    """A C-STORE status in words (PS3.4 B.2.3), e.g. ``"0xA700 Refused: Out of Resources"``."""
    if status in _STORE_STATUS:
        meaning = _STORE_STATUS[status]
    elif 0xA700 <= status <= 0xA7FF:
        meaning = "Refused: Out of Resources"
    elif 0xA900 <= status <= 0xA9FF:
        meaning = "Error: Data Set does not match SOP Class"
    elif 0xC000 <= status <= 0xCFFF:
        meaning = "Error: Cannot understand"
    else:
        meaning = "Failure"
    return f"0x{status:04X} {meaning}"


def plan(pairs: Iterable[tuple[str, str]], limit: int = MAX_CONTEXTS) -> list[list[tuple[str, str]]]:
    """Split the distinct (SOP Class, Transfer Syntax) pairs into groups of at most `limit`.

    Each pair becomes one presentation context carrying exactly that transfer syntax, so
    every file can go out as it is; each group is one kind of association. Pairs are sorted
    so that one SOP class's syntaxes stay together and the plan is reproducible.
    """
    if not 0 < limit <= MAX_CONTEXTS:
        raise ValueError(f"limit must be 1..{MAX_CONTEXTS}")
    unique = sorted(set(pairs))
    return [unique[i:i + limit] for i in range(0, len(unique), limit)]


@dataclass(frozen=True)
class SendOptions:
    """How to send: associations in parallel, retries per file, resume, coercion."""

    parallel: int = 1
    retries: int = 3
    retry_delay: float = 0.5
    resume: bool = False
    coercion: Coercion | None = None
    deidentify: Deidentifier | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.parallel <= 32:
            raise ValueError("--parallel must be 1 to 32")
        if self.retries < 0:
            raise ValueError("--retries must be 0 or more")


@dataclass(frozen=True)
class FileResult:
    """What happened to one file that was not simply sent."""

    label: str
    sop_instance_uid: str
    reason: str
    status: int | None = None


@dataclass(frozen=True)
class SendProgress:
    """Counts so far, for a progress bar."""

    done: int
    total: int
    bytes_done: int
    bytes_total: int
    elapsed: float


@dataclass
class SendSummary:
    """The outcome of :func:`send`.

    ``not_sent`` counts files never tried because the send stopped (``stopped`` says why,
    or ``interrupted`` is set). ``meta_disagreed`` lists (file, how) the files whose File Meta
    Information named other UIDs than their data set (sent with the data set's, as storescu).
    """

    found: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    on_server: int = 0
    sent: int = 0
    already_present: int = 0
    warnings: list[FileResult] = field(default_factory=list)
    failed: list[FileResult] = field(default_factory=list)
    not_sent: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    reconnects: int = 0
    stopped: str | None = None
    interrupted: bool = False
    meta_disagreed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every instance found is on the server now."""
        return not self.failed and not self.not_sent and self.stopped is None and not self.interrupted


class _Run:
    """State shared by the worker threads of one :func:`send`."""

    def __init__(self, connector: StoreConnector, options: SendOptions, summary: SendSummary,
                 total: int, total_bytes: int,
                 on_progress: Callable[[SendProgress], None] | None,
                 notice: Callable[[str], None]):
        self.connector = connector
        self.options = options
        self.summary = summary
        self.total = total
        self.total_bytes = total_bytes
        self.on_progress = on_progress
        self.notice = notice
        self.sources = Sources()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.start = time.monotonic()
        self.done = 0
        self.done_bytes = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def _advance(self, instance: Instance) -> None:
        self.done += 1
        self.done_bytes += instance.length
        if self.on_progress is not None:
            self.on_progress(SendProgress(self.done, self.total, self.done_bytes,
                                          self.total_bytes, time.monotonic() - self.start))

    def record(self, instance: Instance, status: DimseStatus | None, reason: str = "") -> None:
        s = self.summary
        with self.lock:
            if status is None:
                s.failed.append(FileResult(instance.label, instance.sop_instance_uid, reason))
            elif status.category == "success":
                s.sent += 1
                s.bytes_sent += instance.length
            elif status.status == 0xB006 and "duplicate" in status.comment.lower():
                s.already_present += 1
            elif status.category == "warning":
                s.sent += 1
                s.bytes_sent += instance.length
                s.warnings.append(FileResult(instance.label, instance.sop_instance_uid,
                                             _described(status), status.status))
            else:
                s.failed.append(FileResult(instance.label, instance.sop_instance_uid,
                                           _described(status), status.status))
            self._advance(instance)

    def fatal(self, error: ConnectionFailed) -> None:
        with self.lock:
            if self.summary.stopped is None:
                self.summary.stopped = str(error)
        self.stop.set()

    # -- one file ------------------------------------------------------------------------
    def request(self, instance: Instance) -> StoreRequest:
        if self.options.deidentify is not None:
            return self._deidentified(instance, self.options.deidentify)
        coercion = self.options.coercion
        if coercion is None:
            return StoreRequest(instance.sop_class_uid, instance.sop_instance_uid,
                                instance.transfer_syntax_uid, instance.length,
                                lambda: self.sources.open_dataset(instance))
        from securepacs.services.coerce import coerce_file

        data, _ = coerce_file(self.sources.read_file(instance), coercion, at=datetime.now(UTC))
        return StoreRequest(instance.sop_class_uid, instance.sop_instance_uid,
                            instance.transfer_syntax_uid, len(data), lambda: BytesIO(data))

    def _deidentified(self, instance: Instance, deid: Deidentifier) -> StoreRequest:
        from securepacs.services.deidentify import deidentify_for_store

        try:
            made = deidentify_for_store(deid, self.sources.read_file(instance))
        except ValueError as exc:
            raise InvalidInstanceError(f"{instance.label}: {exc}") from None
        if made is None:  # flagged after the first look: never sent as it is
            raise InvalidInstanceError(f"{instance.label}: burned-in annotation")
        uid, data = made
        return StoreRequest(instance.sop_class_uid, uid, instance.transfer_syntax_uid,
                            len(data), lambda: BytesIO(data))

    # -- a worker: one association at a time ---------------------------------------------
    def work(self, pairs: Sequence[tuple[str, str]], items: queue.Queue[Instance],
             done: threading.Event) -> None:
        session: StoreSession | None = None
        try:
            while not self.stop.is_set():
                try:
                    instance = items.get_nowait()
                except queue.Empty:
                    return
                session = self._one(pairs, session, instance)
        finally:
            if session is not None:
                session.close()
            done.set()

    def _one(self, pairs: Sequence[tuple[str, str]], session: StoreSession | None,
             instance: Instance) -> StoreSession | None:
        attempt = 0
        while True:
            if self.stop.is_set():
                with self.lock:
                    self.summary.not_sent += 1
                return session
            opening = True
            try:
                if session is None:
                    session = self.connector.open_store(pairs)
                opening = False
                refusal = session.refused(*instance.pair)
                if refusal is not None:
                    self.record(instance, None, f"{_kind(instance)}: {refusal}")
                    return session
                try:
                    request = self.request(instance)
                except (InvalidInstanceError, OSError) as exc:
                    self.record(instance, None, str(exc))
                    return session
                status = session.store(request)
            except ConnectionFailed as exc:
                if session is not None:
                    session.abort()
                    session = None
                if not exc.transient:
                    self.fatal(exc)
                    with self.lock:
                        self.summary.not_sent += 1
                    return None
                if attempt >= self.options.retries:
                    if opening:  # no new association at all: the next files would fare no better
                        self.fatal(exc)
                        with self.lock:
                            self.summary.not_sent += 1
                        return None
                    self.record(instance, None, f"{exc} (gave up after {attempt} retries)")
                    return None
                attempt += 1
                with self.lock:
                    self.summary.reconnects += 1
                self.notice(f"{exc}; new association, try {attempt + 1} of "
                            f"{self.options.retries + 1} for {instance.label}")
                self.stop.wait(self.options.retry_delay * attempt)
                continue
            self.record(instance, status)
            if status.status == STATUS_NOT_AUTHORIZED:
                self.fatal(PermissionRefused(
                    f"permission refused: the server does not allow this client to store "
                    f"(status 0x0124 Refused: Not Authorized{_comment(status)})"))
            return session


def _comment(status: DimseStatus) -> str:
    return f": {status.comment}" if status.comment else ""


def _described(status: DimseStatus) -> str:
    return status_text(status.status) + _comment(status)


def _kind(instance: Instance) -> str:
    from pydicom.uid import UID

    return f"{UID(instance.sop_class_uid).name} in {UID(instance.transfer_syntax_uid).name}"


def _skip_present(found: list[Instance], finder: Finder, summary: SendSummary,
                  notice: Callable[[str], None]) -> list[Instance]:
    from securepacs.services.identifier import existing

    try:
        present = existing(finder, (i.sop_instance_uid for i in found))
    except (PermissionRefused, QueryError) as exc:
        notice(f"cannot resume ({exc}); sending everything")
        return found
    summary.on_server = sum(1 for i in found if i.sop_instance_uid in present)
    return [i for i in found if i.sop_instance_uid not in present]


def _without_burned_in(todo: list[Instance], summary: SendSummary) -> list[Instance]:
    """`todo` less the instances flagged for burned-in annotation (moved to ``skipped``)."""
    from securepacs.services.deidentify import burned_in_part10

    sources = Sources()
    kept = []
    try:
        for instance in todo:
            try:
                flagged = burned_in_part10(sources.read_file(instance))
            except Exception:  # unreadable: the send reports it as usual
                flagged = False
            if flagged:
                summary.skipped.append((instance.label, "burned-in annotation: not sent "
                                        "de-identified (--include-burned-in sends it)"))
            else:
                kept.append(instance)
    finally:
        sources.close()
    return kept


def send(discovery: Discovery, connector: StoreConnector, *, options: SendOptions = SendOptions(),
         finder: Finder | None = None,
         on_progress: Callable[[SendProgress], None] | None = None,
         notice: Callable[[str], None] = lambda _: None) -> SendSummary:
    """Send every instance of `discovery`; never raises for a per-file problem.

    Parameters
    ----------
    discovery : Discovery
        What to send (and what was skipped, copied into the summary).
    connector : StoreConnector
        Opens store associations.
    options : SendOptions
    finder : Finder or None
        Needed for ``options.resume``: the instances the server already holds are skipped.
    on_progress : callable or None
        Called after each file, from the worker threads, one call at a time.
    notice : callable
        Receives one-line messages (retries, resume problems).

    Returns
    -------
    SendSummary
        Interrupted by KeyboardInterrupt, the workers finish their current file and the
        summary says ``interrupted``.

    Raises
    ------
    ConnectionFailed
        Only from the resume lookup when the server cannot be reached at all.
    """
    summary = SendSummary(found=len(discovery.instances), skipped=list(discovery.skipped),
                          meta_disagreed=[(i.label, i.meta_disagrees) for i in discovery.instances
                                          if i.meta_disagrees])
    todo = list(discovery.instances)
    if options.deidentify is not None and not options.deidentify.include_burned_in:
        todo = _without_burned_in(todo, summary)
    if options.resume and todo:
        if finder is None:
            raise ValueError("resume needs a finder")
        todo = _skip_present(todo, finder, summary, notice)
    run = _Run(connector, options, summary, len(todo), sum(i.length for i in todo),
               on_progress, notice)
    try:
        for pairs in plan(i.pair for i in todo):
            if run.stop.is_set():
                break
            wanted = set(pairs)
            items: queue.Queue[Instance] = queue.Queue()
            for instance in todo:
                if instance.pair in wanted:
                    items.put(instance)
            # Waiting on events, not Thread.join: a join interrupted by KeyboardInterrupt
            # may return early afterwards (CPython 3.11), abandoning a file in flight.
            done = [threading.Event() for _ in range(min(options.parallel, items.qsize()))]
            for n, event in enumerate(done):
                threading.Thread(target=run.work, args=(pairs, items, event), daemon=True,
                                 name=f"send-{n}").start()
            try:
                for event in done:
                    while not event.wait(0.2):
                        pass
            except KeyboardInterrupt:
                summary.interrupted = True
                run.stop.set()
                for event in done:
                    while not event.wait(0.2):
                        pass
            summary.not_sent += items.qsize()
            if summary.interrupted:
                break
        handled = (summary.sent + summary.already_present + len(summary.failed)
                   + summary.not_sent)
        summary.not_sent += len(todo) - handled
    finally:
        run.sources.close()
        summary.seconds = time.monotonic() - run.start
    return summary


__all__ = ["FileResult", "SendOptions", "SendProgress", "SendSummary", "plan",
           "send", "status_text"]
