"""Worker processes of ``serve`` (setting ``workers``).

One Python process runs Python code on one core at a time; with ``workers = N`` the
parent starts N-1 more ``securepacs serve`` processes that accept DICOM associations on
the parent's own listening sockets (inherited file descriptors), so that N cores share the
work. Each worker has its own index connections, trust monitor and audit trail; the
parent alone runs the start-up check, enrolment and the viewer. Workers end with the
parent (Linux ``PR_SET_PDEATHSIG``) and are restarted if they die.

The limits hold for the processes together: the parent makes a private folder of
association slots (:mod:`securepacs.dimse.slots`) and hands its path down with the
sockets; every process divides the memory budget by the number of processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("securepacs.serve")

ENV = "SECUREPACS_WORKER_FDS"
SLOTS_ENV = "SECUREPACS_WORKER_SLOTS"
SLOTS_PREFIX = "securepacs-slots-"


def inherited_sockets() -> list[socket.socket]:
    """The listening sockets handed down by a parent ``serve`` (empty: not a worker)."""
    raw = os.environ.pop(ENV, "")
    return [socket.socket(fileno=int(fd)) for fd in raw.split(",") if fd.strip().isdigit()]


def inherited_slots() -> Path | None:
    """The parent's folder of association slots (None: not a worker)."""
    raw = os.environ.pop(SLOTS_ENV, "")
    return Path(raw) if raw else None


def die_with_parent() -> None:
    """Get SIGTERM when the parent process ends (Linux); exit if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        raise SystemExit(0)


def _sweep_slot_folders() -> int:
    """Remove the slot folders of ``serve`` parents that died without :meth:`Workers.stop`
    (SIGKILL, power loss): ``securepacs-slots-PID-*`` of ours whose PID is gone."""
    gone = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{SLOTS_PREFIX}*-*"):
        pid = folder.name[len(SLOTS_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
        except OSError:  # not ours to judge (EPERM: another user's live process)
            continue
    return gone


class Workers:
    """`count` worker processes serving on `sockets`; `slots`, the folder of association
    slots they share with the parent (made here, removed by :meth:`stop`)."""

    def __init__(self, count: int, sockets: list[socket.socket]):
        self.count = count
        self.sockets = sockets
        self.procs: list[subprocess.Popen[bytes]] = []
        self._last_restart = 0.0
        _sweep_slot_folders()
        self.slots = Path(tempfile.mkdtemp(prefix=f"{SLOTS_PREFIX}{os.getpid()}-"))  # mode 0700

    def _spawn(self) -> subprocess.Popen[bytes]:
        fds = [s.fileno() for s in self.sockets]
        env = dict(os.environ, **{ENV: ",".join(map(str, fds)), SLOTS_ENV: str(self.slots)})
        return subprocess.Popen([sys.executable, "-m", "securepacs.cli", *sys.argv[1:]],
                                pass_fds=fds, env=env)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        log.info("%d worker process(es) started: %s", self.count,
                 ", ".join(str(p.pid) for p in self.procs))

    def check(self) -> None:
        """Restart workers that died (at most one every 5 s)."""
        for n, proc in enumerate(self.procs):
            if proc.poll() is not None and time.monotonic() - self._last_restart > 5:
                log.error("worker process %d exited with %s: restarting it", proc.pid,
                          proc.returncode)
                self._last_restart = time.monotonic()
                self.procs[n] = self._spawn()

    def signal(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def stop(self, grace: float = 10.0) -> None:
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.slots, ignore_errors=True)
