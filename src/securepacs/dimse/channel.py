"""PDUs over one connected socket (PS3.8 9.3): read whole PDUs, assemble DIMSE messages
from P-DATA-TF fragments, and write messages as P-DATA-TF PDUs.

Both ends of an association use this: the requestor (:mod:`securepacs.dimse.client_ul`)
and the acceptor (:mod:`securepacs.dimse.association`). Bytes go from a file straight
into the socket, many PDUs per write; received data sets stay in memory up to a
threshold and then go to a temp file, so a 1 GB object costs no more memory than a
small one. No logging here: this is the per-PDU path.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from securepacs.dimse import commands as cmd

PDU_HEADER = struct.Struct(">BBI")
_DATA_HEADER = struct.Struct(">BBIIBB")  # P-DATA-TF header + one PDV item header
RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
LARGEST_PDU = 16 * 1024 * 1024  # refuse to allocate more for one incoming PDU
SEND_BUFFER = 512 * 1024  # PDUs are gathered up to this size per sendall
SPILL_AT = 8 * 1024 * 1024  # received data sets larger than this go to a temp file

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA, RELEASE_RQ_TYPE, RELEASE_RP_TYPE, ABORT = 0x04, 0x05, 0x06, 0x07


def abort_pdu(source: int = 0, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8): source 0 service user, 2 service provider."""
    return bytes((0x07, 0, 0, 0, 0, 4, 0, 0, source, reason))


class PeerClosed(Exception):
    """The peer closed the connection."""


class PeerAborted(Exception):
    """The peer sent an A-ABORT; ``body`` holds its source and reason."""

    def __init__(self, body: bytes | bytearray):
        super().__init__("A-ABORT")
        self.body = bytes(body)


class PeerReleased(Exception):
    """The peer asked to release the association (A-RELEASE-RQ); answered already."""


class UnexpectedPdu(Exception):
    """A PDU that has no place here (type in ``kind``)."""

    def __init__(self, kind: int):
        super().__init__(f"unexpected PDU (type 0x{kind:02X})")
        self.kind = kind


class PduTooLarge(Exception):
    """The peer announced a PDU larger than we accept."""


@dataclass
class Message:
    """A received DIMSE message: presentation context, command set and data set.

    The data set is ``dataset`` (bytes) or, when it was larger than the spill threshold,
    the temp file ``dataset_file`` (which the receiver must remove); None when the
    command announced no data set."""

    context_id: int
    command: cmd.Command
    dataset: bytes | None = None
    dataset_file: Path | None = None
    #: The temp file for a large data set could not be written (e.g. disk full): the
    #: data set was read and dropped, the message is still answerable.
    spill_error: OSError | None = None

    @property
    def field(self) -> int:
        value = self.command.get(cmd.COMMAND_FIELD)
        return value if isinstance(value, int) else -1

    def discard(self) -> None:
        """Remove the spilled data set file, if any."""
        if self.dataset_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.dataset_file)
            self.dataset_file = None


#: Called when a data set outgrows memory: (command, context ID) -> the bytes the temp
#: file starts with (e.g. a Part 10 header) and the folder for it (None: the system's
#: temp folder), or None to keep the data set in memory.
SpillPrefix = Callable[[cmd.Command, int], tuple[bytes, Path | None] | None]


