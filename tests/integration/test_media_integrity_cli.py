"""``securepacs media`` against tampered and other writers' media (issue 14 items 9-10, issue 18
item 1): integrity verified vs not protected in ``info``/``extract``/``verify``, the one-byte
content-type attack, a damaged certificate entry, a hostile PBKDF2 count, and the Security
Alert a failed verification leaves in the audit trail. The CLI runs in process (CliRunner);
the discs are made with the real service (fewer PBKDF2 iterations, to keep the tests fast).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import cms as asn1cms
from typer.testing import CliRunner

from mediafixtures import FAST_ITERATIONS, PASSWORD, RsaHolder, make_studies, rsa_holder
from securepacs.cli.main import app
from securepacs.media import cms, fileset
from securepacs.services.media import FileSource, create_media

pytestmark = [pytest.mark.integration]

runner = CliRunner()
DIGESTED_OID = bytes.fromhex("06092a864886f70d010705")


def run(*args: str | Path):  # noqa: ANN201 - click Result
    return runner.invoke(app, [*map(str, args)])


def no_traceback(result) -> None:  # noqa: ANN001
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    make_studies(folder)
    return folder


@pytest.fixture(scope="module")
def doctor(tmp_path_factory: pytest.TempPathFactory, pki) -> RsaHolder:  # noqa: ANN001
    return rsa_holder(tmp_path_factory.mktemp("keys"), "doctor", pki)


@pytest.fixture(scope="module")
def pwfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pw") / "password.txt"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory, src: Path, doctor: RsaHolder) -> Path:
    out = tmp_path_factory.mktemp("disc") / "out"
    create_media(folders=[src], out_dir=out, password=PASSWORD, recipients=[doctor.cert_path],
                 at=datetime.now(UTC), iterations=FAST_ITERATIONS)
    return out


@pytest.fixture(scope="module")
def gdcm_disc(tmp_path_factory: pytest.TempPathFactory, src: Path) -> Path:
    """A file-set as GDCM writes it: every file, the DICOMDIR included, plain id-data."""
    out = tmp_path_factory.mktemp("gdcm") / "out"
    sources = [FileSource(p, str(p)) for p in sorted(src.rglob("*")) if p.is_file()]
    plan = fileset.plan_fileset(sources)
    writer = cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=2048)
    files = [("/".join(parts), s.read()) for parts, s in plan.entries]
    files.append((fileset.DICOMDIR, plan.dicomdir))
    for rel, data in files:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(cms.seal(data, [writer], inner="data", cipher="aes128_cbc"))
    return out


def copy_of(disc: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    copy = tmp_path / "copy"
    shutil.copytree(disc, copy)
    images = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("IM*"))
    return copy, images


def one_byte_attack(path: Path) -> None:
    """id-digestedData -> id-data in the encrypted content type, and a bit flipped."""
    data = bytearray(path.read_bytes())
    data[data.index(DIGESTED_OID) + len(DIGESTED_OID) - 1] = 0x01
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def security_alerts(data_dir: Path) -> list[str]:
    listed = run("audit", "--data-dir", data_dir, "list", "--type", "security-alert", "--json")
    assert listed.exit_code == 0, listed.output
    return listed.stdout.splitlines()


# --------------------------------------------------------------------------- our own media


def test_info_extract_and_verify_say_integrity_verified(disc: Path, pwfile: Path,
                                                        tmp_path: Path) -> None:
    info = run("media", "info", disc)
    assert info.exit_code == 0 and info.stdout.count("integrity protected") == 8
    assert "NOT PROTECTED" not in info.output
    out = run("media", "extract", disc, "--to", tmp_path / "x", "--password-file", pwfile)
    assert out.exit_code == 0, out.output
    assert "Integrity verified (digest checked): 8 of 8 file(s)." in out.stdout
    assert "NOT protected" not in out.output


def test_one_byte_attack_is_refused_everywhere_and_alerted(disc: Path, pwfile: Path,
                                                           tmp_path: Path) -> None:
    copy, images = copy_of(disc, tmp_path)
    one_byte_attack(copy / images[2])
    stopped = run("media", "extract", copy, "--to", tmp_path / "out", "--password-file", pwfile)
    no_traceback(stopped)
    assert stopped.exit_code == 1
    assert stopped.stderr.startswith(f"securepacs: {images[2]}: ")
    assert "content type was altered (tampered)" in stopped.stderr
    assert not (tmp_path / "out").exists()
    going = run("media", "extract", copy, "--to", tmp_path / "out", "--password-file", pwfile,
                "--keep-going")
    assert going.exit_code == 1 and "Extracted 7 file(s)" in going.stdout
    assert f"FAILED {images[2]}: " in going.stderr
    assert not (tmp_path / "out" / images[2]).exists()

    data_dir = tmp_path / "data"
    verified = run("media", "verify", copy, "--password-file", pwfile, "--data-dir", data_dir)
    no_traceback(verified)
    assert verified.exit_code == 1
    assert "Verified 7 of 8 file(s); 1 failed" in verified.stdout
    alerts = security_alerts(data_dir)
    assert len(alerts) == 1 and images[2] in alerts[0] and "tampered" in alerts[0]


def test_verify_of_an_altered_file_records_a_security_alert(disc: Path, pwfile: Path,
                                                            tmp_path: Path) -> None:
    """Issue 18 item 1: a summary, then a traceback, and no alert."""
    copy, images = copy_of(disc, tmp_path)
    victim = copy / images[4]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    data_dir = tmp_path / "data"
    verified = run("media", "verify", copy, "--password-file", pwfile, "--data-dir", data_dir)
    no_traceback(verified)
    assert verified.exit_code == 1 and "1 failed" in verified.stdout
    assert "could not be recorded" not in verified.output
    (alert,) = security_alerts(data_dir)
    assert images[4] in alert and str(copy) in alert


def test_an_unprotected_file_on_a_protected_disc_is_tampered(disc: Path, pwfile: Path,
                                                             tmp_path: Path) -> None:
    """A genuine id-data file (no mark, no DigestedData inside) put on our disc."""
    copy, images = copy_of(disc, tmp_path)
    victim = copy / images[0]
    keyring = cms.Keyring(password=PASSWORD.encode())
    content = cms.open_file(victim.read_bytes(), keyring).content
    foreign = cms.PasswordRecipient.derive(PASSWORD.encode(), iterations=2048)
    victim.write_bytes(cms.seal(content, [foreign], inner="data"))
    result = run("media", "extract", copy, "--to", tmp_path / "out", "--password-file", pwfile)
    no_traceback(result)
    assert result.exit_code == 1
    assert f"{images[0]}: claims unprotected id-data content on media whose DICOMDIR is " \
           "protected" in result.stderr


# --------------------------------------------------------------------------- other writers


def test_other_writers_media_opens_unprotected_with_a_warning(gdcm_disc: Path, pwfile: Path,
                                                              tmp_path: Path) -> None:
    info = run("media", "info", gdcm_disc, "--json")
    assert {f["integrity"] for f in __import__("json").loads(info.stdout)["files"]} == \
        {"unprotected"}
    text = run("media", "info", gdcm_disc)
    assert text.stdout.count("NOT PROTECTED (no digest)") == 8
    assert "Warning: 8 file(s) declare no integrity protection" in text.stderr
    out = run("media", "extract", gdcm_disc, "--to", tmp_path / "x", "--password-file", pwfile)
    assert out.exit_code == 0, out.output
    assert "Integrity verified (digest checked): 0 of 8 file(s)." in out.stdout
    assert "Integrity NOT protected: 8 file(s)" in out.stdout
    assert "WARNING DICOMDIR: integrity not protected" in out.stderr
    data_dir = tmp_path / "data"
    verified = run("media", "verify", gdcm_disc, "--password-file", pwfile, "--data-dir",
                   data_dir)
    no_traceback(verified)
    assert verified.exit_code == 1
    assert "FAILED DICOMDIR: integrity not protected" in verified.stderr
    assert "Verified 0 of 8 file(s); 8 failed" in verified.stdout


def test_import_of_other_writers_media_warns(gdcm_disc: Path, pwfile: Path) -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on: the import stops at connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("media", "import", gdcm_disc, "--password-file", pwfile, "--server",
                 f"127.0.0.1:{port}", "--no-tls", "--aec", "NOBODY", "--timeout", "5")
    no_traceback(result)
    assert result.exit_code != 0
    assert "warning: integrity not protected for 8 file(s) of the media" in result.stderr


# --------------------------------------------------------------------------- damaged entries


def test_damaged_certificate_entry_is_named_and_the_rest_goes_on(disc: Path, doctor: RsaHolder,
                                                                 tmp_path: Path) -> None:
    copy, images = copy_of(disc, tmp_path)
    victim = copy / images[1]
    data = bytearray(victim.read_bytes())
    data[data.index(doctor.cert.issuer.public_bytes()) + 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    key = ("--media-key", doctor.combined_path)
    stopped = run("media", "extract", copy, "--to", tmp_path / "out", *key)
    no_traceback(stopped)
    assert stopped.exit_code == 1
    assert stopped.stderr == (f"securepacs: {images[1]}: a certificate recipient entry is "
                              "damaged" + stopped.stderr.split("damaged", 1)[1])
    assert len(stopped.stderr.splitlines()) == 1
    going = run("media", "extract", copy, "--to", tmp_path / "out", *key, "--keep-going")
    no_traceback(going)
    assert going.exit_code == 1 and "Extracted 7 file(s)" in going.stdout
    verified = run("media", "verify", copy, *key, "--data-dir", tmp_path / "data")
    no_traceback(verified)
    assert verified.exit_code == 1 and f"FAILED {images[1]}: " in verified.stderr


def test_hostile_iteration_count_is_refused_and_named(disc: Path, pwfile: Path,
                                                      tmp_path: Path) -> None:
    copy, images = copy_of(disc, tmp_path)
    victim = copy / images[3]
    info = asn1cms.ContentInfo.load(victim.read_bytes())
    for ri in info["content"]["recipient_infos"]:
        if ri.name == "pwri":
            ri.chosen["key_derivation_algorithm"]["parameters"]["iteration_count"] = 20_000_000
    victim.write_bytes(info.dump(force=True))
    going = run("media", "extract", copy, "--to", tmp_path / "out", "--password-file", pwfile,
                "--keep-going")
    no_traceback(going)
    assert going.exit_code == 1
    assert (f"FAILED {images[3]}: PBKDF2 iteration count 20,000,000 is outside "
            "1..10,000,000") in going.stderr
