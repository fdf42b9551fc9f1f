"""`securepacs serve` as a user meets it: first run, flags, the plain listener, --help."""

from __future__ import annotations

import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from harness import HOST, SECUREPACS, Server, dcmtk, free_port, make_server, needs_dcmtk, write_config

pytestmark = [pytest.mark.integration]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, *args], capture_output=True, text=True, timeout=60)


def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and re.match(r"securepacs \d+\.\d+", version.stdout)
    helped = run_cli("serve", "--help")
    assert helped.returncode == 0
    for flag in ("--config", "--data-dir", "--host", "--port", "--ae-title", "--tls-cert",
                 "--tls-key", "--tls-ca", "--plain-port"):
        assert flag in helped.stdout


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bad.toml", port=2762, plain_port=2762)
    result = run_cli("serve", "--config", str(cfg))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "plain_port must differ" in result.stderr
    missing = run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr


@needs_dcmtk
def test_first_run_bootstraps_a_ca_and_prints_a_working_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = Server(data, write_config(tmp_path / "c.toml", host=HOST), port, "SECUREPACS",
                    tmp_path / "server.log", extra_args=["--data-dir", str(data),
                                                        "--port", str(port)])
    server.start()
    try:
        pki = data / "pki"
        for name in ("ca.key", "server.key", "client.key"):
            assert stat.S_IMODE((pki / name).stat().st_mode) == 0o600
        line = server.wait_for_log(r"Try it:  TCP_NODELAY=1 (echoscu [^\n]+)").group(1)
        result = dcmtk(*shlex.split(line), timeout=30)
        assert result.returncode == 0, result.stderr
        assert "storescu +tls" in server.log()
    finally:
        server.stop()
    # a second start reuses the CA: nothing is recreated
    before = (data / "pki" / "ca.pem").read_bytes()
    server.log_path = tmp_path / "second.log"
    server.start()
    server.stop()
    assert (data / "pki" / "ca.pem").read_bytes() == before
    assert "Created a local CA" not in server.log_path.read_text()


@needs_dcmtk
def test_plain_listener_only_when_asked_and_with_a_warning(tmp_path: Path, pki) -> None:  # noqa: ANN001

    plain = free_port()
    server = make_server(tmp_path, pki, plain_port=plain).start()
    try:
        server.wait_for_log(rf"WARNING.*plain TCP listener enabled on port {plain}")
        result = dcmtk("echoscu", "-aec", "SECUREPACS", HOST, str(plain), timeout=30)
        assert result.returncode == 0, result.stderr
        refused = dcmtk("echoscu", "-aec", "SECUREPACS", HOST, str(server.port), timeout=30)
        assert refused.returncode != 0
    finally:
        server.stop()


@pytest.mark.parametrize("offset, what", [(0, "DICOM"), (1, "enrolment (enroll_port)")])
def test_a_port_in_use_is_named(tmp_path: Path, offset: int, what: str) -> None:
    """Issue 18: not ``[Errno 98] Address already in use`` without the port."""
    import socket

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = run_cli("serve", "--data-dir", str(tmp_path / "data"), "--host", HOST,
                         "--port", str(busy - offset))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen for {what} on {HOST} port {busy}: address already in use" in lines[0]


def test_every_listener_is_printed_with_its_purpose(tmp_path: Path) -> None:
    """Issue 18: the DICOM TLS, plain, enrolment and viewer addresses and ports, each named."""
    data = tmp_path / "data"
    port, plain, enroll, viewer = free_port(), free_port(), free_port(), free_port()
    cfg = write_config(tmp_path / "c.toml", host="0.0.0.0", enroll_port=enroll,
                       viewer_port=viewer, plain_port=plain)
    server = Server(data, cfg, port, "SECUREPACS", tmp_path / "server.log",
                    extra_args=["--data-dir", str(data), "--port", str(port)])
    server.start()
    try:
        log = server.wait_for_log(r"archive viewer \(HTTPS[^\n]*\n") and server.log()
    finally:
        server.stop()
    expected = [f"0.0.0.0:{port} (every interface)  DICOM over TLS",
                f"0.0.0.0:{plain} (every interface)  DICOM plain TCP (NOT encrypted",
                f"0.0.0.0:{enroll} (every interface)  enrolment, HTTPS",
                f"0.0.0.0:{viewer} (every interface)  archive viewer (HTTPS, the archive's images"]
    for line in expected:
        assert line in log, (line, log)
