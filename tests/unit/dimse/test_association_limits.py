"""The acceptor's admission limits (issue 14): memory budget, per-identity cap, called AE
title, over a socket pair, no TLS."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from securepacs.dimse import channel as ch
from securepacs.dimse.association import AcceptorSettings, Registry, serve_connection
from securepacs.dimse.contexts import supported_contexts
from securepacs.dimse.negotiation import supported
from securepacs.model.identity import Identity
from securepacs.services.audit_events import NoAudit


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(called: str = "SECUREPACS") -> bytes:
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    items += _item(0x20, bytes((1, 0, 0, 0)) + _item(0x30, b"1.2.840.10008.1.1")
                   + _item(0x40, b"1.2.840.10008.1.2"))
    items += _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + b"CALLER".ljust(16)
            + bytes(32) + items)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def answer(settings: AcceptorSettings, registry: Registry, called: str = "SECUREPACS",
           identity: Identity | None = None) -> tuple[bytes, socket.socket, threading.Thread]:
    a, b = socket.socketpair()
    a.settimeout(10)
    t = threading.Thread(target=serve_connection, args=(b,), kwargs=dict(
        identity=identity, address=("127.0.0.1", 1), settings=settings, audit=NoAudit(),
        registry=registry, dispatch=lambda *args: None,
        spill=lambda assoc: (lambda command, context_id: None)), daemon=True)
    t.start()
    a.sendall(associate_rq(called))
    return a.recv(10), a, t


def make_settings(**extra: object) -> AcceptorSettings:
    return AcceptorSettings(ae_title="SECUREPACS", max_pdu=16384,
                            contexts=supported(supported_contexts()[:1]), acse_timeout=5,
                            network_timeout=5, dimse_timeout=5, **extra)  # type: ignore[arg-type]


def close(sock: socket.socket, thread: threading.Thread) -> None:
    sock.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_spent_memory_budget_refuses_new_associations() -> None:
    budget = ch.Budget(4 * ch.BUDGET_STEP)
    settings = make_settings(budget=budget)
    head, sock, t = answer(settings, Registry())
    assert head[0] == 0x02  # accepted
    close(sock, t)
    assert budget.take(4 * ch.BUDGET_STEP - 100)
    head, sock, t = answer(settings, Registry())
    close(sock, t)
    assert head[0] == 0x03 and head[7:10] == bytes((2, 3, 2))  # transient, local limit


@pytest.mark.parametrize("accept_any", [False, True])
def test_called_ae_title(accept_any: bool) -> None:
    head, sock, t = answer(make_settings(accept_any_called_ae=accept_any), Registry(),
                           called="NOTME")
    close(sock, t)
    if accept_any:
        assert head[0] == 0x02
    else:
        assert head[0] == 0x03 and head[7:10] == bytes((1, 1, 7))


def test_per_identity_cap() -> None:
    settings = make_settings(max_associations_per_identity=2)
    registry = Registry()
    alice, bob = Identity("alice", 1), Identity("bob", 2)
    held = [answer(settings, registry, identity=alice) for _ in range(2)]
    assert all(head[0] == 0x02 for head, _, _ in held)
    head, sock, t = answer(settings, registry, identity=alice)
    close(sock, t)
    assert head[0] == 0x03 and head[7:10] == bytes((2, 3, 2))
    head, sock, t = answer(settings, registry, identity=bob)
    close(sock, t)
    assert head[0] == 0x02
    for _, sock, t in held:
        close(sock, t)
