"""Alembic environment: migrate the connection handed over by :mod:`securepacs.index.migrate`."""

from __future__ import annotations

from alembic import context

import securepacs.index.audit  # noqa: F401 - registers the audit tables on the metadata
import securepacs.index.trust  # noqa: F401 - registers the trust tables on the metadata
from securepacs.index.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline SQL generation is not offered
    raise RuntimeError("run migrations through `securepacs db migrate`")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
