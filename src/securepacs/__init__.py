"""securepacs: a secure PACS for the cloud era.

DICOM archive over mutual TLS (PS3.15 Annex B), its own certificate authority,
and encrypted DICOM media (PS3.15 Annex D.1).
"""

__version__ = "0.1.0"

#: Implementation Version Name (PS3.7 D.3.3.2, PS3.10 7.1): at most 16 characters.
IMPLEMENTATION_VERSION = f"SECUREPACS_{__version__}"[:16]

#: The well-known port of DICOM over TLS (PS3.15 B.1), the server's and the client's default.
DICOM_TLS_PORT = 2762
