"""PduChannel: messages cut into P-DATA-TF PDUs come back whole, large data sets go to a temp
file, a temp file that cannot be written leaves the message answerable, control PDUs end it."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from securepacs.dimse import channel as ch
from securepacs.dimse import commands as cmd


@pytest.fixture()
def pair():
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    yield ch.PduChannel(a, 16384), ch.PduChannel(b, 16384)
    a.close()
    b.close()


def send_async(sender: ch.PduChannel, *args: object) -> threading.Thread:
    t = threading.Thread(target=sender.send, args=args, daemon=True)
    t.start()
    return t


def store_command(n: int = 1) -> bytes:
    return cmd.request(cmd.C_STORE_RQ, n, "1.2.840.10008.5.1.4.1.1.2", has_data_set=True,
                       sop_instance_uid=f"1.2.3.{n}")


def test_message_without_data_set(pair) -> None:
    a, b = pair
    a.send(1, cmd.request(cmd.C_ECHO_RQ, 7, "1.2.840.10008.1.1", has_data_set=False))
    message = b.receive()
    assert message.field == cmd.C_ECHO_RQ and message.context_id == 1
    assert message.command[cmd.MESSAGE_ID] == 7 and message.dataset is None


@pytest.mark.parametrize("peer_max", [0, 1024, 16384])
def test_data_set_in_many_pdus_comes_back_whole(pair, peer_max: int) -> None:
    a, b = pair
    a.set_peer_max(peer_max)
    data = os.urandom(100_003)
    t = send_async(a, 3, store_command(), data)
    message = b.receive()
    t.join()
    assert message.context_id == 3 and message.dataset == data and message.dataset_file is None


def test_large_data_set_goes_to_a_temp_file_with_the_prefix(pair, tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(ch, "SPILL_AT", 50_000)
    a, b = pair
    data = os.urandom(200_000)
    t = send_async(a, 1, store_command(), data)
    message = b.receive(lambda command, context_id: (b"HEAD", tmp_path))
    t.join()
    assert message.dataset is None and message.dataset_file is not None
    assert message.dataset_file.parent == tmp_path
    assert message.dataset_file.name.endswith(f".{os.getpid()}.tmp")  # a sweep knows whose
    assert oct(message.dataset_file.stat().st_mode & 0o777) == "0o600"
    assert message.dataset_file.read_bytes() == b"HEAD" + data
    message.discard()
    assert not list(tmp_path.iterdir())


def test_spill_failure_reads_the_rest_and_leaves_nothing(pair, tmp_path: Path,
                                                         monkeypatch) -> None:
    monkeypatch.setattr(ch, "SPILL_AT", 50_000)
    a, b = pair
    missing = tmp_path / "gone"  # the temp file cannot be created
    t = send_async(a, 1, store_command(1), os.urandom(120_000))
    message = b.receive(lambda command, context_id: (b"", missing))
    t.join()
    assert message.spill_error is not None and message.dataset_file is None
    assert message.command[cmd.AFFECTED_SOP_INSTANCE] == "1.2.3.1"
    # the stream is still in step: the next message arrives intact
    t = send_async(a, 1, store_command(2), b"abcd")
    assert b.receive().dataset == b"abcd"
    t.join()


def test_release_is_answered_and_abort_reported(pair) -> None:
    a, b = pair
    a.sock.sendall(ch.RELEASE_RQ)
    with pytest.raises(ch.PeerReleased):
        b.receive()
    assert a.read_pdu()[0] == ch.RELEASE_RP_TYPE
    a.sock.sendall(ch.abort_pdu(2, 1))
    with pytest.raises(ch.PeerAborted) as info:
        b.receive()
    assert info.value.body[-2:] == b"\x02\x01"


def test_oversized_and_malformed_pdus(pair) -> None:
    a, b = pair
    a.sock.sendall(bytes((0x04, 0)) + (64 << 20).to_bytes(4, "big"))
    with pytest.raises(ch.PduTooLarge):
        b.receive()
    a.sock.sendall(bytes((0x04, 0, 0, 0, 0, 6)) + (100).to_bytes(4, "big") + b"\x01\x03")
    with pytest.raises(ValueError, match="malformed"):
        b.receive()


# -- limits (issue 14): what a peer can make the receiver hold --------------------------
def budget_pair(budget: ch.Budget, **limits: int):  # noqa: ANN201
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    sender = ch.PduChannel(a, 16384)
    sender.set_peer_max(16384)  # as negotiated: the receiver is strict about it
    return sender, ch.PduChannel(b, 16384, strict=True, budget=budget, **limits)


def find_command() -> bytes:
    return cmd.request(cmd.C_FIND_RQ, 1, "1.2.840.10008.5.1.4.1.2.2.1", has_data_set=True)


def test_an_identifier_past_its_limit_ends_the_message(pair) -> None:
    a, b = pair
    t = send_async(a, 1, find_command(), os.urandom(300_000))
    with pytest.raises(ch.DataSetTooLarge, match="longer than 100000 bytes"):
        b.receive(admit=lambda command, context_id: ch.Intake(limit=100_000))
    a.sock.close()  # the sender is blocked on the bytes nobody reads now
    t.join()


def test_a_refused_data_set_is_read_and_dropped(pair, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ch, "SPILL_AT", 50_000)
    a, b = pair
    asked: list[int] = []

    def admit(command: cmd.Command, context_id: int) -> ch.Intake:
        asked.append(int(command[cmd.COMMAND_FIELD]))  # type: ignore[arg-type]
        return ch.Intake(keep=False, refused=(0x0124, "no"))

    t = send_async(a, 1, store_command(), os.urandom(200_000))
    message = b.receive(lambda command, context_id: (b"", tmp_path), admit)
    t.join()
    assert asked == [cmd.C_STORE_RQ]
    assert message.dataset is None and message.dataset_file is None
    assert message.intake is not None and message.intake.refused == (0x0124, "no")
    assert list(tmp_path.iterdir()) == []  # nothing was spilled
    t = send_async(a, 1, store_command(2), b"abcd")  # still in step
    assert b.receive().dataset == b"abcd"
    t.join()


def test_the_memory_budget_spills_early_refuses_identifiers_and_is_given_back(
        tmp_path: Path) -> None:
    budget = ch.Budget(3 * ch.BUDGET_STEP)
    a, b = budget_pair(budget)
    data = os.urandom(5 * ch.BUDGET_STEP)  # under SPILL_AT, over the budget
    t = send_async(a, 1, store_command(), data)
    message = b.receive(lambda command, context_id: (b"H", tmp_path))
    t.join()
    assert message.dataset_file is not None and message.dataset_file.read_bytes() == b"H" + data
    message.discard()
    assert budget.used == 0
    t = send_async(a, 1, store_command(2), b"small")  # held in memory, and accounted
    message = b.receive(lambda command, context_id: (b"H", tmp_path))
    t.join()
    assert message.dataset == b"small" and budget.used > 0
    message.discard()
    assert budget.used == 0
    budget.take(3 * ch.BUDGET_STEP - 10)  # another association holds nearly all
    assert budget.exhausted
    t = send_async(a, 1, find_command(), os.urandom(100_000))
    with pytest.raises(ch.DataSetTooLarge, match="memory budget"):
        b.receive(admit=lambda command, context_id: ch.Intake(limit=1 << 20))
    a.sock.close()
    t.join()
    b.sock.close()


def test_limits_on_pdus_and_command_sets() -> None:
    a, b = budget_pair(ch.Budget(0), max_control=1000, max_command=200)
    a.sock.sendall(bytes((0x01, 0)) + (16 << 20).to_bytes(4, "big"))
    with pytest.raises(ch.PduTooLarge, match="type 0x01"):
        b.read_pdu()
    a.sock.sendall(bytes((0x04, 0)) + (16384 + 7).to_bytes(4, "big"))  # over our maximum
    with pytest.raises(ch.PduTooLarge, match="type 0x04"):
        b.read_pdu()
    item = (150 + 2).to_bytes(4, "big") + bytes((1, 0x01)) + bytes(150)  # no last flag
    pdu = bytes((0x04, 0)) + len(item).to_bytes(4, "big") + item
    a.sock.sendall(pdu * 2)
    with pytest.raises(ch.DataSetTooLarge, match="command set longer than 200"):
        b.receive()
    a.sock.close()
    b.sock.close()


def test_a_pdu_buffer_grows_with_the_bytes_received() -> None:
    a, b = budget_pair(ch.Budget(0))
    b.max_receive, b._data_limit = 8 << 20, 8 << 20  # a large maximum, as a peer may set
    body = os.urandom(3 * ch.GROW_STEP + 5)
    a.sock.sendall(bytes((0x04, 0)) + len(body).to_bytes(4, "big"))
    t = threading.Thread(target=a.sock.sendall, args=(body,), daemon=True)
    t.start()
    kind, got = b.read_pdu()
    t.join()
    assert kind == 0x04 and got == body
    a.sock.close()
    b.sock.close()


def test_a_refused_identifier_is_dropped_up_to_its_limit(pair) -> None:
    a, b = pair
    t = send_async(a, 1, find_command(), os.urandom(300_000))
    with pytest.raises(ch.DataSetTooLarge, match="refused data set longer than 100000"):
        b.receive(admit=lambda command, context_id: ch.Intake(keep=False, limit=100_000,
                                                             refused=(0x0124, "no")))
    a.sock.close()
    t.join()


def _p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU holding one PDV item."""
    return ch._DATA_HEADER.pack(0x04, 0, len(fragment) + 6, len(fragment) + 2, context_id,
                                control) + fragment


