"""Schema migrations of the index database with Alembic, and the operator's checks on it.

The revisions live in :mod:`securepacs.index.migrations`. :func:`upgrade` brings a
database to the newest revision: an empty database gets every table; a database whose
tables were made by :meth:`SqlIndex.create_schema` / :meth:`SqlTrustStore.create_schema`
(which ``serve`` runs, and which match revision ``0001``) is stamped as ``0001`` first,
then upgraded; later revisions skip tables such a schema may already have (``0002``: the
audit tables, which the audit store creates itself). The whole upgrade is one transaction,
and concurrent runs queue: on PostgreSQL on a transaction-level advisory lock, on SQLite on
the write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from securepacs.errors import ConfigError, StorageError
from securepacs.index.engine import make_engine
from securepacs.index.schema import SCHEMA_VERSION

_SCRIPTS = Path(__file__).with_name("migrations")
#: The revision whose tables ``create_schema`` makes (schema_version 1).
BASELINE = "0001"
#: Key of the PostgreSQL advisory lock held while migrating ("spacsmig").
_LOCK = 0x737061637363_6D


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def head() -> str:
    """The newest revision this program knows."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "(invalid URL)"


def _engine(url: str) -> sa.Engine:
    try:
        return make_engine(url)
    except sa_exc.ArgumentError:
        raise ConfigError("invalid index database URL") from None
    except ImportError as exc:
        raise ConfigError(f"index database driver not installed: {exc}") from exc


@dataclass(frozen=True)
class Upgraded:
    """What :func:`upgrade` did: the revision before (None: none), after, and if it stamped."""

    before: str | None
    after: str
    stamped: bool


def upgrade(url: str, *, default_organisation: str = "default") -> Upgraded:
    """Bring the database at `url` to the newest revision (idempotent).

    `default_organisation` owns the instances indexed before organisations were tenants
    (revision ``0004``).

    Raises
    ------
    securepacs.errors.ConfigError
        Bad URL or missing driver.
    securepacs.errors.StorageError
        The database cannot be reached, or holds a schema this program does not know.
    """
    engine = _engine(url)
    try:
        with engine.connect() as conn, _foreign_keys_off(conn), conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            stamped = False
            cfg = _config()
            cfg.attributes["connection"] = conn
            cfg.attributes["default_organisation"] = default_organisation
            if before is None and sa.inspect(conn).has_table("schema_version"):
                versions = conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
                if list(versions) not in ([1], [SCHEMA_VERSION]):
                    raise StorageError(f"index schema version {versions}, expected 1 or "
                                       f"{SCHEMA_VERSION} before migrations: not stamping")
                # version 1: create_schema's tables of revision 0001; version 2 has what
                # 0004 adds too, which 0004 then finds in place (as 0002 the audit tables)
                command.stamp(cfg, BASELINE)
                stamped = True
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    except sa_exc.SQLAlchemyError as exc:
        raise StorageError(f"migration failed on {safe_url(url)}: {_line(exc)}") from exc
    finally:
        engine.dispose()
    assert after is not None
    return Upgraded(before, after, stamped)


@contextmanager
def _foreign_keys_off(conn: sa.Connection) -> Iterator[None]:
    """SQLite: foreign keys off around the migration (set outside the transaction, where
    the pragma takes effect), since a batch migration recreates a referenced table
    (https://www.sqlite.org/lang_altertable.html#otheralter); checked again afterwards."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise StorageError(f"migration left {len(broken)} broken reference(s)")
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


@dataclass(frozen=True)
class SchemaStatus:
    """The state of a database's schema, for ``securepacs check``."""

    ok: bool
    message: str


def status(url: str) -> SchemaStatus:
    """Connect, and tell whether the schema is at the newest revision.

    Raises
    ------
    securepacs.errors.ConfigError
        Bad URL or missing driver.
    securepacs.errors.StorageError
        The database cannot be reached, or (SQLite) its file does not exist: a check never
        creates one.
    """
    missing = _missing_sqlite_file(url)
    if missing is not None:
        raise StorageError(f"no index database at {missing} (nothing created: on a client "
                           "machine that is expected; on a server, `securepacs serve` or "
                           "`securepacs db migrate` creates it)")
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
            has_tables = sa.inspect(conn).has_table("schema_version")
            versions = (conn.execute(sa.text("SELECT version FROM schema_version")).scalars().all()
                        if has_tables else [])
    except sa_exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot reach {safe_url(url)}: {_line(exc)}") from exc
    finally:
        engine.dispose()
    newest = head()
    if current == newest:
        return SchemaStatus(True, f"revision {current} (newest)")
    if current is not None:
        return SchemaStatus(False, f"revision {current}, this program needs {newest}: "
                                   "run `securepacs db migrate`")
    if not has_tables:
        return SchemaStatus(False, "no schema: run `securepacs db migrate`")
    if list(versions) == [1]:
        return SchemaStatus(False, "schema version 1 made by an older serve: run `securepacs "
                                   "db migrate` (organisations become tenants, revision 0004)")
    if list(versions) == [SCHEMA_VERSION]:  # serve's create_all made every table it uses
        return SchemaStatus(True, f"schema version {SCHEMA_VERSION} made by serve, complete; not "
                                  "yet stamped for migrations: nothing to do now, run `securepacs "
                                  "db migrate` once before upgrading securepacs (it only stamps)")
    return SchemaStatus(False, f"schema version {list(versions)} not under migration control: "
                               "run `securepacs db migrate`")


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist (connecting would create it)."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") \
            or database.startswith("file:"):
        return None
    path = Path(database)
    return None if path.exists() else path


def _line(exc: sa_exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
