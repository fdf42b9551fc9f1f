"""What a disc declares, read without any key: per file its size, content type, cipher,
recipients and PBKDF2 parameters (PS3.10 7.4 secure file-sets, RFC 5652 EnvelopedData).

One responsibility: ``securepacs media info``'s view of a disc. Nothing is decrypted; what a
file *declares* (a DigestedData, i.e. integrity protected, or id-data) is what its envelope
says, which a reader then checks (:mod:`securepacs.media.cms`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from securepacs.errors import MalformedFileError, UnsupportedMediaError
from securepacs.media import cms
from securepacs.media.fileset import DICOMDIR, README, MediaSource, secure_paths

__all__ = ["FileSummary", "MediaSummary", "summarize"]


@dataclass(frozen=True)
class FileSummary:
    """One file as :func:`summarize` sees it, without any key."""

    path: str
    size: int
    envelope: cms.EnvelopeSummary | None = None
    error: str | None = None


@dataclass(frozen=True)
class MediaSummary:
    """What a disc declares, read without any key."""

    name: str
    files: tuple[FileSummary, ...]
    readme: bool
    dicomdir: bool
    kdfs: tuple[str, ...] = field(default=())

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def summarize(media: MediaSource) -> MediaSummary:
    """Per file: its size, content type, cipher and recipients; never decrypts anything."""
    files = []
    kdfs: dict[tuple[bytes, int, str], str] = {}
    all_paths = media.files()
    for path in secure_paths(media):
        data = media.read(path)
        try:
            env = cms.describe(data)
        except (MalformedFileError, UnsupportedMediaError) as exc:
            files.append(FileSummary(path, len(data), error=str(exc)))
            continue
        for r in env.recipients:
            if r.kdf is not None:
                kdfs[(r.kdf.salt, r.kdf.iterations, r.kdf.prf)] = r.kdf.label
        files.append(FileSummary(path, len(data), env))
    return MediaSummary(
        media.name, tuple(files),
        readme=any(p.upper() == README for p in all_paths),
        dicomdir=any(p.upper() == DICOMDIR for p in all_paths),
        kdfs=tuple(kdfs.values()))
