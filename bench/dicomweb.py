"""DICOMweb: STOW-RS ingest and WADO-RS retrieval beside C-STORE / C-GET of the same data
in the same run, Orthanc's DICOMweb plugin on the same data, and the server's peak memory
for one large object up by STOW-RS and down by WADO-RS.

Our server: TLS with a client certificate (``requests``, one connection, the whole study
in one streamed request). Orthanc: its DICOMweb plugin over plain HTTP on loopback (it has
no TLS of its own in this setup), storage on disk with its durable default. Each row also
has the server's CPU per image (user + system of the server process and its descendants,
from /proc, over that operation only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    Pki,
    ServerSpec,
    free_port,
    stop,
    storescu,
    tree_cpu_seconds,
    vm_hwm_kb,
)

Log = Callable[[str], None]
ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
BOUNDARY = "benchboundary"
KIND = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _session(pki: Pki | None) -> Any:
    import requests

    session = requests.Session()
    session.trust_env = False
    if pki is not None:
        session.cert = (str(pki.client_cert), str(pki.client_key))
        session.verify = str(pki.ca)
    return session


def _body(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def _stow(session: Any, url: str, files: list[Path]) -> float:
    t0 = time.perf_counter()
    got = session.post(f"{url}/studies", data=_body(files), headers={"Content-Type": KIND},
                       timeout=600)
    seconds = time.perf_counter() - t0
    if got.status_code != 200:
        raise RuntimeError(f"STOW-RS to {url}: HTTP {got.status_code}: {got.text[:300]}")
    return seconds


def _wado(session: Any, url: str, study: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    received = 0
    with session.get(f"{url}/studies/{study}", stream=True, timeout=600, headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}) as got:
        if got.status_code != 200:
            raise RuntimeError(f"WADO-RS from {url}: HTTP {got.status_code}")
        for chunk in got.iter_content(1 << 20):
            received += len(chunk)
    return time.perf_counter() - t0, received


def _study(files: list[Path]) -> str:
    from pydicom import dcmread

    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def _c_get(port: int, pki: Pki, study: str, folder: Path) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "securepacs.cli", "get", "--study", study,
                           "--to", str(folder), "--server", f"{HOST}:{port}", "--aec",
                           "SECUREPACS", "--cert", str(pki.client_cert), "--key",
                           str(pki.client_key), "--ca", str(pki.ca)],
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"securepacs get failed: {done.stderr[-500:]}")
    return seconds


def _ours(work: Path, pki: Pki, spec: ServerSpec) -> tuple[Any, str]:
    port = free_port()
    srv = spec.server(work / "dicomweb", pki)
    srv.extra = {**srv.extra, "dicomweb_port": port, "viewer_port": 0, "enroll_port": 0}
    srv.start()
    return srv, f"https://{HOST}:{port}/dicomweb"


class _Orthanc:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> _Orthanc:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        port = free_port()
        config = {"Name": "bench", "StorageDirectory": str(self.folder / "db"),
                  "IndexDirectory": str(self.folder / "db"), "HttpPort": port,
                  "DicomServerEnabled": False, "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": False, "Plugins": [str(PLUGIN)],
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen([str(ORTHANC), str(self.folder / "orthanc.json")],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.url = f"http://{HOST}:{port}"
        session = _session(None)
        deadline = time.monotonic() + 30
        while True:
            try:
                if session.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                stop(self.proc, grace=3)
                raise RuntimeError("Orthanc did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        stop(self.proc, grace=5)
        shutil.rmtree(self.folder, ignore_errors=True)


def _row(op: str, server: str, nbytes: int, count: int, seconds: float,
         cpu: float | None = None) -> dict[str, Any]:
    """One measurement; `cpu`: the server's user + system seconds during it (from /proc)."""
    row = {"kind": "dicomweb", "op": op, "server": server, "bytes": nbytes, "count": count,
           "seconds": seconds, "mb_per_s": nbytes / 1e6 / seconds,
           "images_per_s": count / seconds}
    if cpu is not None:
        row["cpu_ms_per_image"] = cpu * 1000 / count
    return row


class _Cpu:
    """Server CPU seconds (user + system, the process and its descendants) since the last
    call of :meth:`lap`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last = tree_cpu_seconds([pid])

    def lap(self) -> float:
        now = tree_cpu_seconds([self.pid])
        spent, self.last = now - self.last, now
        return spent


def dicomweb(work: Path, pki: Pki, files: list[Path], huge: list[Path], rounds: int,
             spec: ServerSpec, log: Log) -> list[dict[str, Any]]:
    """C-STORE, STOW-RS, C-GET and WADO-RS of `files` per round (each store on a fresh
    server), Orthanc's STOW-RS and WADO-RS, then the memory of one `huge` object."""
    results: list[dict[str, Any]] = []
    nbytes, count, study = sum(f.stat().st_size for f in files), len(files), _study(files)
    session = _session(pki)
    orthanc_ok = ORTHANC.exists() and PLUGIN.exists()
    for rnd in range(rounds):
        srv, url = _ours(work, pki, spec)
        try:
            assert srv.proc is not None
            cpu = _Cpu(srv.proc.pid)
            seconds = storescu(srv.port, files, pki)
            results.append(_row("c-store", "securepacs", nbytes, count, seconds, cpu.lap()))
            seconds = _c_get(srv.port, pki, study, work / "got")
            results.append(_row("c-get", "securepacs", nbytes, count, seconds, cpu.lap()))
            seconds, received = _wado(session, url, study)
            results.append(_row("wado-rs", "securepacs", received, count, seconds, cpu.lap()))
        finally:
            srv.stop()
        srv, url = _ours(work, pki, spec)
        try:
            assert srv.proc is not None
            cpu = _Cpu(srv.proc.pid)
            seconds = _stow(session, url, files)
            spent = cpu.lap()
            stored = srv.stored()
            if stored != count:
                raise RuntimeError(f"STOW-RS stored {stored} of {count}")
            results.append(_row("stow-rs", "securepacs", nbytes, count, seconds, spent))
        finally:
            srv.stop()
        if orthanc_ok:
            orthanc = _Orthanc(work / "orthanc").start()
            try:
                assert orthanc.proc is not None
                cpu = _Cpu(orthanc.proc.pid)
                plain = _session(None)
                base = f"{orthanc.url}/dicom-web"
                seconds = _stow(plain, base, files)
                results.append(_row("stow-rs", "orthanc", nbytes, count, seconds, cpu.lap()))
                seconds, received = _wado(plain, base, study)
                results.append(_row("wado-rs", "orthanc", received, count, seconds, cpu.lap()))
            finally:
                orthanc.stop()
        last = results[-6:]
        log(f"dicomweb round {rnd + 1}: " + ", ".join(
            f"{r['server']} {r['op']} {r['images_per_s']:.0f} img/s {r['mb_per_s']:.0f} MB/s "
            f"{r['cpu_ms_per_image']:.2f} ms CPU/img" for r in last))
    results += _memory(work, pki, huge, spec, session, log)
    return results


def _memory(work: Path, pki: Pki, huge: list[Path], spec: ServerSpec, session: Any,
            log: Log) -> list[dict[str, Any]]:
    srv, url = _ours(work, pki, spec)
    try:
        assert srv.proc is not None
        idle = vm_hwm_kb(srv.proc.pid)
        nbytes = sum(f.stat().st_size for f in huge)
        stow = _stow(session, url, huge)
        after_stow = vm_hwm_kb(srv.proc.pid)
        wado, received = _wado(session, url, _study(huge))
        peak = vm_hwm_kb(srv.proc.pid)
    finally:
        srv.stop()
    log(f"dicomweb memory: {nbytes / 2**20:.0f} MiB object: idle {idle / 1024:.0f} MiB, "
        f"after STOW-RS {after_stow / 1024:.0f} MiB, after WADO-RS {peak / 1024:.0f} MiB "
        f"(STOW {nbytes / 1e6 / stow:.0f} MB/s, WADO {received / 1e6 / wado:.0f} MB/s)")
    return [{"kind": "dicomweb-memory", "server": "securepacs", "bytes": nbytes,
             "idle_hwm_kb": idle, "stow_hwm_kb": after_stow, "hwm_kb": peak,
             "stow_seconds": stow, "wado_seconds": wado}]
