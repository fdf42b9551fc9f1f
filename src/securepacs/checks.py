"""What ``securepacs db migrate`` and ``securepacs check`` run: composition for operators.

Like :mod:`securepacs.wiring`, this is a composition root (settings -> index, blobs, pki)
that only entry points import. :func:`run_checks` never raises for a failing check: each
check gives one :class:`Check` line, so an operator sees every problem at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from securepacs.errors import PacsError
from securepacs.index import migrate as migrations
from securepacs.pki.pemfiles import load_certificates
from securepacs.settings import Settings


@dataclass(frozen=True)
class Check:
    """One check's result: its name, whether it passed, one line of detail."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def migrate(settings: Settings) -> migrations.Upgraded:
    """Bring the index database (index, trust and audit tables) to the newest revision."""
    return migrations.upgrade(settings.index_url,
                              default_organisation=settings.default_organisation)


def run_checks(settings: Settings, *, at: datetime) -> list[Check]:
    """Database reachable, schema at the newest revision, blob store reachable, the
    server certificate and CA bundle valid at `at` and not expiring within
    ``settings.expiry_warning_days``, nothing in the data folder open to other users."""
    checks = _database(settings)
    checks.append(_blobs(settings))
    within = timedelta(days=settings.expiry_warning_days)
    checks.append(_certificates("server certificate", settings.server_cert_path, at, within))
    checks.append(_certificates("CA bundle", settings.ca_bundle_path, at, within))
    checks.append(_modes(settings))
    return checks


def _modes(settings: Settings) -> Check:
    from securepacs.datafolder import loose_modes

    extra = [settings.blob_root] if settings.blob_backend == "filesystem" else []
    loose = loose_modes(settings.data_dir, extra=extra)
    if not loose:
        return Check("data folder modes", True, f"{settings.data_dir}: private to this user")
    more = f" (and {len(loose) - 1} more)" if len(loose) > 1 else ""
    return Check("data folder modes", False, f"{loose[0]}{more}; to fix all: chmod -R go-rwx "
                                             f"{settings.data_dir}")


def _database(settings: Settings) -> list[Check]:
    where = migrations.safe_url(settings.index_url)
    try:
        state = migrations.status(settings.index_url)
    except PacsError as exc:
        return [Check("database", False, str(exc)),
                Check("schema", False, "not checked: the database cannot be reached")]
    return [Check("database", True, f"reachable at {where}"),
            Check("schema", state.ok, state.message)]


def _blobs(settings: Settings) -> Check:
    if settings.blob_backend == "filesystem":
        root = settings.blob_root
        if not root.is_dir():
            return Check("blob store", False, f"folder {root} does not exist")
        if not os.access(root, os.W_OK | os.X_OK):
            return Check("blob store", False, f"folder {root} is not writable")
        return Check("blob store", True, f"folder {root}")
    from securepacs.wiring import blob_store

    try:
        store = blob_store(settings)
        probe = getattr(store, "probe", None)
        detail = probe() if probe is not None else type(store).__name__
    except PacsError as exc:
        return Check("blob store", False, str(exc))
    return Check("blob store", True, detail)


def _certificates(name: str, path: Path, at: datetime, within: timedelta) -> Check:
    try:
        certs = load_certificates(path)
    except (PacsError, OSError, ValueError) as exc:
        return Check(name, False, str(exc))
    if not certs:
        return Check(name, False, f"no certificate in {path}")
    soonest = min(certs, key=lambda c: c.not_valid_after_utc)
    ends = soonest.not_valid_after_utc
    subject = soonest.subject.rfc4514_string()
    if any(c.not_valid_before_utc > at for c in certs):
        return Check(name, False, f"{path}: not yet valid")
    if ends <= at:
        return Check(name, False, f"{subject} expired on {ends.date()}")
    if ends - at <= within:
        return Check(name, False, f"{subject} expires on {ends.date()} "
                                  f"(within {within.days} days): renew it")
    return Check(name, True, f"{subject} valid until {ends.date()}")
