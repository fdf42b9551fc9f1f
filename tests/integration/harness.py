"""Start a real `securepacs serve` process on loopback and drive it with real peers.

Every wait here is bounded; every process started is stopped by the fixture that made it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECUREPACS = [sys.executable, "-m", "securepacs.cli"]
HOST = "127.0.0.1"

needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None,
                                 reason="DCMTK is not installed (scripts/install installs it)")


def free_port() -> int:
    """A free port P whose neighbours P+1..P+3 are free too.

    A server left on its defaults also listens on P+2 (viewer) and P+3 (DICOMweb); a bare
    ephemeral port's neighbours may be the client end of some other connection, and the
    server would then exit with "address in use" (seen once in CI).
    """
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
            if port + 3 < 65536 and all(_bindable(port + k) for k in (1, 2, 3)):
                return port
    raise RuntimeError("no free block of four ports on loopback")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None,
                  timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout} s")


@dataclass
class Server:
    """A running `securepacs serve`; log in `log_path`."""

    data_dir: Path
    config: Path
    port: int
    ae_title: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> Server:
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*SECUREPACS, "serve", "--config", str(self.config), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        log.close()
        try:
            wait_for_port(self.port, self.proc, timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; server log:\n{self.log()[-3000:]}") from exc
        self.wait_for_log("ready:", timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in server log after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=5)


def write_config(path: Path, **values: object) -> Path:
    """A TOML config from keyword values (strings, numbers, booleans, list of tables)."""
    lines = []
    tables = []
    for key, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                tables.append(f"[[{key}]]")
                tables.extend(f"{k} = {_toml(v)}" for k, v in item.items())
            continue
        lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines + tables) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dcmtk(*args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with Nagle off (DCMTK leaves it on; README, `TCP_NODELAY=1`)."""
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def tls_args(key: Path, cert: Path, ca: Path) -> list[str]:
    return ["+tls", str(key), str(cert), "+cf", str(ca)]


def make_server(tmp: Path, pki, **config: object) -> Server:  # noqa: ANN001
    """A server (not started) on a free port, TLS files from the test PKI, data in `tmp`."""
    data = tmp / "data"
    port = free_port()
    values: dict[str, object] = {
        "data_dir": str(data),
        "host": "127.0.0.1",
        "port": port,
        "ae_title": "SECUREPACS",
        "tls_cert": str(pki.server.cert),
        "tls_key": str(pki.server.key),
        "tls_ca": str(pki.ca_cert),
        "orphan_grace_seconds": 0,
        "handshake_timeout": 5,
    }
    values.update(config)
    cfg = write_config(tmp / "securepacs.toml", **values)
    return Server(data, cfg, port, "SECUREPACS", tmp / "server.log")
