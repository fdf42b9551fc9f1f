"""A blob store on a local (or mounted) filesystem, crash-safe by construction.

Write order for every blob: a temp file in ``ROOT/tmp``, ``fsync``, ``rename`` into
``ROOT/ab/cd/KEY``, ``fsync`` of the directory. A crash leaves either the whole blob or
a temp file, which :meth:`FileBlobStore.sweep_temp` removes at the next start.
Temp names carry the writer's PID so that a sweep never removes a live writer's file.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from securepacs.errors import StorageError, StorageFullError

_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
KEYS_PER_FOLDER = 256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def blob_path(root: Path, key: str) -> Path:
    """Where the blob `key` lives in the store at `root`: ``root/ab/cd/KEY``."""
    if len(key) < 5 or not key.isalnum():
        raise ValueError(f"invalid blob key {key!r}")
    return Path(root) / key[:2] / key[2:4] / key


class FileBlobStore:
    """Blobs as files under `root`, keyed by opaque strings made by :meth:`new_key`.

    Parameters
    ----------
    root : Path
        The folder that holds the blobs; created (mode 0700) when missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spool_folder: Path | None = self._tmp
        os.chmod(self.root, 0o700)
        self._folders: set[Path] = set()  # fan-out folders known to exist (and be durable)
        self._prefix = ""
        self._prefix_left = 0
        self._lock = threading.Lock()

    def new_key(self) -> str:
        """A fresh, unique blob key (random, 32 hex digits).

        Consecutive keys share their first four digits (the ``ab/cd`` folder) for
        :data:`KEYS_PER_FOLDER` blobs before a new random folder is chosen: a new folder
        costs a ``mkdir`` and three directory ``fsync`` calls, which fully random keys
        would pay on nearly every blob of a young archive. Folders still fill evenly.
        """
        with self._lock:
            if self._prefix_left == 0:
                self._prefix = uuid.uuid4().hex[:4]
                self._prefix_left = KEYS_PER_FOLDER
            self._prefix_left -= 1
            return self._prefix + uuid.uuid4().hex[4:]

    def path(self, key: str) -> Path:
        """Where the blob `key` lives (whether or not it exists)."""
        return blob_path(self.root, key)

    def put(self, key: str, chunks: bytes | bytearray | Iterable[bytes | bytearray]) -> int:
        """Write the blob durably; returns its size.

        Raises
        ------
        StorageFullError
            No space left; nothing is left behind.
        StorageError
            Any other I/O failure; nothing is left behind.
        """
        final = self.path(key)
        tmp = self._tmp / f"{key}.{os.getpid()}.tmp"
        size = 0
        try:
            with open(tmp, "xb") as fh:
                for chunk in [chunks] if isinstance(chunks, bytes | bytearray) else chunks:
                    fh.write(chunk)
                    size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            self._move_in(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(exc) from exc
        return size

    def put_file(self, key: str, path: Path) -> int:
        """Make the file at `path` the blob `key`, durably; returns its size. A file in
        :attr:`spool_folder` is moved in (no copy), any other is copied; `path` is gone
        afterwards either way.

        Raises
        ------
        StorageFullError, StorageError
            As :meth:`put`; `path` is removed and nothing is left behind.
        """
        final = self.path(key)
        try:
            if path.parent != self._tmp:
                with open(path, "rb") as fh:
                    return self.put(key, iter(lambda: fh.read(1 << 20), b""))
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            self._move_in(path, final)
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            path.unlink(missing_ok=True)
        return size

    def _move_in(self, tmp: Path, final: Path) -> None:
        """Rename a durable temp file into place and make the rename durable."""
        if final.parent not in self._folders:
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(final.parent.parent)
            _fsync_dir(self.root)
            self._folders.add(final.parent)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def _error(self, exc: OSError) -> StorageError:
        if exc.errno in _SPACE_ERRNOS:
            return StorageFullError(f"no space left for blob storage under {self.root}")
        return StorageError(f"cannot write blob under {self.root}: {exc.strerror}")

    def read(self, key: str) -> bytes:
        """The whole blob."""
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read blob {key}: {exc.strerror}") from exc

    def open_read(self, key: str) -> BinaryIO:
        """The blob as an open binary file, to read in pieces (the caller closes it)."""
        try:
            return open(self.path(key), "rb")
        except OSError as exc:
            raise StorageError(f"cannot read blob {key}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        """Remove the blob if present."""
        self.path(key).unlink(missing_ok=True)

    def keys(self, *, older_than: float = 0.0, now: float | None = None) -> Iterator[str]:
        """Every stored key whose file is at least `older_than` seconds old."""
        limit = (time.time() if now is None else now) - older_than
        for first in self.root.iterdir():
            if first == self._tmp or not first.is_dir() or len(first.name) != 2:
                continue
            for second in first.iterdir():
                for blob in second.iterdir():
                    try:
                        if blob.stat().st_mtime <= limit:
                            yield blob.name
                    except FileNotFoundError:
                        continue

    def sweep_temp(self) -> int:
        """Remove temp files left by writers that no longer run; returns how many."""
        removed = 0
        for tmp in self._tmp.glob("*.tmp"):
            parts = tmp.name.split(".")
            pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1
            if pid > 0 and pid != os.getpid() and _pid_alive(pid):
                continue
            if pid == os.getpid():
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed
