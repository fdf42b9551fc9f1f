"""Shared pieces of the benchmark: processes, PKI, synthetic data, servers on loopback.

Nothing here is part of the securepacs package; the benchmark only drives the real
command-line programs (``securepacs serve``, ``securepacs send``, DCMTK, openssl).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PDU = 131072


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port}")


def first_line(*argv: str) -> str:
    """The first line a command prints (a version), "?" when it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def dcmtk_env() -> dict[str, str]:
    """DCMTK leaves Nagle on unless told (README, `TCP_NODELAY=1`)."""
    return dict(os.environ, TCP_NODELAY="1")


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 15, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (the data is thrown away anyway); to the
    process group `proc` leads when `group` (it was started with ``start_new_session``)."""
    if proc is None or proc.poll() is not None:
        return
    pid = proc.pid
    send = (lambda sig: os.killpg(pid, sig)) if group else proc.send_signal
    send(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=5)


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of the processes `roots` (all threads) and of every
    descendant, live or already reaped (cutime/cstime), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    own: dict[int, float] = {}
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        pid = int(stat.parent.name)
        own[pid] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        total += own.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# ----------------------------------------------------------------------------- PKI


@dataclass
class Pki:
    ca: Path
    server_key: Path
    server_cert: Path
    client_key: Path
    client_cert: Path


def make_pki(folder: Path) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    from securepacs.pki import authority

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key, ca_cert = authority.create_root_ca("Bench CA", at=now)
    authority.write_certificates(folder / "ca.pem", [ca_cert])
    paths = []
    for name, role, sans, org in (("server", "server", ["127.0.0.1", "localhost"], None),
                                  ("client", "client", [], "Bench Hospital")):
        key, cert = authority.issue_certificate(ca_key, ca_cert, common_name=name, role=role,  # type: ignore[arg-type]
                                                at=now, days=7, sans=sans, organization=org)
        assert key is not None
        authority.write_private_key(folder / f"{name}.key", key)
        authority.write_certificates(folder / f"{name}.pem", [cert])
        paths += [folder / f"{name}.key", folder / f"{name}.pem"]
    return Pki(folder / "ca.pem", *paths)


# ---------------------------------------------------------------------------- data


def _template(rows: int, cols: int, frames: int, study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.PatientID = "BENCH1"
    ds.PatientName = "Bench^Patient"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series
    ds.Modality = "MR"
    ds.SeriesNumber = 1
    ds.Rows = rows
    ds.Columns = cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def write_images(folder: Path, count: int, *, rows: int = 512, cols: int = 512,
                 frames: int = 1, seed: int = 1) -> list[Path]:
    """`count` Part 10 files (Explicit VR LE, MR, 16-bit) of one series; pixel data is
    streamed in, so a 1 GB object never sits in memory."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    out = []
    for n in range(count):
        ds = _template(rows, cols, frames, study, series)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = folder / f"IM{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        length = len(frame) * frames
        with open(path, "ab") as fh:  # (7FE0,0010) OW, 4-byte length
            fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
            for _ in range(frames):
                fh.write(frame)
        out.append(path)
    return out


# -------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerSpec:
    """A server variant: which copy of src/ (None: the installed package) and extra
    settings (e.g. ``workers``)."""

    src: Path | None = None
    settings: tuple[tuple[str, object], ...] = ()

    def server(self, folder: Path, pki: Pki) -> OurServer:
        return OurServer(folder, pki, src=self.src, extra=dict(self.settings))


@dataclass
class OurServer:
    """`securepacs serve` with a TLS port and a plain port, on a fresh data folder."""

    folder: Path
    pki: Pki
    src: Path | None = None  # run this source tree instead of the installed package
    extra: dict[str, object] = field(default_factory=dict)
    port: int = 0
    plain_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OurServer:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.port, self.plain_port = free_port(), free_port()
        values: dict[str, object] = {
            "data_dir": str(self.folder / "data"), "host": HOST, "port": self.port,
            "plain_port": self.plain_port, "ae_title": "SECUREPACS",
            "tls_cert": str(self.pki.server_cert), "tls_key": str(self.pki.server_key),
            "tls_ca": str(self.pki.ca), "orphan_grace_seconds": 0, "max_pdu": PDU,
            **self.extra,
        }
        lines = []
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int | float):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
        cfg = self.folder / "securepacs.toml"
        cfg.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.src is not None:
            env["PYTHONPATH"] = str(self.src)
        log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "securepacs.cli", "serve",
                                      "--config", str(cfg)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        log.close()
        try:
            wait_for_port(self.port, self.proc)
            wait_for_port(self.plain_port, self.proc)
            deadline = time.monotonic() + 30
            workers = int(str(self.extra.get("workers", 1)))
            while not self._started(workers):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("server did not start:\n" + self.log()[-2000:])
                time.sleep(0.05)
        except BaseException:
            stop(self.proc, grace=3)
            raise
        return self

    def _started(self, workers: int) -> bool:
        """Ready, and every worker process serving (their start-up must not overlap a run)."""
        text = (self.folder / "server.log").read_text(errors="replace")
        return "ready" in text and text.count(" serving") >= workers - 1

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")

    def stored(self) -> int:
        blobs = self.folder / "data" / "blobs"
        return sum(1 for p in blobs.rglob("*") if p.is_file() and p.parent.name != "tmp")

    def hwm_kb(self) -> int:
        assert self.proc is not None
        return vm_hwm_kb(self.proc.pid)

    def stop(self, *, keep: bool = False) -> None:
        stop(self.proc, grace=3)
        if not keep:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class Storescp:
    """DCMTK storescp (forking, so parallel associations run in parallel)."""

    folder: Path
    pki: Pki
    tls: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Storescp:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        (self.folder / "out").mkdir(parents=True)
        self.port = free_port()
        args = ["storescp", "--fork", "-pdu", str(PDU), "-aet", "SECUREPACS",
                "-od", str(self.folder / "out")]
        if self.tls:
            args += ["+tls", str(self.pki.server_key), str(self.pki.server_cert),
                     "+cf", str(self.pki.ca)]
        self.proc = subprocess.Popen([*args, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=dcmtk_env())
        try:
            wait_for_port(self.port, self.proc)
        except BaseException:
            stop(self.proc, grace=3)
            raise
        return self

    def stored(self) -> int:
        return sum(1 for p in (self.folder / "out").iterdir() if p.is_file())

    def hwm_kb(self) -> int:
        assert self.proc is not None
        return vm_hwm_kb(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


def storescu(port: int, files: list[Path], pki: Pki | None, *, parallel: int = 1,
             timeout: float = 600) -> float:
    """Send `files` with `parallel` storescu processes; wall seconds (raises on failure)."""
    chunks = [files[i::parallel] for i in range(parallel)]
    base = ["storescu", "-aet", "BENCH", "-aec", "SECUREPACS", "-pdu", str(PDU)]
    if pki is not None:
        base += ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
    start = time.perf_counter()
    procs = [subprocess.Popen([*base, HOST, str(port), *map(str, chunk)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=dcmtk_env()) for chunk in chunks if chunk]
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            errors.append(err.decode(errors="replace")[-800:])
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError("storescu failed: " + " | ".join(errors))
    return seconds