def test_pdus_of_changing_sizes_leave_each_message_whole_and_apart(pair, monkeypatch) -> None:
    """Short PDUs share one receive buffer: PDUs that shrink and grow again, one past
    GROW_STEP, and a second message on the same channel leave both data sets whole (the
    first one is not a view of a buffer the second overwrote)."""
    monkeypatch.setattr(ch, "GROW_STEP", 4096)
    a, b = pair
    sizes = [3000, 10, 4000, 1, 9000, 2500]  # 9000: past GROW_STEP, its own buffer
    first, second = os.urandom(sum(sizes)), os.urandom(sum(sizes))
    wire = bytearray()
    for n, data in ((1, first), (2, second)):
        wire += _p_data(1, 0x03, store_command(n))
        pos = 0
        for i, size in enumerate(sizes):
            wire += _p_data(1, 0x02 if i == len(sizes) - 1 else 0x00, data[pos:pos + size])
            pos += size
    a.sock.sendall(bytes(wire))
    one, two = b.receive(), b.receive()
    assert one.dataset == first and two.dataset == second
    assert one.command[cmd.MESSAGE_ID] == 1 and two.command[cmd.MESSAGE_ID] == 2


class _Recording:
    """A socket that records the length of every ``sendall``."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.writes: list[int] = []

    def sendall(self, data: memoryview) -> None:
        self.writes.append(len(data))
        self.sock.sendall(data)


@pytest.mark.parametrize("peer_max", [1024, 16384, 131072])
def test_writes_end_on_whole_tls_records_and_the_data_set_comes_back_whole(
        pair, peer_max: int) -> None:
    """Every write but a message's last is a whole number of 16 KiB TLS records, whatever
    the PDU size (no short record in the middle of a data set); the bytes arrive as sent."""
    a, b = pair
    a.set_peer_max(peer_max)
    recording = _Recording(a.sock)
    a.sock = recording  # type: ignore[assignment]
    data = os.urandom(3 * max(ch.SEND_BUFFER, 2 * a._fragment) + 12_345)
    t = send_async(a, 5, store_command(), data)
    message = b.receive()
    t.join()
    assert message.dataset == data
    assert len(recording.writes) >= 3
    assert all(n % ch.TLS_RECORD == 0 for n in recording.writes[:-1]), recording.writes
    assert sum(recording.writes) == len(store_command()) + len(data) + 12 * (
        1 + -(-len(data) // a._fragment))
