"""Encrypted media use cases: make a secure file-set (PS3.10 7.4, PS3.15 Annex D.1) and
read one back. This module gathers the names callers import; the work is in the modules
named after what they hold:

- :mod:`securepacs.services.media_create`: making media (:func:`create_media`, the
  :class:`StudyArchive` Protocol and its :class:`RetrieveStudies` over the archive);
- :mod:`securepacs.services.media_read`: reading it back (:func:`media_info`,
  :func:`extract_media`, :func:`verify_media`, :func:`keyring_from`, :func:`open_media`);
- :mod:`securepacs.services.media_output`: the staging folder renamed into place (nothing
  is ever half-written) and the :class:`Progress` port.

A wrong password or key raises :class:`~securepacs.errors.WrongKeyError` before any
plaintext is written. Passwords are never logged. Emergency recovery with the escrow key,
which writes an audit record first, is :mod:`securepacs.services.media_recovery`.
"""

from __future__ import annotations

from securepacs.media.passwords import generate_passphrase
from securepacs.services.media_create import (
    CreateReport,
    FileSource,
    RetrieveStudies,
    StudyArchive,
    create_media,
)
from securepacs.services.media_output import NO_PROGRESS, Progress
from securepacs.services.media_read import (
    ExtractReport,
    VerifyReport,
    extract_from,
    extract_media,
    keyring_from,
    media_info,
    open_media,
    verify_media,
)

__all__ = [
    "CreateReport",
    "ExtractReport",
    "FileSource",
    "NO_PROGRESS",
    "Progress",
    "RetrieveStudies",
    "StudyArchive",
    "VerifyReport",
    "create_media",
    "extract_from",
    "extract_media",
    "generate_passphrase",
    "keyring_from",
    "media_info",
    "open_media",
    "verify_media",
]
