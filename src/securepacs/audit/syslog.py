"""Audit records to a syslog collector over TLS: RFC 5424 messages, RFC 5425 transport,
as PS3.15 A.6 (and IHE ATNA) ask, with a disk spool so that nothing is lost while the
collector is away.

One responsibility: turn each record into one RFC 5424 message (``<85>1`` — facility 10
security/authorization, severity 5 notice — timestamp, host, ``securepacs``, process ID,
MSGID ``IHE+RFC-3881``, structured data ``[securepacs@32473 recordId="..."]``, then the
PS3.15 A.5.1 XML as MSG), frame it by octet counting (RFC 5425 4.3: ``MSG-LEN SP
SYSLOG-MSG``) and deliver it over a TLS connection.

Delivery: :meth:`SyslogSink.emit` only writes the framed message to the spool (a folder, one
file per message, written to a temporary name, fsynced, renamed); a sender thread sends the
spool in order and reconnects with exponential backoff on any failure.

RFC 5425 (TLS over TCP) has no application-level acknowledgement, so a message written to
the connection is not known to be stored. A sent message stays in the spool, *in flight*,
until the connection is still open ``confirm_after`` seconds (default 1) after it was written:
a collector stores what it reads within that time, and one that stops (restart, crash)
closes or resets its connections well within it, so the end of the connection is seen
first. When the connection ends (orderly close, reset, write error), every in-flight message
is sent again on the next connection. An orderly close with every byte acknowledged proves
only that the collector *read* the bytes, not that it stored them: rsyslog drops messages it
has read but not yet processed when it shuts down (the integration test saw it), so no
close confirms anything.

Guarantees, honestly: *at-least-once* for everything that reached the spool, through
collector restarts, crashes and outages of any length, as long as a dying collector ends its
connections within ``confirm_after``. *No duplicates* when the collector stops at a quiet
moment (nothing sent in the last ``confirm_after`` seconds); messages in flight when it goes
away are sent again and may arrive twice — the structured data's ``recordId`` identifies
them. Not covered: a collector that loses what it has stored (its queues, its disk), a
collector that stays silent longer than ``confirm_after`` before resetting. A crash of this
host loses nothing spooled (fsynced); what was in flight is sent again. Never exactly-once:
RFC 5425 cannot give that (RELP or an acknowledging protocol would). The database table
(:mod:`securepacs.index.audit`) remains the authoritative, verifiable record. The SD-ID
uses the documentation enterprise number 32473 (RFC 5612); a site with its own number may
change it.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from securepacs.audit.record import AuditRecord
from securepacs.audit.serialize import to_xml, xml_time

__all__ = ["DirectorySpool", "Stream", "SyslogSink", "format_checkpoint", "format_message",
           "frame"]

log = logging.getLogger("securepacs.audit")

FACILITY = 10  # security/authorization messages (RFC 5424 6.2.1)
SEVERITY = 5  # notice
MSGID = "IHE+RFC-3881"
SD_ID = "securepacs@32473"


def _header_field(value: str | None, limit: int) -> str:
    text = "".join(c for c in (value or "") if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def _sd_value(value: str) -> str:
    return re.sub(r'(["\\\]])', r"\\\1", value)


def format_message(record: AuditRecord, *, hostname: str, app_name: str = "securepacs",
                   procid: str | None = None) -> bytes:
    """One RFC 5424 message carrying `record` as PS3.15 A.5.1 XML.

    Parameters
    ----------
    record : AuditRecord
        With its audit source set.
    hostname : str
        HOSTNAME field (FQDN, host name or IP address; RFC 5424 6.2.4).
    app_name, procid : str
        APP-NAME and PROCID (default: this process ID).
    """
    pri = FACILITY * 8 + SEVERITY
    header = " ".join([
        f"<{pri}>1", xml_time(record.at), _header_field(hostname, 255),
        _header_field(app_name, 48), _header_field(procid or str(os.getpid()), 128), MSGID])
    sd = f'[{SD_ID} recordId="{_sd_value(record.record_id)}"]'
    return f"{header} {sd} ".encode("ascii") + to_xml(record)


CHECKPOINT_MSGID = "AUDIT-CHECKPOINT"


def format_checkpoint(line: str, at: datetime, *, hostname: str, app_name: str = "securepacs",
                      procid: str | None = None) -> bytes:
    """One RFC 5424 message carrying a signed audit checkpoint's JSON line as MSG
    (:mod:`securepacs.audit.checkpoint`), MSGID ``AUDIT-CHECKPOINT``, no structured data."""
    pri = FACILITY * 8 + SEVERITY
    header = " ".join([
        f"<{pri}>1", xml_time(at), _header_field(hostname, 255), _header_field(app_name, 48),
        _header_field(procid or str(os.getpid()), 128), CHECKPOINT_MSGID])
    return f"{header} - {line}".encode()


def frame(message: bytes) -> bytes:
    """RFC 5425 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class Stream(Protocol):
    """A connected one-way TLS stream (:class:`securepacs.pki.tlspolicy.TlsStream`)."""

    def sendall(self, data: bytes) -> None: ...

    def peer_state(self) -> str:
        """``"open"``, ``"closed"`` (orderly, every byte read) or ``"reset"``."""
        ...

    def close(self) -> None: ...


