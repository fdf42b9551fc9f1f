"""Fixtures that start real servers for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, make_server


@pytest.fixture
def server(tmp_path: Path, pki) -> Iterator[Server]:  # noqa: ANN001
    srv = make_server(tmp_path, pki).start()
    try:
        yield srv
    finally:
        srv.stop()
