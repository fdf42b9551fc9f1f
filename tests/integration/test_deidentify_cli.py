"""``media create --deidentify`` end to end: a disc whose extracted files show no name, ID
or birth date in ``dcmdump``, whose SR references resolve inside the disc, and which leaves
burned-in images out unless asked; ``send --deidentify`` and ``get --deidentify`` against a
running server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from harness import HOST, ROOT, SECUREPACS, needs_dcmtk
from pydicom import dcmread
from typer.testing import CliRunner

from deidfixtures import sr_referencing as _sr_referencing
from deidfixtures import study as _study
from factories import make_dataset
from mediafixtures import PASSWORD
from securepacs.cli.main import app

pytestmark = [pytest.mark.integration]

runner = CliRunner()
NAME, PATIENT_ID, BIRTH = "Doe^Jane", "PAT001", "19700101"


def _sources(folder: Path) -> list:  # noqa: ANN401
    folder.mkdir()
    images = _study(3)
    sr = _sr_referencing(images)
    burned = make_dataset(modality="US")
    burned.BurnedInAnnotation = "YES"
    for n, ds in enumerate([*images, sr, burned]):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    return [*images, sr, burned]


def _dciodvfy_errors(path: Path) -> set[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.split(" - ", 1)[-1].strip() for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("Error")}


def _audit_messages(data_dir: Path) -> list:  # noqa: ANN401 - lxml elements
    from lxml import etree

    from auditschema import assert_valid

    exported = runner.invoke(app, ["audit", "--data-dir", str(data_dir), "export"])
    assert exported.exit_code == 0, exported.output
    messages = list(etree.fromstring(exported.stdout_bytes))
    for message in messages:
        assert_valid(etree.tostring(message))
    return messages


@pytest.mark.skipif(shutil.which("dcmdump") is None or shutil.which("dciodvfy") is None,
                    reason="DCMTK or dicom3tools is not installed")
def test_deidentified_disc_shows_no_identity(tmp_path: Path) -> None:
    originals = _sources(tmp_path / "src")
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("# descriptions known to name nobody\nchest\n")
    disc = tmp_path / "disc"
    data_dir = tmp_path / "data"
    made = runner.invoke(app, ["media", "create", str(tmp_path / "src"), "--out", str(disc),
                               "--password-file", str(pw), "--no-viewer", "--deidentify",
                               "--option", "retain-longitudinal-modified-dates",
                               "--option", "clean-descriptors", "--clean-allowlist", str(allow),
                               "--data-dir", str(data_dir)])
    assert made.exit_code == 0, made.output
    assert "Wrote 4 instance(s)" in made.stdout  # the burned-in US image is left out
    assert "Left out 1 instance(s) with burned-in annotation" in made.stdout
    out = tmp_path / "plain"
    extracted = runner.invoke(app, ["media", "extract", str(disc), "--to", str(out),
                                    "--password-file", str(pw)])
    assert extracted.exit_code == 0, extracted.stderr
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "DICOMDIR"
             and dcmread(p, stop_before_pixels=True).get("SOPInstanceUID")]
    assert len(files) == 4
    original_uids = {str(ds.SOPInstanceUID) for ds in originals}
    sop_uids = set()
    for path in files:
        dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True,
                              timeout=30).stdout
        for secret in (NAME, PATIENT_ID, BIRTH, *original_uids):
            assert secret not in dump, f"{secret} in {path.name}:\n{dump}"
        assert "PatientIdentityRemoved" in dump and "[YES]" in dump
        assert "113107" in dump  # CID 7050: Retain Longitudinal ... Modified Dates
        assert "113105" in dump  # CID 7050: Clean Descriptors
        assert "(0008,1030) LO [Chest]" in dump  # allowlisted: kept
        sop_uids.add(str(dcmread(path).SOPInstanceUID))
    srs = [dcmread(p) for p in files if dcmread(p).Modality == "SR"]
    assert len(srs) == 1
    refs = {r.ReferencedSOPInstanceUID for r in srs[0].CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0].ReferencedSOPSequence}
    assert refs and refs <= sop_uids, "an SR reference does not resolve inside the disc"
    assert srs[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID \
        in sop_uids, "the SR's IMAGE content item does not resolve inside the disc"
    # dciodvfy finds no error in the disc's objects that their originals did not have
    before: set[str] = set()
    for source in (tmp_path / "src").glob("*.dcm"):
        before |= _dciodvfy_errors(source)
    for path in files:
        new = _dciodvfy_errors(path) - before
        assert not new, f"dciodvfy errors only after de-identification in {path.name}: {new}"
    # the audit trail names the original patient and studies, marked Anonymized, and
    # neither the name nor the disc's new UIDs (PS3.15 A.5.3.7)
    from lxml import etree

    exports = [msg for msg in _audit_messages(data_dir)
               if msg.find("EventIdentification/EventID").get("csd-code") == "110106"]
    assert len(exports) == 1
    text = etree.tostring(exports[0]).decode()
    assert NAME not in text and "ANON-" not in text
    assert not [uid for uid in sop_uids | {str(dcmread(p).StudyInstanceUID) for p in files}
                if uid in text], "a new UID of the disc is in the audit trail"
    studies = exports[0].findall("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
    assert {s.get("ParticipantObjectID") for s in studies} == \
        {str(originals[0].StudyInstanceUID)}  # the burned-in US image (another study) left out
    assert all(s.findtext("ParticipantObjectDescription/Anonymized") == "true" for s in studies)
    patient = exports[0].find("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert patient.get("ParticipantObjectID") == PATIENT_ID
    assert "113105 Clean Descriptors" in exports[0].findtext(
        "EventIdentification/EventOutcomeDescription")


def test_options_need_deidentify_and_known_names(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                              "--option", "retain-uids", "--password-file", str(tmp_path)])
    assert bad.exit_code == 2 and "go with --deidentify" in bad.output
    unknown = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--deidentify", "--option", "retain-everything"])
    assert unknown.exit_code == 2 and "unknown de-identification option" in unknown.output
    pixels = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--deidentify", "--option", "clean-pixel-data"])
    assert pixels.exit_code == 2 and "clean-pixel-data is not offered: burned-in text cannot" \
        in " ".join(pixels.output.split())
    no_list = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--deidentify", "--option", "clean-descriptors"])
    assert no_list.exit_code == 2 and "needs an allowlist" in " ".join(no_list.output.split())
    missing = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--deidentify", "--option", "clean-descriptors",
                                  "--clean-allowlist", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and "cannot read the allowlist" in missing.output
    binary = tmp_path / "allow.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    not_text = runner.invoke(app, ["media", "create", str(tmp_path), "--out",
                                   str(tmp_path / "o"), "--deidentify", "--clean-allowlist",
                                   str(binary), "--option", "clean-graphics"])
    assert not_text.exit_code == 2 and "not UTF-8 text" in not_text.output
    unused = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--deidentify", "--clean-allowlist", str(binary)])
    assert unused.exit_code == 2 and "goes with a clean-* option" in unused.output
    alone = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                "--clean-allowlist", str(binary)])
    assert alone.exit_code == 2 and "go with --deidentify" in alone.output
    assert not (tmp_path / "o").exists()
    short = tmp_path / "key"
    short.write_bytes(b"x" * 8)
    refused = runner.invoke(app, ["media", "create", str(tmp_path), "--out", str(tmp_path / "o"),
                                  "--deidentify", "--mapping-key", str(short)])
    assert refused.exit_code == 2 and "fewer than 16 bytes" in refused.output


@needs_dcmtk
def test_send_and_get_deidentified(tmp_path: Path, server, pki) -> None:  # noqa: ANN001
    originals = _sources(tmp_path / "src")
    tls = ["--server", f"{HOST}:{server.port}", "--aec", server.ae_title,
           "--cert", str(pki.client.cert), "--key", str(pki.client.key),
           "--ca", str(pki.ca_cert)]
    key = tmp_path / "mapping.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    data_dir = tmp_path / "local"
    sent = subprocess.run([*SECUREPACS, "send", str(tmp_path / "src"), "--deidentify",
                           "--mapping-key", str(key), "--data-dir", str(data_dir), *tls],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    study = str(originals[0].StudyInstanceUID)
    # the server holds the study under its new UID only
    gone = subprocess.run([*SECUREPACS, "get", "--study", study, "--to", str(tmp_path / "x"),
                           *tls], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert gone.returncode != 0
    from securepacs.services.deidentify import Deidentifier

    new_study = Deidentifier(mapping_key=key.read_bytes()).new_uid(study)
    got = subprocess.run([*SECUREPACS, "get", "--study", new_study, "--to",
                          str(tmp_path / "got"), "--deidentify", "--data-dir", str(data_dir),
                          *tls],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert got.returncode == 0, got.stdout + got.stderr
    files = [p for p in (tmp_path / "got").rglob("*.dcm")]
    assert len(files) == 4  # 3 images and the SR; the burned-in image was never sent
    for path in files:
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientName) != NAME and ds.PatientID != PATIENT_ID
        assert not ds.get("PatientBirthDate")
    # each transfer is in the local audit trail: DICOM Instances Transferred naming the
    # study it was made from (the original for send, the server's for get), Anonymized
    transfers = [msg for msg in _audit_messages(data_dir)
                 if msg.find("EventIdentification/EventID").get("csd-code") == "110104"]
    assert len(transfers) == 2
    for message, origin in zip(transfers, (study, new_study), strict=True):
        objects = message.findall("ParticipantObjectIdentification")
        studies = [o for o in objects if o.get("ParticipantObjectTypeCodeRole") == "3"]
        assert [o.get("ParticipantObjectID") for o in studies] == [origin]
        assert studies[0].findtext("ParticipantObjectDescription/Anonymized") == "true"
        assert message.find("EventIdentification").get("EventActionCode") == "C"
        roles = {p.get("UserID"): p.find("RoleIDCode").get("csd-code")
                 for p in message.findall("ActiveParticipant") if p.find("RoleIDCode") is not None}
        assert server.ae_title in roles
    send_patient = transfers[0].find(
        "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
    assert send_patient.get("ParticipantObjectID") == PATIENT_ID
    assert NAME not in "".join(t.decode() for t in map(_xml, transfers))


def _xml(element) -> bytes:  # noqa: ANN001
    from lxml import etree

    return etree.tostring(element)
