"""Association limits shared by the processes of one server (issue 19 item 3, `workers`).

Two :class:`SharedRegistry` on one slot folder stand for two worker processes (``flock``
locks belong to the open file, so they exclude each other within a process as between
processes); real associations over socket pairs. A real process that holds slots and is
killed with SIGKILL gives them back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from test_association_limits import answer, close, make_settings

from securepacs.dimse.association import Registry
from securepacs.dimse.channel import BUDGET_STEP, Budget
from securepacs.dimse.slots import SharedRegistry, Slots
from securepacs.model.identity import Identity

ACCEPTED, REJECTED = 0x02, 0x03
LOCAL_LIMIT = bytes((2, 3, 2))  # transient, service-provider (presentation), local limit

alice = Identity(name="alice", serial=0xA11CE, organization="Clinic")
bob = Identity(name="bob", serial=0xB0B, organization="Clinic")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "slots"
    folder.mkdir(mode=0o700)
    return folder


def test_the_per_identity_cap_holds_across_two_processes(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    settings = make_settings(max_associations_per_identity=2)
    one, two = SharedRegistry(Slots(folder)), SharedRegistry(Slots(folder))
    held = [answer(settings, one, identity=alice), answer(settings, two, identity=alice)]
    try:
        assert [head[0] for head, _, _ in held] == [ACCEPTED, ACCEPTED]
        for registry in (one, two):  # each holds one: alone, either would take a second
            head, sock, t = answer(settings, registry, identity=alice)
            close(sock, t)
            assert head[0] == REJECTED and head[7:10] == LOCAL_LIMIT
            assert len(registry.live()) == 1
        head, sock, t = answer(settings, two, identity=bob)  # another client: not affected
        assert head[0] == ACCEPTED
        close(sock, t)
    finally:
        for _, sock, t in held:
            close(sock, t)
    # the ended associations gave their slots back
    assert not one.live() and not two.live()
    head, sock, t = answer(settings, one, identity=alice)
    assert head[0] == ACCEPTED
    close(sock, t)


def test_the_total_cap_holds_across_two_processes(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    settings = make_settings(max_associations=2)
    one, two = SharedRegistry(Slots(folder)), SharedRegistry(Slots(folder))
    held = [answer(settings, one, identity=alice), answer(settings, two, identity=bob)]
    try:
        head, sock, t = answer(settings, one)  # plain TCP (no identity) counts too
        close(sock, t)
        assert head[0] == REJECTED and head[7:10] == LOCAL_LIMIT
    finally:
        for _, sock, t in held:
            close(sock, t)


def _holder(folder: Path) -> int:
    """A child process that takes one of alice's slots and one of the total, says so, and
    waits to be killed; its pid."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python clean-up at all, whatever happens
        try:
            slots = Slots(folder)
            fds = [slots.take("id-a11ce", 2), slots.take("total", 64)]
            os.write(write, b"held" if None not in fds else b"none")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 4) == b"held"
    finally:
        os.close(read)
    return pid


def test_a_killed_process_gives_its_slots_back(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    holders = [_holder(folder) for _ in range(2)]
    try:
        settings = make_settings(max_associations_per_identity=2)
        registry = SharedRegistry(Slots(folder))
        head, sock, t = answer(settings, registry, identity=alice)
        close(sock, t)
        assert head[0] == REJECTED  # the two other processes hold alice's two slots
        os.kill(holders[0], signal.SIGKILL)  # no chance to clean anything up
        os.waitpid(holders[0], 0)
        head, sock, t = answer(settings, registry, identity=alice)
        assert head[0] == ACCEPTED
        close(sock, t)
    finally:
        for pid in holders:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def test_limits_that_cannot_be_checked_refuse(tmp_path: Path) -> None:
    registry = SharedRegistry(Slots(tmp_path / "gone"))
    head, sock, t = answer(make_settings(), registry, identity=alice)
    close(sock, t)
    assert head[0] == REJECTED and head[7:10] == LOCAL_LIMIT
    assert not registry.live()


def test_share_limits_divides_the_memory_budget(tmp_path: Path) -> None:
    """Each of N processes gets 1/N of ``inflight_memory`` (the total stays bounded), and
    its association caps go through the slots."""
    from securepacs.dimse.server import DicomServer

    budget = Budget(512 * 1024 * 1024)
    server = DicomServer(make_settings(budget=budget), None, None, None)  # type: ignore[arg-type]
    assert type(server.registry) is Registry
    server.share_limits(_folder(tmp_path), 2)
    assert budget.limit == 256 * 1024 * 1024
    assert isinstance(server.registry, SharedRegistry)
    small = Budget(3 * BUDGET_STEP)
    DicomServer(make_settings(budget=small), None, None, None).share_limits(  # type: ignore[arg-type]
        tmp_path, 8)
    assert small.limit == BUDGET_STEP  # never below one step
    unlimited = Budget(0)
    DicomServer(make_settings(budget=unlimited), None, None, None).share_limits(  # type: ignore[arg-type]
        tmp_path, 2)
    assert unlimited.limit == 0
