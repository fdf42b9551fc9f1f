"""Association negotiation as the acceptor (PS3.8 9.3.2-9.3.4, PS3.7 D.3.3).

Reads an A-ASSOCIATE-RQ, decides (presentation contexts, SCP/SCU roles, maximum length)
and builds the A-ASSOCIATE-AC, or an A-ASSOCIATE-RJ with its result/source/reason.
A request in the common, well-formed shape is decoded, negotiated and answered in plain
Python (:mod:`securepacs.dimse.acceptance`, the same answers byte for byte); any other
goes through pynetdicom, which encodes and decodes the PDUs and negotiates the contexts
(:func:`pynetdicom.presentation.negotiate_as_acceptor`); the rest is here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from securepacs import IMPLEMENTATION_VERSION
from securepacs.dimse.acceptance import Offer, Proposal, negotiate, read_canonical
from securepacs.dimse.associate import APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID
from securepacs.dimse.channel import PDU_HEADER
from securepacs.dimse.contexts import (
    STORAGE_TRANSFER_SYNTAXES,
    choose_transfer_syntax,
    could_be_storage,
)


@dataclass(frozen=True)
class Rejection:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient; source; reason."""

    result: int
    source: int
    reason: int
    why: str

    def pdu(self) -> bytes:
        return bytes((0x03, 0, 0, 0, 0, 4, 0, self.result, self.source, self.reason))


#: Rejections we send
CALLING_AE_NOT_RECOGNISED = (1, 1, 3)
CALLED_AE_NOT_RECOGNISED = (1, 1, 7)
APPLICATION_CONTEXT_NOT_SUPPORTED = (1, 1, 2)
LOCAL_LIMIT_EXCEEDED = (2, 3, 2)


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context of the association: ID, abstract syntax, transfer syntax,
    and whether we may act as its SCU (send C-STOREs for a C-GET, PS3.7 D.3.3.4)."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    as_scu: bool


@dataclass
class Request:
    """What the requestor asked for: AE titles (without padding), its Maximum Length
    Received (0: none), the application context, and either the canonical `proposal`
    (:mod:`securepacs.dimse.acceptance`) or pynetdicom's `primitive` (made on demand from
    `body` for a canonical request)."""

    calling_ae: str
    max_pdu: int
    called_ae: str = ""
    application_context: str = ""
    proposal: Proposal | None = field(default=None, repr=False)
    body: bytes = field(default=b"", repr=False)
    _primitive: A_ASSOCIATE | None = field(default=None, repr=False)

    @property
    def primitive(self) -> A_ASSOCIATE:
        """pynetdicom's A-ASSOCIATE primitive of the request."""
        if self._primitive is None:
            self._primitive = _read_pynetdicom(self.body)._primitive
        assert self._primitive is not None
        return self._primitive


def printable(text: str, limit: int = 64) -> str:
    """`text` for a log line: control and non-ASCII characters escaped, at most `limit`
    characters (longer text is cut and says how long it was)."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    if not out.isprintable():
        out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)
    if len(out) > limit:
        return f"{out[:limit]}...({len(text)} characters)"
    return out


_UID_ITEMS = {0x10: "application context", 0x30: "abstract syntax", 0x40: "transfer syntax",
              0x52: "implementation class UID"}
_FIXED = 68  # protocol version, reserved, called and calling AE titles, reserved (PS3.8 9.3.2)


def check_structure(body: bytes | bytearray) -> None:
    """Walk the items of an A-ASSOCIATE-RQ body (PS3.8 9.3.2, Annex D) before any decoder
    sees it: every item inside its parent, every UID at most 64 bytes (PS3.5 9.1).

    Raises
    ------
    ValueError
        The first problem, in one line.
    """
    if len(body) < _FIXED:
        raise ValueError(f"malformed A-ASSOCIATE-RQ (a {len(body)}-byte body, shorter than "
                         f"its {_FIXED} fixed bytes)")
    _walk(body, _FIXED, len(body), 0)


def _walk(body: bytes | bytearray, pos: int, end: int, parent: int) -> None:
    while pos < end:
        if pos + 4 > end:
            raise ValueError(f"malformed A-ASSOCIATE-RQ (item header cut at byte {pos})")
        kind, length = body[pos], int.from_bytes(body[pos + 2:pos + 4], "big")
        start, stop = pos + 4, pos + 4 + length
        if stop > end:
            raise ValueError(f"malformed A-ASSOCIATE-RQ (item 0x{kind:02X} at byte {pos} runs "
                             f"{stop - end} bytes past its end)")
        what = _UID_ITEMS.get(kind)
        if what is not None and length > 64:
            raise ValueError(f"malformed A-ASSOCIATE-RQ (a {length}-byte {what}, UIDs have "
                             "at most 64)")
        if kind == 0x20 and parent == 0:
            _walk(body, start + 4, stop, kind)  # after ID and three reserved bytes
        elif kind == 0x50 and parent == 0:
            _walk(body, start, stop, kind)
        elif kind == 0x54 and parent == 0x50 and length >= 2:
            uid_length = int.from_bytes(body[start:start + 2], "big")
            if uid_length > 64 or uid_length + 4 > length:
                raise ValueError("malformed A-ASSOCIATE-RQ (SCP/SCU role selection item with "
                                 f"a {uid_length}-byte UID in {length} bytes)")
        pos = stop


def read_request(body: bytes | bytearray) -> Request:
    """Decode an A-ASSOCIATE-RQ body; ValueError (one line, bounded) when malformed.

    A canonical request (:func:`securepacs.dimse.acceptance.read_canonical`) is read in
    plain Python; any other by pynetdicom, whose decoder meets malformed input with many
    exception types (struct.error, AssertionError, UnicodeDecodeError, IndexError...):
    every one becomes ValueError."""
    check_structure(body)
    proposal = read_canonical(body)
    if proposal is None:
        return _read_pynetdicom(body)
    return Request(calling_ae=proposal.calling_ae, max_pdu=proposal.max_pdu,
                   called_ae=proposal.called_ae,
                   application_context=proposal.application_context, proposal=proposal,
                   body=bytes(body))


def _read_pynetdicom(body: bytes | bytearray) -> Request:
    """:func:`read_request` by pynetdicom's decoder (after :func:`check_structure`)."""
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(PDU_HEADER.pack(0x01, 0, len(body)) + bytes(body))
        primitive = pdu.to_primitive()
        request = Request(
            calling_ae=str(primitive.calling_ae_title or "").strip(),
            max_pdu=int(primitive.maximum_length_received or 0),
            called_ae=str(primitive.called_ae_title or "").strip(),
            application_context=str(primitive.application_context_name or ""),
            body=bytes(body),
            _primitive=primitive,
        )
        for context in primitive.presentation_context_definition_list:
            str(context.abstract_syntax)  # decoded now, not later in negotiation
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a malformed PDU
        why = printable(f"{type(exc).__name__}: {exc}", 120)
        raise ValueError(f"malformed A-ASSOCIATE-RQ ({why})") from None
    return request


