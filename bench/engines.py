"""The shared engines of the scale-out runs, on loopback: a private PostgreSQL cluster,
Azurite (Microsoft's Azure Blob emulator) and HAProxy in TCP mode.

Each is a context manager that starts the real program in a scratch folder and stops it
(and only it) on the way out. PostgreSQL refuses to run as root: the cluster then belongs
to the ``postgres`` system user (``runuser``), as in the tests. The cluster keeps
PostgreSQL's durable defaults (``fsync``, ``synchronous_commit``): a benchmark of an
archive that acknowledges after commit must pay for the commit.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import HOST, ROOT, first_line, free_port, stop, wait_for_port

#: Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr"
               "/KBHBeksoGMGw==")


def missing() -> list[str]:
    """What the scale-out runs need and this machine lacks (empty: all there)."""
    lacks = []
    if _pg_bindir() is None:
        lacks.append("PostgreSQL server binaries (Debian package postgresql)")
    if _azurite_command() is None or shutil.which("node") is None:
        lacks.append("Azurite (npm install azurite into .cache/azurite) and node")
    if shutil.which("haproxy") is None:
        lacks.append("haproxy")
    return lacks


def versions() -> dict[str, str]:
    """The engines' versions, for the results file ("?" when missing)."""
    bindir, azurite = _pg_bindir(), ROOT / ".cache" / "azurite" / "node_modules" / "azurite"
    try:
        azurite_version = json.loads((azurite / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        azurite_version = "?"
    return {"postgresql": first_line(str(bindir / "postgres"), "--version") if bindir else "?",
            "azurite": azurite_version, "haproxy": first_line("haproxy", "-v")}


# ------------------------------------------------------------------------ PostgreSQL


def _pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL (/usr/lib/postgresql/N/bin), else pg_ctl on PATH."""
    versions = {int(p.split("/")[4]): p for p in glob.glob("/usr/lib/postgresql/[0-9]*/bin/pg_ctl")}
    pg_ctl = versions[max(versions)] if versions else shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@dataclass
class Postgres:
    """A running cluster; `create_database()` gives the SQLAlchemy URL of a fresh database."""

    port: int
    data: Path
    user: str = "bench"

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"b_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')  # a name made here: safe to quote
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host={HOST} port={self.port} user={self.user} dbname=postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)


@contextmanager
def postgres() -> Iterator[Postgres]:
    """initdb + pg_ctl start in a fresh temp folder (its own, so that the ``postgres`` user
    can reach it); pg_ctl stop (fast) and the folder removed at exit."""
    bindir = _pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="securepacs-bench-pg-"))
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    cluster = Postgres(free_port(), folder / "data")
    data, log = cluster.data, folder / "server.log"
    options = (f"-c listen_addresses={HOST} -c port={cluster.port} -k {folder} "
               "-c max_connections=100 -c shared_buffers=256MB -c maintenance_work_mem=256MB")

    def pg(*argv: str) -> None:
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120, cwd=folder)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-U", cluster.user, "--auth=trust",
           "-E", "UTF8", "--locale=C.UTF-8")
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w",
           "-t", "60", "start")
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL: {exc}: {exc.stderr!r}\n{tail}") from exc
    try:
        yield cluster
    finally:
        try:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- Azurite


def _azurite_command() -> str | None:
    local = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@dataclass
class Azurite:
    port: int
    pid: int = 0

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                f"AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://{HOST}:{self.port}/{AZURITE_ACCOUNT};")

    def count_blobs(self, container: str) -> int:
        return sum(1 for _ in self._client(container).list_blobs())

    def delete_container(self, container: str) -> None:
        client = self._client(container)
        if client.exists():
            client.delete_container()

    def _client(self, container: str) -> Any:
        from azure.storage.blob import ContainerClient

        return ContainerClient.from_connection_string(self.connection_string, container)


@contextmanager
def azurite(folder: Path) -> Iterator[Azurite]:
    """azurite-blob on a free loopback port, its data (on disk) in `folder`."""
    command = _azurite_command()
    if command is None:
        raise RuntimeError("azurite-blob not found")
    folder.mkdir(parents=True, exist_ok=True)
    service = Azurite(free_port())
    with open(folder / "azurite.log", "wb") as log:
        proc = subprocess.Popen(
            [command, "--blobHost", HOST, "--blobPort", str(service.port),
             "--location", str(folder / "data"), "--silent", "--skipApiVersionCheck", "--loose"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    service.pid = proc.pid
    try:
        wait_for_port(service.port, proc, timeout=60)
        yield service
    finally:
        stop(proc, grace=10, group=True)  # node may have children
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- HAProxy


def haproxy_config(port: int, backends: list[int]) -> str:
    """TCP mode: HAProxy never terminates TLS, so every instance verifies the client
    certificate itself; round robin per connection (one DICOM association)."""
    servers = "\n".join(f"    server s{n} {HOST}:{p}" for n, p in enumerate(backends))
    return f"""global
    maxconn 256
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend dicom_tls
    bind {HOST}:{port}
    default_backend securepacs
backend securepacs
    balance roundrobin
{servers}
"""


@dataclass
class Balancer:
    port: int
    pid: int


@contextmanager
def haproxy(folder: Path, backends: list[int]) -> Iterator[Balancer]:
    """HAProxy in front of the instances listening on `backends`."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = folder / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, backends))
    with open(folder / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=15)
        yield Balancer(port, proc.pid)
    finally:
        stop(proc, grace=5)
