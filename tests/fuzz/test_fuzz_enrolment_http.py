"""Fuzz target: the enrolment endpoint's HTTP parser and request handling (issue 14).

Whatever bytes arrive, in whatever pieces, the parser raises only ``HttpError`` and the
server's request handler answers one well-formed HTTP response (or sees the client gone):
never another exception, never a traceback. ``SECUREPACS_FUZZ_EXAMPLES`` sets the number of
examples per target (200 by default, a few seconds; e.g. 100000 for a nightly run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securepacs.index.trust import SqlTrustStore
from securepacs.pki import tlspolicy
from securepacs.services.authority import CertificateAuthority
from securepacs.web import enrolment
from securepacs.web.enrolment_http import HttpError, body_length, find_head_end, parse_head
from securepacs.web.throttle import RateLimiter

FUZZ = settings(max_examples=int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "200")),
                deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])

METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"G\x00T", b"", b"POST POST"])
TARGETS = st.sampled_from([b"/enroll", b"/ca.pem", b"/", b"*", b"/enroll?x=1", b"/\xff",
                           b"http://x/enroll"])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"http/1.1"])
NAMES = st.sampled_from([b"Host", b"Content-Length", b"content-length", b"Transfer-Encoding",
                         b"Content-Type", b"X", b"Bad Name", b"", b"\x00"])
VALUES = st.one_of(st.sampled_from([b"abc", b"-1", b"0", b"5", b"12", b"99999999999999999999",
                                    b" 7 ", b"chunked", b"1,1", b"\r", b"\n"]),
                   st.binary(max_size=20))
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=6)
BODIES = st.one_of(
    st.binary(max_size=64),
    st.just(b'{"secret": "x", "csr": "-----BEGIN CERTIFICATE REQUEST-----\\nAAAA\\n"}'),
    st.builds(lambda s, c, n: json.dumps({"secret": s, "csr": c, "name": n}).encode(),
              st.one_of(st.text(max_size=8), st.integers(), st.none()),
              st.one_of(st.text(max_size=16), st.lists(st.integers(), max_size=2)),
              st.one_of(st.text(max_size=8), st.none(), st.integers())),
    st.just(b"[" * 5000), st.just(b'"\\ud800"'))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Mostly well-formed requests with one or more things wrong."""
    line = b" ".join([draw(METHODS), draw(TARGETS), draw(VERSIONS)])
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in draw(FIELDS))
    body = draw(BODIES)
    if draw(st.booleans()):
        fields += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return line + b"\r\n" + fields + b"\r\n" + body


class Pieces:
    """A socket stand-in that hands out the request in the drawn pieces, then EOF."""

    def __init__(self, data: bytes, cuts: list[int]):
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        self.chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]

    def settimeout(self, value: float) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[enrolment.EnrolmentServer]:
    folder: Path = tmp_path_factory.mktemp("fuzz-enrol")
    store = SqlTrustStore(f"sqlite:///{folder / 'index.sqlite'}")
    store.create_schema()
    ca = CertificateAuthority(store, folder / "pki")
    at = datetime.now(UTC)
    ca.init(at=at)
    ca.issue_server("fuzz-srv", sans=["127.0.0.1"], out=folder / "pki", at=at, file_stem="server")
    context = tlspolicy.server_context(folder / "pki" / "server.pem", folder / "pki" / "server.key",
                                       ca.ca_path, require_client_cert=False)
    srv = enrolment.EnrolmentServer(("127.0.0.1", 0), ca, context, ae_title="FUZZ",
                                    clock=lambda: datetime.now(UTC),
                                    limiter=RateLimiter(rate=1e9, burst=10**9))
    yield srv
    srv.server_close()


@FUZZ
@given(st.one_of(st.binary(max_size=512), requests()))
def test_parser_raises_only_http_errors(data: bytes) -> None:
    try:
        end = find_head_end(data)
        head = parse_head(data[:end] if end >= 0 else data)
        assert 0 <= body_length(head, limit=enrolment.MAX_BODY) <= enrolment.MAX_BODY
    except HttpError as exc:
        assert 400 <= exc.status < 600 and "\n" not in exc.message


@FUZZ
@given(st.one_of(requests(), st.binary(max_size=256)), st.lists(st.integers(0, 4096), max_size=6))
def test_request_handling_always_answers_one_response(
        server: enrolment.EnrolmentServer, data: bytes, cuts: list[int]) -> None:
    try:
        reply = server._answer(Pieces(data, cuts), "127.0.0.1", 4242)
    except enrolment._Gone:
        return  # the client hung up before its request was complete: nothing to answer
    head, sep, body = reply.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 ") and b"Python" not in head
    status = int(head.split()[1])
    assert status in (200, 400, 403, 404, 405, 408, 413, 431, 501, 505)
    if status != 200 or b"application/json" in head:
        assert isinstance(json.loads(body), dict)
