"""A blob store on a local (or mounted) filesystem, crash-safe by construction.

Write order for every blob: a temp file in ``ROOT/tmp``, ``fsync``, ``rename`` into
``ROOT/ab/cd/KEY``, ``fsync`` of the directory. A crash leaves either the whole blob or
a temp file, which :meth:`FileBlobStore.sweep_temp` removes at the next start.
Temp names carry the writer's PID so that a sweep never removes a live writer's file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from securepacs.errors import StorageError, StorageFullError

_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
KEYS_PER_FOLDER = 256


#: flags of a new temp file (``open(path, "xb")`` without Python's buffered file object)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_IOV_MAX = 64  # buffers per writev (the kernel takes 1024)


def _write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> int:
    """Write `parts` in order to `fd` (one ``writev`` when the kernel takes them whole,
    as it does for a regular file); the bytes written."""
    if len(parts) > _IOV_MAX:
        return sum(_write_all(fd, parts[i:i + _IOV_MAX])
                   for i in range(0, len(parts), _IOV_MAX))
    total = sum(len(part) for part in parts)
    if not total:
        return 0
    done = os.writev(fd, parts) if len(parts) > 1 else os.write(fd, parts[0])
    if done < total:  # a short write: the rest, piece by piece
        rest = memoryview(b"".join(parts))[done:]
        while rest:
            rest = rest[os.write(fd, rest):]
    return total


def _fsync_dir(path: str | Path) -> None:
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
    _check_key(key)
    return Path(root) / key[:2] / key[2:4] / key


def _check_key(key: str) -> None:
    if len(key) < 5 or not key.isalnum():
        raise ValueError(f"invalid blob key {key!r}")


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
        self._root_s = os.fspath(self.root)
        self._tmp_s = os.fspath(self._tmp)
        self._folders: set[str] = set()  # fan-out folders known to exist (and be durable)
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
                self._prefix = os.urandom(2).hex()
                self._prefix_left = KEYS_PER_FOLDER
            self._prefix_left -= 1
            return self._prefix + os.urandom(14).hex()

    def path(self, key: str) -> Path:
        """Where the blob `key` lives (whether or not it exists)."""
        return blob_path(self.root, key)

    def _locate(self, key: str) -> tuple[str, str]:
        """The folder and the path of blob `key`, as :meth:`path` (plain strings: the
        per-blob write path builds no ``Path`` objects)."""
        _check_key(key)
        folder = f"{self._root_s}/{key[:2]}/{key[2:4]}"
        return folder, f"{folder}/{key}"

    def put(self, key: str, chunks: bytes | bytearray | Iterable[bytes | bytearray]) -> int:
        """Write the blob durably; returns its size.

        Raises
        ------
        StorageFullError
            No space left; nothing is left behind.
        StorageError
            Any other I/O failure; nothing is left behind.
        """
        folder, final = self._locate(key)
        tmp = f"{self._tmp_s}/{key}.{os.getpid()}.tmp"
        size = 0
        try:
            fd = os.open(tmp, _CREATE, 0o666)
            try:
                if isinstance(chunks, bytes | bytearray):
                    size = _write_all(fd, (chunks,))
                elif isinstance(chunks, list | tuple):
                    size = _write_all(fd, chunks)
                else:
                    for chunk in chunks:
                        size += _write_all(fd, (chunk,))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._move_in(tmp, folder, final)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
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
        folder, final = self._locate(key)
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
            self._move_in(os.fspath(path), folder, final)
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            path.unlink(missing_ok=True)
        return size

    def _move_in(self, tmp: str, folder: str, final: str) -> None:
        """Rename a durable temp file into place and make the rename durable."""
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            _fsync_dir(os.path.dirname(folder))
            _fsync_dir(self._root_s)
            self._folders.add(folder)
        os.replace(tmp, final)
        _fsync_dir(folder)

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
