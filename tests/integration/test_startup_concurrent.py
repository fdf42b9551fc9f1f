"""Instances started at the same moment on one PostgreSQL (issue 14, item 3).

An orchestrator starting a scaled deployment starts N instances together. Here 4 processes
run the start-up (`securepacs.wiring.start_up`: audit tables, the CA bootstrap and its
trust store records, index schema, orphan sweep, all that `serve` writes to shared state
before it listens) at the same moment, released by a barrier, on a fresh database and a
fresh shared data folder, 20 times. Running the start-up function rather than 4 full
servers keeps 80 start-ups within a few tens of seconds; the listening part of `serve`
writes no shared state.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

INSTANCES = 4
ROUNDS = 20


def _instance(jobs: mp.Queue, results: mp.Queue, barrier) -> None:  # noqa: ANN001
    from securepacs.settings import Settings
    from securepacs.wiring import start_up

    while True:
        job = jobs.get(timeout=120)
        if job is None:
            return
        url, data_dir = job
        try:
            barrier.wait(timeout=60)
            up = start_up(Settings(data_dir=Path(data_dir), database_url=url, host="127.0.0.1",
                                   orphan_grace_seconds=0))
            up.index.close()
            up.audit_trail.close(timeout=5)  # type: ignore[attr-defined]
            results.put(("ok", ""))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def test_four_instances_start_together_twenty_times(postgres, tmp_path: Path) -> None:  # noqa: ANN001
    from securepacs.index.trust import SqlTrustStore

    ctx = mp.get_context("fork")
    jobs: mp.Queue = ctx.Queue()
    results: mp.Queue = ctx.Queue()
    barrier = ctx.Barrier(INSTANCES)
    procs = [ctx.Process(target=_instance, args=(jobs, results, barrier), daemon=True)
             for _ in range(INSTANCES)]
    for proc in procs:
        proc.start()
    try:
        for round_ in range(ROUNDS):
            url = postgres.create_database()
            data_dir = tmp_path / f"round{round_}"
            for _ in range(INSTANCES):
                jobs.put((url, str(data_dir)))
            outcomes = [results.get(timeout=120) for _ in range(INSTANCES)]
            errors = [detail for kind, detail in outcomes if kind != "ok"]
            assert not errors, f"round {round_}: {errors[0]}"
            store = SqlTrustStore(url)
            try:
                kinds = sorted(r.kind for r in store.certificates())
                groups = [g.name for g in store.groups()]
            finally:
                store.close()
            # one CA, one server and one client certificate recorded, once each
            assert kinds == ["ca", "client", "server"], (round_, kinds)
            assert groups == ["local"], (round_, groups)
    finally:
        for _ in procs:
            jobs.put(None)
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
