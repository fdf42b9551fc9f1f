"""Put Blob in one HTTP request, without the SDK's pipeline: the Azure half of ingest.

The Azure Blob Storage REST API's *Put Blob* (``PUT {container URL}/{blob}`` with
``x-ms-blob-type: BlockBlob``) writes a block blob of any size up to 5000 MiB in one
request and commits it at once: a reader sees the whole blob or nothing, and the service
answers ``201 Created`` only once it is committed. The request is authorised with *Shared
Key*: an HMAC-SHA256, under the account key, of the request's canonical string (verb,
standard headers, the ``x-ms-`` headers sorted, ``/account/path``; "Authorize with Shared
Key", Azure Storage REST API, version 2015-02-21 and later: an empty Content-Length for 0).

Why not the SDK (``azure-storage-blob``, still used for everything else): per request it
runs a pipeline of a dozen policies, re-reads the proxy variables of the environment,
copies the body twice and logs every header; that cost ~4-6 ms of CPU per small image,
more than the rest of ingest. Here a request costs its signature, one write of its head,
the sends of the caller's buffers as they are (no copy) and a read of the short answer,
on HTTP/1.1 connections kept alive in a small pool (one per concurrent writer).
:mod:`http.client` opens the connections (TLS included, ``TCP_NODELAY`` on); requests
and responses are written and read here (RFC 9112: a response whose body is not
delimited by ``Content-Length`` closes its connection).

Failures: a connection error, a timeout, ``408`` or a ``5xx`` other than ``501``/``505``
is retried (Put Blob with the same bytes is idempotent) like the SDK store is configured:
three retries, 0.5 s apart (+-0.2 s). A kept-alive connection the service has closed
meanwhile is replaced at once, without counting as a try. Any other answer is final.
HTTPS verifies the service's certificate and host name against the system's trust store
(``SSL_CERT_FILE``/``SSL_CERT_DIR`` are honoured).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import random
import socket
import threading
import time
from collections.abc import Sequence
from email.utils import formatdate
from urllib.parse import urlsplit

from securepacs.errors import StorageError

__all__ = ["PutBlob"]

_BUFFER = bytes | bytearray | memoryview
#: Statuses the SDK's retry policy retries (besides connection errors).
_RETRY_STATUS = frozenset({408, 500, 502, 503, 504, 506, 507, 508, 509, 510, 511})
#: The most of a response body read (an error's XML is a few hundred bytes), of its
#: header, and of one receive.
_MAX_BODY = 1 << 16
_MAX_HEAD = 1 << 16
_RECV = 1 << 14
#: Idle connections kept for reuse.
_POOL = 32


class PutBlob:
    """Writes block blobs into one container with single Put Blob requests.

    Thread-safe: each request takes a kept-alive connection from a pool and gives it back.

    Parameters
    ----------
    container_url : str
        ``http(s)://host[:port]/[account/]container``, no query string.
    account_name, account_key : str
        The storage account and its key (base64, as in a connection string).
    api_version : str
        The ``x-ms-version`` to speak (the SDK's, so both paths speak the same).
    timeout : float
        Seconds for each read of a response (and each send).
    connect_timeout : float
        Seconds for opening a connection.
    retries : int
        Retries after a failed try (see the module docstring).
    backoff : float
        Seconds between tries (+-40%).

    Raises
    ------
    ValueError
        The URL is not http(s), holds a query, or the key is not base64.
    """

    def __init__(self, container_url: str, account_name: str, account_key: str, *,
                 api_version: str, timeout: float = 30.0, connect_timeout: float = 10.0,
                 retries: int = 3, backoff: float = 0.5) -> None:
        parts = urlsplit(container_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("the container URL must be http(s)://host/container, no query")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/") + "/"
        self._netloc = parts.netloc
        self._resource = f"/{account_name}{self._path}"
        self._account = account_name
        self._key = base64.b64decode(account_key, validate=True)
        self._version = api_version
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._retries = retries
        self._backoff = backoff
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def put(self, name: str, pieces: Sequence[_BUFFER], length: int) -> None:
        """Write `pieces` (`length` bytes in all, sent as they are) as the blob `name`.

        Returns once the service has committed the blob (``201 Created``).

        Raises
        ------
        StorageError
            The service refused the blob or could not be reached (after the retries);
            no blob, or the one `name` held before, is visible then.
        """
        tries = 0
        while True:
            conn, reused = self._take()
            try:
                status, detail = self._request(conn, name, pieces, length)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and _closed_by_peer(exc):
                    continue  # a kept-alive connection the service closed: a fresh one
                status, detail = 0, _describe(exc)
            if status == 201:
                return
            tries += 1
            if tries > self._retries or (status and status not in _RETRY_STATUS):
                raise StorageError(f"cannot write blob {name} to Azure: {detail}")
            time.sleep(self._backoff * random.uniform(0.6, 1.4))  # noqa: S311 - jitter

    def close(self) -> None:
        """Close the idle connections (a later :meth:`put` opens new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- one request -------------------------------------------------------------------

    def _request(self, conn: http.client.HTTPConnection, name: str,
                 pieces: Sequence[_BUFFER], length: int) -> tuple[int, str]:
        """Send one Put Blob on `conn`; the status and a one-line description. The
        connection goes back to the pool when the exchange left it reusable.

        http.client only opens the connection (and its TLS): the request is written and
        the response read here, with no header object nor e-mail parser per request."""
        if conn.sock is None:
            self._connect(conn)
        sock = conn.sock
        assert sock is not None
        date = formatdate(usegmt=True)
        content_length = str(length) if length else ""
        signed = (f"PUT\n\n\n{content_length}\n\napplication/octet-stream\n\n\n\n\n\n\n"
                  f"x-ms-blob-type:BlockBlob\nx-ms-date:{date}\nx-ms-version:{self._version}\n"
                  f"{self._resource}{name}")
        signature = base64.b64encode(
            hmac.new(self._key, signed.encode(), hashlib.sha256).digest()).decode()
        sock.sendall(
            f"PUT {self._path}{name} HTTP/1.1\r\nHost: {self._netloc}\r\n"
            f"Content-Length: {length}\r\nContent-Type: application/octet-stream\r\n"
            f"x-ms-blob-type: BlockBlob\r\nx-ms-date: {date}\r\n"
            f"x-ms-version: {self._version}\r\n"
            f"Authorization: SharedKey {self._account}:{signature}\r\n\r\n".encode("ascii"))
        for piece in pieces:
            if len(piece):
                sock.sendall(piece)
        status, reason, headers, reusable = _read_response(sock)
        if reusable:
            self._give(conn)
        else:
            conn.close()
        return status, f"{status} {headers.get('x-ms-error-code') or reason}".strip()

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        conn.timeout = self._connect_timeout
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self._timeout)  # (http.client turned TCP_NODELAY on)

    # -- the pool ----------------------------------------------------------------------

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._connect_timeout), False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < _POOL:
                self._idle.append(conn)
                return
        conn.close()


