"""The index of stored instances: patient / study / series / instance rows in SQL (PS3.4 C.6).

SQLAlchemy lives here and nowhere else. :mod:`.schema` declares the tables, :mod:`.engine`
opens SQLite (default) or PostgreSQL, :mod:`.sqlfilter` turns C-FIND matchers into SQL
pre-filters, :mod:`.lookup` runs C-FIND on the tables, and :class:`.repository.SqlIndex`
is what the services use (its add path in :mod:`.filing` and :mod:`.rowwriter`, its
read side in :mod:`.stored`, its database errors in :mod:`.sqlerrors`).
"""
