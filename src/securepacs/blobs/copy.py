"""Copy one blob between two filesystem blob stores, hashing it on the way.

One responsibility: the blob half of a backup and of a restore. The copy is read in 1 MiB
pieces (a blob may be large), written with the target store's crash-safe ``put`` (temp file,
``fsync``, rename), and its SHA-256 is computed from the bytes written, so a manifest built
from the results describes the copy, not the original.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from securepacs.blobs.filesystem import FileBlobStore, blob_path
from securepacs.errors import StorageError

__all__ = ["BlobCopy", "copy_blob"]

_PIECE = 1 << 20


@dataclass(frozen=True)
class BlobCopy:
    """What was copied: the key, its size in bytes and the SHA-256 (hex) of its bytes."""

    key: str
    size: int
    sha256: str


def _pieces(fh: BinaryIO, digest: hashlib._Hash) -> Iterator[bytes]:
    while piece := fh.read(_PIECE):
        digest.update(piece)
        yield piece


def copy_blob(source: Path, target: FileBlobStore, key: str, *,
              expect_sha256: str | None = None) -> BlobCopy:
    """Copy blob `key` from the store folder `source` (only read: it may be read-only
    media) into `target` (same key).

    Parameters
    ----------
    expect_sha256 : str, optional
        The hash the blob must have (a restore checks the manifest's): on a mismatch the
        copy is removed from `target`.

    Raises
    ------
    StorageError
        The blob is missing or unreadable, the target cannot be written, or the hash differs.
    """
    digest = hashlib.sha256()
    try:
        fh = open(blob_path(source, key), "rb")
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read blob {key}: {exc}") from exc
    with fh:
        size = target.put(key, _pieces(fh, digest))
    sha = digest.hexdigest()
    if expect_sha256 is not None and sha != expect_sha256:
        target.delete(key)
        raise StorageError(f"blob {key} does not match its SHA-256 in the manifest")
    return BlobCopy(key, size, sha)
