"""The enrolment listener against hostile clients (issue 14, items 4 and 6): a real
:class:`EnrolmentServer` with a real CA and TLS on loopback, raw sockets on the client side."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from securepacs.index.trust import SqlTrustStore
from securepacs.model.identity import Permission
from securepacs.pki import authority, csr, tlspolicy
from securepacs.services.authority import CertificateAuthority, parse_token
from securepacs.web.enrolment import EnrolmentServer
from securepacs.web.throttle import FailureAggregator, RateLimiter

HOST = "127.0.0.1"


class Recorder:
    """Collects the security alerts the server raises (the audit sink's side)."""

    def __init__(self) -> None:
        self.refused: list[tuple[str, str]] = []
        self.enrolments: list[tuple[str, str]] = []

    def token_refused(self, *, address: str, reason: str) -> None:
        self.refused.append((address, reason))

    def enrolled(self, *, subject: str, address: str, detail: str) -> None:
        self.enrolments.append((subject, address))


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    store = SqlTrustStore(f"sqlite:///{tmp_path / 'index.sqlite'}")
    store.create_schema()
    ca_ = CertificateAuthority(store, tmp_path / "pki")
    at = datetime.now(UTC)
    ca_.init(at=at)
    ca_.create_group("radiology", Permission.parse_list("echo"))
    ca_.issue_server("enrol-srv", sans=[HOST], out=tmp_path / "pki", at=at, file_stem="server")
    return ca_


@pytest.fixture
def start(ca: CertificateAuthority) -> Iterator[Callable[..., tuple[EnrolmentServer, Recorder]]]:
    servers: list[EnrolmentServer] = []

    def make(**options: Any) -> tuple[EnrolmentServer, Recorder]:
        context = tlspolicy.server_context(ca.pki_dir / "server.pem", ca.pki_dir / "server.key",
                                           ca.ca_path, require_client_cert=False)
        recorder = Recorder()
        server = EnrolmentServer((HOST, 0), ca, context, ae_title="SECUREPACS",
                                 clock=lambda: datetime.now(UTC), handshake_timeout=2.0,
                                 audit=recorder, **options)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server, recorder

    yield make
    for server in servers:
        server.stop()


def connect(server: EnrolmentServer, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, server.server_address[1]), timeout=timeout)
    return tlspolicy.pinning_client_context().wrap_socket(raw, server_hostname=HOST)


def exchange(server: EnrolmentServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(request)
        data = read_all(sock, 5.0)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def enrol_request(secret: str, name: str | None = None) -> bytes:
    request = csr.csr_pem(csr.make_csr(authority.generate_key("ec"), "whatever")).decode()
    body = json.dumps({"secret": secret, "csr": request, "name": name}).encode()
    return (b"POST /enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_content_length_abc_is_a_400_and_there_is_no_banner(start: Callable[..., Any]) -> None:
    server, _ = start()
    status, fields, body = exchange(
        server, b"POST /enroll HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
    assert status == 400 and json.loads(body) == {"error": "malformed Content-Length"}
    status, fields, body = exchange(server, b"GET /ca.pem HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and body.startswith(b"-----BEGIN CERTIFICATE-----")
    assert "server" not in fields and b"Python" not in body
    for bad in (b"GET /ca.pem HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                b"POST /enroll HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                b"POST /enroll HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"\x00\xff garbage\r\n\r\n"):
        assert exchange(server, bad)[0] == 400, bad
    assert exchange(server, b"POST /enroll HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")[0] == 501
    assert exchange(server, b"POST /enroll HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")[0] == 413
    assert exchange(server, b"GET /x HTTP/1.1\r\nA: " + b"a" * 9000 + b"\r\n\r\n")[0] == 431


def test_slow_clients_are_cut_at_the_deadline_and_connections_are_capped(
        start: Callable[..., Any]) -> None:
    server, _ = start(request_timeout=1.0, max_connections=6, max_per_source=100)
    threads_before = threading.active_count()
    opened: list[ssl.SSLSocket] = []
    closed_at_once = 0
    began = time.monotonic()
    for _ in range(20):
        try:
            sock = connect(server, timeout=3.0)
            sock.sendall(b"POST /enroll HTTP/1.1\r\nHost: x\r\nContent-Le")  # and nothing more
            opened.append(sock)
        except (ssl.SSLError, OSError):
            closed_at_once += 1
    assert server.active_connections <= 6
    assert threading.active_count() - threads_before <= 6
    assert closed_at_once >= 10  # beyond the cap: closed before the handshake
    answers = [read_all(sock, 4.0) for sock in opened]
    for sock in opened:
        sock.close()
    assert time.monotonic() - began < 1.0 + 4.0 + 2.0
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
    for _ in range(50):
        if server.active_connections == 0:
            break
        time.sleep(0.05)
    assert server.active_connections == 0
    assert exchange(server, b"GET /ca.pem HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200  # still serving


def test_a_trickling_client_is_cut_at_the_deadline_whatever_its_pace(
        start: Callable[..., Any]) -> None:
    server, _ = start(request_timeout=1.0)
    with connect(server) as sock:
        began = time.monotonic()
        cut = None
        for byte in b"POST /enroll HTTP/1.1\r\nHost: some.where.example\r\nX-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except (ssl.SSLError, OSError):
                cut = time.monotonic() - began
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                if sock.recv(100).startswith(b"HTTP/1.1 408"):
                    cut = time.monotonic() - began
                    break
            except (TimeoutError, ssl.SSLWantReadError):
                pass
            except (ssl.SSLError, OSError):
                cut = time.monotonic() - began
                break
    assert cut is not None and 0.9 <= cut <= 2.5


def test_wrong_tokens_are_throttled_and_audited_once_per_source_per_window(
        ca: CertificateAuthority, start: Callable[..., Any]) -> None:
    server, recorder = start(limiter=RateLimiter(rate=0.01, burst=5),
                             failures=FailureAggregator(window=1.0))
    statuses = []
    for _ in range(12):
        status, fields, body = exchange(server, enrol_request("wrong-secret"))
        statuses.append(status)
        if status == 429:
            assert int(fields["retry-after"]) >= 1
    assert statuses[:5] == [403] * 5 and statuses[5:] == [429] * 7
    assert recorder.refused == []  # nothing yet: the window is still open
    for _ in range(60):
        if recorder.refused:
            break
        time.sleep(0.05)
    assert len(recorder.refused) == 1
    address, reason = recorder.refused[0]
    assert address == HOST and reason.startswith("12 refused enrolment request(s)")
    assert "not recognised" in reason and "rate limited" in reason


def test_enrolment_over_the_wire_uses_the_asked_name_only_if_free_and_well_formed(
        ca: CertificateAuthority, start: Callable[..., Any]) -> None:
    server, _ = start()
    secret = parse_token(ca.invite(organization="C", group="radiology",
                                   valid_for=timedelta(hours=1), at=datetime.now(UTC)))[0]
    status, _, body = exchange(server, enrol_request(secret, name="bad\nname"))
    assert status == 400 and "\n" not in json.loads(body)["error"]
    status, _, body = exchange(server, enrol_request(secret, name="enrol-srv"))  # taken
    assert status == 200 and json.loads(body)["name"].startswith("c-")
    secret = parse_token(ca.invite(organization="C", group="radiology",
                                   valid_for=timedelta(hours=1), at=datetime.now(UTC)))[0]
    status, _, body = exchange(server, enrol_request(secret, name="us01"))
    assert status == 200 and json.loads(body)["name"] == "us01"