class PduChannel:
    """Whole PDUs and DIMSE messages over `sock` (plain or TLS).

    Parameters
    ----------
    sock : socket.socket
        Connected; TCP_NODELAY is the caller's business.
    max_receive : int
        Our Maximum Length Received (PS3.8 D.1): PDUs larger than this (or 16 MiB) end
        the connection.
    """

    def __init__(self, sock: socket.socket, max_receive: int):
        self.sock = sock
        self.max_receive = max_receive
        self._fragment = 0
        self._buffer = bytearray()
        self.set_peer_max(0)

    def set_peer_max(self, peer_max: int) -> None:
        """The peer's Maximum Length Received (0: unlimited): our P-DATA-TF size."""
        fragment = (peer_max or 1 << 20) - 6
        self._fragment = max(min(fragment, 4 << 20), 1024)
        self._buffer = bytearray(max(SEND_BUFFER, 2 * (12 + self._fragment)))

    # -- receiving ----------------------------------------------------------------------
    def _recv_into(self, view: memoryview) -> None:
        got, size = 0, len(view)
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if n == 0:
                raise PeerClosed
            got += n

    def read_pdu(self) -> tuple[int, bytearray]:
        """The next PDU: (type, body). Raises PeerClosed, PduTooLarge, OSError."""
        header = bytearray(6)
        self._recv_into(memoryview(header))
        kind, _, length = PDU_HEADER.unpack(header)
        if length > max(LARGEST_PDU, self.max_receive + 6):
            raise PduTooLarge(f"a {length}-byte PDU, larger than we accept")
        body = bytearray(length)
        self._recv_into(memoryview(body))
        return kind, body

    def readable(self) -> bool:
        """Whether a PDU has started to arrive (never blocks)."""
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def receive(self, spill: SpillPrefix | None = None) -> Message:
        """The next complete DIMSE message.

        A-RELEASE-RQ is answered with A-RELEASE-RP and raises PeerReleased; A-ABORT raises
        PeerAborted; any other non-data PDU raises UnexpectedPdu; a malformed command set
        raises ValueError.
        """
        command = bytearray()
        data = bytearray()
        decoded: cmd.Command | None = None
        spill_file: BinaryIO | None = None
        spill_path: Path | None = None
        spill_error: OSError | None = None
        context_id = 0
        try:
            while True:
                kind, body = self.read_pdu()
                if kind != P_DATA:
                    self._control(kind, body)
                pos = 0
                data_done = False
                while pos + 6 <= len(body):
                    item_length, context_id, control = struct.unpack_from(">IBB", body, pos)
                    if item_length < 2 or pos + 4 + item_length > len(body):
                        raise ValueError("malformed P-DATA-TF item")
                    fragment = memoryview(body)[pos + 6:pos + 4 + item_length]
                    pos += 4 + item_length
                    if control & 0x01:
                        command += fragment
                        if control & 0x02:
                            decoded = cmd.decode(command)
                        continue
                    if decoded is None:
                        raise ValueError("data set fragment before the end of the command")
                    if spill_error is not None:
                        pass  # the rest of a data set that could not be kept
                    elif spill_file is not None:
                        try:
                            spill_file.write(fragment)
                        except OSError as exc:
                            spill_error = exc
                            _drop(spill_file, spill_path)
                            spill_file, spill_path = None, None
                    else:
                        data += fragment
                        if spill is not None and len(data) > SPILL_AT:
                            where = spill(decoded, context_id)
                            if where is not None:
                                try:
                                    spill_file, spill_path = _spill_file(*where, data)
                                except OSError as exc:
                                    spill_error = exc
                                data = bytearray()
                    data_done = data_done or bool(control & 0x02)
                if decoded is None:
                    continue
                if decoded.get(cmd.DATA_SET_TYPE, cmd.NO_DATA_SET) == cmd.NO_DATA_SET:
                    return Message(context_id, decoded)
                if not data_done:
                    continue
                if spill_error is not None:
                    return Message(context_id, decoded, spill_error=spill_error)
                if spill_file is not None:
                    try:
                        spill_file.close()
                    except OSError as exc:  # the last buffered bytes did not fit
                        _drop(None, spill_path)
                        spill_file, spill_path = None, None
                        return Message(context_id, decoded, spill_error=exc)
                    spill_file = None
                    message = Message(context_id, decoded, None, spill_path)
                    spill_path = None
                    return message
                return Message(context_id, decoded, bytes(data))
        finally:
            _drop(spill_file, spill_path)

    def _control(self, kind: int, body: bytearray) -> None:
        if kind == ABORT:
            raise PeerAborted(body)
        if kind == RELEASE_RQ_TYPE:
            with contextlib.suppress(OSError):
                self.sock.sendall(RELEASE_RP)
            raise PeerReleased
        raise UnexpectedPdu(kind)

    # -- sending ------------------------------------------------------------------------
    def send(self, context_id: int, command: bytes, dataset: BinaryIO | bytes | None = None,
             length: int | None = None) -> None:
        """One DIMSE message: the command set, then the data set, as P-DATA-TF PDUs.

        Parameters
        ----------
        context_id : int
            The accepted presentation context.
        command : bytes
            The encoded command set.
        dataset : binary stream, bytes or None
            The encoded data set (a stream is read from its current position).
        length : int, optional
            Bytes to send from `dataset` (default: all of it).
        """
        pos = self._fill(context_id, BytesIO(command), len(command), 0x01, 0)
        if dataset is not None:
            stream = BytesIO(dataset) if isinstance(dataset, bytes | bytearray) else dataset
            if length is None:
                here = stream.tell()
                length = stream.seek(0, 2) - here
                stream.seek(here)
            pos = self._fill(context_id, stream, length, 0x00, pos)
        self.sock.sendall(memoryview(self._buffer)[:pos])

    def _fill(self, context_id: int, stream: BinaryIO, length: int, kind: int, pos: int) -> int:
        """Append P-DATA-TF PDUs (one PDV each) for `length` bytes of `stream` to the send
        buffer at `pos`, writing the buffer out whenever the next PDU does not fit; returns
        the new fill position. The bytes go from the file into the buffer (``readinto``),
        and many PDUs leave in one ``sendall``: few system calls, no copies in Python."""
        buf = self._buffer
        view = memoryview(buf)
        remaining = length
        while True:
            size = min(remaining, self._fragment)
            if pos + 12 + size > len(buf):
                self.sock.sendall(view[:pos])
                pos = 0
            start = pos + 12
            got = 0
            while got < size:
                n = stream.readinto(view[start + got:start + size])  # type: ignore[attr-defined]
                if not n:
                    raise EOFError(f"the data ended {remaining - got} bytes early "
                                   "(was the file changed while sending?)")
                got += n
            remaining -= size
            control = kind | (0x02 if remaining == 0 else 0x00)
            _DATA_HEADER.pack_into(buf, pos, 0x04, 0, size + 6, size + 2, context_id, control)
            pos = start + size
            if remaining == 0:
                return pos

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _drop(fh: BinaryIO | None, path: Path | None) -> None:
    """Close and remove a temp file that is not wanted (never raises)."""
    if fh is not None:
        with contextlib.suppress(OSError):
            fh.close()
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _spill_file(prefix: bytes, folder: Path | None, data: bytearray) -> tuple[BinaryIO, Path]:
    """A private temp file (0600) in `folder` holding `prefix` + `data` so far; named
    ``rx….PID.tmp`` so that a blob store's start-up sweep knows whose it is."""
    fd, name = tempfile.mkstemp(prefix="rx", suffix=f".{os.getpid()}.tmp", dir=folder)
    fh = os.fdopen(fd, "wb")
    try:
        fh.write(prefix)
        fh.write(data)
    except BaseException:
        fh.close()
        os.unlink(name)
        raise
    return fh, Path(name)
