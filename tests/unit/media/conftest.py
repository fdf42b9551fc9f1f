"""Fixtures for the pure media tests: RSA holders and a fast password recipient."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mediafixtures import FAST_ITERATIONS, PASSWORD, RsaHolder, rsa_holder  # noqa: E402
from securepacs.media import cms  # noqa: E402


@pytest.fixture(scope="session")
def alice(tmp_path_factory: pytest.TempPathFactory, pki) -> RsaHolder:  # noqa: ANN001
    return rsa_holder(tmp_path_factory.mktemp("alice"), "alice", pki)


@pytest.fixture(scope="session")
def bob(tmp_path_factory: pytest.TempPathFactory, pki) -> RsaHolder:  # noqa: ANN001
    return rsa_holder(tmp_path_factory.mktemp("bob"), "bob", pki)


@pytest.fixture(scope="session")
def password_recipient() -> cms.PasswordRecipient:
    return cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=FAST_ITERATIONS)
