"""`securepacs media create` and the disc viewer: written by default, --no-viewer, OAEP."""

from __future__ import annotations

from pathlib import Path

import pytest
from asn1crypto import cms as asn1cms
from typer.testing import CliRunner

from mediafixtures import PASSWORD, make_studies, rsa_holder
from securepacs.cli.main import app
from securepacs.media import viewer

RSAES_OAEP = "1.2.840.113549.1.1.7"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


def media(*args: str | Path):  # noqa: ANN201 - click Result
    return CliRunner().invoke(app, ["media", *map(str, args)])


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("viewer-src")
    make_studies(root)
    return root


@pytest.fixture(scope="module")
def pwfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("viewer-pw") / "pw.txt"
    path.write_text(PASSWORD + "\n")
    return path


def key_transport(path: Path) -> set[str]:
    env = asn1cms.ContentInfo.load(path.read_bytes())["content"]
    return {r.chosen["key_encryption_algorithm"]["algorithm"].dotted
            for r in env["recipient_infos"] if r.name == "ktri"}


def test_viewer_is_written_beside_the_file_set(src: Path, pwfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "disc"
    made = media("create", src, "--out", out, "--password-file", pwfile)
    assert made.exit_code == 0, made.stderr
    assert "INDEX.HTM opens the disc in a web browser" in made.stdout
    for rel, data in viewer.viewer_files():
        assert (out / rel).read_bytes() == data
    readme = (out / "README.TXT").read_text("ascii")
    assert "open INDEX.HTM (on this disc) in a web browser" in readme


def test_no_viewer_leaves_it_out(src: Path, pwfile: Path, tmp_path: Path) -> None:
    out = tmp_path / "disc"
    made = media("create", src, "--out", out, "--password-file", pwfile, "--no-viewer")
    assert made.exit_code == 0, made.stderr
    assert not (out / "INDEX.HTM").exists() and not (out / "VIEWER").exists()
    assert "INDEX.HTM" not in (out / "README.TXT").read_text("ascii")
    assert "INDEX.HTM" not in made.stdout


def test_missing_bundle_fails_in_one_line_and_writes_nothing(src: Path, pwfile: Path,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(viewer.resources, "files", lambda _pkg: tmp_path / "nowhere")
    out = tmp_path / "disc"
    made = media("create", src, "--out", out, "--password-file", pwfile)
    assert made.exit_code == 1
    assert made.stderr.count("\n") == 1 and "--no-viewer" in made.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_certificate_recipients_default_to_oaep_escrow_keeps_pkcs1(
        src: Path, tmp_path: Path, pki) -> None:  # noqa: ANN001
    doctor = rsa_holder(tmp_path / "doctor", "Doctor", pki)
    escrow = rsa_holder(tmp_path / "escrow", "Escrow", pki)
    out = tmp_path / "disc"
    made = media("create", src, "--out", out, "--recipient", doctor.cert_path,
                 "--escrow", escrow.cert_path)
    assert made.exit_code == 0, made.stderr
    assert key_transport(out / "DICOMDIR") == {RSAES_OAEP, RSA_ENCRYPTION}
    old = tmp_path / "old"
    made = media("create", src, "--out", old, "--recipient", doctor.cert_path, "--pkcs1")
    assert made.exit_code == 0, made.stderr
    assert key_transport(old / "DICOMDIR") == {RSA_ENCRYPTION}
