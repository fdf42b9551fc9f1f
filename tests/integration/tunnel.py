"""A TLS tunnel (socat) for DCMTK tools that have no TLS of their own (dcmsend, getscu and
movescu of DCMTK 3.6.7): they speak plain DICOM to a loopback port; socat carries each
connection over TLS, with the client certificate, to the server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness import HOST, free_port, wait_for_port

needs_socat = pytest.mark.skipif(shutil.which("socat") is None,
                                 reason="socat is not installed (scripts/install --test installs it)")


@contextmanager
def tls_tunnel(server_port: int, key: Path, cert: Path, ca: Path) -> Iterator[int]:
    """A plain loopback port that forwards, over TLS with `cert`/`key`, to `server_port`."""
    port = free_port()
    proc = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind={HOST},reuseaddr,fork",
         f"OPENSSL:{HOST}:{server_port},cert={cert},key={key},cafile={ca},verify=1,"
         "commonname=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, None, timeout=10)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
