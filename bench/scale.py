"""Scale-out throughput (issue 9): 4 parallel DCMTK ``storescu +tls`` senders into

- one ``securepacs serve`` on SQLite + a blob folder, reached directly (the default layout);
- one instance on PostgreSQL + Azurite, behind HAProxy in TCP mode;
- two instances sharing that PostgreSQL database and Azurite container, behind HAProxy.

HAProxy passes TLS through, so each instance still verifies the client certificate; round
robin per connection sends two of the four associations to each instance. The engines
(one PostgreSQL cluster, one Azurite) run for the whole section; every run gets a fresh
database, container and data folder and fresh server processes, started before the clock
starts. The layouts are interleaved within each round, the order rotated from round to
round so that each layout takes each position once every three rounds.

Besides the rate, each run records where the CPU went: the whole machine's busy CPU
seconds (/proc/stat), the server instances' and the senders' own CPU seconds; the rest is
PostgreSQL, Azurite, HAProxy (and whatever else the shared machine ran).
"""

from __future__ import annotations

import resource
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import engines
from bench.common import OurServer, Pki, cpu_busy_seconds, storescu, tree_cpu_seconds

Log = Callable[[str], None]
SENDERS = 4


@dataclass(frozen=True)
class Layout:
    key: str
    label: str
    instances: int
    shared: bool  # PostgreSQL + Azurite behind HAProxy; else SQLite + folder, direct


LAYOUTS = (
    Layout("sqlite-direct", "1 instance, SQLite + folder, direct", 1, False),
    Layout("pg-1", "1 instance, PostgreSQL + Azurite, HAProxy", 1, True),
    Layout("pg-2", "2 instances, PostgreSQL + Azurite, HAProxy", 2, True),
)


@dataclass
class Engines:
    pg: engines.Postgres
    azure: engines.Azurite


@dataclass
class Deployment:
    """Running instances of one layout: the port senders use and how to count what landed."""

    port: int
    pids: dict[str, list[int]]  # "servers", "haproxy", ... -> process ids
    count: Callable[[], tuple[int, int]]  # (index rows, blobs)


def _counter(url: str, blobs: Callable[[], int]) -> Callable[[], tuple[int, int]]:
    def count() -> tuple[int, int]:
        from securepacs.index.repository import SqlIndex

        index = SqlIndex(url)
        try:
            return index.count_instances(), blobs()
        finally:
            index.close()
    return count


@contextmanager
def _direct(work: Path, pki: Pki, src: Path | None) -> Iterator[Deployment]:
    srv = OurServer(work / "scale-0", pki, src=src).start()
    try:
        url = f"sqlite:///{srv.folder / 'data' / 'index.sqlite'}"
        yield Deployment(srv.port, {"servers": _pids([srv])}, _counter(url, srv.stored))
    finally:
        srv.stop()


@contextmanager
def _shared(work: Path, pki: Pki, src: Path | None, instances: int,
            eng: Engines) -> Iterator[Deployment]:
    url = eng.pg.create_database()
    container = f"bench-{uuid.uuid4().hex[:16]}"
    extra: dict[str, object] = {
        "database_url": url, "blob_backend": "azure", "azure_container": container,
        "azure_connection_string": eng.azure.connection_string,
        "orphan_grace_seconds": 300,  # another instance may be indexing a fresh blob
    }
    with ExitStack() as stack:
        stack.callback(eng.pg.drop_database, url)
        stack.callback(eng.azure.delete_container, container)
        servers = []
        for n in range(instances):
            srv = OurServer(work / f"scale-{n}", pki, src=src, extra=extra)
            stack.callback(srv.stop)
            servers.append(srv.start())
        lb = stack.enter_context(engines.haproxy(work / "haproxy", [s.port for s in servers]))
        pids = {"servers": _pids(servers), "haproxy": [lb.pid], "postgres": [eng.pg.pid],
                "azurite": [eng.azure.pid]}
        yield Deployment(lb.port, pids, _counter(url, lambda: eng.azure.count_blobs(container)))


def _pids(servers: list[OurServer]) -> list[int]:
    return [s.proc.pid for s in servers if s.proc is not None]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _send(dep: Deployment, files: list[Path], pki: Pki) -> dict[str, Any]:
    """The timed part: 4 storescu over TLS, with the CPU seconds each party used meanwhile
    (``cpu_<party>_s``; the senders are this process's reaped children)."""
    before = {name: tree_cpu_seconds(pids) for name, pids in dep.pids.items()}
    busy0, senders0 = cpu_busy_seconds(), _children_cpu()
    seconds = storescu(dep.port, files, pki, parallel=SENDERS)
    cpu = {f"cpu_{name}_s": tree_cpu_seconds(pids) - before[name] for name, pids in dep.pids.items()}
    cpu.update(cpu_busy_s=cpu_busy_seconds() - busy0, cpu_senders_s=_children_cpu() - senders0)
    rows, blobs = dep.count()
    if rows != len(files) or blobs != len(files):
        raise RuntimeError(f"stored {rows} rows and {blobs} blobs of {len(files)} images")
    return {"seconds": seconds, "cores_busy": cpu["cpu_busy_s"] / seconds, **cpu}


def _run(work: Path, pki: Pki, src: Path | None, layout: Layout, files: list[Path],
         eng: Engines) -> dict[str, Any]:
    if layout.shared:
        deployment = _shared(work, pki, src, layout.instances, eng)
    else:
        deployment = _direct(work, pki, src)
    with deployment as dep:
        return _send(dep, files, pki)


def scale(work: Path, pki: Pki, files: list[Path], rounds: int, log: Log,
          src: Path | None = None) -> list[dict[str, Any]]:
    """Every layout once per round, interleaved; one result row per run."""
    missing = engines.missing()
    if missing:
        raise RuntimeError("the scale section needs " + ", ".join(missing))
    nbytes = sum(f.stat().st_size for f in files)
    results = []
    with engines.postgres() as pg, engines.azurite(work / "azurite") as azure:
        eng = Engines(pg, azure)
        for rnd in range(rounds):
            start = rnd % len(LAYOUTS)
            for layout in LAYOUTS[start:] + LAYOUTS[:start]:
                r = _run(work, pki, src, layout, files, eng)
                r.update(kind="scale", layout=layout.key, label=layout.label,
                         instances=layout.instances, senders=SENDERS, round=rnd,
                         images=len(files), bytes=nbytes,
                         images_per_s=len(files) / r["seconds"],
                         mb_per_s=nbytes / 1e6 / r["seconds"])
                cpu = ", ".join(f"{k[4:-2]} {v:.1f}" for k, v in r.items()
                                if k.startswith("cpu_") and k != "cpu_busy_s")
                log(f"scale  r{rnd} {layout.key:13s} {r['images_per_s']:7.1f} img/s "
                    f"{r['mb_per_s']:6.1f} MB/s; {r['cores_busy']:.2f} cores busy; CPU s: {cpu}")
                results.append(r)
    return results
