"""`workers = 2`: a second process accepts associations on the same port (issue 8).

DCMTK storescu +tls sends from 4 processes at once: every image is stored once and found
by C-FIND; both processes served associations; a killed worker is restarted; stopping the
parent stops the workers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import HOST, dcmtk, make_server, needs_dcmtk, tls_args

from factories import write_study

pytestmark = [pytest.mark.integration, needs_dcmtk]


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def serving_pids(pids: list[int], port: int) -> set[int]:
    """The processes (of `pids`) holding an established connection accepted on `port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    busy = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    busy.add(pid)
            except OSError:
                continue
    return busy


def test_two_workers_share_the_port(tmp_path: Path, pki) -> None:  # noqa: ANN001
    server = make_server(tmp_path, pki, workers=2, viewer_port=0).start()
    try:
        server.wait_for_log(r"1 worker process\(es\) started")
        assert server.proc is not None
        worker = children(server.proc.pid)
        assert len(worker) == 1
        server.wait_for_log(rf"worker {worker[0]} serving", timeout=30)
        files = write_study(tmp_path / "study", 80)
        chunks = [files[i::4] for i in range(4)]
        tls = tls_args(pki.client.key, pki.client.cert, pki.ca_cert)

        def send(chunk: list[Path]) -> subprocess.CompletedProcess[str]:
            return dcmtk("storescu", *tls, "-aec", "SECUREPACS", HOST, str(server.port),
                         *chunk)

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(send, chunks))
        assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
        found = dcmtk("findscu", *tls, "-aec", "SECUREPACS", "-S", "-k",
                      "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID", HOST,
                      str(server.port), "-v")
        assert found.returncode == 0, found.stderr
        assert len(re.findall(r"\(0008,0018\) UI \[", found.stderr + found.stdout)) == 80
        blobs = [p for p in (server.data_dir / "blobs").rglob("*")
                 if p.is_file() and p.parent.name != "tmp"]
        assert len(blobs) == 80

        # both processes accept: hold associations open and see who has them
        holders = [subprocess.Popen(
            ["storescu", *tls, "-aec", "SECUREPACS", "--repeat", "1000", HOST,
             str(server.port), str(files[0])], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=dict(os.environ, TCP_NODELAY="1"))
            for _ in range(4)]
        try:
            deadline = time.monotonic() + 20
            pids = [server.proc.pid, *worker]
            while serving_pids(pids, server.port) != set(pids) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert serving_pids(pids, server.port) == set(pids)
        finally:
            for h in holders:
                h.kill()
                h.wait(timeout=10)

        os.kill(worker[0], signal.SIGKILL)
        server.wait_for_log(rf"worker process {worker[0]} exited .* restarting it", timeout=15)
        deadline = time.monotonic() + 15
        while len(children(server.proc.pid)) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        replacement = children(server.proc.pid)
        assert len(replacement) == 1 and replacement != worker
    finally:
        server.stop()
    time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() for pid in replacement)


def test_workers_0_is_one_process_per_core(tmp_path: Path, pki) -> None:  # noqa: ANN001
    """`workers = 0` (issue 19): one serving process per core on SQLite."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: no worker process to start")
    server = make_server(tmp_path, pki, workers=0, viewer_port=0).start()
    try:
        server.wait_for_log(rf"{cores - 1} worker process\(es\) started")
        assert server.proc is not None
        workers = children(server.proc.pid)
        assert len(workers) == cores - 1
        for pid in workers:
            server.wait_for_log(rf"worker {pid} serving", timeout=30)
        echo = dcmtk("echoscu", *tls_args(pki.client.key, pki.client.cert, pki.ca_cert),
                     "-aec", "SECUREPACS", HOST, str(server.port))
        assert echo.returncode == 0, echo.stderr
    finally:
        server.stop()


def test_the_per_identity_cap_holds_across_workers(tmp_path: Path, pki) -> None:  # noqa: ANN001
    """One client, two processes, ``max_associations_per_identity = 2``: with one
    association in each process a third is refused (each process alone holds only one);
    once the worker holding one is killed, its count is gone and a new one is accepted."""
    from rawdul import associate_rq, read_pdu, tls_connect

    server = make_server(tmp_path, pki, workers=2, viewer_port=0,
                         max_associations_per_identity=2).start()
    client = (pki.client.key, pki.client.cert, pki.ca_cert)

    def connect():  # noqa: ANN202 - (ssl socket, first PDU type and body)
        sock = tls_connect(server.port, *client)
        sock.sendall(associate_rq())
        return sock, *read_pdu(sock)

    held = []
    try:
        server.wait_for_log(r"1 worker process\(es\) started")
        assert server.proc is not None
        worker = children(server.proc.pid)
        server.wait_for_log(rf"worker {worker[0]} serving", timeout=30)
        pids = {server.proc.pid, *worker}
        sock, kind, _ = connect()
        held.append(sock)
        assert kind == 0x02
        for _ in range(20):  # until the second association is in the other process
            sock, kind, _ = connect()
            assert kind == 0x02
            if serving_pids(list(pids), server.port) == pids:
                held.append(sock)
                break
            sock.close()
            time.sleep(0.3)  # its end reaches the server, which gives its slot back
        assert len(held) == 2, "no association reached the second process in 20 tries"
        for _ in range(4):  # whichever process takes it, the client already holds 2
            sock, kind, body = connect()
            sock.close()
            assert kind == 0x03 and body[1:4] == bytes((2, 3, 2)), (kind, body)
        server.wait_for_log(r"already holds 2 associations \(all worker processes\)")

        os.kill(worker[0], signal.SIGKILL)  # it holds one of the two, and cleans nothing up
        server.wait_for_log(rf"worker process {worker[0]} exited", timeout=15)
        sock, kind, _ = connect()
        held.append(sock)
        assert kind == 0x02
    finally:
        for sock in held:
            sock.close()
        server.stop()
