"""The durable floor: the least a C-STORE receiver can do and still be durable.

A minimal DICOM Upper Layer acceptor written for the benchmark (PS3.8 9.3 PDUs, PS3.7 9.3.1
C-STORE): one thread per association reads PDUs, answers the A-ASSOCIATE-RQ with an
A-ASSOCIATE-AC that accepts every proposed presentation context with its first proposed
transfer syntax (the requestor's order), writes each data set's P-DATA fragments straight
into a file of its own as they arrive, and on the last fragment ``fsync``s the file and its
folder before it sends the C-STORE-RSP (Success). No index, no parsing of the data set, no
checks, no audit: the fastest durable ingest this disk and this Python allow, with the same
TLS settings as securepacs (``securepacs.pki.tlspolicy.server_context``: TLS 1.2/1.3, AEAD
suites, client certificate required) and the same maximum PDU length as the benchmark gives
every server.

With ``--index FILE`` it is the floor *with an index*: after the two fsyncs, one row (the
SOP Instance UID and the file's name) is inserted into an SQLite database in WAL mode with
``synchronous=FULL`` and committed before the C-STORE-RSP, one commit per image (a lock
serialises the associations' commits). That is the least a receiver can do that keeps the
durability contract of securepacs (blob durable, then index row durable, then Success): the
price of the second durable step, measured rather than argued.

Run by the benchmark as its own process (so its CPU time can be read from /proc)::

    python -m bench.floor --port N --out DIR [--tls CERT KEY CA] [--pdu 131072] [--index DB]

Files are named ``<association>-<n>.ds`` and hold the data set bytes exactly as received
(no File Meta Information). It answers C-ECHO too; any other command aborts the association.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import struct
import sys
import threading
from pathlib import Path
from typing import Any

PDU = 131072
#: A-ASSOCIATE-RQ bodies larger than this are refused (128 contexts of ~100 bytes fit)
_MAX_RQ = 1 << 20
_IMPL_UID = b"1.2.826.0.1.3680043.10.543.190"  # any UID; this one names nothing else here
_IMPL_NAME = b"BENCH_FLOOR"
_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_RELEASE_RP = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


class _Closed(Exception):
    """The peer closed the connection or broke the protocol."""


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_ac(rq: bytes, pdu: int) -> bytes:
    """The A-ASSOCIATE-AC (PS3.8 9.3.3) for the body of an A-ASSOCIATE-RQ: every presentation
    context accepted with its first proposed transfer syntax, our maximum PDU length."""
    if len(rq) < 68:
        raise _Closed("short A-ASSOCIATE-RQ")
    items = [rq[:68]]  # protocol version, reserved, called/calling AE, reserved: as received
    pos = 68
    while pos + 4 <= len(rq):
        kind, length = rq[pos], int.from_bytes(rq[pos + 2:pos + 4], "big")
        value = rq[pos + 4:pos + 4 + length]
        pos += 4 + length
        if kind == 0x10:  # application context name
            items.append(_item(0x10, value))
        elif kind == 0x20:  # presentation context: id, 3 reserved, sub-items
            sub, first_ts = 4, None
            while sub + 4 <= len(value):
                skind, slen = value[sub], int.from_bytes(value[sub + 2:sub + 4], "big")
                if skind == 0x40 and first_ts is None:
                    first_ts = value[sub + 4:sub + 4 + slen]
                sub += 4 + slen
            if first_ts is None:  # no transfer syntax: refuse the context (result 4)
                items.append(_item(0x21, bytes([value[0], 0, 4, 0]) + _item(0x40, b"")))
            else:
                items.append(_item(0x21, bytes([value[0], 0, 0, 0]) + _item(0x40, first_ts)))
    items.append(_item(0x50, _item(0x51, struct.pack(">I", pdu)) + _item(0x52, _IMPL_UID)
                       + _item(0x55, _IMPL_NAME)))
    body = b"".join(items)
    return struct.pack(">BBI", 0x02, 0, len(body)) + body


def parse_command(raw: bytes) -> dict[int, bytes]:
    """The elements of a DIMSE command set (Implicit VR Little Endian, PS3.7 6.3.1), by
    element number of group 0000."""
    out, pos = {}, 0
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        pos += 8
        if group == 0:
            out[elem] = raw[pos:pos + length]
        pos += length
    return out


def _element(elem: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", 0, elem, len(value)) + value


def response(command: dict[int, bytes], status: int = 0) -> bytes:
    """The response command set (Success) of a C-STORE-RQ or C-ECHO-RQ (PS3.7 9.3.1.2,
    9.3.5.2): the request's SOP class/instance and message id echoed."""
    field = struct.unpack("<H", command[0x0100][:2])[0] | 0x8000
    body = (_element(0x0002, command.get(0x0002, b"").rstrip(b"\x00"))
            + _element(0x0100, struct.pack("<H", field))
            + _element(0x0120, command[0x0110][:2])
            + _element(0x0800, struct.pack("<H", 0x0101))
            + _element(0x0900, struct.pack("<H", status)))
    if 0x1000 in command:
        body += _element(0x1000, command[0x1000].rstrip(b"\x00"))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _p_data(pc_id: int, command: bytes) -> bytes:
    pdv = struct.pack(">IBB", len(command) + 2, pc_id, 0x03) + command
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


