"""Ingest (storescu -> us, and -> storescp, Orthanc and the durable floor, with each
receiver's CPU per image), send (securepacs send vs storescu), and the server's peak memory
while receiving a 1 GB object."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import HOST, OurServer, Pki, ServerSpec, Storescp, storescu
from bench.peers import (
    ORTHANC,
    ORTHANC_DURABILITY,
    Floor,
    Orthanc,
    cpu_seconds,
    negotiated_tls,
    orthanc_config,
    orthanc_version,
)

Log = Callable[[str], None]


#: the receivers beside our server in the ingest section (``--peers``)
PEERS = ("storescp", "orthanc", "floor", "floor-index")


def _server(work: Path, pki: Pki, name: str, spec: ServerSpec | None, tls: bool) -> Any:
    """A started receiver: one of our variants (`spec`) or the peer called `name`; a start
    that fails is tried twice more (a free port can be taken by another program between
    :func:`bench.common.free_port` and the server's bind)."""
    for attempt in range(3):
        try:
            return _start(work, pki, name, spec, tls)
        except (RuntimeError, TimeoutError):
            if attempt == 2:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _start(work: Path, pki: Pki, name: str, spec: ServerSpec | None, tls: bool) -> Any:
    if spec is not None:
        return spec.server(work / "ours", pki).start()
    if name == "storescp":
        return Storescp(work / "storescp", pki, tls).start()
    if name == "orthanc":
        return Orthanc(work / "orthanc", pki, tls).start()
    if name == "floor":
        return Floor(work / "floor", pki, tls).start()
    if name == "floor-index":
        return Floor(work / "floor-index", pki, tls, index=True).start()
    raise ValueError(f"unknown peer {name!r} (peers: {', '.join(PEERS)})")


def _port(srv: Any, tls: bool) -> int:
    return int(srv.port if tls or not isinstance(srv, OurServer) else srv.plain_port)


def _run(work: Path, pki: Pki, name: str, spec: ServerSpec | None, files: list[Path],
         tls: bool, parallel: int) -> dict[str, Any]:
    """One measured storescu run into a fresh receiver: wall seconds, and the receiver's
    CPU seconds (its process and descendants, from /proc) from just before to just after."""
    srv = _server(work, pki, name, spec, tls)
    try:
        pid = srv.proc.pid
        cpu0 = cpu_seconds(pid)
        seconds = storescu(_port(srv, tls), files, pki if tls else None, parallel=parallel)
        deadline = time.monotonic() + 10  # storescp's forked children may still be closing files
        while srv.stored() < len(files) and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu = cpu_seconds(pid) - cpu0
        stored = srv.stored()
        r: dict[str, Any] = {"seconds": seconds, "cpu_s": cpu,
                             "cpu_ms_per_image": cpu * 1000 / len(files)}
        if isinstance(srv, OurServer):
            r["hwm_kb"] = srv.hwm_kb()
        if stored != len(files):
            raise RuntimeError(f"{name} stored {stored} of {len(files)}")
        if isinstance(srv, Floor):
            srv.check(files)
    finally:
        srv.stop()
    return r


def _handshakes(work: Path, pki: Pki, peers: list[tuple[str, ServerSpec | None]],
                log: Log) -> list[dict[str, Any]]:
    """The TLS version and suite DCMTK negotiates with each receiver (one C-ECHO each)."""
    rows = []
    for name, spec in peers:
        srv = _server(work, pki, name, spec, True)
        try:
            tls = negotiated_tls(srv.port, pki)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # the runs will say more
            tls = "? (" + str(exc).splitlines()[0][:200] + ")"
        finally:
            srv.stop()
        log(f"ingest TLS with {name}: {tls}")
        rows.append({"kind": "ingest-tls", "server": name, "tls": tls})
    return rows


def ingest(work: Path, pki: Pki, data: dict[str, list[Path]], rounds: int,
           variants: dict[str, ServerSpec], log: Log,
           peers: tuple[str, ...] = PEERS) -> list[dict[str, Any]]:
    """Every (size, tls, parallel) combination, servers interleaved within each round
    (order reversed every other round)."""
    if "orthanc" in peers and not Path(ORTHANC).exists():
        log(f"ingest: {ORTHANC} not found (Debian package orthanc): no Orthanc rows")
        peers = tuple(p for p in peers if p != "orthanc")
    servers: list[tuple[str, ServerSpec | None]] = list(variants.items())
    servers += [(p, None) for p in peers]
    results = _handshakes(work, pki, servers, log)
    if "orthanc" in peers:
        results.append({"kind": "ingest-peer", "server": "orthanc", "version": orthanc_version(),
                        "config": orthanc_config(Path("FOLDER"), pki, 0, True),
                        "durability": ORTHANC_DURABILITY})
    for rnd in range(rounds):
        for size, files in data.items():
            nbytes = sum(f.stat().st_size for f in files)
            for tls in (False, True):
                for parallel in (1, 4):
                    order = servers[::-1] if rnd % 2 else servers
                    for name, spec in order:
                        r = _run(work, pki, name, spec, files, tls, parallel)
                        r.update(kind="ingest", server=name, size=size, tls=tls,
                                 parallel=parallel, round=rnd, images=len(files), bytes=nbytes,
                                 images_per_s=len(files) / r["seconds"],
                                 mb_per_s=nbytes / 1e6 / r["seconds"])
                        log(f"ingest r{rnd} {size:5s} {'tls  ' if tls else 'plain'} x{parallel} "
                            f"{name:12s} {r['images_per_s']:7.1f} img/s {r['mb_per_s']:7.1f} MB/s "
                            f"CPU {r['cpu_ms_per_image']:6.2f} ms/img")
                        results.append(r)
    return results


def startup(work: Path, pki: Pki, rnd: int, log: Log, one: Path | None = None) -> list[dict[str, Any]]:
    """Start-up of a command (issue 18): ``securepacs --help``, ``securepacs echo`` and DCMTK
    ``echoscu`` against storescp over TLS, whole command, wall seconds (target < 0.3 s); with
    `one`, ``securepacs send`` and ``storescu`` of that one file too (issue 19)."""
    from bench.common import dcmtk_env

    tls = ["--server", f"{HOST}:{{port}}", "--aec", "SECUREPACS", "--cert", str(pki.client_cert),
           "--key", str(pki.client_key), "--ca", str(pki.ca)]
    commands = {
        "securepacs --help": [sys.executable, "-m", "securepacs.cli", "--help"],
        "securepacs echo": [sys.executable, "-m", "securepacs.cli", "echo", *tls],
        "echoscu": ["echoscu", "-aec", "SECUREPACS", "+tls", str(pki.client_key),
                    str(pki.client_cert), "+cf", str(pki.ca), HOST, "{port}"],
    }
    if one is not None:
        commands["securepacs send (1 file)"] = [sys.executable, "-m", "securepacs.cli", "send",
                                                str(one), *tls]
        commands["storescu (1 file)"] = ["storescu", "-aec", "SECUREPACS", "+tls",
                                         str(pki.client_key), str(pki.client_cert), "+cf",
                                         str(pki.ca), HOST, "{port}", str(one)]
    results = []
    scp = Storescp(work / "startup-scp", pki, tls=True).start()
    try:
        for name, argv in commands.items():
            args = [a.replace("{port}", str(scp.port)) for a in argv]
            start = time.perf_counter()
            done = subprocess.run(args, capture_output=True, timeout=60,
                                  env=dcmtk_env() if name.startswith(("echoscu", "storescu")) else None)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed: {done.stderr[-400:]!r}")
            results.append({"kind": "startup", "client": name, "round": rnd, "seconds": seconds})
            log(f"start  r{rnd} {name:18s} {seconds:6.3f} s")
    finally:
        scp.stop()
    return results


_SUMMARY = re.compile(r"sent (\d+).* in ([\d.]+) s,")


def _securepacs_send(port: int, pki: Pki, files: list[Path], folder: Path) -> dict[str, Any]:
    args = [sys.executable, "-m", "securepacs.cli", "send", str(folder),
            "--server", f"{HOST}:{port}", "--aec", "SECUREPACS", "--aet", "BENCH",
            "--cert", str(pki.client_cert), "--key", str(pki.client_key), "--ca", str(pki.ca)]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, COLUMNS="200"))
    seconds = time.perf_counter() - start
    found = _SUMMARY.search(done.stdout)
    if done.returncode != 0 or not found or int(found.group(1)) != len(files):
        raise RuntimeError(f"securepacs send failed: {done.stdout[-800:]} {done.stderr[-800:]}")
    return {"seconds": seconds, "transfer_seconds": float(found.group(2))}


