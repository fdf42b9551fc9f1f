"""Transfer syntax negotiation as the acceptor honours the requestor's order (issue 17 item 1)."""

from __future__ import annotations

import pytest
from pydicom import uid
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

from securepacs.dimse.channel import PDU_HEADER
from securepacs.dimse.contexts import (
    STORAGE_TRANSFER_SYNTAXES,
    choose_transfer_syntax,
    could_be_storage,
    supported_contexts,
)
from securepacs.dimse.negotiation import accept, read_request, supported

CT = "1.2.840.10008.5.1.4.1.1.2"
LS = uid.JPEGLSLossless
J2K = uid.JPEG2000Lossless
LEE = uid.ExplicitVRLittleEndian
LEI = uid.ImplicitVRLittleEndian
BEE = uid.ExplicitVRBigEndian


@pytest.mark.parametrize(("proposed", "policy", "expected"), [
    ([LS, LEE], "as-proposed", LS),
    ([J2K, LEE, BEE, LEI], "as-proposed", J2K),
    ([LEI, LEE], "as-proposed", LEE),
    ([LEI, BEE], "as-proposed", LEI),
    ([BEE, LEE, LEI], "as-proposed", BEE),  # the corpus test: a Big Endian file kept so
    ([uid.DeflatedExplicitVRLittleEndian, LEE], "as-proposed",
     uid.DeflatedExplicitVRLittleEndian),
    ([LEE, LS], "prefer", LS),
    ([LS, LEE], "uncompressed", LEE),
    ([LS], "uncompressed", LS),
    (["1.2.3.4.unknown", LEE], "as-proposed", LEE),
    (["1.2.3.4.unknown"], "as-proposed", None),
])
def test_choose_follows_the_requestor_and_the_site_policy(proposed, policy, expected) -> None:  # noqa: ANN001
    assert choose_transfer_syntax(proposed, STORAGE_TRANSFER_SYNTAXES, policy) == expected


def _request(*contexts: tuple[int, str, list[str]]) -> bytes:
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title = "DCMSEND"
    rq.called_ae_title = "SECUREPACS"
    items = []
    for context_id, abstract, syntaxes in contexts:
        cx = PresentationContext()
        cx.context_id = context_id
        cx.abstract_syntax = abstract
        cx.transfer_syntax = syntaxes
        items.append(cx)
    rq.presentation_context_definition_list = items
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    rq.user_information = [ml]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    return pdu.encode()[PDU_HEADER.size:]


@pytest.mark.parametrize(("policy", "expected"), [("as-proposed", LS), ("uncompressed", LEE)])
def test_accept_takes_the_requestors_first_supported_syntax(policy: str, expected: str) -> None:
    request = read_request(_request((1, CT, [LS, LEE]), (3, CT, [LEE]),
                                    (5, "1.2.3.999", [LEE])))
    _pdu, accepted = accept(request, supported(supported_contexts()), ae_title="SECUREPACS",
                            max_pdu=65536, policy=policy)
    assert accepted[1].transfer_syntax == expected
    assert accepted[3].transfer_syntax == LEE
    assert 5 not in accepted


def test_unknown_storage_classes_are_accepted_only_with_the_option() -> None:
    """Issue 17 item 3: a private SOP class is accepted as storage when the site allows it;
    a known non-storage class (Modality Worklist) never is."""
    worklist = "1.2.840.10008.5.1.4.31"
    raw = _request((1, "1.2.826.0.1.3680043.10.1234.99.1", [LS, LEE]), (3, worklist, [LEE]))
    _pdu, off = accept(read_request(raw), supported(supported_contexts()), ae_title="SECUREPACS",
                       max_pdu=65536)
    assert off == {}
    _pdu, on = accept(read_request(raw), supported(supported_contexts()), ae_title="SECUREPACS",
                      max_pdu=65536, accept_unknown_storage=True)
    assert list(on) == [1] and on[1].transfer_syntax == LS


def test_could_be_storage() -> None:
    assert could_be_storage("1.2.826.0.1.3680043.10.1234.99.1")
    assert could_be_storage("1.2.840.10008.5.1.4.1.1.6")  # retired US, a storage class
    assert not could_be_storage("1.2.840.10008.5.1.4.31")  # worklist
    assert not could_be_storage(uid.JPEGLSLossless)  # a transfer syntax
    assert not could_be_storage("1.2.03.4") and not could_be_storage("1." + "2" * 70)


def test_a_repeated_request_gets_the_same_answer_without_decoding_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: the answer to an A-ASSOCIATE-RQ body seen before is remembered (a sender
    proposes the same ~120 contexts on every association); another body is negotiated."""
    from securepacs.dimse import negotiation

    calls: list[str] = []
    real_read, real_accept = negotiation.read_request, negotiation.accept

    def read(body):  # noqa: ANN001, ANN202
        calls.append("read")
        return real_read(body)

    def agree(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append("accept")
        return real_accept(*args, **kwargs)

    monkeypatch.setattr(negotiation, "read_request", read)
    monkeypatch.setattr(negotiation, "accept", agree)
    cache = negotiation.Negotiated(size=2)
    ours = supported(supported_contexts())
    options = dict(ae_title="SECUREPACS", max_pdu=65536, policy="as-proposed",
                   accept_unknown_storage=False)
    first = bytearray(_request((1, CT, [LS, LEE])))
    answers = []
    for _ in range(3):
        request = cache.request(first)
        answers.append(cache.accept(first, request, ours, **options))
    assert calls == ["read", "accept"]
    assert answers[0][0] == answers[2][0] and answers[0][1] == answers[2][1]
    answers[1][1].clear()  # a caller's copy: the next association's is whole
    assert cache.accept(first, cache.request(first), ours, **options)[1] == answers[0][1]
    other = _request((1, CT, [LEE]))
    _pdu, accepted = cache.accept(other, cache.request(other), ours, **options)
    assert accepted[1].transfer_syntax == LEE and calls[-2:] == ["read", "accept"]
    third = _request((3, CT, [LEE]))
    cache.accept(third, cache.request(third), ours, **options)
    cache.request(first)  # pushed out by the two newer bodies (size 2): decoded again
    assert calls[-1] == "read"
