"""Signed checkpoints of the audit hash chain, kept outside the database.

One responsibility: anchor the audit table's hash chain (:mod:`securepacs.index.audit`) where
whoever can rewrite the database cannot follow. A checkpoint says "at time T the chain held N
records and record N's hash was H", is signed with a key the database does not hold (Ed25519,
RFC 8032; :mod:`securepacs.pki.checkpointkey`), and names the SHA-256 of the checkpoint line
before it, so the checkpoints form a chain of their own. Each one is appended, one
``write(2)`` with ``O_APPEND`` followed by ``fsync``, to a separate file (one JSON object a
line, mode 0600) and sent to the syslog collector when one is configured (PS3.15 A.6 keeps
the audit repository off the host).

:class:`CheckpointSink` rides on the audit trail (:mod:`securepacs.audit.trail`): a timer
writes a checkpoint every ``interval`` seconds when the chain has grown, and closing the trail
writes a last one, after every queued record has reached the database. :func:`check` compares
a checkpoint file with the database's chain (``audit verify --checkpoints``): a checkpoint
whose record is missing (deleted newest rows, everything deleted) or whose record hash differs
(a row edited and the chain recomputed) is reported, as is a checkpoint line that was edited,
forged, removed or inserted.

What it cannot see, stated plainly: records written after the last checkpoint (deleting them
and rewinding ``audit_head`` leaves a consistent chain); someone who holds the signing key
(they can rewrite the chain and the checkpoint file together; a copy of the checkpoints at
the collector, or the public key kept elsewhere, is what stands against that); the newest
checkpoint lines removed from the file alone (the collector's copy shows them).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

__all__ = [
    "FORMAT",
    "GENESIS",
    "Checkpoint",
    "CheckpointFile",
    "CheckpointReport",
    "CheckpointSink",
    "ChainHead",
    "Signer",
    "Verifier",
    "check",
    "parse_lines",
    "verify_against",
]

log = logging.getLogger("securepacs.audit")

FORMAT = "securepacs-audit-checkpoint/1"
_MARK = FORMAT.split("/", 1)[0]
GENESIS = "0" * 64


class Signer(Protocol):
    """Signs checkpoint payloads (:class:`securepacs.pki.checkpointkey.CheckpointSigner`)."""

    key_id: str

    def sign(self, payload: bytes) -> bytes: ...


class Verifier(Protocol):
    """Checks checkpoint signatures (:class:`securepacs.pki.checkpointkey.CheckpointVerifier`)."""

    key_id: str

    def verify(self, payload: bytes, signature: bytes) -> bool: ...


class ChainHead(Protocol):
    """The audit table's head: ``(records, hash of the last)`` (``SqlAuditLog.head``)."""

    def head(self) -> tuple[int, str]: ...


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Checkpoint:
    """One signed statement about the audit chain.

    Attributes
    ----------
    seq : int
        Records in the chain (the sequence number of the last one; 0 when empty).
    head : str
        Hex SHA-256 chain hash of record `seq` (:data:`GENESIS` when empty).
    at : str
        When it was taken (ISO 8601, UTC).
    source : str
        Who took it (the audit source: the server's AE title).
    key_id : str
        Which key signed it.
    prev : str
        Hex SHA-256 of the previous checkpoint's line (:data:`GENESIS` for the first).
    signature : str
        Base64 Ed25519 signature of :meth:`payload`.
    """

    seq: int
    head: str
    at: str
    source: str
    key_id: str
    prev: str
    signature: str = ""

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON of every field but the signature."""
        fields = {"format": FORMAT, "seq": self.seq, "head": self.head, "at": self.at,
                  "source": self.source, "key_id": self.key_id, "prev": self.prev}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def line(self) -> str:
        """One JSON line (no newline), the form written to the file and to syslog."""
        fields = json.loads(self.payload())
        fields["signature"] = self.signature
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """Hex SHA-256 of :meth:`line`: what the next checkpoint's ``prev`` names."""
        return hashlib.sha256(self.line().encode("utf-8")).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse one checkpoint line.

        Raises
        ------
        ValueError
            Not a checkpoint of this format.
        """
        fields = json.loads(text)
        if not isinstance(fields, dict) or fields.get("format") != FORMAT:
            raise ValueError("not a securepacs audit checkpoint")
        seq = fields.get("seq")
        names = ("head", "at", "source", "key_id", "prev", "signature")
        strings = [fields.get(k) for k in names]
        if type(seq) is not int or seq < 0 or not all(isinstance(v, str) for v in strings):
            raise ValueError("a checkpoint field is missing or of the wrong type")
        head, at, source, key_id, prev, signature = (str(v) for v in strings)
        if len(head) != 64 or len(prev) != 64:
            raise ValueError("a checkpoint hash is not 64 hex digits")
        return cls(seq, head, at, source, key_id, prev, signature)

    @classmethod
    def make(cls, *, seq: int, head: str, at: datetime, source: str, signer: Signer,
             previous: Checkpoint | None) -> Checkpoint:
        """A new checkpoint, signed, following `previous`."""
        unsigned = cls(seq, head, _time(at), source, signer.key_id,
                       previous.digest if previous is not None else GENESIS)
        signature = base64.b64encode(signer.sign(unsigned.payload())).decode("ascii")
        return cls(**{**unsigned.__dict__, "signature": signature})


def parse_lines(lines: Iterable[str]) -> list[tuple[int, Checkpoint | str]]:
    """The checkpoints in `lines` (a checkpoint file, or a collector's log lines).

    A line that mentions :data:`FORMAT` is a checkpoint: its JSON object is taken from the
    first ``{`` (a syslog line has a header before it), or is the string value of a JSON
    object's member (a collector that writes its messages as JSON). Other lines are skipped;
    a repeated checkpoint (syslog delivers at least once) counts once.

    Returns
    -------
    list of (int, Checkpoint or str)
        Line number and the checkpoint, or a one-line reason it could not be read.
    """
    out: list[tuple[int, Checkpoint | str]] = []
    last = None
    for number, raw in enumerate(lines, 1):
        if _MARK not in raw:  # a JSON writer may have escaped the "/" of FORMAT
            continue
        text = _checkpoint_text(raw[raw.find("{"):].strip())
        if text == last:
            continue
        last = text
        try:
            out.append((number, Checkpoint.from_json(text)))
        except ValueError as exc:
            out.append((number, f"not a readable checkpoint ({exc})".splitlines()[0]))
    return out


def _checkpoint_text(text: str) -> str:
    """`text`, or the member of the JSON object `text` that holds the checkpoint."""
    try:
        outer = json.loads(text)
    except ValueError:
        return text
    if isinstance(outer, dict) and outer.get("format") != FORMAT:
        for value in outer.values():
            if isinstance(value, str) and FORMAT in value:
                return value[value.find("{"):].strip()
    return text


class CheckpointFile:
    """The append-only checkpoint file (mode 0600; its folder is made 0700 if missing).

    Appending takes an exclusive ``flock`` on the file, reads the last checkpoint (for the
    ``prev`` link), lets the caller take the chain's head, and writes one line with one
    ``write`` on an ``O_APPEND`` descriptor, then ``fsync``: processes of one data folder
    (``workers``, a CLI command beside ``serve``) never fork the checkpoint chain.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, build: Callable[[Checkpoint | None], Checkpoint | None]) -> Checkpoint | None:
        """Append ``build(last checkpoint)`` unless it returns None; returns what was written.

        Raises
        ------
        OSError
            The file cannot be opened or written.
        """
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = self._last(fd)
            checkpoint = build(last)
            if checkpoint is not None:
                os.write(fd, (checkpoint.line() + "\n").encode("utf-8"))
                os.fsync(fd)
            return checkpoint
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _last(fd: int) -> Checkpoint | None:
        size = os.fstat(fd).st_size
        start = max(0, size - 4096)
        tail = os.pread(fd, size - start, start).decode("utf-8", "replace")
        for line in reversed(tail.splitlines()):
            with contextlib.suppress(ValueError):
                return Checkpoint.from_json(line)
        return None

    def lines(self) -> list[str]:
        """Every line of the file (raises ``OSError`` when it cannot be read)."""
        return self.path.read_text(encoding="utf-8", errors="replace").splitlines()


@dataclass
class CheckpointReport:
    """What :func:`check` found.

    Attributes
    ----------
    checkpoints : int
        Checkpoints read.
    problems : list of str
        One line each; empty when the chain agrees with every checkpoint.
    last : Checkpoint or None
        The newest checkpoint (what is anchored: records 1 to ``last.seq``).
    """

    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    last: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.last is not None


def check(entries: list[tuple[int, Checkpoint | str]], verifier: Verifier, *, records: int,
          chain_intact: bool, hashes: Mapping[int, str]) -> CheckpointReport:
    """Compare checkpoints with the database's audit chain.

    Parameters
    ----------
    entries : list
        From :func:`parse_lines`.
    verifier : Verifier
        The checkpoint key's public half.
    records : int
        Records in the database's chain as walked (up to the first broken link).
    chain_intact : bool
        Whether the walk found the chain intact (hashes beyond a broken link are unknown).
    hashes : mapping of int to str
        The chain hash of each record a checkpoint names, as stored.

    Returns
    -------
    CheckpointReport
    """
    report = CheckpointReport()
    previous: Checkpoint | None = None
    for number, entry in entries:
        if isinstance(entry, str):
            report.problems.append(f"checkpoint line {number}: {entry} (edited)")
            continue
        report.checkpoints += 1
        cp = entry
        if cp.key_id != verifier.key_id:
            report.problems.append(f"checkpoint line {number} ({cp.at}): signed by key "
                                   f"{cp.key_id}, not {verifier.key_id}")
            continue
        try:
            signature = base64.b64decode(cp.signature, validate=True)
        except ValueError:
            signature = b""
        if not verifier.verify(cp.payload(), signature):
            report.problems.append(f"checkpoint line {number} ({cp.at}): the signature does not "
                                   "verify (the checkpoint was forged or edited)")
            continue
        expected_prev = previous.digest if previous is not None else GENESIS
        if cp.prev != expected_prev:
            report.problems.append(f"checkpoint line {number} ({cp.at}): does not follow the "
                                   "checkpoint before it (a checkpoint was removed or inserted)")
        if previous is not None and cp.seq < previous.seq:
            report.problems.append(f"checkpoint line {number} ({cp.at}): anchors {cp.seq} "
                                   f"records, fewer than the {previous.seq} before it")
        previous = report.last = cp
        _compare(cp, number, report, records=records, chain_intact=chain_intact, hashes=hashes)
    if report.last is None and not report.problems:
        report.problems.append("no checkpoint: nothing anchors the audit chain")
    return report


def _compare(cp: Checkpoint, number: int, report: CheckpointReport, *, records: int,
             chain_intact: bool, hashes: Mapping[int, str]) -> None:
    if cp.seq == 0:
        return
    where = f"checkpoint line {number} ({cp.at})"
    if cp.seq > records:
        if not chain_intact:
            return  # the broken link is reported by the chain walk
        what = ("the database holds no audit record (everything was deleted)" if records == 0
                else f"the database's chain ends at record {records} (records were deleted)")
        report.problems.append(f"{where}: anchors {cp.seq} records, but {what}")
        return
    stored = hashes.get(cp.seq)
    if stored is not None and stored != cp.head:
        report.problems.append(f"{where}: record {cp.seq} differs from the signed checkpoint "
                               "(the chain was rewritten)")


class ChainWalk(Protocol):
    """The audit table's chain walk (``SqlAuditLog.verify``)."""

    def verify(self, columns: Callable[[bytes], Mapping[str, object]] | None = None,
               anchors: Collection[int] = ()) -> ChainWalkReport: ...


class ChainWalkReport(Protocol):
    ok: bool
    checked: int
    anchors: Mapping[int, str]


def verify_against(chain: ChainWalk, lines: Iterable[str], verifier: Verifier, *,
                   columns: Callable[[bytes], Mapping[str, object]] | None = None
                   ) -> tuple[ChainWalkReport, CheckpointReport]:
    """Walk the database's chain and compare it with the checkpoints in `lines`.

    Returns
    -------
    (chain report, checkpoint report)
        The chain walk (first broken link) and what the checkpoints say about it.
    """
    entries = parse_lines(lines)
    seqs = {e.seq for _n, e in entries if isinstance(e, Checkpoint)}
    walk = chain.verify(columns=columns, anchors=seqs)
    records = walk.checked if walk.ok else max(0, walk.checked - 1)
    return walk, check(entries, verifier, records=records, chain_intact=walk.ok,
                       hashes=walk.anchors)


class CheckpointSink:
    """Writes signed checkpoints while an audit trail runs, and a last one when it closes.

    Given to :class:`~securepacs.audit.trail.AuditTrail` as a sink: records themselves are
    ignored (the database sink stores them); its timer thread writes a checkpoint every
    `interval` seconds when the chain has grown, and :meth:`close` (called by the trail after
    every queued record was delivered) writes the last one.

    Parameters
    ----------
    chain : ChainHead
        The audit table (its own connection: the database sink closes its own first).
    signer : Signer
        The checkpoint key.
    file : CheckpointFile
        Where checkpoints are appended.
    source : str
        Written into each checkpoint (the audit source ID).
    interval : float
        Seconds between checkpoints; 0 writes one only at :meth:`close`.
    publish : callable, optional
        Receives each checkpoint's line (the syslog collector).
    clock : callable
        The current time, timezone-aware.
    """

    name = "checkpoint"

    def __init__(self, chain: ChainHead, signer: Signer, file: CheckpointFile, *, source: str,
                 interval: float, publish: Callable[[str, datetime], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 close_chain: Callable[[], None] | None = None) -> None:
        self.chain = chain
        self.signer = signer
        self.file = file
        self.source = source
        self.publish = publish
        self.written = 0
        self._clock = clock
        self._close_chain = close_chain
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval > 0:
            self._thread = threading.Thread(target=self._run, args=(interval,),
                                            name="audit-checkpoint", daemon=True)
            self._thread.start()

    def emit(self, record: object) -> None:
        """Records are the database's business; a checkpoint anchors them later."""

    def write(self) -> Checkpoint | None:
        """Write a checkpoint now if the chain has grown since the last one; return it.

        Raises
        ------
        Exception
            Whatever the database, the key or the file raise (the caller logs it).
        """
        at = self._clock()

        def build(last: Checkpoint | None) -> Checkpoint | None:
            seq, head = self.chain.head()
            if last is not None and (last.seq, last.head) == (seq, head):
                return None
            return Checkpoint.make(seq=seq, head=head, at=at, source=self.source,
                                   signer=self.signer, previous=last)

        with self._lock:
            checkpoint = self.file.append(build)
        if checkpoint is not None:
            self.written += 1
            if self.publish is not None:
                self.publish(checkpoint.line(), at)
        return checkpoint

    def _write_logged(self) -> None:
        try:
            self.write()
        except Exception as exc:  # the trail must go on; the failure is logged
            log.error("audit checkpoint not written: %s: %s", type(exc).__name__, exc)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._write_logged()

    def stop_quietly(self) -> None:
        """Stop the timer and release the database, writing nothing more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._close_chain is not None:
            self._close_chain()

    def close(self) -> None:
        """Stop the timer and write the last checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._write_logged()
        if self._close_chain is not None:
            self._close_chain()
