"""The audit table: an append-only, hash-chained log of audit records in the index database.

One responsibility: store and read the canonical bytes of audit records (PS3.15 A.5 messages,
JSON form from :mod:`securepacs.audit.serialize`) so that editing, deleting or reordering a
row is detectable. Row *n* stores ``hash_n = sha256(hash_{n-1} || body_n)`` (hex), with
``hash_0`` 64 zeros; a one-row ``audit_head`` table holds the last sequence number and hash,
so that removing the newest rows is caught too. Each append runs in one write transaction
that first updates ``audit_head``: on SQLite (``BEGIN IMMEDIATE``) and PostgreSQL (row lock)
appenders from several processes are serialised and the chain never forks.

The filter columns (time, kind, user IDs, patient IDs) are copies for ``audit list``; the
hash covers ``body`` only, and :meth:`SqlAuditLog.verify` can check the copies against the
body with a callback. Residual risk, stated plainly: someone with write access to the
database can rewrite the whole chain from a given row on, head included; the signed
checkpoints kept outside the database (:mod:`securepacs.audit.checkpoint`, compared through
``verify(anchors=...)``) and the syslog collector's copy are what detect that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from securepacs.errors import StorageError
from securepacs.index.engine import READ_ONLY, make_engine
from securepacs.index.schema import create_tables, metadata

GENESIS = "0" * 64

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)

audit_event = sa.Table(
    "audit_event", metadata,
    sa.Column("seq", _KEY, primary_key=True, autoincrement=False),
    sa.Column("record_id", sa.String, nullable=False, unique=True),
    sa.Column("event_time", _UTC, nullable=False, index=True),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("outcome", sa.Integer, nullable=False),
    sa.Column("user_ids", sa.Text, nullable=False),
    sa.Column("patient_ids", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_head = sa.Table(
    "audit_head", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
)

TABLES = [audit_event, audit_head]
_SEP = "\x1f"  # unit separator between values of the multi-valued filter columns


def chain_hash(prev_hash: str, body: bytes) -> str:
    """``sha256(bytes.fromhex(prev_hash) || body)`` as hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


@dataclass(frozen=True)
class AuditRow:
    """One stored audit record: its sequence number, filter columns and canonical body."""

    seq: int
    record_id: str
    event_time: datetime
    kind: str
    outcome: int
    user_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    body: bytes
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    """What :meth:`SqlAuditLog.verify` found.

    Attributes
    ----------
    ok : bool
    checked : int
        Rows read.
    broken_seq : int or None
        The first row whose link is broken (None when ok, or when only the head disagrees).
    reason : str
        ``"ok"`` or one line saying what is wrong.
    """

    ok: bool
    checked: int
    broken_seq: int | None
    reason: str
    anchors: Mapping[int, str] = field(default_factory=dict)
    """The stored hash of each row asked for in ``verify(anchors=...)`` that the walk
    reached with the chain intact up to it."""


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _split(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(_SEP) if v)


def _row(r: Any) -> AuditRow:
    return AuditRow(r.seq, r.record_id, _aware(r.event_time), r.kind, r.outcome,
                    _split(r.user_ids), _split(r.patient_ids), _bytes(r.body), r.prev_hash, r.hash)


def _bytes(value: Any) -> bytes:
    """The body as stored; text if someone rewrote it with an SQL string function."""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


# The statements of every append, built once (compiled once, parameters bound per call).
_LOCK_HEAD = sa.update(audit_head).where(audit_head.c.id == 1).values(
    last_seq=audit_head.c.last_seq)
_HEAD = sa.select(audit_head).where(audit_head.c.id == 1)
_KNOWN = sa.select(audit_event.c.record_id, audit_event.c.seq).where(
    audit_event.c.record_id.in_(sa.bindparam("ids", expanding=True)))
_INSERT_EVENT = sa.insert(audit_event)
_SET_HEAD = sa.update(audit_head).where(audit_head.c.id == 1).values(
    last_seq=sa.bindparam("seq"), last_hash=sa.bindparam("hash"))


