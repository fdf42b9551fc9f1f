"""What an authenticated but hostile client can make the server hold (issue 14, items 1-2).

Each attack runs against a real `securepacs serve` over loopback TLS; the server's memory
is read from /proc. Every send is bounded in size and every wait in time.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from catools import ca, data_server
from harness import Server
from rawdul import (
    CT_IMAGE,
    IMPLICIT_LE,
    STUDY_FIND,
    VERIFICATION,
    associate_rq,
    p_data,
    read_pdu,
    rss,
    tls_connect,
)

from securepacs.dimse import commands as cmd

pytestmark = [pytest.mark.integration]

MiB = 1024 * 1024
CONTEXTS = ((1, VERIFICATION, (IMPLICIT_LE,)), (3, STUDY_FIND, (IMPLICIT_LE,)),
            (5, CT_IMAGE, (IMPLICIT_LE,)))


class Setup:
    def __init__(self, folder: Path, clients: Path, server: Server):
        self.folder = folder
        self.clients = clients
        self.server = server

    def files(self, name: str) -> tuple[Path, Path, Path]:
        return self.clients / f"{name}.key", self.clients / f"{name}.pem", self.clients / "ca.pem"

    def connect(self, name: str, **rq: object):  # noqa: ANN201 - ssl.SSLSocket
        """A TLS connection that sent an A-ASSOCIATE-RQ; its answer is not read yet."""
        sock = tls_connect(self.server.port, *self.files(name))
        sock.sendall(associate_rq(**{"contexts": CONTEXTS, **rq}))  # type: ignore[arg-type]
        return sock

    def associate(self, name: str):  # noqa: ANN201 - ssl.SSLSocket
        sock = self.connect(name)
        kind, _ = read_pdu(sock)
        assert kind == 0x02, f"expected A-ASSOCIATE-AC, got PDU type {kind:#x}"
        return sock

    def rss(self) -> int:
        assert self.server.proc is not None
        return rss(self.server.proc.pid)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("limits")
    folder = tmp / "data"
    ca(folder, "init")
    ca(folder, "group", "create", "echoers", "--allow", "echo")
    ca(folder, "group", "create", "radiology", "--allow", "echo,store,find,move,get")
    clients = tmp / "clients"
    ca(folder, "issue", "client", "--name", "echoer", "--org", "Elsewhere", "--group", "echoers",
       "--out", str(clients))
    ca(folder, "issue", "client", "--name", "full", "--org", "Clinic", "--group", "radiology",
       "--out", str(clients))
    ca(folder, "issue", "client", "--name", "capped", "--org", "Clinic", "--group",
       "radiology", "--out", str(clients))
    server = data_server(tmp, folder, "srv", max_associations_per_identity=4,
                         network_timeout=20).start()
    try:
        yield Setup(folder, clients, server)
    finally:
        server.stop()


def _response_status(sock) -> int | None:  # noqa: ANN001
    """The Status of the next response command set (None: the connection ended)."""
    command = b""
    while True:
        kind, body = read_pdu(sock)
        if kind != 0x04:
            return None
        pos = 0
        while pos < len(body):
            length = int.from_bytes(body[pos:pos + 4], "big")
            control = body[pos + 5]
            if control & 0x01:
                command += body[pos + 6:pos + 4 + length]
                if control & 0x02:
                    status = cmd.decode(command).get(cmd.STATUS)
                    assert isinstance(status, int)
                    return status
            pos += 4 + length


def _flood(sock, pdu: bytes, total: int) -> bool:  # noqa: ANN001
    """Send `pdu` until `total` bytes went out or the server answered/closed; whether the
    server answered (or closed) before the end."""
    sent = 0
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable or sock.pending():
            return True
        try:
            sock.sendall(pdu)
        except OSError:
            return True
        sent += len(pdu)
    return False


def test_endless_identifier_fragments_abort_the_association(setup: Setup) -> None:
    """A C-FIND identifier that never ends (no last-fragment flag): the association is
    aborted past ``max_identifier`` (1 MiB) and the server's memory stays put."""
    before = setup.rss()
    sock = setup.associate("full")
    try:
        sock.sendall(p_data(3, 0x03, cmd.request(cmd.C_FIND_RQ, 1, STUDY_FIND,
                                                  has_data_set=True)))
        stopped = _flood(sock, p_data(3, 0x00, b"\x08\x00\x52\x00" * 4000), 64 * MiB)
        assert stopped, "64 MiB of identifier fragments were all taken"
        assert read_pdu(sock)[0] in (0x07, 0)  # A-ABORT (or reset with our data unread)
    finally:
        sock.close()
    setup.server.wait_for_log(r"aborted: a data set longer than 1048576 bytes")
    assert setup.rss() - before < 48 * MiB


def test_endless_identifier_from_a_client_without_find_is_refused_and_bounded(
        setup: Setup) -> None:
    """The echo-only client of the issue: its C-FIND is refused as soon as the command set
    is complete, its identifier dropped unread, and an endless one ends the association."""
    before = setup.rss()
    sock = setup.associate("echoer")
    try:
        sock.sendall(p_data(3, 0x03, cmd.request(cmd.C_FIND_RQ, 1, STUDY_FIND,
                                                  has_data_set=True)))
        assert _flood(sock, p_data(3, 0x00, b"\x08\x00\x52\x00" * 4000), 64 * MiB)
    finally:
        sock.close()
    setup.server.wait_for_log(r"C-FIND refused: echoer \(Elsewhere/echoers, serial [0-9a-f]+\) "
                              r"lacks the 'find' permission")
    setup.server.wait_for_log(r"aborted: a refused data set longer than 1048576 bytes")
    assert setup.rss() - before < 48 * MiB


