"""securepacs: a secure PACS for the cloud era.

DICOM archive over mutual TLS (PS3.15 Annex B), its own certificate authority,
and encrypted DICOM media (PS3.15 Annex D.1).
"""

__version__ = "0.1.0"
