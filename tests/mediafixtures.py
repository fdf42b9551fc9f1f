"""Keys, certificates and DICOM studies for the encrypted-media tests, made at test time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from pydicom import dcmread

from factories import write_study
from securepacs.pki import authority

PASSWORD = "correct horse battery staple"
FAST_ITERATIONS = 1000  # unit tests only; the CLI always uses >= 600,000


@dataclass
class RsaHolder:
    """An RSA key and its certificate, as objects and as PEM files."""

    key: Any
    cert: Any
    key_path: Path
    cert_path: Path
    combined_path: Path  # key and certificate in one PEM file


def rsa_holder(folder: Path, name: str, pki: Any, *, at: datetime | None = None,
               days: int = 30) -> RsaHolder:
    """An RSA-2048 key with a client certificate from the test CA (keyEncipherment set)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _none, cert = authority.issue_certificate(
        pki.ca_key_obj, pki.ca_cert_obj, common_name=name, role="client",
        at=at or datetime.now(UTC) - timedelta(minutes=1), days=days,
        public_key=key.public_key())
    holder = RsaHolder(key, cert, folder / f"{name}.key", folder / f"{name}.pem",
                       folder / f"{name}-combined.pem")
    authority.write_private_key(holder.key_path, key)
    authority.write_certificates(holder.cert_path, [cert])
    holder.combined_path.write_bytes(holder.key_path.read_bytes() + holder.cert_path.read_bytes())
    return holder


def make_studies(folder: Path) -> dict[str, bytes]:
    """Three studies of two patients (2 + 3 + 2 images); SOP Instance UID -> file bytes."""
    files: list[Path] = []
    files += write_study(folder / "p1s1", 2, patient_id="PAT001", patient_name="Doe^Jane",
                         accession="A1")
    files += write_study(folder / "p1s2", 3, patient_id="PAT001", patient_name="Doe^Jane",
                         modality="MR", accession="A2")
    files += write_study(folder / "p2s1", 2, patient_id="PAT002", patient_name="Roe^Richard",
                         accession="A3")
    out = {}
    for path in files:
        data = path.read_bytes()
        out[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = data
    return out
