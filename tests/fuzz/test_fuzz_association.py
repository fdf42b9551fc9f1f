"""Fuzz the upper-layer parsers (PS3.8 9.3): A-ASSOCIATE-RQ decoding and the acceptor's PDU
and message reader, with hostile bytes.

Property: only the documented exceptions escape (ValueError from
:func:`securepacs.dimse.negotiation.read_request`; the channel's own exception types from
:meth:`PduChannel.receive`), and what the reader allocates is bounded by the bytes that
arrived, never by the lengths they announce. A longer run for nightly use:
``SECUREPACS_FUZZ_EXAMPLES=20000 pytest tests/fuzz``.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securepacs.dimse import channel as ch
from securepacs.dimse import commands as cmd
from securepacs.dimse.negotiation import read_request

FUZZ = settings(max_examples=int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "200")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value) & 0xFFFF) + value


def _request(called: bytes, calling: bytes, items: list[bytes]) -> bytes:
    return struct.pack(">HH", 1, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16] + bytes(32) \
        + b"".join(items)


uids = st.one_of(st.sampled_from([b"1.2.840.10008.1.1", b"1.2.840.10008.1.2",
                                  b"1.2.840.10008.3.1.1.1"]),
                 st.binary(max_size=80))
sub_items = st.builds(_item, st.sampled_from([0x30, 0x40, 0x51, 0x52, 0x54, 0x55, 0x00]), uids)
context_items = st.builds(lambda cid, subs: _item(0x20, bytes((cid, 0, 0, 0)) + b"".join(subs)),
                          st.integers(0, 255), st.lists(sub_items, max_size=4))
top_items = st.one_of(context_items,
                      st.builds(_item, st.sampled_from([0x10, 0x50, 0x21, 0xFF]), uids),
                      st.builds(lambda subs: _item(0x50, b"".join(subs)),
                                st.lists(sub_items, max_size=4)))
requests = st.builds(_request, st.binary(max_size=16), st.binary(max_size=16),
                     st.lists(top_items, max_size=6))


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out[:cut] if cut < len(out) else out)


@FUZZ
@given(requests, st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
       st.integers(0, 2000))
def test_read_request_raises_only_value_error(body: bytes, flips, cut: int) -> None:  # noqa: ANN001
    try:
        request = read_request(_mutate(body, flips, cut))
    except ValueError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400  # one bounded log line
        return
    assert len(request.calling_ae) <= 16


@FUZZ
@given(st.binary(max_size=4000))
def test_read_request_on_raw_bytes(body: bytes) -> None:
    try:
        read_request(body)
    except ValueError:
        pass


RECEIVE_ERRORS = (ch.PeerClosed, ch.PeerAborted, ch.PeerReleased, ch.UnexpectedPdu,
                  ch.PduTooLarge, ValueError, TimeoutError)


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    item = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBI", 0x04, 0, len(item)) + item


pdus = st.one_of(
    st.builds(_pdv, st.integers(0, 255), st.integers(0, 3), st.binary(max_size=300)),
    st.builds(lambda cid, ctl: _pdv(cid, ctl, cmd.request(cmd.C_FIND_RQ, 1, "1.2.3",
                                                          has_data_set=True)),
              st.integers(0, 3), st.sampled_from([0x01, 0x03])),
    st.builds(lambda kind, length, tail: struct.pack(">BBI", kind, 0, length) + tail,
              st.integers(0, 8), st.sampled_from([0, 1, 4, 100, 1 << 20, 16 << 20, 0xFFFFFFFF]),
              st.binary(max_size=64)),
)


@FUZZ
@given(st.lists(pdus, min_size=1, max_size=8))
def test_receive_raises_only_its_own_errors_and_allocates_by_what_arrived(stream) -> None:  # noqa: ANN001
    raw = b"".join(stream)
    a, b = socket.socketpair()
    b.settimeout(2)
    budget = ch.Budget(4 << 20)
    receiver = ch.PduChannel(b, 16384, strict=True, max_control=4096, max_command=1024,
                             budget=budget)
    def write() -> None:
        try:
            a.sendall(raw)
            a.shutdown(socket.SHUT_WR)
        except OSError:  # the receiver gave up and closed first
            pass

    writer = threading.Thread(target=write, daemon=True)
    tracemalloc.start()
    try:
        writer.start()
        for _ in range(10):
            try:
                message = receiver.receive(
                    admit=lambda command, context_id: ch.Intake(limit=64 * 1024))
            except RECEIVE_ERRORS:
                break
            message.discard()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        b.close()
        writer.join(timeout=5)
        a.close()
    assert peak < 2 * len(raw) + 256 * 1024, f"{peak} bytes allocated for {len(raw)} received"
    assert budget.used == 0
