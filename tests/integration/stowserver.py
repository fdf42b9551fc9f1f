"""A small STOW-RS receiver (PS3.18 10.5) for the disc viewer's import test, over HTTPS on
loopback: it answers CORS preflights from a file:// page (Origin: null), checks the Bearer
token, parses multipart/related; type="application/dicom", keeps every Part 10 file, and
answers with the PS3.18 10.5.3 response: stored, "already present" (Warning Reason B006) for
UIDs it is told it holds, failed (Failure Reason) for UIDs it is told to refuse.
It stands in for securepacs's own DICOMweb until the end-to-end test uses the real server."""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread

MAX_BODY = 64 * 1024 * 1024


class StowState:
    def __init__(self, token: str, present: set[str], refuse: set[str]):
        self.token, self.present, self.refuse = token, present, refuse
        self.stored: dict[str, bytes] = {}
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()


def _parts(body: bytes, content_type: str) -> list[bytes]:
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if not found:
        return []
    boundary = b"--" + found.group(1).encode()
    out = []
    for chunk in body.split(boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        out.append(data[:-2] if data.endswith(b"\r\n") else data)
    return out


def _handler(state: StowState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _cors(self) -> None:
            self.send_header("Access-Control-Allow-Origin", "null")
            self.send_header("Access-Control-Allow-Methods", "POST")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept")
            self.send_header("Access-Control-Max-Age", "60")

        def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(204)
            self._cors()
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            with state.lock:
                state.requests.append({k.lower(): v for k, v in self.headers.items()}
                                      | {"path": self.path})
            length = int(self.headers.get("Content-Length", "0"))
            if length > MAX_BODY or not self.path.endswith("/studies"):
                self.send_response(413 if length > MAX_BODY else 404)
                self._cors()
                self.end_headers()
                return
            body = self.rfile.read(length)
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self.send_response(401)
                self._cors()
                self.end_headers()
                return
            referenced, failed = [], []
            for part in _parts(body, self.headers.get("Content-Type", "")):
                ds = dcmread(BytesIO(part), stop_before_pixels=True)
                uid, cls = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
                item = {"00081150": {"vr": "UI", "Value": [cls]},
                        "00081155": {"vr": "UI", "Value": [uid]}}
                if uid in state.refuse:
                    failed.append(item | {"00081197": {"vr": "US", "Value": [0xC000]}})
                    continue
                if uid in state.present:
                    item["00081196"] = {"vr": "US", "Value": [0xB006]}
                with state.lock:
                    state.stored[uid] = part
                referenced.append(item)
            answer: dict[str, Any] = {}
            if referenced:
                answer["00081199"] = {"vr": "SQ", "Value": referenced}
            if failed:
                answer["00081198"] = {"vr": "SQ", "Value": failed}
            data = json.dumps(answer).encode()
            self.send_response(202 if failed or state.present else 200)
            self._cors()
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def stow_server(cert: Path, key: Path, *, token: str, present: set[str] = frozenset(),  # type: ignore[assignment]
                refuse: set[str] = frozenset()) -> Iterator[tuple[str, StowState]]:  # type: ignore[assignment]
    """(base URL, state) of a running receiver on a free loopback port; stopped on exit."""
    state = StowState(token, set(present), set(refuse))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/dicomweb", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