class DirectorySpool:
    """Messages waiting for the collector: one file each, named by a growing sequence number.

    Parameters
    ----------
    folder : Path
        Created (mode 0700) if missing; entries left by a previous run are sent first.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.folder.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        numbers = [int(p.stem) for p in self.folder.glob("*.msg") if p.stem.isdigit()]
        self._counter = itertools.count(max(numbers, default=0) + 1)
        self._lock = threading.Lock()

    def put(self, data: bytes) -> Path:
        """Store `data` durably (write, fsync, rename) and return its entry."""
        with self._lock:
            number = next(self._counter)
        final = self.folder / f"{number:016d}.msg"
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        return final

    def pending(self) -> list[Path]:
        """Entries in the order they were put."""
        return sorted(self.folder.glob("*.msg"))

    def remove(self, entry: Path) -> None:
        entry.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SyslogSink:
    """Send audit records to a syslog collector over TLS (RFC 5425), through a disk spool.

    Parameters
    ----------
    connect : callable
        Opens a new :class:`Stream` to the collector (raises ``OSError`` when it cannot),
        e.g. ``lambda: tlspolicy.connect_tls(host, port, context, timeout=10)``.
    spool : DirectorySpool
        Where messages wait; nothing is removed before it is confirmed (module docstring).
    hostname : str
        RFC 5424 HOSTNAME of this system.
    min_backoff, max_backoff : float
        Seconds between reconnection attempts, doubling from min to max.
    confirm_after : float
        Seconds a sent message stays in flight on an open connection before it is removed.
    """

    name = "syslog"

    def __init__(self, connect: Callable[[], Stream], spool: DirectorySpool, *, hostname: str,
                 app_name: str = "securepacs", min_backoff: float = 0.2,
                 max_backoff: float = 30.0, confirm_after: float = 1.0) -> None:
        self._connect = connect
        self.spool = spool
        self._hostname = hostname
        self._app_name = app_name
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._confirm_after = confirm_after
        self._stream: Stream | None = None
        self._in_flight: dict[Path, float] = {}  # entry -> monotonic time it was written
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sent = 0
        self.resent = 0
        self.connects = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="audit-syslog-sender", daemon=True)
        self._thread.start()

    def emit(self, record: AuditRecord) -> None:
        """Spool `record` (durably) and wake the sender; raises ``OSError`` if the disk fails."""
        self.spool.put(format_message(record, hostname=self._hostname, app_name=self._app_name))
        self._wake.set()

    def emit_checkpoint(self, line: str, at: datetime) -> None:
        """Spool a signed audit checkpoint (durably) and wake the sender."""
        self.spool.put(format_checkpoint(line, at, hostname=self._hostname,
                                         app_name=self._app_name))
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Messages in the spool: not yet sent, or sent and not yet confirmed."""
        return len(self.spool.pending())

    def _run(self) -> None:
        delay = self._min_backoff
        while not self._stop.is_set():
            if self._stream is not None and not self._check():
                continue
            entries = [e for e in self.spool.pending() if e not in self._in_flight]
            if not entries:
                self._wake.wait(min(1.0, self._confirm_after / 2) if self._in_flight else 1.0)
                self._wake.clear()
                continue
            if self._stream is None:
                try:
                    self._stream = self._connect()
                    self.connects += 1
                    delay = self._min_backoff
                    if self.last_error:
                        log.info("audit collector reachable again")
                    self.last_error = None
                except OSError as exc:
                    self._failed(f"cannot connect: {exc}")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self._max_backoff)
                    continue
            self._send(entries)
        self._finish()

    def _check(self) -> bool:
        """Confirm or take back the in-flight messages; False when the connection ended."""
        stream = self._stream
        assert stream is not None
        state = stream.peer_state()
        if state == "open":
            limit = time.monotonic() - self._confirm_after
            while self._in_flight:  # oldest first (dicts keep insertion order)
                entry, sent_at = next(iter(self._in_flight.items()))
                if sent_at > limit:
                    break
                self._confirm(entry)
            return True
        # Even an orderly close with every byte acknowledged does not prove the collector
        # stored what it read: rsyslog drops messages it has read but not yet processed when
        # it shuts down (seen in tests/integration/test_audit_syslog.py). So whatever is in
        # flight is sent again.
        self._failed("the collector closed the connection" if state == "closed"
                     else "the collector reset the connection")
        self._drop_stream()
        return False

    def _confirm(self, entry: Path) -> None:
        self.spool.remove(entry)
        del self._in_flight[entry]

    def _send(self, entries: list[Path]) -> None:
        for entry in entries:
            if self._stop.is_set() or not self._check():
                return
            stream = self._stream
            assert stream is not None
            try:
                data = entry.read_bytes()
            except FileNotFoundError:
                continue
            try:
                stream.sendall(frame(data))
            except OSError as exc:
                self._failed(f"send failed: {exc}")
                self._drop_stream()
                return
            self._in_flight[entry] = time.monotonic()
            self.sent += 1

    def _failed(self, reason: str) -> None:
        if reason != self.last_error:
            log.warning("audit collector: %s (messages kept in %s)", reason, self.spool.folder)
        self.last_error = reason

    def _drop_stream(self) -> None:
        """Close the connection; what was in flight on it will be sent again."""
        if self._in_flight:
            self.resent += len(self._in_flight)
            self._in_flight.clear()
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _finish(self) -> None:
        """On close: give in-flight messages their confirmation time, then close."""
        if self._stream is not None and self._in_flight:
            wait = max(self._in_flight.values()) + self._confirm_after - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, self._confirm_after))
            if self._check():
                for entry in list(self._in_flight):
                    self._confirm(entry)
        self._drop_stream()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sender; what is not confirmed stays in the spool for the next run."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
