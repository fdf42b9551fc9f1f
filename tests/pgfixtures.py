"""Real engines for the scale-out tests: a private PostgreSQL cluster and Azurite, both on
loopback, started once per test session in a temp folder and stopped at its end.

PostgreSQL refuses to run as root: when the tests run as root the cluster belongs to the
``postgres`` system user (``runuser``). Each test gets a fresh database in the cluster
(``pg_url``) and a fresh container in Azurite (``azure_blob``). A missing engine skips the
tests that need it, with the reason (``scripts/install`` installs both).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr"
               "/KBHBeksoGMGw==")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} not listening on {HOST}:{port} after {timeout} s")


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries (Debian's /usr/lib/postgresql/N/bin), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


@dataclass
class PgCluster:
    """A running private cluster; `url(db)` is an SQLAlchemy URL for one of its databases."""

    port: int
    folder: Path
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host={HOST} port={self.port} user={self.user} dbname=postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name made here: safe to quote
        return self.url(name)


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A PostgreSQL cluster on a free loopback port, for the whole session."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian package postgresql; "
                    "scripts/install installs it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e .)")
    owner: str | None = None
    if os.geteuid() == 0:
        owner = "postgres"
        try:
            import pwd

            pw = pwd.getpwnam(owner)
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="securepacs-pg-"))
    data = folder / "data"
    if owner:
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    user = "securepacs"
    log = folder / "server.log"
    try:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", user,
                                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"], owner),
                       check=True, capture_output=True, timeout=120, cwd=folder)
        options = (f"-c listen_addresses={HOST} -c port={port} -k {folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                                  "-o", options, "-w", "-t", "60", "start"], owner),
                       check=True, capture_output=True, timeout=90, cwd=folder)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"cannot start PostgreSQL: {exc}\n{detail.decode(errors='replace')}"
                           f"\n{text}") from exc
    try:
        yield PgCluster(port, folder, user)
    finally:
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                  "-w", "-t", "30", "stop"], owner),
                       capture_output=True, timeout=60, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: PgCluster) -> str:
    """The URL of a fresh, empty database for one test."""
    return postgres.create_database()


def azurite_blob_command() -> str | None:
    local = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


@dataclass
class Azurite:
    """A running Azurite blob service; `connection_string` reaches it."""

    port: int

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                f"AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://{HOST}:{self.port}/{AZURITE_ACCOUNT};")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite's blob service on a free loopback port, data in a temp folder."""
    command = azurite_blob_command()
    if command is None or shutil.which("node") is None:
        pytest.skip("Azurite not installed (scripts/install runs `npm install azurite` "
                    "into .cache/azurite when npm exists)")
    try:
        import azure.storage.blob  # noqa: F401
    except ImportError:
        pytest.skip("azure-storage-blob is not installed (pip install -e '.[azure]')")
    folder = Path(tempfile.mkdtemp(prefix="securepacs-azurite-"))
    port = _free_port()
    log = open(folder / "azurite.log", "wb")
    proc = subprocess.Popen(
        [command, "--blobHost", HOST, "--blobPort", str(port), "--location", str(folder / "data"),
         "--silent", "--skipApiVersionCheck", "--loose"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        _wait_port(port, proc, 60, "Azurite")
        yield Azurite(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def azure_container() -> str:
    """A fresh container name for one test (Azure: 3-63 lower-case letters, digits, '-')."""
    return f"t-{uuid.uuid4().hex[:20]}"
