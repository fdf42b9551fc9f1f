"""One exception tree for the whole package.

::

    PacsError
    ├── ConfigError            bad settings, missing files named in the config
    ├── PkiError               CA / certificate problems (issue, load, verify)
    │   └── HandshakeRefused   a peer refused during the TLS handshake (reason in message)
    ├── StorageError           index or blob store could not do what was asked
    │   └── StorageFullError   no space left (maps to DIMSE Out of Resources)
    ├── InvalidInstanceError   a data set we refuse to store (malformed, mismatched UIDs)
    │   └── SopClassMismatchError
    ├── QueryError             an identifier we cannot evaluate
    └── RetrieveError          a retrieve that cannot proceed (unknown destination ...)
        └── UnknownDestinationError

Each carries a one-line message meant for a person (logs, CLI), never secrets.
"""


class PacsError(Exception):
    """Root of every error securepacs raises on purpose."""


class ConfigError(PacsError):
    """The settings are invalid or name something that does not exist."""


class PkiError(PacsError):
    """A certificate or key could not be created, loaded or verified."""


class StorageError(PacsError):
    """The index or the blob store failed."""


class StorageFullError(StorageError):
    """No space left on the device holding the blobs or the index."""


class InvalidInstanceError(PacsError):
    """A received data set that cannot be stored as it is."""


class SopClassMismatchError(InvalidInstanceError):
    """The data set's SOP Class UID disagrees with the DIMSE command."""


class QueryError(PacsError):
    """A query identifier that cannot be evaluated."""


class RetrieveError(PacsError):
    """A retrieve request that cannot be carried out."""


class UnknownDestinationError(RetrieveError):
    """A C-MOVE destination AE title that is not in the configuration."""


class HandshakeRefused(PkiError):
    """A TLS handshake the server refused; the message is the reason, for the log."""
