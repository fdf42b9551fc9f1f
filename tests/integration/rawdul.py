"""Hand-built upper-layer PDUs (PS3.8 9.3) over a TLS socket, for tests that must say
what no well-behaved DICOM library would: malformed requests, endless fragments,
announced lengths that never arrive."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Sequence
from pathlib import Path

from harness import HOST

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def tls_connect(port: int, key: Path, cert: Path, ca: Path, timeout: float = 20.0) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.load_cert_chain(cert, key)
    raw = socket.create_connection((HOST, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname=HOST)


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode().ljust(16)[:16]


def associate_rq(called: str = "SECUREPACS", calling: str = "RAWSCU",
                 contexts: Sequence[tuple[int, str | bytes, Sequence[str]]] = (
                     (1, VERIFICATION, (IMPLICIT_LE,)),), max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU, header included."""
    items = _item(0x10, APP_CONTEXT)
    for context_id, abstract, syntaxes in contexts:
        uid = abstract if isinstance(abstract, bytes) else abstract.encode()
        sub = _item(0x30, uid) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items += _item(0x20, bytes((context_id, 0, 0, 0)) + sub)
    items += _item(0x50, _item(0x51, struct.pack(">I", max_pdu)))
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32) + items
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """One P-DATA-TF PDU with one PDV (control: bit 0 command, bit 1 last fragment)."""
    item = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBI", 0x04, 0, len(item)) + item


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(type, body) of the next PDU; (0, b"") when the peer closed or reset."""
    try:
        header = _exact(sock, 6)
        kind, _, length = struct.unpack(">BBI", header)
        return kind, _exact(sock, length)
    except (ConnectionError, EOFError, ssl.SSLError):
        return 0, b""


def _exact(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def rss(pid: int) -> int:
    """The resident set size of process `pid`, in bytes (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
