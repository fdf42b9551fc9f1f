"""Back up, verify and restore the embedded archive (SQLite index + filesystem blobs).

One responsibility: the use case of ``securepacs backup`` / ``restore``. A backup is taken
while the server runs, in this order, so that it is one consistent archive:

1. the data folder's other files (``pki/``, ``audit-key/``, the audit checkpoint file...)
   are copied first, so no checkpoint in the copy is newer than the index copy;
2. the index is copied in one step with SQLite's backup API (one committed state);
3. every blob that copy refers to is copied. Blobs are written before their index row is
   committed and never changed afterwards, so every instance of the copy has its blob;
   blobs stored after step 2 are not in the copy and not referred to by it;
4. every blob that copy keeps in the trash (``blob_trash``, setting ``trash_days``), so
   that ``restore-deleted`` works on the restored archive as on the original. A trashed
   blob purged between steps 2 and 4 is left out and named in ``BACKUP.json``
   (``purged_trash``); the restored server's start-up purge drops its entry.

A backup folder holds ``index.sqlite``, ``blobs/`` (the blob store's own layout),
``files/`` (the rest of the data folder), ``MANIFEST.sha256`` (``sha256sum -c`` format:
one line per file) and ``BACKUP.json`` (written last, with the manifest's own SHA-256).
It is built in a ``.partial`` folder renamed into place at the end: an interrupted backup
leaves no folder that looks complete. A restore verifies every hash first, then builds the
new data folder beside the target and renames it into place, so it too is all or nothing.
PostgreSQL and Azure Blob Storage are backed up with their own tools (docs/deployment.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from securepacs.errors import ConfigError, StorageError

__all__ = ["BackupReport", "BackupTools", "VerifyReport", "backup", "restore", "verify"]

FORMAT = "securepacs-backup/1"
MANIFEST = "MANIFEST.sha256"
DESCRIPTION = "BACKUP.json"
INDEX = "index.sqlite"
BLOBS = "blobs"
FILES = "files"


class CopiedBlob(Protocol):
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupTools:
    """The index and blob operations a backup needs (wired from ``index`` and ``blobs``).

    ``copy_blob(source_root, target_root, key, expect_sha256)`` copies one blob between two
    filesystem blob stores and returns its size and SHA-256. ``trashed_keys`` lists the
    blobs the index copy keeps in the trash (None: none are backed up).
    """

    snapshot: Callable[[Path, Path], None]
    check_index: Callable[[Path], None]
    blob_keys: Callable[[Path], Iterator[str]]
    copy_blob: Callable[[Path, Path, str, str | None], CopiedBlob]
    trashed_keys: Callable[[Path], Iterator[str]] | None = None


@dataclass(frozen=True)
class BackupReport:
    """A finished backup: where, how many instances, files and bytes, blobs it missed."""

    folder: Path
    instances: int
    files: int
    size: int
    missing_blobs: tuple[str, ...] = ()
    manifest_sha256: str = ""
    trashed: int = 0


@dataclass
class VerifyReport:
    """The result of :func:`verify`: ``ok`` when ``problems`` is empty."""

    folder: Path
    files: int = 0
    instances: int = 0
    created: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _copy_file(source: Path, target: Path, *, whole_lines: bool = False) -> tuple[int, str]:
    """Copy `source` to the new file `target`: its size and SHA-256.

    With `whole_lines`, bytes after the last newline are left out: a line a running server
    was appending to an append-only log (the audit checkpoints, ``*.jsonl``) when the copy
    read it would be a torn line, unreadable to ``audit verify --checkpoints`` and glued
    to the next line the restored server appends.
    """
    _private_dir(target.parent)
    digest = hashlib.sha256()
    size = 0
    pending = b""
    with open(source, "rb") as src, open(target, "xb") as dst:
        os.fchmod(dst.fileno(), 0o600)
        while piece := src.read(1 << 20):
            if whole_lines:
                piece = pending + piece
                cut = piece.rfind(b"\n") + 1
                piece, pending = piece[:cut], piece[cut:]
            digest.update(piece)
            dst.write(piece)
            size += len(piece)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _empty_or_missing(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _other_files(data_dir: Path, skip: list[Path]) -> Iterator[Path]:
    """Regular files of `data_dir` outside `skip` (the index and the blob folder)."""
    skipped = {p.resolve() for p in skip}
    for folder, dirs, files in os.walk(data_dir):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in skipped
                         and not (here / d).is_symlink())
        for name in sorted(files):
            path = here / name
            if path.resolve() not in skipped and path.is_file() and not path.is_symlink():
                yield path


def backup(*, data_dir: Path, blob_root: Path, to: Path, tools: BackupTools,
           at: datetime) -> BackupReport:
    """Copy the running archive in `data_dir` (blobs in `blob_root`) into the folder `to`.

    Raises
    ------
    ConfigError
        `to` exists and is not an empty folder, or lies inside the data folder.
    StorageError
        The index or a file cannot be read or the backup cannot be written; nothing is
        left at `to`.
    """
    index_file = data_dir / INDEX
    if not _empty_or_missing(to):
        raise ConfigError(f"{to} exists and is not empty: back up into a new folder")
    if _inside(to, data_dir) or _inside(to, blob_root):
        raise ConfigError(f"{to} is inside the data folder: back up to another place")
    if not index_file.is_file():
        raise ConfigError(f"no archive in {data_dir} (no {INDEX})")
    staging = to.with_name(f"{to.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    _private_dir(staging)
    lines: list[str] = []
    total = 0
    try:
        skip = [index_file, *(index_file.with_name(INDEX + s) for s in ("-wal", "-shm",
                                                                         "-journal",
                                                                         "-writer.lock")),
                blob_root]
        for path in _other_files(data_dir, skip):
            rel = Path(FILES) / path.relative_to(data_dir)
            try:
                size, sha = _copy_file(path, staging / rel, whole_lines=path.suffix == ".jsonl")
            except FileNotFoundError:
                continue  # a temp file that went away while copying
            lines.append(f"{sha}  {rel.as_posix()}")
            total += size
        tools.snapshot(index_file, staging / INDEX)
        lines.append(f"{_sha256(staging / INDEX)}  {INDEX}")
        total += (staging / INDEX).stat().st_size
        missing: list[str] = []
        instances = 0
        for key in tools.blob_keys(staging / INDEX):
            instances += 1
            try:
                copied = tools.copy_blob(blob_root, staging / BLOBS, key, None)
            except StorageError:
                missing.append(key)  # replaced or deleted after the index copy was taken
                continue
            lines.append(f"{copied.sha256}  {BLOBS}/{key[:2]}/{key[2:4]}/{key}")
            total += copied.size
        trashed, purged = 0, []
        for key in tools.trashed_keys(staging / INDEX) if tools.trashed_keys else ():
            try:
                copied = tools.copy_blob(blob_root, staging / BLOBS, key, None)
            except StorageError:
                purged.append(key)  # its trash time ended after the index copy was taken
                continue
            trashed += 1
            lines.append(f"{copied.sha256}  {BLOBS}/{key[:2]}/{key[2:4]}/{key}")
            total += copied.size
        _write_durably(staging / MANIFEST, "".join(f"{line}\n" for line in lines).encode())
        described = {"format": FORMAT, "created": at.isoformat(), "instances": instances,
                     "files": len(lines), "bytes": total, "missing_blobs": missing,
                     "trashed": trashed, "purged_trash": purged,
                     "manifest_sha256": _sha256(staging / MANIFEST)}
        _write_durably(staging / DESCRIPTION, json.dumps(described, indent=1).encode())
        if to.exists():
            to.rmdir()
        os.replace(staging, to)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"backup to {to} failed: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BackupReport(to, instances, len(lines), total, tuple(missing),
                        str(described["manifest_sha256"]), trashed)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _manifest(folder: Path, report: VerifyReport) -> dict[str, str] | None:
    try:
        described = json.loads((folder / DESCRIPTION).read_text())
        manifest = (folder / MANIFEST).read_bytes()
    except (OSError, ValueError) as exc:
        report.problems.append(f"not a complete securepacs backup ({DESCRIPTION} or "
                               f"{MANIFEST} unreadable: {exc})")
        return None
    if not isinstance(described, dict) or described.get("format") != FORMAT:
        report.problems.append(f"{DESCRIPTION} is not a {FORMAT} description")
        return None
    report.created = str(described.get("created", ""))
    report.instances = int(described.get("instances", 0))
    if hashlib.sha256(manifest).hexdigest() != described.get("manifest_sha256"):
        report.problems.append(f"{MANIFEST} does not match the SHA-256 in {DESCRIPTION}")
        return None
    entries: dict[str, str] = {}
    for line in manifest.decode("utf-8", "replace").splitlines():
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64 or rel.startswith("/") or ".." in Path(rel).parts:
            report.problems.append(f"bad manifest line: {line[:100]!r}")
            return None
        entries[rel] = sha
    return entries


def verify(folder: Path, tools: BackupTools) -> VerifyReport:
    """Check a backup folder: every file against the manifest, no file unlisted, the index
    copy's integrity, and a blob for every instance it indexes."""
    report = VerifyReport(folder)
    if not folder.is_dir():
        report.problems.append(f"{folder} is not a folder")
        return report
    entries = _manifest(folder, report)
    if entries is None:
        return report
    for rel, sha in entries.items():
        path = folder / rel
        try:
            if _sha256(path) != sha:
                report.problems.append(f"{rel}: content differs from the manifest")
        except OSError:
            report.problems.append(f"{rel}: missing")
    listed = set(entries) | {MANIFEST, DESCRIPTION}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() not in listed:
            report.problems.append(f"{path.relative_to(folder)}: not in the manifest")
    report.files = len(entries)
    if INDEX not in entries:
        report.problems.append(f"{INDEX} is not in the manifest")
        return report
    try:
        tools.check_index(folder / INDEX)
        described = json.loads((folder / DESCRIPTION).read_text())
        missing = described.get("missing_blobs", [])
        for key in tools.blob_keys(folder / INDEX):
            if f"{BLOBS}/{key[:2]}/{key[2:4]}/{key}" not in entries and key not in missing:
                report.problems.append(f"blob {key} of an indexed instance is not in the backup")
        purged = set(described.get("purged_trash", []))
        # backups written before the trash was backed up have no "trashed" count
        listing = tools.trashed_keys if "trashed" in described else None
        for key in listing(folder / INDEX) if listing else ():
            if f"{BLOBS}/{key[:2]}/{key[2:4]}/{key}" not in entries and key not in purged:
                report.problems.append(f"blob {key} of a trashed instance is not in the backup")
    except StorageError as exc:
        report.problems.append(str(exc))
    return report


