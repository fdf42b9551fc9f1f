"""ISO 9660 images of a secure file-set, written and read with pycdlib.

One responsibility: put a file-set folder into a disc image and read files back out of one.
The image is ISO 9660 interchange level 1 with no extensions (ECMA-119; the DICOM CD-R and
DVD media of PS3.12 use this file system): DICOM file IDs (PS3.10 8.2, up to 8 upper-case
characters per component, at most 8 levels) fit its 8.3 names and depth limit as they are,
so ``PT000000/ST000000/SE000000/IM000000`` is stored as ``IM000000.;1`` and ``README.TXT``
as ``README.TXT;1``; readers show them without the version suffix.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from io import BytesIO
from pathlib import Path
from types import TracebackType

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from securepacs.errors import MalformedFileError, MediaError

__all__ = ["CD_BYTES", "DVD_BYTES", "IsoMedia", "fits", "write_iso"]

CD_BYTES = 700 * 1024 * 1024
"""Capacity of an 80-minute CD-R."""

DVD_BYTES = 4_700_000_000
"""Capacity of a single-layer DVD±R."""

_D_NAME = re.compile(r"[A-Z0-9_]{1,8}")
_D_EXT = re.compile(r"[A-Z0-9_]{0,3}")


def fits(size: int) -> str:
    """The smallest optical medium an image of `size` bytes fits on, or ``"USB"``."""
    if size <= CD_BYTES:
        return "CD"
    if size <= DVD_BYTES:
        return "DVD"
    return "USB (too large for a single-layer DVD)"


def _iso_name(name: str, is_dir: bool) -> str:
    stem, dot, ext = name.partition(".")
    if is_dir:
        if dot or not _D_NAME.fullmatch(stem):
            raise MediaError(f"folder name {name!r} does not fit ISO 9660 level 1")
        return stem
    if not _D_NAME.fullmatch(stem) or not _D_EXT.fullmatch(ext):
        raise MediaError(f"file name {name!r} does not fit ISO 9660 level 1")
    return f"{stem}.{ext};1"


def write_iso(folder: Path, target: Path, *, volume_id: str = "SECUREPACS") -> int:
    """Write the files under `folder` as an ISO 9660 level 1 image at `target`.

    Parameters
    ----------
    folder : Path
        The file-set (Secure DICOM Files, DICOMDIR, README.TXT).
    target : Path
        The image file to create (the caller renames it into place).
    volume_id : str
        Volume identifier (d-characters, at most 32).

    Returns
    -------
    int
        Size of the image in bytes.

    Raises
    ------
    MediaError
        A name that does not fit ISO 9660 level 1, more than 8 levels, or a write failure.
    """
    folder = Path(folder)
    iso = pycdlib.PyCdlib()
    try:
        iso.new(interchange_level=1, vol_ident=volume_id[:32], app_ident_str="SECUREPACS")
        for dirpath, dirs, names in os.walk(folder):
            rel = Path(dirpath).relative_to(folder)
            if len(rel.parts) >= 8:
                raise MediaError(f"{rel.as_posix()}: deeper than ISO 9660 allows (8 levels)")
            base = "".join("/" + _iso_name(p, True) for p in rel.parts)
            for d in sorted(dirs):
                iso.add_directory(iso_path=f"{base}/{_iso_name(d, True)}")
            for name in sorted(names):
                iso.add_file(str(Path(dirpath, name)), iso_path=f"{base}/{_iso_name(name, False)}")
        iso.write(str(target))
    except PyCdlibException as exc:
        raise MediaError(f"cannot write the ISO image {target}: {exc}") from exc
    finally:
        iso.close()
    return Path(target).stat().st_size


_ISO_ERRORS = (PyCdlibException, OSError, ValueError, KeyError, IndexError, TypeError,
               AttributeError, struct.error, RecursionError)
"""What pycdlib raises on a damaged image (struct.error, UnicodeDecodeError and ValueError
were found by fuzzing the directory records)."""


def _line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


class IsoMedia:
    """The files of an ISO 9660 image, as :class:`securepacs.media.fileset.MediaSource`.

    Names lose the ``;1`` version and a trailing dot, so paths read like the file IDs.
    Use as a context manager, or call :meth:`close`.

    Parameters
    ----------
    path : Path
        The image file.

    Raises
    ------
    MediaError
        The file is not an ISO 9660 image.
    """

    def __init__(self, path: Path):
        self.name = str(path)
        self._iso = pycdlib.PyCdlib()
        self._paths: dict[str, str] = {}
        try:
            self._iso.open(str(path))
            for dirpath, _dirs, names in self._iso.walk(iso_path="/"):
                for name in names:
                    plain = name.split(";", 1)[0].rstrip(".")
                    rel = (dirpath.rstrip("/") + "/" + plain).lstrip("/")
                    self._paths[rel] = dirpath.rstrip("/") + "/" + name
        except _ISO_ERRORS as exc:
            with contextlib.suppress(*_ISO_ERRORS):
                self._iso.close()
            raise MediaError(f"{path} is not a readable ISO 9660 image ({_line(exc)})") from None

    def files(self) -> list[str]:
        return sorted(self._paths)

    def read(self, path: str) -> bytes:
        out = BytesIO()
        try:
            self._iso.get_file_from_iso_fp(out, iso_path=self._paths[path])
        except _ISO_ERRORS as exc:
            raise MalformedFileError(f"{path}: cannot be read from the image ({_line(exc)})"
                                     ) from None
        return out.getvalue()

    def close(self) -> None:
        self._iso.close()

    def __enter__(self) -> IsoMedia:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
