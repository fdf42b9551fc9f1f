"""The viewer's catalog and page say, per disc, whether integrity was verified; tampered and
damaged files are listed by name instead of breaking the viewer (issue 14 items 9 and 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from factories import write_study
from mediafixtures import FAST_ITERATIONS, PASSWORD, RsaHolder, rsa_holder
from securepacs.errors import MediaError
from securepacs.media import cms, fileset
from securepacs.services.media import FileSource, create_media
from securepacs.services.media_view import open_catalog
from securepacs.web import viewer_pages

DIGESTED_OID = bytes.fromhex("06092a864886f70d010705")


@pytest.fixture
def doctor(tmp_path: Path, pki) -> RsaHolder:  # noqa: ANN001
    return rsa_holder(tmp_path / "keys", "doctor", pki)


def make_disc(tmp_path: Path, doctor: RsaHolder) -> tuple[Path, list[Path]]:
    src = tmp_path / "src"
    write_study(src, 3, patient_id="V1", patient_name="View^Vera")
    disc = tmp_path / "disc"
    create_media(folders=[src], out_dir=disc, password=PASSWORD, recipients=[doctor.cert_path],
                 at=datetime.now(UTC), iterations=FAST_ITERATIONS)
    return disc, sorted(disc.rglob("IM*"))


def keyring() -> cms.Keyring:
    return cms.Keyring(password=PASSWORD.encode())


def test_our_disc_is_shown_as_integrity_verified(tmp_path: Path, doctor: RsaHolder) -> None:
    disc, _images = make_disc(tmp_path, doctor)
    with open_catalog(disc, keyring()) as catalog:
        assert (catalog.verified, catalog.unprotected, catalog.errors) == (4, [], [])
        page = viewer_pages.studies(catalog)
    assert "Integrity verified: the digest of each of the 4 file(s) opened was checked" in page


def test_other_writers_disc_is_shown_as_not_protected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_study(src, 2, patient_id="G1")
    plan = fileset.plan_fileset([FileSource(p, str(p)) for p in sorted(src.rglob("*.dcm"))])
    writer = cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=2048)
    disc = tmp_path / "gdcm"
    for parts, source in plan.entries:
        (disc / "/".join(parts)).parent.mkdir(parents=True, exist_ok=True)
        (disc / "/".join(parts)).write_bytes(cms.seal(source.read(), [writer], inner="data"))
    (disc / "DICOMDIR").write_bytes(cms.seal(plan.dicomdir, [writer], inner="data"))
    with open_catalog(disc, keyring()) as catalog:
        assert catalog.count == 2 and catalog.verified == 0
        assert sorted(catalog.unprotected) == sorted(["DICOMDIR", *("/".join(p) for p, _s in
                                                                    plan.entries)])
        page = viewer_pages.studies(catalog)
    assert "Integrity NOT protected for 3 file(s)" in page and "DICOMDIR" in page


def test_tampered_and_damaged_files_are_named_and_the_rest_is_shown(
        tmp_path: Path, doctor: RsaHolder) -> None:
    disc, images = make_disc(tmp_path, doctor)
    attacked = bytearray(images[0].read_bytes())
    attacked[attacked.index(DIGESTED_OID) + len(DIGESTED_OID) - 1] = 0x01
    images[0].write_bytes(bytes(attacked))
    damaged = bytearray(images[1].read_bytes())
    damaged[damaged.index(doctor.cert.issuer.public_bytes()) + 2] ^= 0xFF
    images[1].write_bytes(bytes(damaged))
    rel = [p.relative_to(disc).as_posix() for p in images]
    by_key = cms.Keyring(keys=[cms.RecipientKey(doctor.key, doctor.cert)])
    with open_catalog(disc, by_key) as catalog:
        assert catalog.count == 1 and catalog.verified == 2  # the DICOMDIR and one image
        assert len(catalog.errors) == 2
        assert catalog.errors[0].startswith(f"{rel[0]}: ") and "tampered" in catalog.errors[0]
        assert catalog.errors[1].startswith(f"{rel[1]}: ") and "damaged" in catalog.errors[1]
        with pytest.raises(MediaError, match="damaged"):  # the viewer answers this, not 500
            catalog.part10(rel[1])
        with pytest.raises(MediaError, match="tampered"):
            catalog.part10(rel[0])
        assert catalog.part10(rel[2])[128:132] == b"DICM"
