"""Session-wide fixtures: a throwaway CA made at test time (nothing committed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pgfixtures import azure_container, azurite, pg_url, postgres  # noqa: E402,F401
from pkifixtures import TestPki  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A CA with a server certificate (127.0.0.1) and a client certificate."""
    return TestPki.create(tmp_path_factory.mktemp("pki"))
