"""DICOM audit trail (PS3.15 A.5 messages; RFC 5424 / RFC 5425 syslog transport).

``record`` and ``messages`` build pure audit records, ``serialize`` writes them as the DICOM
audit message XML or JSON, ``sinks``, ``syslog`` and ``trail`` deliver them. Only ``errors``,
``model`` and ``settings`` of the package are imported here; the database table lives in
:mod:`securepacs.index.audit` and the TLS context comes from :mod:`securepacs.pki.tlspolicy`,
both joined in :mod:`securepacs.wiring`.
"""
