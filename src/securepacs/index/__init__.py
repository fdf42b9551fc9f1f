"""The index of stored instances: patient / study / series / instance rows in SQL.

SQLAlchemy lives here and nowhere else. :mod:`.schema` declares the tables, :mod:`.engine`
opens SQLite (default) or PostgreSQL, :mod:`.sqlfilter` turns C-FIND matchers into SQL
pre-filters, and :class:`.repository.SqlIndex` is what the services use.
"""
