"""Fixtures that start real servers for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, free_port, write_config


def make_server(tmp: Path, pki, **config: object) -> Server:  # noqa: ANN001
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


@pytest.fixture
def server(tmp_path: Path, pki) -> Iterator[Server]:  # noqa: ANN001
    srv = make_server(tmp_path, pki).start()
    try:
        yield srv
    finally:
        srv.stop()
