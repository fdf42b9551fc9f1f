"""Transfer syntax negotiation with DCMTK's multi-syntax requestors (issue 17 item 1).

dcmsend proposes each file's own syntax first and uncompressed ones after it; getscu
+xw/+xv/+xy proposes JPEG 2000 / JPEG-LS first. The archive accepts the requestor's
first supported syntax, so files are stored and retrieved unchanged. DCMTK 3.6.7's dcmsend
and getscu have no TLS: they go through a socat TLS tunnel with the client certificate.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from harness import HOST, Server, dcmtk, needs_dcmtk
from pydicom.data import get_testdata_file
from tunnel import needs_socat, tls_tunnel

pytestmark = [pytest.mark.integration, needs_dcmtk, needs_socat]

FILES = {
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.90": "examples_jpeg2k.dcm",
    "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",
}


def _stored(server: Server) -> dict[str, pydicom.Dataset]:
    out = {}
    for path in (server.data_dir).rglob("*"):
        if path.is_file() and path.suffix not in (".sqlite", ".jsonl") and "pki" not in path.parts:
            try:
                ds = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001 - not a stored instance
                continue
            out[str(ds.SOPInstanceUID)] = ds
    return out


def test_dcmsend_stores_compressed_files_unchanged(server: Server, pki, tmp_path: Path) -> None:  # noqa: ANN001
    paths = [Path(str(get_testdata_file(name))) for name in FILES.values()]
    with tls_tunnel(server.port, pki.client.key, pki.client.cert, pki.ca_cert) as port:
        result = dcmtk("dcmsend", "-aec", server.ae_title, "-aet", "DCMSEND", HOST, str(port),
                       *paths, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = _stored(server)
    for path in paths:
        original = pydicom.dcmread(path)
        held = stored[str(original.SOPInstanceUID)]
        assert held.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, path.name
        assert held.PixelData == original.PixelData, path.name


@pytest.mark.parametrize(("option", "syntax"), [("+xw", "1.2.840.10008.1.2.4.91"),
                                                ("+xv", "1.2.840.10008.1.2.4.90"),
                                                ("+xt", "1.2.840.10008.1.2.4.80"),
                                                ("+xy", "1.2.840.10008.1.2.4.50")])
def test_getscu_receives_what_is_stored_as_stored(server: Server, pki, tmp_path: Path,  # noqa: ANN001
                                                  option: str, syntax: str) -> None:
    original = pydicom.dcmread(str(get_testdata_file(FILES[syntax])))
    with tls_tunnel(server.port, pki.client.key, pki.client.cert, pki.ca_cert) as port:
        sent = dcmtk("dcmsend", "-aec", server.ae_title, "-aet", "DCMSEND", HOST, str(port),
                     str(get_testdata_file(FILES[syntax])), timeout=60)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        out = tmp_path / "got"
        out.mkdir()
        got = dcmtk("getscu", option, "-S", "-aec", server.ae_title, "-aet", "GETSCU",
                    "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
                    "-od", str(out), HOST, str(port), timeout=60)
    output = got.stdout + got.stderr
    assert got.returncode == 0, output
    files = list(out.iterdir())
    assert len(files) == 1, output
    received = pydicom.dcmread(files[0])
    assert received.file_meta.TransferSyntaxUID == syntax
    assert received.PixelData == original.PixelData
