"""Data at rest (issue 14, item 8): everything ``serve`` and the CLI create in a fresh data
folder is 0700 / 0600 (index.sqlite, -wal and -shm included), whatever the caller's umask;
looser modes left by someone else fail ``securepacs check`` and are warned about at start-up."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from catools import ca, data_server
from harness import HOST, SECUREPACS, dcmtk, needs_dcmtk, tls_args

from factories import write_study


def modes(root: Path) -> dict[str, int]:
    found = {str(root): stat.S_IMODE(root.lstat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def check(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SECUREPACS, "check", "--data-dir", str(data)], capture_output=True,
                          text=True, timeout=60)


@needs_dcmtk
def test_fresh_data_folder_is_private_after_serve_and_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = os.umask(0o022)  # the caller's usual umask: securepacs must not depend on it
    try:
        ca(data, "init")
        ca(data, "group", "create", "senders", "--allow", "echo,store,find")
        ca(data, "issue", "client", "--name", "modality", "--org", "Clinic", "--group",
           "senders", "--out", str(data / "clients"))
        ca(data, "invite", "--org", "Clinic", "--group", "senders")
        server = data_server(tmp_path, data, "modes").start()
        try:
            files = write_study(tmp_path / "study", 2, patient_id="PAT1")
            clients = data / "clients"
            sent = dcmtk("storescu", *tls_args(clients / "modality.key", clients / "modality.pem",
                                               clients / "ca.pem"),
                         "-aec", "SECUREPACS", HOST, str(server.port), *files, timeout=60)
            assert sent.returncode == 0, sent.stderr
            live = modes(data)
            assert "index.sqlite-wal" in live, sorted(live)  # checked while the server runs
        finally:
            server.stop()
        ca(data, "list")
        done = check(data)
        assert "ok    data folder modes" in done.stdout, done.stdout + done.stderr
    finally:
        os.umask(old)
    after = modes(data)
    for found in (live, after):
        loose = {path: f"{mode:04o}" for path, mode in found.items()
                 if mode & 0o077 or (Path(data / path).is_dir() and mode != 0o700)}
        assert loose == {}, loose
    assert any(p.startswith("blobs") for p in after) and "pki/ca.key" in after
    assert after["index.sqlite"] == 0o600


@needs_dcmtk
def test_loose_modes_fail_check_and_are_warned_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ca(data, "init")
    os.chmod(data, 0o755)
    (data / "index.sqlite").chmod(0o644)
    done = check(data)
    assert done.returncode == 1
    assert "FAIL  data folder modes:" in done.stderr and "chmod -R go-rwx" in done.stderr
    assert "is mode 0755" in done.stderr
    server = data_server(tmp_path, data, "loose").start()
    try:
        server.wait_for_log(r"data folder: .*index\.sqlite is mode 0644")
    finally:
        server.stop()
