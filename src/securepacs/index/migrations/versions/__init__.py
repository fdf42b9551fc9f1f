"""Alembic revisions, oldest first; each revision's docstring says what it changes."""