class Index:
    """One SQLite database (WAL, ``synchronous=FULL``) shared by every association, one row
    per stored data set, committed one by one under a lock."""

    def __init__(self, path: Path) -> None:
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS instance (uid TEXT PRIMARY KEY, file TEXT)")

    def add(self, uid: bytes, file: str) -> None:
        with self.lock:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO instance VALUES (?, ?)",
                            (uid.rstrip(b"\x00 ").decode("ascii"), file))
            self.db.execute("COMMIT")


class Association:
    """One association on a connected (TLS-wrapped) socket; :meth:`run` until it ends."""

    def __init__(self, sock: Any, out: Path, name: str, pdu: int,
                 index: Index | None = None) -> None:
        self.sock, self.out, self.name, self.pdu = sock, out, name, pdu
        self.index = index
        self.buf = bytearray(max(pdu, 65536) + 16)
        self.view = memoryview(self.buf)
        self.head = bytearray(6)
        self.stored = 0

    def _read(self, view: memoryview) -> None:
        got, size = 0, len(view)
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if not n:
                raise _Closed("connection closed")
            got += n

    def _pdu(self) -> tuple[int, memoryview]:
        self._read(memoryview(self.head))
        kind, length = self.head[0], int.from_bytes(self.head[2:6], "big")
        if length > len(self.buf) or (kind == 0x01 and length > _MAX_RQ):
            raise _Closed(f"PDU of {length} bytes (type {kind:#x})")
        body = self.view[:length]
        self._read(body)
        return kind, body

    def run(self) -> None:
        kind, body = self._pdu()
        if kind != 0x01:
            raise _Closed(f"expected A-ASSOCIATE-RQ, got PDU type {kind:#x}")
        self.sock.sendall(associate_ac(bytes(body), self.pdu))
        dirfd = os.open(self.out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._messages(dirfd)
        finally:
            os.close(dirfd)

    def _messages(self, dirfd: int) -> None:
        command = bytearray()
        pending: dict[int, bytes] | None = None
        fd = -1
        try:
            while True:
                kind, body = self._pdu()
                if kind == 0x05:  # A-RELEASE-RQ
                    self.sock.sendall(_RELEASE_RP)
                    return
                if kind == 0x07:  # A-ABORT
                    return
                if kind != 0x04:
                    raise _Closed(f"unexpected PDU type {kind:#x}")
                pos, end = 0, len(body)
                while pos + 6 <= end:
                    length = int.from_bytes(body[pos:pos + 4], "big")
                    pc_id, mch = body[pos + 4], body[pos + 5]
                    data = body[pos + 6:pos + 4 + length]
                    pos += 4 + length
                    if mch & 1:  # command fragment
                        if len(command) + len(data) > 65536:
                            raise _Closed("command set too long")
                        command += data
                        if mch & 2:
                            parsed = parse_command(bytes(command))
                            command.clear()
                            if 0x0100 not in parsed or 0x0110 not in parsed:
                                raise _Closed("command without Command Field or Message ID")
                            field = struct.unpack("<H", parsed[0x0100][:2])[0]
                            if field not in (0x0001, 0x0030):  # C-STORE-RQ, C-ECHO-RQ
                                raise _Closed(f"command {field:#06x} not served")
                            if field == 0x0030:
                                self.sock.sendall(_p_data(pc_id, response(parsed)))
                            else:
                                pending = parsed
                        continue
                    if pending is None:
                        raise _Closed("data set fragment before its C-STORE-RQ")
                    if fd < 0:  # first fragment of a data set: its own file
                        file = f"{self.name}-{self.stored}.ds"
                        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                                     dir_fd=dirfd)
                    while data:
                        data = data[os.write(fd, data):]
                    if mch & 2:  # last fragment: durable, then Success
                        os.fsync(fd)
                        os.close(fd)
                        fd = -1
                        os.fsync(dirfd)
                        if self.index is not None:
                            self.index.add(pending.get(0x1000, b""), file)
                        self.stored += 1
                        self.sock.sendall(_p_data(pc_id, response(pending)))
                        pending = None
        finally:
            if fd >= 0:
                os.close(fd)


def _serve(conn: socket.socket, context: Any, out: Path, name: str, pdu: int,
           index: Index | None) -> None:
    sock: Any = conn
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            try:
                sock = context.wrap_socket(conn, server_side=True)
            except OSError:  # a port probe, or a client that gave up: nothing to report
                return
        Association(sock, out, name, pdu, index).run()
    except _Closed as exc:
        if "connection closed" not in str(exc):
            print(f"floor: association {name}: {exc}", file=sys.stderr, flush=True)
            try:
                sock.sendall(_ABORT)
            except OSError:
                pass
    except OSError as exc:  # e.g. a port probe that never started TLS
        print(f"floor: association {name}: {exc}", file=sys.stderr, flush=True)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pdu", type=int, default=PDU)
    ap.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"))
    ap.add_argument("--index", type=Path, help="commit one SQLite row per image (see above)")
    args = ap.parse_args(argv)
    context = None
    if args.tls:
        from securepacs.pki.tlspolicy import server_context

        cert, key, ca = (Path(p) for p in args.tls)
        context = server_context(cert, key, ca)
    args.out.mkdir(parents=True, exist_ok=True)
    index = Index(args.index) if args.index else None
    listener = socket.create_server((args.host, args.port), backlog=64)
    print(f"floor: listening on {args.host}:{args.port}", flush=True)
    n = 0
    while True:
        conn, _ = listener.accept()
        n += 1
        threading.Thread(target=_serve, args=(conn, context, args.out, str(n), args.pdu, index),
                         daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
