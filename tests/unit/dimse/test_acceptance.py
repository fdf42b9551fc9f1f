"""The plain-Python acceptor (issue 19) answers every request exactly as pynetdicom's path.

For each request: the Request the server reads (AE titles, Maximum Length, application
context), its rejections (application context, called AE title) and the A-ASSOCIATE-AC
bytes and accepted contexts are compared with what pynetdicom's decoder, negotiation and
encoder give (:func:`~securepacs.dimse.negotiation.accept_pynetdicom`, the path every
request took before). Requests in the canonical shape must take the fast path; the rest
(and random corruptions of canonical ones) must give the same outcome through pynetdicom.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import uid

from securepacs.dimse.acceptance import read_canonical
from securepacs.dimse.contexts import STORAGE_TRANSFER_SYNTAXES, supported_contexts
from securepacs.dimse.negotiation import (
    Request,
    _read_pynetdicom,
    accept,
    accept_pynetdicom,
    check_called_ae,
    check_context_name,
    presentation_contexts,
    read_request,
    supported,
)

OFFER = supported(supported_contexts())
EXAMPLES = settings(max_examples=int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "150")),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
US_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
VERIFICATION = "1.2.840.10008.1.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
GET = "1.2.840.10008.5.1.4.1.2.2.3"
WORKLIST = "1.2.840.10008.5.1.4.31"
PRIVATE = "1.2.826.0.1.3680043.10.1234.99.1"
ABSTRACTS = [CT, MR, US_RETIRED, VERIFICATION, FIND, GET, WORKLIST, PRIVATE,
             uid.JPEGLSLossless, "1.2.3", "0", "1.2.840.10008.5.1.4.1.1.88.59"]
SYNTAXES = [*STORAGE_TRANSFER_SYNTAXES[:8], uid.JPEG2000, "1.2.3.4.5.6", "1.2.840.10008.1.2.4.999"]


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _role(sop_class: bytes, scu: int, scp: int) -> bytes:
    return _item(0x54, struct.pack(">H", len(sop_class)) + sop_class + bytes((scu, scp)))


def _body(*, called: bytes = b"SECUREPACS", calling: bytes = b"MODALITY",
          application: bytes = b"1.2.840.10008.3.1.1.1",
          contexts: list[tuple[int, bytes, list[bytes]]] | None = None,
          user: list[bytes] | None = None) -> bytes:
    """An A-ASSOCIATE-RQ body (after the 6-byte PDU header)."""
    items = [_item(0x10, application)]
    for context_id, abstract, syntaxes in contexts if contexts is not None else [
            (1, CT.encode(), [uid.ExplicitVRLittleEndian.encode()])]:
        items.append(_item(0x20, bytes((context_id, 0, 0, 0)) + _item(0x30, abstract)
                           + b"".join(_item(0x40, ts) for ts in syntaxes)))
    if user is None:
        user = [_item(0x51, struct.pack(">I", 16384)), _item(0x52, b"1.2.276.0.7230010.3.0.3.6.8"),
                _item(0x55, b"OFFIS_DCMTK_368")]
    items.append(_item(0x50, b"".join(user)))
    return (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
            + b"".join(items))


def _outcome(request: Request | None, error: str | None, **options: object
             ) -> tuple[object, ...]:
    """What the server makes of a request: the error, or the fields it reads, its
    rejections and its answer."""
    if request is None:
        return ("error", error)
    try:
        pdu, accepted = (accept_pynetdicom(request, presentation_contexts(OFFER), **options)  # type: ignore[arg-type]
                         if request.proposal is None else accept(request, OFFER, **options))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - compared, whatever it is
        pdu, accepted = f"{type(exc).__name__}: {exc}".encode(), {}
    return (request.calling_ae, request.called_ae, request.max_pdu,
            request.application_context, check_context_name(request),
            check_called_ae(request, "SECUREPACS"), pdu, accepted)


def _both(body: bytes, **options: object) -> tuple[Request | None, tuple[object, ...],
                                                    tuple[object, ...]]:
    """(the request as read, our outcome, pynetdicom's outcome) for `body`."""
    options = {"ae_title": "SECUREPACS", "max_pdu": 131072, **options}
    ours = reference = None
    ours_error = reference_error = None
    try:
        ours = read_request(body)
    except ValueError as exc:
        ours_error = str(exc)
    try:
        reference = _read_pynetdicom(body) if ours_error is None else None
    except ValueError as exc:
        reference_error = str(exc)
    if ours_error is not None:  # the structure check, before either decoder
        reference_error = ours_error
    return (ours, _outcome(ours, ours_error, **options),
            _outcome(reference, reference_error, **options))


# -- requests DCMTK and others send ---------------------------------------------------

STORESCU = _body(calling=b"BENCH", contexts=[
    (2 * n + 1, sop_class.encode(), [ts.encode() for ts in (uid.ExplicitVRLittleEndian,
                                                           uid.ExplicitVRBigEndian,
                                                           uid.ImplicitVRLittleEndian)])
    for n, (sop_class, _syntaxes, _roles) in enumerate(supported_contexts()[7:127])])


@pytest.mark.parametrize("policy", ["as-proposed", "prefer", "uncompressed"])
@pytest.mark.parametrize("unknown", [False, True])
@pytest.mark.parametrize("body", [
    STORESCU,
    _body(),  # one context, as storescu with one file
    _body(contexts=[(1, VERIFICATION.encode(), [b"1.2.840.10008.1.2"])]),  # echoscu
    _body(contexts=[(1, CT.encode(), [uid.JPEGLSLossless.encode(), b"1.2.840.10008.1.2.1"]),
                    (3, CT.encode(), [b"1.2.840.10008.1.2"]),
                    (5, PRIVATE.encode(), [b"1.2.840.10008.1.2.1"]),
                    (7, WORKLIST.encode(), [b"1.2.840.10008.1.2"]),
                    (9, b"1.2.3", [b"1.2.3.4.5.6"]),
                    (11, MR.encode(), [b"1.2.3.4.5.6"]),
                    (255, GET.encode(), [b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2"])]),
    # a C-GET requestor taking the SCP role for the classes it retrieves (getscu)
    _body(contexts=[(1, GET.encode(), [b"1.2.840.10008.1.2"]),
                    (3, CT.encode(), [b"1.2.840.10008.1.2.1"]),
                    (5, MR.encode(), [b"1.2.840.10008.1.2"]),
                    (7, US_RETIRED.encode(), [b"1.2.840.10008.1.2"]),
                    (9, PRIVATE.encode(), [b"1.2.840.10008.1.2"]),
                    (11, VERIFICATION.encode(), [b"1.2.840.10008.1.2"])],
          user=[_item(0x51, struct.pack(">I", 0)), _item(0x52, b"1.2.3.4"),
                _role(CT.encode(), 0, 1), _role(MR.encode(), 1, 1),
                _role(US_RETIRED.encode(), 1, 0), _role(PRIVATE.encode(), 0, 0),
                _role(VERIFICATION.encode(), 0, 1), _role(b"1.2.9", 0, 1)]),
    # odd-length UIDs padded with one NUL, AE titles with leading spaces
    _body(called=b"  SECUREPACS", calling=b" A B ",
          contexts=[(1, CT.encode() + b"\x00", [b"1.2.840.10008.1.2\x00"])],
          user=[_item(0x52, b"1.2.3\x00"), _item(0x51, struct.pack(">I", 65536))]),
    # rejected: another application context, another called AE title
    _body(application=b"1.2.840.10008.3.1.1.2"),
    _body(called=b"SOMEONE"),
])
def test_common_requests_take_the_fast_path_with_the_same_answers(
        body: bytes, policy: str, unknown: bool) -> None:
    request, ours, reference = _both(body, policy=policy, accept_unknown_storage=unknown)
    assert request is not None and request.proposal is not None
    assert ours == reference
    assert ours[6][:1] == b"\x02"  # an A-ASSOCIATE-AC


def test_storescu_request_is_answered_in_well_under_a_millisecond_per_context() -> None:
    """Not a timing assertion: the fast path builds no pynetdicom object at all."""
    offer = supported(supported_contexts())
    request = read_request(STORESCU)
    pdu, accepted = accept(request, offer, ae_title="SECUREPACS", max_pdu=131072)
    assert offer.pynetdicom is None and request._primitive is None
    assert len(accepted) == 120 and pdu == accept_pynetdicom(
        _read_pynetdicom(STORESCU), presentation_contexts(offer), ae_title="SECUREPACS",
        max_pdu=131072)[0]


# -- requests outside the canonical shape go through pynetdicom, unchanged ------------------

_UNUSUAL = {
    "user identity sub-item": _body(user=[_item(0x51, b"\0\0@\0"), _item(0x52, b"1.2.3"),
                                          _item(0x58, b"\x01\x00\x00\x04user\x00\x00")]),
    "asynchronous operations window": _body(user=[_item(0x51, b"\0\0@\0"), _item(0x52, b"1.2"),
                                                  _item(0x53, b"\0\1\0\1")]),
    "no implementation class UID": _body(user=[_item(0x51, b"\0\0@\0")]),
    "no maximum length": _body(user=[_item(0x52, b"1.2.3")]),
    "two maximum lengths": _body(user=[_item(0x51, b"\0\0@\0"), _item(0x51, b"\0\0\1\0"),
                                       _item(0x52, b"1.2.3")]),
    "a 5-byte maximum length": _body(user=[_item(0x51, b"\0\0@\0\0"), _item(0x52, b"1.2.3")]),
    "non-conformant abstract syntax": _body(contexts=[(1, b"1.2.03", [b"1.2.840.10008.1.2"])]),
    "letters in a transfer syntax": _body(contexts=[(1, CT.encode(), [b"1.2.840.10008.1.2a"])]),
    "empty transfer syntax": _body(contexts=[(1, CT.encode(), [b""])]),
    "no transfer syntax": _body(contexts=[(1, CT.encode(), [])]),
    "repeated transfer syntax": _body(contexts=[(1, CT.encode(), [b"1.2.840.10008.1.2"] * 2)]),
    "even context ID": _body(contexts=[(2, CT.encode(), [b"1.2.840.10008.1.2"])]),
    "context ID used twice": _body(contexts=[(1, CT.encode(), [b"1.2.840.10008.1.2"]),
                                             (1, MR.encode(), [b"1.2.840.10008.1.2"])]),
    "two NULs after a UID": _body(contexts=[(1, CT.encode() + b"\0\0",
                                             [b"1.2.840.10008.1.2"])]),
    "backslash in the calling AE": _body(calling=b"A\\B"),
    "control character in the called AE": _body(called=b"SECURE\tPACS"),
    "called AE all spaces": _body(called=b""),
    "non-ASCII calling AE": _body(calling=b"CAF\xc9"),
    "role item with role 2": _body(user=[_item(0x51, b"\0\0@\0"), _item(0x52, b"1.2"),
                                         _role(CT.encode(), 2, 1)]),
    "role item longer than its UID": _body(user=[_item(0x51, b"\0\0@\0"), _item(0x52, b"1.2"),
                                                 _item(0x54, b"\0\x031.2\0\1\0")]),
    "long version name": _body(user=[_item(0x51, b"\0\0@\0"), _item(0x52, b"1.2"),
                                     _item(0x55, b"X" * 17)]),
    "no application context": _body()[:68] + _body()[68 + 25:],
    "no presentation context item type": _body() + _item(0x21, b"\1\0\0\0"),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(_UNUSUAL))
def test_unusual_requests_take_pynetdicoms_path(name: str) -> None:
    body = _UNUSUAL[name]
    assert read_canonical(body) is None
    request, ours, reference = _both(body, accept_unknown_storage=True)
    assert request is None or request.proposal is None
    assert ours == reference


# -- generated and corrupted requests ---------------------------------------------------------

_uids = st.sampled_from([u.encode() for u in ABSTRACTS])
_syntaxes = st.lists(st.sampled_from([s.encode() for s in SYNTAXES]), min_size=1, max_size=4,
                     unique=True)
_contexts = st.lists(st.tuples(_uids, _syntaxes), max_size=8)
_roles = st.lists(st.tuples(_uids, st.integers(0, 1), st.integers(0, 1)), max_size=4)
_aes = st.sampled_from([b"SECUREPACS", b" SECUREPACS", b"OTHER", b"A", b"X" * 16, b"a b c"])


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    contexts = draw(_contexts)
    ids = draw(st.permutations(range(1, 256, 2)))[:len(contexts)]
    user = [_item(0x51, struct.pack(">I", draw(st.sampled_from([0, 16384, 131072, 2**32 - 1])))),
            _item(0x52, b"1.2.826.0.1.3680043.2.1143.107.104.103.115.2.8.4")]
    if draw(st.booleans()):
        user.append(_item(0x55, b"PYNETDICOM_304"))
    user += [_role(sop_class, scu, scp) for sop_class, scu, scp in draw(_roles)]
    if draw(st.booleans()):
        user.reverse()
    return _body(called=draw(_aes), calling=draw(_aes),
                 application=draw(st.sampled_from([b"1.2.840.10008.3.1.1.1", b"1.2.3"])),
                 contexts=[(cid, abstract, syntaxes)
                           for cid, (abstract, syntaxes) in zip(ids, contexts, strict=False)],
                 user=user)


@EXAMPLES
@given(_requests(), st.sampled_from(["as-proposed", "prefer", "uncompressed"]), st.booleans())
def test_generated_requests_get_pynetdicoms_answers(body: bytes, policy: str,
                                                    unknown: bool) -> None:
    request, ours, reference = _both(body, policy=policy, accept_unknown_storage=unknown)
    assert request is not None and request.proposal is not None
    assert ours == reference


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on corrupted UIDs
@EXAMPLES
@given(_requests(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                             min_size=1, max_size=3))
def test_corrupted_requests_get_the_same_outcome(body: bytes,
                                                 flips: list[tuple[int, int]]) -> None:
    """Whatever a corruption leaves canonical is answered as pynetdicom answers it; the
    rest goes through pynetdicom itself (the same error, or the same answer)."""
    out = bytearray(body)
    for pos, value in flips:
        out[pos % len(out)] = value
    _request, ours, reference = _both(bytes(out), accept_unknown_storage=True)
    assert ours == reference
