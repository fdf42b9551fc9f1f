"""Modes of the data folder: private to the user who runs securepacs.

One responsibility: the data folder holds the index database (patients, audit trail,
enrolment tokens), the images and the CA key, so nothing in it may be readable by another
local user. Every entry point that writes (the ``securepacs`` command: ``serve``, ``ca``,
``media``, ``db``, ``view``...) calls :func:`private_umask` first, so every file it or a
library (SQLite's ``-wal`` and ``-shm`` files take the database file's mode) creates is 0600
and every folder 0700. :func:`loose_modes` finds what an older version or an operator left
group- or world-accessible; ``securepacs check`` fails on it and ``serve`` warns at start-up.
Nothing is changed behind the operator's back: the warning says which ``chmod`` to run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "loose_modes", "private_umask"]

PRIVATE_UMASK = 0o077
#: Most entries looked at by :func:`loose_modes` (the blob tree can hold millions of files:
#: only its upper levels are looked at, where a loose mode would come from).
MAX_ENTRIES = 2000


def private_umask() -> int:
    """Set the process umask to 0o077 (files 0600, folders 0700); returns the old one."""
    return os.umask(PRIVATE_UMASK)


def _entries(root: Path, depth: int, budget: list[int]) -> Iterable[Path]:
    yield root
    if depth == 0 or not root.is_dir() or root.is_symlink():
        return
    try:
        children = sorted(root.iterdir())
    except OSError:
        return
    for child in children:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        yield from _entries(child, depth - 1, budget)


def loose_modes(data_dir: Path, *, extra: Iterable[Path] = (), depth: int = 3) -> list[str]:
    """One line per file or folder of `data_dir` (and `extra` paths) that another local
    user could read, write or enter, with the command that fixes it.

    Looks `depth` levels deep (at most :data:`MAX_ENTRIES` entries); symbolic links are
    not followed.
    """
    lines = []
    budget = [MAX_ENTRIES]
    seen: set[Path] = set()
    roots = [Path(data_dir), *(Path(p) for p in extra)]
    for root in roots:
        if not root.exists():
            continue
        for path in _entries(root, depth, budget):
            if path in seen:
                continue
            seen.add(path)
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                want = "700" if stat.S_ISDIR(info.st_mode) else "600"
                lines.append(f"{path} is mode {mode:04o}: other local users can "
                             f"{'enter' if stat.S_ISDIR(info.st_mode) else 'read'} it "
                             f"(chmod {want} {path})")
    return lines
