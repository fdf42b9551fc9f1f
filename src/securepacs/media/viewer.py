"""The disc viewer: the browser page written beside a secure file-set.

One responsibility: find the built viewer in the package data (``securepacs/discviewer/``,
built from ``discviewer/`` by ``discviewer/build.sh``) and name its files as they go onto
the media: ``INDEX.HTM`` at the root and the ``VIEWER/`` folder, ISO 9660 level 1 names
(PS3.12 Annex F: 8.3, upper case). These are the only plain files of a secure file-set
besides README.TXT (PS3.10 7.4: the DICOM files and the DICOMDIR stay Secure DICOM Files);
they hold no patient data, and readers of the file-set skip them (:func:`is_viewer_path`).
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

from securepacs.errors import MediaError

__all__ = ["BUDGET", "INDEX", "MISSING", "FOLDER", "is_viewer_path", "viewer_files"]

INDEX = "INDEX.HTM"
FOLDER = "VIEWER"
BUDGET = 6 * 1024 * 1024  # the viewer adds at most ~5 MB to a disc (build.mjs checks 5 MB)
MISSING = ("the disc viewer is not built into this installation (run scripts/install or "
           "discviewer/build.sh, which need node and npm); give --no-viewer to make the "
           "disc without it")
_NAME = re.compile(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?")


def is_viewer_path(path: str) -> bool:
    """True for ``INDEX.HTM`` and files under ``VIEWER/`` (any case, ``/``-separated)."""
    upper = path.upper()
    return upper == INDEX or upper.startswith(FOLDER + "/")


def _walk(node: Traversable, prefix: str, out: list[tuple[str, bytes]]) -> None:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            _walk(child, rel + "/", out)
        elif child.is_file():
            out.append((rel, child.read_bytes()))


def viewer_files(root: Traversable | None = None) -> list[tuple[str, bytes]]:
    """The viewer's files as ``(relative path, bytes)``, ``INDEX.HTM`` first.

    Parameters
    ----------
    root : Traversable, optional
        The built viewer folder (default: the package data ``securepacs/discviewer``).

    Raises
    ------
    MediaError
        The viewer is not built (the message says how to build it or to use --no-viewer),
        a name does not fit ISO 9660 level 1, or it is over its size budget.
    """
    if root is None:
        root = resources.files("securepacs").joinpath("discviewer")
    index = root.joinpath(INDEX)
    if not index.is_file() or not root.joinpath(FOLDER, "VIEWER.JS").is_file():
        raise MediaError(MISSING)
    files: list[tuple[str, bytes]] = [(INDEX, index.read_bytes())]
    _walk(root.joinpath(FOLDER), FOLDER + "/", files)
    for rel, _data in files:
        if not all(_NAME.fullmatch(part) for part in rel.split("/")):
            raise MediaError(f"disc viewer file {rel}: not an ISO 9660 level 1 name")
    size = sum(len(data) for _rel, data in files)
    if size > BUDGET:
        raise MediaError(f"the disc viewer is {size:,} bytes, over its {BUDGET:,}-byte budget")
    return files
