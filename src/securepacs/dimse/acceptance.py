"""The acceptor's A-ASSOCIATE-RQ and A-ASSOCIATE-AC in plain Python (PS3.8 9.3.2, 9.3.3,
PS3.7 D.3.3), for requests in the common, well-formed shape.

pynetdicom decodes a request into objects that validate every UID on the way (a regular
expression per UID, several times over) and negotiates on those objects: for DCMTK
``storescu``'s ~120 proposed storage classes that is ~30-60 ms of CPU the first time a
process sees a request, more than storing a dozen small images. Here the same request is
read in one pass over its bytes, negotiated with dictionary look-ups and answered with an
A-ASSOCIATE-AC built byte for byte as pynetdicom builds it.

Only a request in the *canonical* shape takes this path (:func:`read_canonical`): every
UID conformant (PS3.5 9.1), AE titles and the Implementation Version Name of printable
ASCII, odd presentation context IDs each used once, one abstract syntax and distinct
transfer syntaxes per context, one application context item and one user information item
holding only Maximum Length, Implementation Class UID, Implementation Version Name and
SCP/SCU Role Selection sub-items. For such a request pynetdicom raises nothing and warns
about nothing, so both paths reach the same decision; anything else (an unusual sub-item,
a padded or non-conformant UID, a duplicate...) returns None and the caller takes
pynetdicom's path (:mod:`securepacs.dimse.negotiation`) exactly as before. The unit tests
check the two paths against each other, answer for answer.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pynetdicom.presentation import SCP_SCU_ROLES

from securepacs import IMPLEMENTATION_VERSION
from securepacs.dimse.associate import APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID
from securepacs.dimse.contexts import (
    STORAGE_TRANSFER_SYNTAXES,
    choose_transfer_syntax,
    could_be_storage,
)

_ITEM = struct.Struct(">BBH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_FIXED = 68  # protocol version, reserved, called and calling AE titles, reserved
#: a conformant UID (PS3.5 9.1): pydicom's ``UID.is_valid``, without its tolerance of a
#: trailing newline
_UID = re.compile(rb"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
#: bytes of an AE title (or Implementation Version Name) pynetdicom takes without a word:
#: printable ASCII but the backslash (PS3.5 6.2, Table 6.2-1)
_AE_BYTES = frozenset(range(0x20, 0x7F)) - {0x5C}

Role = tuple[bool | None, bool | None]  # (SCU role, SCP role), None: not said


@dataclass(frozen=True)
class Proposal:
    """A canonical A-ASSOCIATE-RQ, decoded: AE titles without their padding, the
    application context, the presentation contexts (ID, abstract syntax, transfer
    syntaxes) in the order proposed, SCP/SCU role proposals by SOP class (the last item
    for a class counts), and the Maximum Length Received (0: none)."""

    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[tuple[int, str, tuple[str, ...]], ...]
    roles: Mapping[str, tuple[bool, bool]]
    max_pdu: int


class Offer:
    """What the acceptor supports, from (abstract syntax, transfer syntaxes in our order,
    whether the context takes SCP/SCU role selection) each: ``by_abstract`` maps an
    abstract syntax to (transfer syntaxes, (SCU role, SCP role) setting), the setting
    (None, None) where the context takes no role selection (the last entry for an
    abstract syntax counts, as in pynetdicom)."""

    def __init__(self, entries: Iterable[tuple[str, Sequence[str], bool]]):
        self.entries = tuple((abstract, tuple(syntaxes), bool(roles))
                             for abstract, syntaxes, roles in entries)
        self.by_abstract: dict[str, tuple[tuple[str, ...], Role]] = {
            abstract: (syntaxes, (True, True) if roles else (None, None))
            for abstract, syntaxes, roles in self.entries}
        #: pynetdicom's PresentationContexts for the same, made when first needed
        self.pynetdicom: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.entries)


def _uid(value: bytes) -> str | None:
    """The UID in an item's value (one trailing NUL dropped, as pynetdicom does), or None
    unless it is conformant."""
    if value[-1:] == b"\x00":
        value = value[:-1]
    if not value or len(value) > 64 or not _UID.fullmatch(value):
        return None
    return value.decode("ascii")


def _ae(value: bytes) -> str | None:
    """An AE title field without its padding, or None unless every byte is printable and
    something is left after stripping spaces."""
    if not _AE_BYTES.issuperset(value):
        return None
    text = value.decode("ascii").strip()
    return text or None


def _items(body: bytes, pos: int, end: int) -> Iterable[tuple[int, int, int]] | None:
    """(type, start, stop) of each item in body[pos:end], or None if one runs past `end`."""
    out = []
    while pos < end:
        if pos + 4 > end:
            return None
        kind, _, length = _ITEM.unpack_from(body, pos)
        start, pos = pos + 4, pos + 4 + length
        if pos > end:
            return None
        out.append((kind, start, pos))
    return out


def read_canonical(body: bytes | bytearray) -> Proposal | None:
    """The A-ASSOCIATE-RQ body (after its 6-byte PDU header) when it is in the canonical
    shape (module docstring), else None."""
    body = bytes(body)
    if len(body) < _FIXED:
        return None
    called, calling = _ae(body[4:20]), _ae(body[20:36])
    items = _items(body, _FIXED, len(body))
    if called is None or calling is None or items is None:
        return None
    application: str | None = None
    user: tuple[int, int] | None = None
    contexts: list[tuple[int, str, tuple[str, ...]]] = []
    ids: set[int] = set()
    for kind, start, stop in items:
        if kind == 0x20:
            context = _context(body, start, stop)
            if context is None or context[0] in ids:
                return None
            ids.add(context[0])
            contexts.append(context)
        elif kind == 0x10 and application is None:
            application = _uid(body[start:stop])
            if application is None:
                return None
        elif kind == 0x50 and user is None:
            user = (start, stop)
        else:
            return None  # another item, or a second application context / user information
    if application is None or user is None:
        return None
    info = _user_information(body, *user)
    if info is None:
        return None
    max_pdu, roles = info
    return Proposal(called, calling, application, tuple(contexts), roles, max_pdu)


def _context(body: bytes, start: int, stop: int) -> tuple[int, str, tuple[str, ...]] | None:
    """A presentation context item (PS3.8 9.3.2.2): odd ID, one abstract syntax, one or
    more distinct transfer syntaxes, nothing else."""
    if stop - start < 4 or not body[start] & 1:
        return None
    subs = _items(body, start + 4, stop)
    if subs is None:
        return None
    abstract: str | None = None
    syntaxes: list[str] = []
    for kind, s, e in subs:
        uid = _uid(body[s:e])
        if uid is None:
            return None
        if kind == 0x40 and uid not in syntaxes:
            syntaxes.append(uid)
        elif kind == 0x30 and abstract is None:
            abstract = uid
        else:
            return None
    if abstract is None or not syntaxes:
        return None
    return body[start], abstract, tuple(syntaxes)


def _user_information(body: bytes, start: int, stop: int
                      ) -> tuple[int, dict[str, tuple[bool, bool]]] | None:
    """(Maximum Length Received, role proposals) of the user information item (PS3.7
    D.3.3): one Maximum Length, one Implementation Class UID, at most one Implementation
    Version Name, any SCP/SCU Role Selection items; nothing else."""
    subs = _items(body, start, stop)
    if subs is None:
        return None
    max_pdu: int | None = None
    class_uid = version = False
    roles: dict[str, tuple[bool, bool]] = {}
    for kind, s, e in subs:
        if kind == 0x51 and max_pdu is None and e - s == 4:
            max_pdu = _U32.unpack_from(body, s)[0]
        elif kind == 0x52 and not class_uid and _uid(body[s:e]) is not None:
            class_uid = True
        elif kind == 0x55 and not version and 0 < e - s <= 16 and _AE_BYTES.issuperset(
                body[s:e]):
            version = True
        elif kind == 0x54 and e - s >= 4:
            length = _U16.unpack_from(body, s)[0]
            uid = _uid(body[s + 2:s + 2 + length])
            scu, scp = body[e - 2], body[e - 1]
            if length + 4 != e - s or uid is None or scu > 1 or scp > 1:
                return None
            roles[uid] = (bool(scu), bool(scp))
        else:
            return None
    if max_pdu is None or not class_uid:
        return None
    return max_pdu, roles


def negotiate(proposal: Proposal, offer: Offer, *, ae_title: str, max_pdu: int,
              policy: str = "as-proposed", accept_unknown_storage: bool = False
              ) -> tuple[bytes, list[tuple[int, str, str, bool]]] | None:
    """The A-ASSOCIATE-AC PDU and the accepted contexts (ID, abstract syntax, transfer
    syntax, whether we may act as SCU), as pynetdicom's negotiation and encoding give
    them; None where this path would differ from it (the caller then takes that path).

    The rules (``pynetdicom.presentation.negotiate_as_acceptor``): an abstract syntax we
    do not support is result 3, one whose transfer syntaxes we support none of is result
    4 (both answering the first proposed syntax); a context whose roles leave us neither
    SCU nor SCP is result 1 (answering our first supported syntax); an accepted context
    takes the syntax :func:`choose_transfer_syntax` picks by the site's `policy`, and an
    accepted context with role selection proposed gets a role item in reply.
    """
    table = offer.by_abstract
    results: list[tuple[int, int, str]] = []
    accepted: list[tuple[int, str, str, bool]] = []
    replies: dict[str, tuple[bool, bool]] = {}
    for context_id, abstract, syntaxes in sorted(proposal.contexts):
        ours = table.get(abstract)
        if ours is None and accept_unknown_storage and could_be_storage(abstract):
            ours = (STORAGE_TRANSFER_SYNTAXES, (True, True))
        if ours is None:
            results.append((context_id, 3, syntaxes[0]))
            continue
        supported, setting = ours
        provisional = next((ts for ts in supported if ts in syntaxes), None)
        if provisional is None:
            results.append((context_id, 4, syntaxes[0]))
            continue
        proposed = proposal.roles.get(abstract)
        if None in setting:  # no role selection on this context: the default roles
            as_scu, as_scp, proposed = False, True, None
        else:  # (requestor's proposal) -> (our setting) -> (.., .., as SCU, as SCP)
            _, _, as_scu, as_scp = SCP_SCU_ROLES[proposed or (None, None)][setting]
        if not as_scu and not as_scp:
            results.append((context_id, 1, provisional))
            continue
        choice = choose_transfer_syntax(syntaxes, supported, policy) or provisional
        results.append((context_id, 0, choice))
        accepted.append((context_id, abstract, choice, as_scu))
        if proposed is not None:
            reply = (proposed[0] is not False and bool(setting[0]),
                     proposed[1] is not False and bool(setting[1]))
            if reply == (False, False):
                return None  # pynetdicom cannot encode it
            replies[abstract] = reply
    try:
        pdu = _encode_ac(proposal, ae_title, max_pdu, results, sorted(replies.items()))
    except (ValueError, struct.error):
        return None  # an item too long for its length field: pynetdicom's path decides
    return pdu, accepted


def _item(kind: int, value: bytes) -> bytes:
    return _ITEM.pack(kind, 0, len(value)) + value


def _encode_ac(proposal: Proposal, ae_title: str, max_pdu: int,
               results: Sequence[tuple[int, int, str]],
               roles: Sequence[tuple[str, tuple[bool, bool]]]) -> bytes:
    """The A-ASSOCIATE-AC (PS3.8 9.3.3) as pynetdicom encodes it: protocol version 1, the
    request's AE titles, our application context, one result item per context (in ID
    order, one transfer syntax each), and user information: Maximum Length, our
    Implementation Class UID and Version Name, then the role replies by SOP class."""
    parts = [_item(0x10, APPLICATION_CONTEXT.encode("ascii"))]
    for context_id, result, syntax in results:
        parts.append(_item(0x21, bytes((context_id, 0, result, 0))
                           + _item(0x40, syntax.encode("ascii"))))
    user = [_item(0x51, _U32.pack(max_pdu)),
            _item(0x52, IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _item(0x55, IMPLEMENTATION_VERSION.encode("ascii"))]
    for sop_class, (scu, scp) in roles:
        uid = sop_class.encode("ascii")
        user.append(_item(0x54, _U16.pack(len(uid)) + uid + bytes((scu, scp))))
    parts.append(_item(0x50, b"".join(user)))
    called = (proposal.called_ae or ae_title).ljust(16).encode("ascii")
    calling = proposal.calling_ae.ljust(16).encode("ascii")
    body = b"".join((b"\x00\x01\x00\x00", called, calling, bytes(32), *parts))
    return struct.pack(">BBI", 0x02, 0, len(body)) + body
