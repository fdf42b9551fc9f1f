"""Encrypted DICOM media: Secure DICOM Files and secure file-sets (PS3.10 7.4, PS3.15 D.1).

- :mod:`~securepacs.media.cms` seals and opens one CMS EnvelopedData (RFC 5652), bytes in/out;
- :mod:`~securepacs.media.pwri` derives password keys (RFC 8018) and wraps content keys (RFC 3211);
- :mod:`~securepacs.media.ciphers` the CBC ciphers (AES, Triple-DES) by algorithm identifier;
- :mod:`~securepacs.media.passwords` the password rules and passphrase generator;
- :mod:`~securepacs.media.fileset` the secure file-set: file IDs, DICOMDIR, README (PS3.10 8, 9);
- :mod:`~securepacs.media.image` an ISO 9660 image of a file-set (PS3.12).

Certificates and keys arrive as arguments; nothing here imports the PKI package.
"""
