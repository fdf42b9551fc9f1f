"""A throwaway PKI for tests, built with securepacs' own authority module."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securepacs.pki import authority


@dataclass
class Pair:
    key: Path
    cert: Path


@dataclass
class TestPki:
    folder: Path
    ca_cert: Path
    ca_key_obj: Any
    ca_cert_obj: Any
    server: Pair
    client: Pair

    __test__ = False  # not a test class

    @classmethod
    def create(cls, folder: Path, name: str = "Test CA") -> TestPki:
        now = datetime.now(UTC)
        ca_key, ca_cert = authority.create_root_ca(name, at=now)
        ca_path = folder / "ca.pem"
        authority.write_certificates(ca_path, [ca_cert])
        pki = cls(folder, ca_path, ca_key, ca_cert, Pair(Path(), Path()), Pair(Path(), Path()))
        pki.server = pki.issue("server", role="server", sans=["127.0.0.1", "localhost"])
        pki.client = pki.issue("client", role="client", organization="Test Hospital")
        return pki

    def issue(self, name: str, *, role: str = "client", at: datetime | None = None,
              days: int = 30, sans: list[str] | None = None,
              organization: str | None = None) -> Pair:
        """Issue a certificate signed by this CA, written as NAME.key / NAME.pem."""
        key, cert = authority.issue_certificate(
            self.ca_key_obj, self.ca_cert_obj, common_name=name, role=role,  # type: ignore[arg-type]
            at=at or datetime.now(UTC), days=days, sans=sans or [],
            organization=organization)
        pair = Pair(self.folder / f"{name}.key", self.folder / f"{name}.pem")
        assert key is not None
        authority.write_private_key(pair.key, key)
        authority.write_certificates(pair.cert, [cert])
        return pair

    def issue_expired(self, name: str) -> Pair:
        return self.issue(name, at=datetime.now(UTC) - timedelta(days=400), days=30)

    def issue_future(self, name: str) -> Pair:
        return self.issue(name, at=datetime.now(UTC) + timedelta(days=30), days=30)