def supported(contexts: Sequence[tuple[str, Sequence[str], bool]]) -> Offer:
    """What the acceptor offers, from (abstract syntax, transfer syntaxes, SCP/SCU role
    selection) each; pynetdicom's contexts for it are made only when a request needs
    pynetdicom's negotiation (:func:`presentation_contexts`)."""
    return Offer(contexts)


_PYNETDICOM = threading.Lock()


def presentation_contexts(offer: Offer) -> list[PresentationContext]:
    """pynetdicom's PresentationContexts for `offer` (made once, ~50 ms for ~170)."""
    with _PYNETDICOM:
        if offer.pynetdicom is None:
            offer.pynetdicom = _pynetdicom_contexts(offer.entries)
        return offer.pynetdicom


def _pynetdicom_contexts(contexts: Sequence[tuple[str, Sequence[str], bool]]
                         ) -> list[PresentationContext]:
    """pynetdicom contexts for (abstract syntax, transfer syntaxes, SCP/SCU role selection)."""
    out = []
    for index, (abstract, syntaxes, roles) in enumerate(contexts):
        context = PresentationContext()
        context.context_id = (2 * index + 1) % 256 or 1
        context.abstract_syntax = abstract
        context.transfer_syntax = list(syntaxes)
        if roles:
            context.scu_role = True
            context.scp_role = True
        out.append(context)
    return out


def accept(request: Request, offer: Offer, *, ae_title: str, max_pdu: int,
           policy: str = "as-proposed",
           accept_unknown_storage: bool = False) -> tuple[bytes, dict[int, AcceptedContext]]:
    """The A-ASSOCIATE-AC PDU and the accepted contexts by ID (a requestor whose contexts
    are all refused still gets an AC, with every context's reason, PS3.8 9.3.3.2).

    A canonical request is negotiated by :func:`securepacs.dimse.acceptance.negotiate`,
    any other by :func:`accept_pynetdicom`: the same rules, the same bytes.
    """
    if request.proposal is not None:
        answer = negotiate(request.proposal, offer, ae_title=ae_title, max_pdu=max_pdu,
                           policy=policy, accept_unknown_storage=accept_unknown_storage)
        if answer is not None:
            pdu, contexts = answer
            return pdu, {c[0]: AcceptedContext(*c) for c in contexts}
    return accept_pynetdicom(request, presentation_contexts(offer), ae_title=ae_title,
                             max_pdu=max_pdu, policy=policy,
                             accept_unknown_storage=accept_unknown_storage)


