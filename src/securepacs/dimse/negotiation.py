"""Association negotiation as the acceptor (PS3.8 9.3.2-9.3.4, PS3.7 D.3.3).

Reads an A-ASSOCIATE-RQ, decides (presentation contexts, SCP/SCU roles, maximum length)
and builds the A-ASSOCIATE-AC, or an A-ASSOCIATE-RJ with its result/source/reason.
pynetdicom encodes and decodes the PDUs and negotiates the contexts
(:func:`pynetdicom.presentation.negotiate_as_acceptor`); the rest is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from securepacs.dimse.channel import PDU_HEADER
from securepacs.dimse.contexts import choose_transfer_syntax
from securepacs.services.part10 import IMPLEMENTATION_VERSION

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1


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
    """What the requestor asked for."""

    calling_ae: str
    max_pdu: int
    primitive: A_ASSOCIATE = field(repr=False)


def read_request(body: bytes | bytearray) -> Request:
    """Decode an A-ASSOCIATE-RQ body; ValueError when malformed."""
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(PDU_HEADER.pack(0x01, 0, len(body)) + bytes(body))
        primitive = pdu.to_primitive()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed A-ASSOCIATE-RQ ({exc})") from None
    return Request(
        calling_ae=str(primitive.calling_ae_title or "").strip(),
        max_pdu=int(primitive.maximum_length_received or 0),
        primitive=primitive,
    )


def supported(contexts: Sequence[tuple[str, Sequence[str], bool]]) -> list[PresentationContext]:
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


def accept(request: Request, contexts: list[PresentationContext], *, ae_title: str,
           max_pdu: int, policy: str = "as-proposed") -> tuple[bytes, dict[int, AcceptedContext]]:
    """The A-ASSOCIATE-AC PDU and the accepted contexts by ID (a requestor whose contexts
    are all refused still gets an AC, with every context's reason, PS3.8 9.3.3.2).

    pynetdicom decides acceptance and roles but walks *our* list of transfer syntaxes;
    the syntax of each accepted context is then chosen from the *requestor's* list, in its
    order, by the site's `policy` (:func:`~securepacs.dimse.contexts.choose_transfer_syntax`).
    """
    rq = request.primitive
    roles = {item.sop_class_uid: (item.scu_role, item.scp_role)
             for item in rq.user_information
             if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid}
    proposed = list(rq.presentation_context_definition_list)
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
    uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    ac.user_information = [max_length, uid, version, *role_items]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    return pdu.encode(), accepted


def check_context_name(request: Request) -> Rejection | None:
    """Only the DICOM application context is supported (PS3.7 A.2.1)."""
    name = str(request.primitive.application_context_name or "")
    if name != APPLICATION_CONTEXT:
        return Rejection(*APPLICATION_CONTEXT_NOT_SUPPORTED,
                         why=f"application context {name!r} not supported")
    return None