class SqlAuditLog:
    """The audit table of the index database (SQLite or PostgreSQL).

    Parameters
    ----------
    url : str
        The index database URL.
    """

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)

    def create_schema(self) -> None:
        """Create the audit tables if missing (idempotent, safe against a concurrent creator)."""
        create_tables(self._engine, TABLES, audit_head, {"last_seq": 0, "last_hash": GENESIS},
                      what="audit log")

    def close(self) -> None:
        self._engine.dispose()

    def append(self, *, record_id: str, at: datetime, kind: str, outcome: int,
               user_ids: tuple[str, ...], patient_ids: tuple[str, ...], body: bytes) -> int:
        """Append one record at the end of the chain; returns its sequence number.

        Raises
        ------
        StorageError
            The database cannot be written (full disk, read-only, gone). Appending a
            record ID that is already stored changes nothing and returns its number.
        """
        return self.append_many([{
            "record_id": record_id, "at": at, "kind": kind, "outcome": outcome,
            "user_ids": user_ids, "patient_ids": patient_ids, "body": body}])[0]

    def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append several records, in order, in one transaction (one fsync for all).

        Parameters
        ----------
        entries : sequence of mapping
            Each with the keyword arguments of :meth:`append`.

        Returns
        -------
        list of int
            Their sequence numbers.

        Raises
        ------
        StorageError
            As :meth:`append`; nothing of the batch is stored then.
        """
        seqs: list[int] = []
        try:
            with self._engine.begin() as conn:
                # take the head's row lock first: appenders queue here, the chain never forks
                conn.execute(_LOCK_HEAD)
                head = conn.execute(_HEAD).one()
                seq, last_hash = int(head.last_seq), str(head.last_hash)
                ids = [entry["record_id"] for entry in entries]
                known = {str(r.record_id): int(r.seq) for r in conn.execute(_KNOWN, {"ids": ids})}
                rows = []
                for entry in entries:
                    if entry["record_id"] in known:  # a retried append: already in the chain
                        seqs.append(int(known[entry["record_id"]]))
                        continue
                    seq += 1
                    digest = chain_hash(last_hash, entry["body"])
                    rows.append({
                        "seq": seq, "record_id": entry["record_id"],
                        "event_time": entry["at"].astimezone(UTC), "kind": entry["kind"],
                        "outcome": int(entry["outcome"]), "user_ids": _SEP.join(entry["user_ids"]),
                        "patient_ids": _SEP.join(entry["patient_ids"]), "body": entry["body"],
                        "prev_hash": last_hash, "hash": digest})
                    known[entry["record_id"]] = seq
                    seqs.append(seq)
                    last_hash = digest
                if rows:
                    conn.execute(_INSERT_EVENT, rows)
                conn.execute(_SET_HEAD, {"seq": seq, "hash": last_hash})
            return seqs
        except sa_exc.SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else ""
            raise StorageError(f"audit log: {type(exc).__name__}: {detail}") from exc

    def _rows(self, query: sa.Select[Any]) -> Iterator[AuditRow]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    rows = conn.execute(query).all()
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"audit log: {type(exc).__name__}") from exc
        for r in rows:
            yield _row(r)

    def records(self, *, since: datetime | None = None, until: datetime | None = None,
                identity: str | None = None, patient: str | None = None,
                kind: str | None = None, limit: int | None = None,
                organization: str | None = None) -> list[AuditRow]:
        """Stored records in chain order, filtered.

        Parameters
        ----------
        since, until : datetime, optional
            Event time bounds (inclusive, exclusive).
        identity : str, optional
            A substring of any participant's UserID (``CN=ws1``, an AE title).
        patient : str, optional
            An exact Patient ID.
        kind : str, optional
            The record kind, e.g. ``instances-transferred``, ``security-alert``.
        limit : int, optional
            At most this many, the newest ones (still in chain order).
        organization : str, optional
            Records naming this organisation (a participant's ``O=``, or a cross-organisation
            access or share naming it): a substring of the stored record.
        """
        query = sa.select(audit_event)
        if organization is not None:
            body: Any = (sa.func.convert_from(audit_event.c.body, "UTF8")
                         if self._engine.dialect.name == "postgresql"
                         else sa.cast(audit_event.c.body, sa.Text))
            query = query.where(body.contains(organization, autoescape=True))
        if since is not None:
            query = query.where(audit_event.c.event_time >= since.astimezone(UTC))
        if until is not None:
            query = query.where(audit_event.c.event_time < until.astimezone(UTC))
        if kind is not None:
            query = query.where(audit_event.c.kind == kind)
        if identity is not None:
            query = query.where(audit_event.c.user_ids.contains(identity, autoescape=True))
        if patient is not None:
            query = query.where(
                (_SEP + audit_event.c.patient_ids + _SEP).contains(_SEP + patient + _SEP,
                                                                  autoescape=True))
        if limit is not None:
            query = query.order_by(audit_event.c.seq.desc()).limit(limit)
            return sorted(self._rows(query), key=lambda r: r.seq)
        return list(self._rows(query.order_by(audit_event.c.seq)))

    def head(self) -> tuple[int, str]:
        """The head row: (sequence number of the last record, its chain hash).

        Raises
        ------
        StorageError
            The database cannot be read or holds no head row.
        """
        head = next(self._heads(), None)
        if head is None:
            raise StorageError("audit log: the audit head row is missing")
        return int(head.last_seq), str(head.last_hash)

    def verify(self, columns: Callable[[bytes], Mapping[str, Any]] | None = None,
               anchors: Collection[int] = ()) -> ChainReport:
        """Walk the chain from the first row and report the first broken link.

        Parameters
        ----------
        columns : callable, optional
            ``body -> {"record_id", "kind", "outcome", "event_time", "user_ids",
            "patient_ids"}``: when given, each row's filter columns must equal what its body
            says (an edited column would otherwise hide a row from ``audit list``).
        anchors : collection of int
            Sequence numbers whose stored hash to report (the signed checkpoints';
            :mod:`securepacs.audit.checkpoint`), in :attr:`ChainReport.anchors`.

        Returns
        -------
        ChainReport
            Broken when a row's stored hash is not sha256(previous hash || body) (an edited
            body), its ``prev_hash`` is not the previous row's hash or its sequence number
            skips (a deleted or reordered row), or the head disagrees with the last row
            (deleted newest rows).
        """
        prev_hash, expected_seq, checked = GENESIS, 1, 0
        wanted = set(anchors)
        found: dict[int, str] = {}
        for row in self._rows(sa.select(audit_event).order_by(audit_event.c.seq)):
            checked += 1
            if row.seq != expected_seq:
                return ChainReport(False, checked, row.seq,
                                   f"row {row.seq}: expected sequence {expected_seq} "
                                   "(a row was deleted)", found)
            if row.prev_hash != prev_hash:
                return ChainReport(False, checked, row.seq,
                                   f"row {row.seq}: does not follow row {row.seq - 1} "
                                   "(a row was deleted, reordered or rewritten)", found)
            if chain_hash(prev_hash, row.body) != row.hash:
                return ChainReport(False, checked, row.seq,
                                   f"row {row.seq}: content does not match its hash (edited)",
                                   found)
            if columns is not None:
                problem = _columns_problem(row, columns)
                if problem:
                    return ChainReport(False, checked, row.seq, f"row {row.seq}: {problem}",
                                       found)
            if row.seq in wanted:
                found[row.seq] = row.hash
            prev_hash, expected_seq = row.hash, row.seq + 1
        head = next(self._heads(), None)
        if head is None:
            return ChainReport(False, checked, None, "the audit head row is missing", found)
        if (int(head.last_seq), head.last_hash) != (expected_seq - 1, prev_hash):
            return ChainReport(False, checked, None,
                               f"the head says {head.last_seq} rows but the chain ends at row "
                               f"{expected_seq - 1} (newest rows deleted)", found)
        return ChainReport(True, checked, None, "ok", found)

    def _heads(self) -> Iterator[Any]:
        try:
            with self._engine.connect() as conn:
                yield from conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).all()
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"audit log: {type(exc).__name__}") from exc

    def ping(self) -> None:
        """Check that the audit table can be written (a write transaction that changes nothing).

        Raises
        ------
        StorageError
            It cannot.
        """
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.update(audit_head).where(audit_head.c.id == 1)
                             .values(last_seq=audit_head.c.last_seq))
        except sa_exc.SQLAlchemyError as exc:
            raise StorageError(f"audit log: {type(exc).__name__}") from exc


def _columns_problem(row: AuditRow, columns: Callable[[bytes], Mapping[str, Any]]) -> str | None:
    try:
        want = columns(row.body)
    except ValueError as exc:
        return f"body is not an audit record ({exc})"
    have = {"record_id": row.record_id, "kind": row.kind, "outcome": row.outcome,
            "event_time": row.event_time, "user_ids": row.user_ids,
            "patient_ids": row.patient_ids}
    for name, value in want.items():
        if have.get(name) != value:
            return f"column {name} disagrees with the record (edited)"
    return None
