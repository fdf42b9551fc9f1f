"""The association PDUs of the requestor: encode A-ASSOCIATE-RQ, decode -AC, -RJ and A-ABORT.

One responsibility: the bytes of PS3.8 9.3.2 (A-ASSOCIATE-RQ with its application context,
presentation context and user information items), 9.3.3 (A-ASSOCIATE-AC), 9.3.4
(A-ASSOCIATE-RJ, with the reasons of Table 9-21) and 9.3.8 (A-ABORT, Table 9-26), and the
user information sub-items of PS3.7 D.3.3 (Maximum Length, Implementation Class UID and
Version Name, SCP/SCU Role Selection). Only the standard library: the client commands
(``securepacs echo`` above all) start without importing pynetdicom or pydicom, which
together cost several tenths of a second. The acceptor side (:mod:`securepacs.dimse.negotiation`)
still uses pynetdicom's PDU classes; the unit tests check the two against each other.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from securepacs import IMPLEMENTATION_VERSION

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # the DICOM application context (PS3.7 A.2.1)
#: This implementation's Implementation Class UID (PS3.7 D.3.3.2), derived from a UUID
#: (PS3.5 B.2): the project has no registered UID root. Sent by client and server alike.
IMPLEMENTATION_CLASS_UID = "2.25.20700561949556812322931904704713304023"

_HEADER = struct.Struct(">BBI")  # PDU type, reserved, length (PS3.8 9.3.1)
_ITEM = struct.Struct(">BBH")  # item type, reserved, item length (PS3.8 9.3.2.x)

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, ABORT = 0x01, 0x02, 0x03, 0x07
_APPLICATION_CONTEXT_ITEM = 0x10
_CONTEXT_RQ_ITEM, _CONTEXT_AC_ITEM = 0x20, 0x21
_ABSTRACT_SYNTAX, _TRANSFER_SYNTAX = 0x30, 0x40
_USER_INFORMATION = 0x50
_MAXIMUM_LENGTH, _IMPLEMENTATION_UID, _ROLE_SELECTION, _IMPLEMENTATION_VERSION = (
    0x51, 0x52, 0x54, 0x55)

#: A-ASSOCIATE-RJ source -> reason -> words (PS3.8 Table 9-21), as pynetdicom says them.
_REJECT_REASONS = {
    1: {1: "No reason given", 2: "Application context name not supported",
        3: "Calling AE title not recognised", 7: "Called AE title not recognised"},
    2: {1: "No reason given", 2: "Protocol version not supported"},
    3: {1: "Temporary congestion", 2: "Local limit exceeded"},
}
#: A-ABORT reasons of the service provider (source 2, PS3.8 Table 9-26).
_ABORT_REASONS = {0: "No reason given", 1: "Unrecognised PDU", 2: "Unexpected PDU",
                  4: "Unrecognised PDU parameter", 5: "Unexpected PDU parameter",
                  6: "Invalid PDU parameter value"}
_ABORT_SOURCES = {0: "DUL service-user", 2: "DUL service-provider"}


@dataclass(frozen=True)
class ProposedContext:
    """One presentation context of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class ContextResult:
    """One presentation context of an A-ASSOCIATE-AC (PS3.8 9.3.3.2): result 0 is acceptance."""

    context_id: int
    result: int
    transfer_syntax: str


@dataclass(frozen=True)
class AssociateAccept:
    """What the requestor needs of an A-ASSOCIATE-AC: the context results and the peer's
    Maximum Length Received (0: no limit, PS3.8 D.1)."""

    contexts: dict[int, ContextResult] = field(default_factory=dict)
    max_pdu: int = 0


