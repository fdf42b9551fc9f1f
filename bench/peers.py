"""The receivers our server is compared with in the ingest section, beside DCMTK storescp
(:class:`bench.common.Storescp`): Orthanc, the PACS a user would otherwise install, and the
durable floor (:mod:`bench.floor`), the least a durable receiver can do. Also: a server's
CPU time from /proc, and the TLS version and suite DCMTK negotiates with each server.

Orthanc (Debian package ``orthanc``, 1.10.1 when this was written) runs with its index
(SQLite) and storage in a folder of its own, DICOM TLS from the benchmark's certificates,
the benchmark's PDU size, plugins, Lua and the HTTP server off, and everything else as
shipped. Its durability as shipped, read from its source (1.10.1:
``OrthancFramework/Sources/SystemToolbox.cpp`` ``WriteFile``,
``FileStorage/FilesystemStorage.cpp``, ``OrthancServer/Sources/Database/
SQLiteDatabaseWrapper.cpp``), is :data:`ORTHANC_DURABILITY`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    PDU,
    ROOT,
    Pki,
    dcmtk_env,
    first_line,
    free_port,
    stop,
    tree_cpu_seconds,
    wait_for_port,
)

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"

#: What Orthanc does before it answers a C-STORE Success, with its shipped settings
ORTHANC_DURABILITY = (
    "`SyncStorageArea: true` (the default): each stored file is written and `fdatasync`ed "
    "before the index transaction; its folder is not fsynced (a new file's directory entry, "
    "and the two levels of fan-out folders Orthanc creates, can be lost at a power failure). "
    "The SQLite index runs with `PRAGMA SYNCHRONOUS=NORMAL`, `JOURNAL_MODE=WAL`, "
    "`LOCKING_MODE=EXCLUSIVE` (hard-coded): a commit is not fsynced (the WAL is synced at "
    "checkpoints), so the last acknowledged instances can be missing from the index after a "
    "power failure, which SQLite keeps consistent. `StorageCompression: false`, "
    "`StoreMD5ForAttachments: true` (an MD5 of every file), `OverwriteInstances: false`.")


def orthanc_config(folder: Path, pki: Pki, port: int, tls: bool) -> dict[str, Any]:
    """The settings we give Orthanc (all others are its built-in defaults, as shipped)."""
    config: dict[str, Any] = {
        "Name": "bench", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "Plugins": [], "LuaScripts": [],
        "HttpServerEnabled": False, "DicomServerEnabled": True, "DicomAet": "SECUREPACS",
        "DicomPort": port, "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False,
        "MaximumPduLength": PDU, "SaveJobs": False,
    }
    if tls:
        config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(pki.server_cert),
                       "DicomTlsPrivateKey": str(pki.server_key),
                       "DicomTlsTrustedCertificates": str(pki.ca),
                       "DicomTlsRemoteCertificateRequired": True})
    return config


def orthanc_version() -> str:
    """"Orthanc 1.10.1" ("?" when not installed)."""
    if not Path(ORTHANC).exists():
        return "?"
    return re.sub(r"^\S*/", "", first_line(ORTHANC, "--version"))


@dataclass
class Orthanc:
    """Orthanc's DICOM server (TLS or plain) on a fresh folder; `TCP_NODELAY=1` in its
    environment, read by DCMTK's network layer (Orthanc 1.10 has no option of its own for
    the DICOM port; its `TcpNoDelay` is the HTTP server's)."""

    folder: Path
    pki: Pki
    tls: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Orthanc:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        (self.folder / "storage").mkdir(parents=True)
        self.port = free_port()
        cfg = self.folder / "orthanc.json"
        cfg.write_text(json.dumps(orthanc_config(self.folder, self.pki, self.port, self.tls)))
        log = open(self.folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     env=dcmtk_env(), cwd=self.folder)
        log.close()
        try:
            wait_for_port(self.port, self.proc, timeout=60)
        except BaseException:
            stop(self.proc, grace=5)
            raise RuntimeError("Orthanc did not start:\n" + self.log()[-2000:]) from None
        return self

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")

    def stored(self) -> int:
        return sum(1 for p in (self.folder / "storage").rglob("*") if p.is_file())

    def stop(self) -> None:
        stop(self.proc, grace=10)
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Floor:
    """The durable floor (:mod:`bench.floor`) as its own process; with `index`, the floor
    that also commits one SQLite row per image before answering."""

    folder: Path
    pki: Pki
    tls: bool
    index: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Floor:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        (self.folder / "out").mkdir(parents=True)
        self.port = free_port()
        args = [sys.executable, "-m", "bench.floor", "--host", HOST, "--port", str(self.port),
                "--out", str(self.folder / "out"), "--pdu", str(PDU)]
        if self.tls:
            args += ["--tls", str(self.pki.server_cert), str(self.pki.server_key), str(self.pki.ca)]
        if self.index:
            args += ["--index", str(self.folder / "index.db")]
        log = open(self.folder / "floor.log", "wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        try:
            wait_for_port(self.port, self.proc)
        except BaseException:
            stop(self.proc, grace=3)
            raise RuntimeError("the floor receiver did not start:\n" + self.log()[-2000:]) from None
        return self

    def log(self) -> str:
        return (self.folder / "floor.log").read_text(errors="replace")

    def stored(self) -> int:
        return sum(1 for p in (self.folder / "out").iterdir() if p.is_file())

    def check(self, files: list[Path]) -> None:
        """Every file written holds exactly one sent data set, and each was written once."""
        sent = sorted(hashlib.sha256(data_set(f)).hexdigest() for f in files)
        got = sorted(hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in (self.folder / "out").iterdir())
        if sent != got:
            raise RuntimeError(f"the floor's files differ from the data sets sent "
                               f"({len(got)} files for {len(sent)} data sets)")

    def stop(self) -> None:
        stop(self.proc, grace=3)
        shutil.rmtree(self.folder, ignore_errors=True)


def data_set(path: Path) -> bytes:
    """The data set of a Part 10 file, after its File Meta Information (whose group length,
    (0002,0000) UL in Explicit VR Little Endian, follows the preamble and "DICM")."""
    raw = path.read_bytes()
    if raw[128:132] != b"DICM" or raw[132:138] != b"\x02\x00\x00\x00UL":
        raise ValueError(f"{path}: not a Part 10 file with a File Meta group length")
    return raw[144 + int.from_bytes(raw[140:144], "little"):]


def cpu_seconds(pid: int, tries: int = 20) -> float:
    """User + system CPU seconds of process `pid` and its descendants (live, exited or
    reaped), read until two readings 20 ms apart agree (children that were closing a
    file have exited), at most `tries` times."""
    last = tree_cpu_seconds([pid])
    for _ in range(tries):
        time.sleep(0.02)
        now = tree_cpu_seconds([pid])
        if now == last:
            break
        last = now
    return last


_TLS = re.compile(r"Protocol\s*:\s*(\S+).*?Ciphersuite\s*:\s*([^,\s]+)", re.S)


def negotiated_tls(port: int, pki: Pki) -> str:
    """"TLSv1.3 TLS_AES_256_GCM_SHA384": what DCMTK's echoscu (the storescu of the runs,
    same TLS code and default profile) negotiates with the server on `port`."""
    done = subprocess.run(["echoscu", "-d", "-aet", "BENCH", "-aec", "SECUREPACS", "+tls",
                           str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca), HOST,
                           str(port)], capture_output=True, text=True, timeout=60, env=dcmtk_env())
    found = _TLS.search(done.stdout + done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"TLS handshake check on port {port} failed: {done.stderr[-500:]}")
    return f"{found.group(1)} {found.group(2)}"
