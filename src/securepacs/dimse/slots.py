"""Association limits shared by the worker processes of one server (setting ``workers``).

Each process of ``serve`` counts its own associations (:class:`~securepacs.dimse.association.
Registry`); with several processes, ``max_associations`` and
``max_associations_per_identity`` must hold for the server as a whole, or a client could
hold the per-identity cap once in every process. Here a *slot* is a file in a folder that
the first process makes for its workers (``total.K`` for K below ``max_associations``,
``id-SERIAL.K`` below ``max_associations_per_identity``); an association holds one slot of
each kind as an open file with an exclusive ``flock`` on it. ``flock`` locks belong to the
open file (not to the process, so two associations of one process exclude each other too),
and the kernel drops them when the file is closed: at the end of the association, or when
its process dies, however it dies. A worker that crashes leaves no count behind that could
lock a client out; no process has to clean up after another.

The memory budget for received data sets (``inflight_memory``) is divided between the
processes instead (:meth:`~securepacs.dimse.server.DicomServer.share_limits`): each one's
share holds without any coordination, and the total stays bounded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path

from securepacs.dimse.association import AcceptedAssociation, Registry

__all__ = ["SharedRegistry", "Slots"]


class Slots:
    """Numbered slots of named kinds, in `folder`, that any process can hold.

    Parameters
    ----------
    folder : Path
        An existing private folder (mode 0700), the same for every process of a server.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def take(self, kind: str, count: int) -> int | None:
        """Hold a free slot of `kind` among the first `count`: an open file descriptor
        (close it to give the slot back), or None when all `count` are held.

        Raises
        ------
        OSError
            The folder is missing or not writable.
        """
        for k in range(count):
            fd = os.open(self.folder / f"{kind}.{k}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            return fd
        return None


class SharedRegistry(Registry):
    """A :class:`Registry` whose association limits hold across processes through
    :class:`Slots` (every process of the server has one on the same folder)."""

    def __init__(self, slots: Slots) -> None:
        super().__init__()
        self.slots = slots
        self._fds: dict[AcceptedAssociation, list[int]] = {}
        self._fds_lock = threading.Lock()

    def add(self, assoc: AcceptedAssociation, limit: int, per_identity: int = 0) -> str | None:
        why = super().add(assoc, limit, per_identity)
        if why is not None:
            return why
        held: list[int] = []
        try:
            fd = self.slots.take("total", limit)
            if fd is None:
                why = f"{limit} associations already running (all worker processes)"
            else:
                held.append(fd)
                identity = assoc.identity
                if per_identity and identity is not None:
                    fd = self.slots.take(f"id-{identity.serial:x}", per_identity)
                    if fd is None:
                        why = (f"{identity.describe()} already holds {per_identity} "
                               "associations (all worker processes)")
                    else:
                        held.append(fd)
        except OSError as exc:  # fail closed: a limit that cannot be checked is not met
            why = f"association limits cannot be checked: {exc.strerror or exc}"
        if why is not None:
            for fd in held:
                os.close(fd)
            super().remove(assoc)
            return why
        with self._fds_lock:
            self._fds[assoc] = held
        return None

    def remove(self, assoc: AcceptedAssociation) -> None:
        with self._fds_lock:
            held = self._fds.pop(assoc, [])
        for fd in held:
            with contextlib.suppress(OSError):
                os.close(fd)
        super().remove(assoc)
