"""SIGKILL in the middle of a 200-image storescu run loses nothing that was acknowledged."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from harness import HOST, make_server, needs_dcmtk, tls_args
from pydicom import dcmread
from test_retrieve import dataset_bytes

from factories import write_study

pytestmark = [pytest.mark.integration, needs_dcmtk]


def test_kill_during_storescu_then_restart(tmp_path: Path, pki) -> None:  # noqa: ANN001
    files = write_study(tmp_path / "src", 200, rows=64, columns=64)
    kill_and_restart(tmp_path, pki, files, kill_after=60)


def test_kill_while_a_large_object_is_spooled_then_restart(tmp_path: Path,
                                                           pki) -> None:  # noqa: ANN001
    """Objects past the 8 MiB spill threshold go to a temp file that is flushed while it
    arrives (dimse/spool.py): killed in the middle of the second one, the first is kept
    whole and the temp file of the second is swept at the restart."""
    files = write_study(tmp_path / "src", 2, rows=2048, columns=4096)  # 16 MiB each
    kill_and_restart(tmp_path, pki, files, kill_after=1, spooling=True)


def kill_and_restart(tmp_path: Path, pki, files: list[Path],  # noqa: ANN001
                     kill_after: int, spooling: bool = False) -> None:
    """Send `files` with storescu, SIGKILL the server after `kill_after` acknowledged
    instances (`spooling`: once the next one is being written to its temp file), restart
    it: every acknowledged instance is indexed and whole, nothing else is left (no temp
    file, no orphan blob)."""
    by_uid = {dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
    server = make_server(tmp_path, pki).start()
    sender = subprocess.Popen(
        ["storescu", "-v", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
         "-aec", server.ae_title, HOST, str(server.port), *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"TCP_NODELAY": "1"})
    lines: list[str] = []
    successes = 0
    assert sender.stdout is not None
    deadline = time.monotonic() + 120
    killed = False
    for line in sender.stdout:
        lines.append(line)
        if "Received Store Response (Success)" in line:
            successes += 1
            if successes == kill_after and not killed:
                if spooling:
                    assert wait_for_spool(server.data_dir / "blobs" / "tmp"), "nothing spooled"
                server.kill()  # SIGKILL: no clean-up of any kind
                killed = True
        if time.monotonic() > deadline:
            sender.kill()
            break
    sender.wait(timeout=30)
    assert killed, "storescu finished before the server could be killed:\n" + "".join(lines[-20:])
    acknowledged = [dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files[:successes]]
    assert successes >= kill_after
    assert sender.returncode != 0 or successes < len(files)

    restarted = make_server(tmp_path, pki)
    restarted.log_path = tmp_path / "server2.log"
    restarted.start()
    try:
        restarted.stop()  # stop cleanly so the index can be read without a writer
        from securepacs.index.repository import SqlIndex

        index = SqlIndex(f"sqlite:///{restarted.data_dir / 'index.sqlite'}")
        blob_root = restarted.data_dir / "blobs"
        blob_files = {p.name: p for p in blob_root.rglob("*") if p.is_file()}
        assert not list((blob_root / "tmp").iterdir()), "a temp file survived the restart"
        present = {}
        for uid in by_uid:
            stored = index.get(uid)
            if stored is not None:
                present[uid] = stored
        for uid in acknowledged:
            assert uid in present, f"acknowledged instance {uid} was lost"
        for uid, stored in present.items():  # every indexed instance is whole
            blob = blob_files.pop(stored.blob_key)
            assert dataset_bytes(blob.read_bytes()) == dataset_bytes(by_uid[uid].read_bytes())
        assert blob_files == {}, f"orphan blobs remain: {sorted(blob_files)[:5]}"
        index.close()
        assert re.search(r"ready: \d+ instance", restarted.log())
    finally:
        restarted.stop()


def wait_for_spool(folder: Path, seconds: float = 30.0) -> bool:
    """Whether a received data set's temp file (``rx….tmp``) grew past a few MiB in
    `folder` within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for tmp in folder.glob("rx*.tmp"):
            try:
                if tmp.stat().st_size > 12 * 1024 * 1024:
                    return True
            except FileNotFoundError:
                continue
        time.sleep(0.002)
    return False