def test_endless_command_fragments_abort_the_association(setup: Setup) -> None:
    before = setup.rss()
    sock = setup.associate("echoer")
    try:
        stopped = _flood(sock, p_data(1, 0x01, b"\x00" * 16000), 64 * MiB)
        assert stopped, "64 MiB of command fragments were all taken"
    finally:
        sock.close()
    setup.server.wait_for_log(r"aborted: a command set longer than 65536 bytes")
    assert setup.rss() - before < 48 * MiB


def test_store_from_an_echo_only_client_is_refused_before_its_data_set(setup: Setup) -> None:
    """The permission is checked once the command set is complete: 12 MiB of data set
    (past the 8 MiB spill threshold) write no temp file, and the answer is 0x0124."""
    spool = setup.folder / "blobs"
    sock = setup.associate("echoer")
    try:
        sock.sendall(p_data(5, 0x03, cmd.request(cmd.C_STORE_RQ, 1, CT_IMAGE, has_data_set=True,
                                                  sop_instance_uid="1.2.3.4")))
        chunk = p_data(5, 0x00, b"\x00" * 16000)
        for _ in range(12 * MiB // 16000):
            sock.sendall(chunk)
        time.sleep(0.3)  # the server has read what we sent (TLS buffers are small)
        assert [p.name for p in spool.rglob("rx*.tmp")] == []
        sock.sendall(p_data(5, 0x02, b"\x00" * 16))
        assert _response_status(sock) == 0x0124
    finally:
        sock.close()
    setup.server.wait_for_log(r"C-STORE refused: echoer \(Elsewhere/echoers, serial [0-9a-f]+\) "
                              r"lacks the 'store' permission")
    assert list(spool.rglob("rx*.tmp")) == []


def test_announced_association_requests_cost_nothing(setup: Setup) -> None:
    """40 connections announce 16 MiB A-ASSOCIATE-RQs (and 40 more 60 KiB ones) and send
    a few bytes: refused at once, or buffered as the bytes arrive, not as announced."""
    before = setup.rss()
    socks = []
    try:
        for length in [16 * MiB] * 40 + [60 * 1024] * 40:
            sock = tls_connect(setup.server.port, *setup.files("full"))
            sock.sendall(bytes((0x01, 0)) + length.to_bytes(4, "big") + b"\x00\x01")
            socks.append(sock)
        time.sleep(1.0)
        grown = setup.rss() - before
        assert grown < 120 * MiB, f"server grew by {grown // MiB} MiB"
        for sock in socks[:40]:  # refused at once with an A-ABORT
            assert read_pdu(sock)[0] in (0x07, 0)
    finally:
        for sock in socks:
            sock.close()
    setup.server.wait_for_log(r"aborted: a 16777216-byte PDU of type 0x01, larger than the "
                              r"65536 bytes we accept")


def test_per_identity_cap_rejects_with_local_limit_exceeded(setup: Setup) -> None:
    held = [setup.associate("capped") for _ in range(4)]
    try:
        sock = setup.connect("capped")
        kind, body = read_pdu(sock)
        sock.close()
        assert kind == 0x03 and body[1:4] == bytes((2, 3, 2)), (kind, body)  # transient, local limit
        setup.server.wait_for_log(r"capped \(Clinic/radiology, serial [0-9a-f]+\) already holds "
                                  r"4 associations")
        other = setup.associate("full")  # another identity is not affected
        other.close()
    finally:
        for sock in held:
            sock.close()


def test_called_ae_title_must_be_ours(setup: Setup) -> None:
    sock = setup.connect("full", called="NOTME")
    try:
        kind, body = read_pdu(sock)
    finally:
        sock.close()
    assert kind == 0x03 and body[1:4] == bytes((1, 1, 7)), (kind, body)
    setup.server.wait_for_log(r"called AE title 'NOTME' is not this server's \(SECUREPACS\)")


def _fix_length(pdu: bytes) -> bytes:
    return pdu[:2] + (len(pdu) - 6).to_bytes(4, "big") + pdu[6:]


def test_malformed_association_requests_get_an_abort_and_one_line(setup: Setup) -> None:
    bad_utf = bytearray(associate_rq())
    bad_utf[10:26] = b"\xff\xfe" * 8  # called AE title not ASCII
    odd_items = associate_rq() + b"\x20\x00\x00\x02\x01\x00"  # context item of 2 bytes
    long_uid = associate_rq(contexts=((1, b"1." * 30000, (IMPLICIT_LE,)),))
    cases = [bytes(bad_utf), _fix_length(odd_items),
             bytes((0x01, 0, 0, 0, 0, 10)) + b"\x00\x01" + b"\x00" * 8,
             _fix_length(associate_rq()[:-2] + b"\x00\x00\x00\x00\xff\xff"),
             long_uid]
    for pdu in cases:
        sock = tls_connect(setup.server.port, *setup.files("full"))
        try:
            sock.sendall(pdu)
            kind, _ = read_pdu(sock)
        finally:
            sock.close()
        assert kind in (0x03, 0x07), (kind, pdu[:80])  # A-ASSOCIATE-RJ or A-ABORT
    time.sleep(0.5)
    log = setup.server.log()
    assert "Traceback" not in log
    assert "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1." * 3 not in log
    assert max(len(line) for line in log.splitlines()) < 1000
    # the server goes on
    sock = setup.associate("full")
    with contextlib.suppress(OSError):
        sock.close()
