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
    ├── UidConflictError       another tenant holds the SOP Instance UID with other bytes
    ├── AccessRefused          a verified certificate the trust store does not admit
    │   ├── CertificateRevoked
    │   └── NotPermitted       an admitted identity whose group lacks a permission
    ├── QueryError             an identifier we cannot evaluate
    ├── RetrieveError          a retrieve that cannot proceed (unknown destination ...)
    │   └── UnknownDestinationError
    └── MediaError             encrypted media (PS3.10 7.4, PS3.15 D.1) cannot be made or read
        ├── PasswordRefusedError  a password outside printable US-ASCII, or too weak (says why)
        ├── WrongKeyError      the password or key opens no recipient of the media
        ├── MediaUsageError    no such media, or a key or certificate file that cannot be used
        ├── IntegrityError     a file's ciphertext or digest was altered (file named)
        ├── MalformedFileError not CMS, truncated, or damaged beyond decryption (file named)
        └── UnsupportedMediaError  a CMS feature or algorithm this reader does not implement

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


class UidConflictError(PacsError):
    """The SOP Instance UID cannot be stored for this organisation (docs/tenants.md); the
    message never says who holds it."""


class QueryError(PacsError):
    """A query identifier that cannot be evaluated."""


class RetrieveError(PacsError):
    """A retrieve request that cannot be carried out."""


class UnknownDestinationError(RetrieveError):
    """A C-MOVE destination AE title that is not in the configuration."""


class HandshakeRefused(PkiError):
    """A TLS handshake the server refused; the message is the reason, for the log."""


class AccessRefused(PacsError):
    """A verified peer the trust store does not admit (revoked, unknown); reason in message."""


class CertificateRevoked(AccessRefused):
    """The peer's certificate was revoked."""


class NotPermitted(AccessRefused):
    """An admitted identity asked for something its group's permissions do not allow."""


class MediaError(PacsError):
    """Encrypted DICOM media (a secure file-set, PS3.10 7.4) could not be written or read."""


class PasswordRefusedError(MediaError):
    """A media password that is not printable US-ASCII (PS3.15 D.1) or is too weak."""


class WrongKeyError(MediaError):
    """The password or private key opens no recipient of the media (one opaque message)."""


class MediaUsageError(MediaError):
    """A usage error (the CLI exits 2): the media path names neither a folder nor a file, or
    a key or certificate file given for the media cannot be used (the message names it)."""


class IntegrityError(MediaError):
    """A Secure DICOM File whose ciphertext or digest does not verify; the message names it."""


class MalformedFileError(MediaError):
    """A file that is not a CMS EnvelopedData, or is truncated or damaged; the message names it."""


class UnsupportedMediaError(MediaError):
    """A CMS structure or algorithm this reader does not implement (the message says which)."""


class AuditError(PacsError):
    """The audit trail cannot record (its local store fails); new work should be refused."""