def send(work: Path, pki: Pki, data: dict[str, list[Path]], rounds: int,
         log: Log) -> list[dict[str, Any]]:
    """securepacs send vs storescu, both to storescp over TLS, one association."""
    results = []
    for rnd in range(rounds):
        for size, files in data.items():
            folder = files[0].parent
            nbytes = sum(f.stat().st_size for f in files)
            order = ["securepacs send", "storescu"]
            if rnd % 2:
                order.reverse()
            for name in order:
                scp = Storescp(work / "send-scp", pki, tls=True).start()
                try:
                    if name == "storescu":
                        r: dict[str, Any] = {"seconds": storescu(scp.port, files, pki)}
                    else:
                        r = _securepacs_send(scp.port, pki, files, folder)
                finally:
                    scp.stop()
                r.update(kind="send", client=name, size=size, tls=True, round=rnd,
                         images=len(files), bytes=nbytes,
                         images_per_s=len(files) / r["seconds"],
                         mb_per_s=nbytes / 1e6 / r["seconds"])
                if "transfer_seconds" in r:
                    r["transfer_images_per_s"] = len(files) / r["transfer_seconds"]
                    r["transfer_mb_per_s"] = nbytes / 1e6 / r["transfer_seconds"]
                log(f"send   r{rnd} {size:5s} {name:16s} {r['images_per_s']:7.1f} img/s "
                    f"(transfer {r.get('transfer_images_per_s', r['images_per_s']):7.1f}) "
                    f"{r['mb_per_s']:7.1f} MB/s")
                results.append(r)
        results += startup(work, pki, rnd, log, one=next(iter(data.values()))[0])
    return results


def memory(work: Path, pki: Pki, big: list[Path], variants: dict[str, ServerSpec],
           log: Log) -> list[dict[str, Any]]:
    """Peak RSS (VmHWM) of the receiving process: our server (idle, then after one big
    object over TLS) and storescp (its parent; the forked child is not measured)."""
    results = []
    nbytes = sum(f.stat().st_size for f in big)
    for name, spec in variants.items():
        srv = spec.server(work / "mem", pki).start()
        try:
            idle = srv.hwm_kb()
            seconds = storescu(srv.port, big, pki)
            peak = srv.hwm_kb()
            stored = srv.stored()
        finally:
            srv.stop()
        r = {"kind": "memory", "server": name, "bytes": nbytes, "idle_hwm_kb": idle,
             "hwm_kb": peak, "seconds": seconds, "stored": stored,
             "mb_per_s": nbytes / 1e6 / seconds}
        log(f"memory {name:12s} object {nbytes / 1e6:.0f} MB: idle {idle / 1024:.0f} MiB, "
            f"peak {peak / 1024:.0f} MiB, {r['mb_per_s']:.0f} MB/s, stored {stored}")
        results.append(r)
    return results