def _read_response(sock: socket.socket) -> tuple[int, str, dict[str, str], bool]:
    """Read one HTTP/1.1 response: its status, reason, headers (lower-case names) and
    whether the connection may carry another request (its body was read whole)."""
    buf = bytearray()
    while (end := buf.find(b"\r\n\r\n")) < 0:
        if len(buf) > _MAX_HEAD:
            raise http.client.HTTPException("response header too long")
        chunk = sock.recv(_RECV)
        if not chunk:
            raise ConnectionResetError("the service closed the connection")
        buf += chunk
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise http.client.HTTPException(f"not an HTTP response: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    status = int(code)
    declared = headers.get("content-length", "")
    reusable = (version == "HTTP/1.1" and status >= 200 and declared.isdigit()
                and "transfer-encoding" not in headers
                and headers.get("connection", "").lower() != "close")
    if reusable:
        left = int(declared) - (len(buf) - end - 4)
        if left < 0 or left > _MAX_BODY:
            return status, reason, headers, False  # not worth reading (or not HTTP)
        while left > 0:
            chunk = sock.recv(min(left, _RECV))
            if not chunk:
                return status, reason, headers, False
            left -= len(chunk)
    return status, reason, headers, reusable


def _closed_by_peer(exc: BaseException) -> bool:
    """The error a request meets on a kept-alive connection the other end has closed."""
    return isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError
                      | ConnectionResetError | ConnectionAbortedError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
