"""Alembic migrations of the index database (index, trust and audit tables).

Run by :func:`securepacs.index.migrate.upgrade` (``securepacs db migrate``); ``env.py``
takes the open connection from the Alembic config, so no URL is ever written to a file.
"""
