"""Certificates, keys and the TLS policy for DICOM secure transport (PS3.15 Annex B)."""