def restore(*, folder: Path, data_dir: Path, blob_root: Path, tools: BackupTools) -> VerifyReport:
    """Make `data_dir` (missing or empty) a copy of the backup in `folder`.

    Raises
    ------
    ConfigError
        The data folder (or a blob folder outside it) is not empty, or the backup fails
        verification (the first problem is named); nothing is written.
    StorageError
        Writing fails; nothing is left in the data folder.
    """
    if not _empty_or_missing(data_dir):
        raise ConfigError(f"{data_dir} is not empty: restore only into a new data folder")
    blobs_inside = _inside(blob_root, data_dir) if data_dir.exists() else \
        blob_root.absolute().is_relative_to(data_dir.absolute())
    if not blobs_inside and not _empty_or_missing(blob_root):
        raise ConfigError(f"blob folder {blob_root} is not empty: restore only into new folders")
    report = verify(folder, tools)
    if not report.ok:
        raise ConfigError(f"backup {folder} fails verification: {report.problems[0]}"
                          + (f" (and {len(report.problems) - 1} more)"
                             if len(report.problems) > 1 else ""))
    entries = _manifest(folder, VerifyReport(folder)) or {}
    staging = data_dir.with_name(f"{data_dir.name}.restoring-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    _private_dir(staging)
    new_blob_root = staging / blob_root.absolute().relative_to(data_dir.absolute()) \
        if blobs_inside else blob_root
    try:
        for rel, sha in entries.items():
            parts = Path(rel).parts
            if parts[0] == FILES:
                _, got = _copy_file(folder / rel, staging / Path(*parts[1:]))
            elif rel == INDEX:
                _, got = _copy_file(folder / rel, staging / INDEX)
            else:
                _private_dir(new_blob_root)
                got = tools.copy_blob(folder / BLOBS, new_blob_root, parts[-1], sha).sha256
            if got != sha:
                raise StorageError(f"{rel} changed while restoring")
        _private_dir(new_blob_root)
        if data_dir.exists():
            data_dir.rmdir()
        os.replace(staging, data_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not blobs_inside:
            for child in list(blob_root.iterdir()) if blob_root.exists() else []:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        if isinstance(exc, OSError):
            raise StorageError(f"restore into {data_dir} failed: {exc}") from exc
        raise
    return report
