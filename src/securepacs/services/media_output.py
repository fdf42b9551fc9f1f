"""Where the media use cases write: a private staging folder next to the target, renamed
into place when complete and removed on any failure (nothing is ever half-written), and the
progress they report.

One responsibility: the output side shared by :mod:`securepacs.services.media_create`
(a secure file-set, PS3.10 7.4) and :mod:`securepacs.services.media_read` (decrypted
files); relative paths from media are checked before they are joined (PS3.10 8.5 File IDs
are relative, and a hostile disc must not write outside the target).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from securepacs.errors import MediaError

__all__ = ["NO_PROGRESS", "Progress", "check_target", "publish", "staging", "write_file"]


class Progress(Protocol):
    """Where long work reports how far it is (a progress bar, log lines, nothing)."""

    def begin(self, task: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def end(self) -> None: ...


class _NoProgress:
    def begin(self, task: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def end(self) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


def check_target(target: Path, *, folder: bool) -> None:
    if folder and target.is_dir():
        if any(target.iterdir()):
            raise MediaError(f"{target} exists and is not empty")
    elif target.exists():
        raise MediaError(f"{target} already exists")
    if not target.parent.is_dir():
        raise MediaError(f"{target.parent} is not a folder")


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A private temporary folder next to `target` (same file system), removed on failure."""
    temp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
    try:
        os.mkdir(temp, 0o700)
    except OSError as exc:
        raise MediaError(f"cannot create a folder next to {target}: {exc.strerror}") from exc
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def publish(temp: Path, target: Path, *, mode: int) -> None:
    """Rename the finished folder into place (over an empty folder of that name).

    `mode` is 0o755 for encrypted media and 0o700 for decrypted images (patient data).
    """
    try:
        if target.is_dir():
            target.rmdir()
        os.chmod(temp, mode)
        os.replace(temp, target)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise MediaError(f"cannot move the result into {target}: {exc.strerror}") from exc


def _safe_join(root: Path, rel: str) -> Path:
    parts = rel.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise MediaError(f"{rel}: not a safe relative path")
    return root.joinpath(*parts)


def write_file(root: Path, rel: str, data: bytes) -> None:
    path = _safe_join(root, rel)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise MediaError(f"cannot write {path}: {exc.strerror or exc}") from exc
