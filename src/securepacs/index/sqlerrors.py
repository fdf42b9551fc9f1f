"""Database failures of the index as :class:`securepacs.errors.StorageError`: a one-line
message without SQL nor parameter values (a full disc as
:class:`securepacs.errors.StorageFullError`), and which failures a writer may retry (a
unique-key race, a broken deadlock, a serialization failure; PostgreSQL: SQLSTATE 40P01,
40001).

Shared by :mod:`securepacs.index.repository` and :mod:`securepacs.index.deletion`.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from securepacs.errors import StorageError, StorageFullError


def _storage_error(exc: sa_exc.SQLAlchemyError) -> StorageError:
    """One-line error for a database failure; no SQL nor parameter values in the message."""
    orig = getattr(exc, "orig", None)
    cause: BaseException = orig if isinstance(orig, BaseException) else exc
    text = str(cause).strip()
    line = text.splitlines()[0] if text else type(cause).__name__
    lowered = text.lower()
    if isinstance(exc, sa_exc.OperationalError) and any(
        s in lowered for s in ("disk is full", "disk full", "no space left")
    ):
        return StorageFullError(f"index database is full: {line}")
    return StorageError(f"index database error ({type(cause).__name__}): {line}")


def _retryable(exc: sa_exc.DBAPIError) -> bool:
    """A unique-key race, a broken deadlock or a serialization failure."""
    if isinstance(exc, sa_exc.IntegrityError):
        return True
    text = str(exc.orig).lower()
    return isinstance(exc, sa_exc.OperationalError) and (
        "deadlock detected" in text or "could not serialize" in text
    )