@dataclass(frozen=True)
class AssociateReject:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent, 2 transient; source and reason."""

    result: int
    source: int
    reason: int

    @property
    def reason_text(self) -> str:
        return _REJECT_REASONS.get(self.source, {}).get(self.reason, f"reason {self.reason}")

    @property
    def transient(self) -> bool:
        return self.result == 2


def _item(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{kind:02X} of {len(value)} bytes is too long")
    return _ITEM.pack(kind, 0, len(value)) + value


def _uid(value: str) -> bytes:
    """A UID in a PDU item: ASCII, not padded (PS3.8 9.3.2.2.1, PS3.5 9.1)."""
    raw = value.encode("ascii")
    if not raw or len(raw) > 64:
        raise ValueError(f"{value!r} is not a UID")
    return raw


def _ae_title(value: str) -> bytes:
    raw = value.encode("ascii")
    if not raw.strip() or len(raw) > 16:
        raise ValueError(f"{value!r} is not an AE title (1 to 16 characters)")
    return raw.ljust(16, b" ")


def encode_associate_rq(called_ae: str, calling_ae: str, contexts: Sequence[ProposedContext], *,
                        max_pdu: int, scp_roles: Sequence[str] = ()) -> bytes:
    """The A-ASSOCIATE-RQ PDU (PS3.8 9.3.2).

    Parameters
    ----------
    called_ae, calling_ae : str
        AE titles, padded with spaces to 16 bytes.
    contexts : sequence of ProposedContext
        Presentation contexts (odd IDs 1-255, PS3.8 9.3.2.2).
    max_pdu : int
        Our Maximum Length Received (PS3.8 D.1.1; 0 is no limit).
    scp_roles : sequence of str
        SOP classes for which we ask to be SCP only (SCP/SCU Role Selection, PS3.7 D.3.3.4).
    """
    items = [_item(_APPLICATION_CONTEXT_ITEM, _uid(APPLICATION_CONTEXT))]
    for context in contexts:
        sub = _item(_ABSTRACT_SYNTAX, _uid(context.abstract_syntax)) + b"".join(
            _item(_TRANSFER_SYNTAX, _uid(ts)) for ts in context.transfer_syntaxes)
        items.append(_item(_CONTEXT_RQ_ITEM, bytes((context.context_id, 0, 0, 0)) + sub))
    user = [_item(_MAXIMUM_LENGTH, struct.pack(">I", max_pdu)),
            _item(_IMPLEMENTATION_UID, _uid(IMPLEMENTATION_CLASS_UID)),
            _item(_IMPLEMENTATION_VERSION, IMPLEMENTATION_VERSION.encode("ascii"))]
    for sop_class in dict.fromkeys(scp_roles):
        uid = _uid(sop_class)
        user.append(_item(_ROLE_SELECTION, struct.pack(">H", len(uid)) + uid + b"\x00\x01"))
    items.append(_item(_USER_INFORMATION, b"".join(user)))
    body = (struct.pack(">HH", 1, 0) + _ae_title(called_ae) + _ae_title(calling_ae)
            + bytes(32) + b"".join(items))
    return _HEADER.pack(ASSOCIATE_RQ, 0, len(body)) + body


def _items(data: bytes | bytearray | memoryview, where: str) -> Iterator[tuple[int, memoryview]]:
    """(type, value) of each item in `data`; ValueError if one runs past the end."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if len(view) - offset < _ITEM.size:
            raise ValueError(f"a truncated item in the {where}")
        kind, _, length = _ITEM.unpack_from(view, offset)
        offset += _ITEM.size
        if offset + length > len(view):
            raise ValueError(f"item 0x{kind:02X} runs past the end of the {where}")
        yield kind, view[offset:offset + length]
        offset += length


def _text(value: memoryview) -> str:
    return bytes(value).rstrip(b"\x00 ").decode("ascii", "replace")


def decode_associate_ac(body: bytes | bytearray) -> AssociateAccept:
    """The context results and Maximum Length of an A-ASSOCIATE-AC body (after the 6-byte
    PDU header, PS3.8 9.3.3); ValueError if it is malformed."""
    if len(body) < 68:
        raise ValueError(f"{len(body)} bytes are too short for an A-ASSOCIATE-AC")
    contexts: dict[int, ContextResult] = {}
    max_pdu = 0
    for kind, value in _items(memoryview(body)[68:], "A-ASSOCIATE-AC"):
        if kind == _CONTEXT_AC_ITEM:
            if len(value) < 4:
                raise ValueError("a presentation context item shorter than 4 bytes")
            syntaxes = [_text(v) for k, v in _items(value[4:], "presentation context item")
                        if k == _TRANSFER_SYNTAX]
            contexts[value[0]] = ContextResult(value[0], value[2], syntaxes[0] if syntaxes else "")
        elif kind == _USER_INFORMATION:
            for sub, sub_value in _items(value, "user information item"):
                if sub == _MAXIMUM_LENGTH:
                    if len(sub_value) != 4:
                        raise ValueError("a Maximum Length sub-item that is not 4 bytes")
                    max_pdu = struct.unpack(">I", sub_value)[0]
    return AssociateAccept(contexts, max_pdu)


def decode_associate_rj(body: bytes | bytearray) -> AssociateReject:
    """An A-ASSOCIATE-RJ body (PS3.8 9.3.4: reserved, result, source, reason)."""
    if len(body) < 4:
        raise ValueError(f"{len(body)} bytes are too short for an A-ASSOCIATE-RJ")
    return AssociateReject(body[1], body[2], body[3])


def abort_reason(body: bytes | bytearray) -> str:
    """``"source: reason"`` of an A-ABORT body (PS3.8 9.3.8), or "no reason given"."""
    if len(body) < 4:
        return "no reason given"
    source, reason = body[2], body[3]
    said = _ABORT_REASONS.get(reason, "(no value available)") if source == 2 else (
        "(no value available)")
    return f"{_ABORT_SOURCES.get(source, '(no value available)')}: {said}"
