"""The requestor's association PDUs (no pynetdicom) against pynetdicom's and our acceptor's."""

from __future__ import annotations

import pytest
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    ImplementationVersionNameNotification,
    SCP_SCU_RoleSelectionNegotiation,
)

from securepacs import IMPLEMENTATION_VERSION
from securepacs.dimse.associate import (
    APPLICATION_CONTEXT,
    IMPLEMENTATION_CLASS_UID,
    AssociateReject,
    ProposedContext,
    abort_reason,
    decode_associate_ac,
    decode_associate_rj,
    encode_associate_rq,
)
from securepacs.dimse.channel import PDU_HEADER, abort_pdu
from securepacs.dimse.contexts import supported_contexts
from securepacs.dimse.negotiation import CALLING_AE_NOT_RECOGNISED, accept, read_request, supported

CT = "1.2.840.10008.5.1.4.1.1.2"
LEE, LEI = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
JPEG = "1.2.840.10008.1.2.4.50"  # odd length: not padded in a PDU item


def _rq(**kw: object) -> bytes:
    contexts = [ProposedContext(1, "1.2.840.10008.1.1", (LEE, LEI)),
                ProposedContext(3, CT, (JPEG,)), ProposedContext(5, "1.2.3.999", (LEE,))]
    return encode_associate_rq("SECUREPACS", "WS1", contexts, max_pdu=262144,
                               scp_roles=[CT], **kw)  # type: ignore[arg-type]


def test_the_request_reads_back_in_pynetdicom() -> None:
    raw = _rq()
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    assert primitive.called_ae_title == "SECUREPACS" and primitive.calling_ae_title == "WS1"
    assert primitive.application_context_name == APPLICATION_CONTEXT
    contexts = {c.context_id: (c.abstract_syntax, c.transfer_syntax)
                for c in primitive.presentation_context_definition_list}
    assert contexts == {1: ("1.2.840.10008.1.1", [LEE, LEI]), 3: (CT, [JPEG]),
                        5: ("1.2.3.999", [LEE])}
    assert primitive.maximum_length_received == 262144
    assert primitive.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    versions = [i.implementation_version_name for i in primitive.user_information
                if isinstance(i, ImplementationVersionNameNotification)]
    assert versions == [IMPLEMENTATION_VERSION]
    roles = [i for i in primitive.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)]
    assert [(r.sop_class_uid, r.scu_role, r.scp_role) for r in roles] == [(CT, False, True)]
    # the same bytes pynetdicom writes for that request (UIDs unpadded, AE titles space-padded)
    assert pdu.encode() == raw


def test_our_acceptor_accepts_it_and_the_answer_decodes() -> None:
    raw = _rq()
    request = read_request(raw[PDU_HEADER.size:])
    ac, accepted = accept(request, supported(supported_contexts()), ae_title="SECUREPACS",
                          max_pdu=65536, policy="as-proposed")
    kind, _, length = PDU_HEADER.unpack_from(ac)
    assert kind == 0x02 and length == len(ac) - PDU_HEADER.size
    answer = decode_associate_ac(ac[PDU_HEADER.size:])
    assert answer.max_pdu == 65536
    assert answer.contexts[1].result == 0 and answer.contexts[1].transfer_syntax == LEE
    assert answer.contexts[3].result == 0 and answer.contexts[3].transfer_syntax == JPEG
    assert answer.contexts[5].result == 3  # abstract syntax not supported
    assert set(accepted) == {1, 3}


def test_rejection_and_abort_in_words() -> None:
    rj = decode_associate_rj(b"\x00\x01\x01\x03")
    assert rj == AssociateReject(1, 1, 3)
    assert rj.reason_text == "Calling AE title not recognised" and not rj.transient
    pdu = A_ASSOCIATE_RJ()
    pdu.decode(bytes((3, 0, 0, 0, 0, 4, 0, *CALLING_AE_NOT_RECOGNISED)))
    assert rj.reason_text == pdu.reason_str
    busy = decode_associate_rj(b"\x00\x02\x03\x01")
    assert busy.transient and busy.reason_text == "Temporary congestion"
    assert decode_associate_rj(b"\x00\x01\x01\x09").reason_text == "reason 9"
    body = abort_pdu(2, 2)[PDU_HEADER.size:]
    theirs = A_ABORT_RQ()
    theirs.decode(abort_pdu(2, 2))
    assert abort_reason(body) == f"{theirs.source_str}: {theirs.reason_str}"
    assert abort_reason(b"") == "no reason given"


@pytest.mark.parametrize("body", [
    b"", bytes(67), bytes(68) + b"\x21\x00\x00\x09\x01",  # an item running past the end
    bytes(68) + b"\x21\x00\x00\x02\x01\x00",  # a context item shorter than 4 bytes
    bytes(68) + b"\x50\x00\x00\x06\x51\x00\x00\x02\x00\x00",  # Maximum Length of 2 bytes
])
def test_a_malformed_accept_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_associate_ac(body)


def test_bad_titles_and_uids_are_refused_before_sending() -> None:
    for called, calling in (("", "WS1"), ("X" * 17, "WS1")):
        with pytest.raises(ValueError):
            encode_associate_rq(called, calling, [], max_pdu=0)
    with pytest.raises(ValueError):
        encode_associate_rq("A", "B", [ProposedContext(1, "1." * 40, (LEE,))], max_pdu=0)
