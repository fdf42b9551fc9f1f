"""Benchmarks of securepacs against DCMTK and OpenSSL (not part of the package)."""
