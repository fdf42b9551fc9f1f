"""The temp file a large received data set is written to as its P-DATA-TF fragments
arrive (PS3.8 9.3.5), with its write-out to disk started while it still arrives.

Why: written to the page cache only, a 50 MB data set is flushed to disk by the fsync
that ingest makes after the last fragment (the durability contract, see
:mod:`securepacs.blobs.filesystem`), while the sender waits for the C-STORE response;
on the development machine's disk (~400 MB/s) that fsync took a median 107-125 ms per
50 MB object, about as long as the receipt itself over TLS. Here a flusher thread calls
``fdatasync`` every :data:`SYNC_EVERY` bytes while the data set still arrives (the calls
release the GIL; one that is still running when the next step is due is followed by one
more, not by a queue of them), so the final fsync finds little left to write: a median
~21 ms, and the whole store after the last fragment ~40 ms instead of ~130 ms.
Nothing is acknowledged on the strength of these early flushes: ingest still fsyncs the
whole file, renames it into place and fsyncs the folder before the index row is
committed and Success is sent.

``sync_file_range(SYNC_FILE_RANGE_WRITE)`` (not in Python's ``os``; ctypes) was measured
instead: it starts the write-out without waiting, but left more for the final fsync
(a median ~55 ms for 50 MB vs ~38 ms after ``fdatasync`` steps of 8 MB; steps of 1-16 MB
measured alike within the noise).

A failed early flush (EIO, ENOSPC) is kept and raised by the next :meth:`Spool.write`
or by :meth:`Spool.close`: the kernel reports a write-back error once to each open file,
and the fsync ingest makes later on a file it opens itself may never hear of it.

Fragments are written with ``os.write`` from the receive buffer's memoryviews (no
buffered copy in Python).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

SYNC_EVERY = 8 * 1024 * 1024  # bytes written between two early flushes


class Spool:
    """A private temp file (0600) in `folder` that starts with `prefix` + `data`; named
    ``rx….PID.tmp`` so that a blob store's start-up sweep knows whose it is.

    Parameters
    ----------
    prefix : bytes
        What the file starts with (e.g. a Part 10 header).
    folder : Path or None
        Where (None: the system's temp folder).
    data : bytes-like
        The data set's bytes received so far.
    sync_every : int, optional
        Bytes between two early flushes (0: none; default :data:`SYNC_EVERY`).

    Raises
    ------
    OSError
        The file could not be made or written (nothing is left behind).
    """

    def __init__(self, prefix: bytes, folder: Path | None, data: bytes | bytearray | memoryview,
                 *, sync_every: int | None = None) -> None:
        import tempfile  # here: a client (the requestor) never spills, and starts without it

        fd, name = tempfile.mkstemp(prefix="rx", suffix=f".{os.getpid()}.tmp", dir=folder)
        self.path = Path(name)
        self._fd = fd
        self._every = SYNC_EVERY if sync_every is None else sync_every
        self._written = 0
        self._next = self._every or -1
        self._error: OSError | None = None
        self._asked = False
        self._closing = False
        self._cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        try:
            self.write(prefix)
            self.write(data)
        except BaseException:
            self.drop()
            raise

    @property
    def written(self) -> int:
        """Bytes written so far."""
        return self._written

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`; raises OSError (the write's, or an early flush's)."""
        if self._error is not None:
            raise self._error
        view = memoryview(data)
        total = len(view)
        while view:
            view = view[os.write(self._fd, view):]
        self._written += total
        if self._next > 0 and self._written >= self._next:
            self._next = self._written + self._every
            self._flush_soon()

    def _flush_soon(self) -> None:
        with self._cond:
            self._asked = True
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="spool-flush",
                                                 daemon=True)
                self._flusher.start()
            else:
                self._cond.notify()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._asked and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                self._asked = False
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._error = exc
                return

    def _stop(self) -> None:
        """Stop the flusher: a flush not yet begun is skipped (the final fsync is the
        caller's), one under way is waited for (the file stays open until then)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def close(self) -> Path:
        """Close the file; its path. Raises OSError (an early flush's, or the close's);
        the file is then still there (:meth:`drop` removes it)."""
        self._stop()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        if self._error is not None:
            raise self._error
        return self.path

    def drop(self) -> None:
        """Close and remove the file (never raises)."""
        self._stop()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