def accept_pynetdicom(request: Request, contexts: list[PresentationContext], *,
                      ae_title: str, max_pdu: int, policy: str = "as-proposed",
                      accept_unknown_storage: bool = False
                      ) -> tuple[bytes, dict[int, AcceptedContext]]:
    """:func:`accept` by pynetdicom's negotiation and encoder.

    pynetdicom decides acceptance and roles but walks *our* list of transfer syntaxes;
    the syntax of each accepted context is then chosen from the *requestor's* list, in its
    order, by the site's `policy` (:func:`~securepacs.dimse.contexts.choose_transfer_syntax`).
    With `accept_unknown_storage`, a proposed abstract syntax we do not list that
    :func:`~securepacs.dimse.contexts.could_be_storage` is accepted as a storage class.
    """
    rq = request.primitive
    roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
             for item in rq.user_information
             if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid}
    proposed = list(rq.presentation_context_definition_list)
    if accept_unknown_storage:
        contexts = contexts + _unknown_storage(proposed, contexts)
    results, role_items = negotiate_as_acceptor(proposed, contexts, roles or None)
    ours = {str(cx.abstract_syntax): [str(ts) for ts in cx.transfer_syntax] for cx in contexts}
    asked = {cx.context_id: [str(ts) for ts in cx.transfer_syntax] for cx in proposed}
    for cx in results:
        if cx.result == 0x00 and cx.context_id in asked:
            choice = choose_transfer_syntax(asked[cx.context_id],
                                            ours.get(str(cx.abstract_syntax), ()), policy)
            if choice is not None:
                cx.transfer_syntax = [choice]
    accepted = {
        int(cx.context_id): AcceptedContext(int(cx.context_id), str(cx.abstract_syntax),
                                            str(cx.transfer_syntax[0]), bool(cx.as_scu))
        for cx in results if cx.result == 0x00 and cx.context_id is not None
    }
    ac = A_ASSOCIATE()
    ac.application_context_name = APPLICATION_CONTEXT
    ac.calling_ae_title = rq.calling_ae_title
    ac.called_ae_title = rq.called_ae_title or ae_title
    ac.result = 0x00
    ac.result_source = 0x01
    ac.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    ac.user_information = [max_length, uid, version, *role_items]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    return pdu.encode(), accepted


_Answer = tuple[bytes, dict[int, AcceptedContext]]


class _Entry:
    """One body's answers; its lock makes concurrent associations with the same request
    (four ``storescu`` started together) wait for one negotiation instead of each doing it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.request: Request | None = None
        self.answer: _Answer | None = None


class Negotiated:
    """The last answers to A-ASSOCIATE-RQ bodies, byte for byte (a bounded cache).

    A sender proposes the same contexts on every association (DCMTK ``storescu`` offers
    ~120 storage classes): decoding them with pynetdicom and negotiating costs ~30 ms,
    more than storing 10 small images, and even the plain-Python path
    (:mod:`securepacs.dimse.acceptance`) ~1 ms. The answer depends only on the request's bytes and
    the server's fixed settings, so a repeated body gets the same Request and A-ASSOCIATE-AC
    again; every check that depends on the peer (its certificate, the calling AE title
    binding, the limits) still runs each time. At most `size` bodies are kept.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def _entry(self, body: bytes | bytearray) -> _Entry:
        key = bytes(body)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return entry

    def request(self, body: bytes | bytearray) -> Request:
        """:func:`read_request`, remembered (a malformed body raises every time)."""
        body = bytes(body)  # one copy: the key and the Request's `body` are this object
        entry = self._entry(body)
        with entry.lock:
            if entry.request is None:
                entry.request = read_request(body)
            return entry.request

    def accept(self, body: bytes | bytearray, request: Request,
               contexts: Offer, *, ae_title: str, max_pdu: int,
               policy: str, accept_unknown_storage: bool) -> _Answer:
        """:func:`accept` for `request`, read from `body` (a server's settings never
        change), remembered; the accepted contexts are the caller's own copy."""
        entry = self._entry(body)
        with entry.lock:
            if entry.answer is None:
                entry.answer = accept(request, contexts, ae_title=ae_title, max_pdu=max_pdu,
                                      policy=policy,
                                      accept_unknown_storage=accept_unknown_storage)
            pdu, accepted = entry.answer
        return pdu, dict(accepted)


def _unknown_storage(proposed: Sequence[PresentationContext],
                     contexts: Sequence[PresentationContext]) -> list[PresentationContext]:
    """Storage contexts for the proposed abstract syntaxes we do not list (unknown or
    private storage SOP classes), with SCP/SCU role selection as for the known ones."""
    listed = {str(cx.abstract_syntax) for cx in contexts}
    extra = sorted({str(cx.abstract_syntax) for cx in proposed} - listed)
    return _pynetdicom_contexts([(sop_class, STORAGE_TRANSFER_SYNTAXES, True)
                                 for sop_class in extra if could_be_storage(sop_class)])


def check_context_name(request: Request) -> Rejection | None:
    """Only the DICOM application context is supported (PS3.7 A.2.1)."""
    name = request.application_context
    if name != APPLICATION_CONTEXT:
        return Rejection(*APPLICATION_CONTEXT_NOT_SUPPORTED,
                         why=f"application context {printable(name)!r} not supported")
    return None


def check_called_ae(request: Request, ae_title: str) -> Rejection | None:
    """The called AE title must be ours (PS3.8 9.3.4: rejected-permanent, service-user,
    "called-AE-title-not-recognized")."""
    called = request.called_ae
    if called != ae_title.strip():
        return Rejection(*CALLED_AE_NOT_RECOGNISED,
                         why=f"called AE title {printable(called)!r} is not this server's "
                             f"({ae_title.strip()})")
    return None
