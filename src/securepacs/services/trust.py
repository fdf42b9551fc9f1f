"""Who may connect, decided per connection from the trust store, kept fresh while serving.

:class:`StoreTrust` holds a snapshot of the trust store and reloads it when the store's
version moves (polled; every instance sharing the database converges within one poll
interval). Every TLS connection is checked here after the handshake: a revoked or
unknown certificate is refused even when OpenSSL resumed a session, because the check
runs on the certificate of every connection, not on the handshake's outcome.
:class:`FileTrust` is the policy when TLS files are configured by hand: a certificate
that chains to the configured CA bundle is admitted with every permission.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from securepacs.errors import AccessRefused, CertificateRevoked, PacsError
from securepacs.model.identity import ALL_PERMISSIONS, Identity
from securepacs.model.trust import CertificateRecord, TrustSnapshot
from securepacs.services.authority import TrustPort

log = logging.getLogger(__name__)

PLAIN_IDENTITY = Identity(name="plain-tcp", serial=0, group="plain", permissions=ALL_PERMISSIONS)


class Gatekeeper(Protocol):
    def admit(self, *, serial: int, fingerprint: str, name: str,
              organization: str | None) -> Identity: ...

    def revoked(self) -> set[int]: ...


class FileTrust:
    """Any certificate that chains to the configured CA: every permission, any AE title."""

    def admit(self, *, serial: int, fingerprint: str, name: str,
              organization: str | None) -> Identity:
        return Identity(name=name, serial=serial, organization=organization)

    def revoked(self) -> set[int]:
        return set()

    def refresh(self) -> bool:
        return False


class StoreTrust:
    """Admission from the trust store, reloaded when the store's version moves."""

    def __init__(self, store: TrustPort) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._snapshot: TrustSnapshot = store.snapshot()

    @property
    def version(self) -> int:
        return self._snapshot.version

    def refresh(self) -> bool:
        """Reload if the store changed; True when it did."""
        version = self._store.version()
        if version == self._snapshot.version:
            return False
        snapshot = self._store.snapshot()
        with self._lock:
            self._snapshot = snapshot
        return True

    def _record(self, serial: int) -> CertificateRecord | None:
        record = self._snapshot.certificates.get(serial)
        if record is None:  # issued since the last poll (e.g. enrolled on another instance)
            record = self._store.certificate(serial)
        return record

    def admit(self, *, serial: int, fingerprint: str, name: str,
              organization: str | None) -> Identity:
        """The identity of a verified peer certificate.

        Raises
        ------
        AccessRefused
            Unknown to the trust store, revoked, or not the certificate that was issued.
        """
        record = self._record(serial)
        if record is None:
            raise AccessRefused(f"certificate {name!r} (serial {serial:x}) is not in the trust "
                                "store (not issued by this CA's tools)")
        if record.fingerprint != fingerprint:
            raise AccessRefused(f"certificate {name!r} (serial {serial:x}) does not match the "
                                "one the trust store recorded")
        if record.is_revoked:
            when = record.revoked_at.date().isoformat() if record.revoked_at else "?"
            raise CertificateRevoked(f"certificate {name!r} (serial {serial:x}) was revoked on "
                                f"{when} ({record.revocation_reason or 'unspecified'})")
        group = self._snapshot.groups.get(record.group or "")
        if group is None and record.group:
            group = self._store.group(record.group)
        permissions = group.permissions if group is not None else frozenset()
        return Identity(name=record.name, serial=serial, organization=record.organization,
                        group=record.group, permissions=permissions, ae_titles=record.ae_titles)

    def revoked(self) -> set[int]:
        return {s for s, r in self._snapshot.certificates.items() if r.is_revoked}

    def expiring(self, *, at: datetime, within: timedelta) -> list[CertificateRecord]:
        """Valid certificates whose validity ends within `within` of `at`."""
        return [r for r in self._snapshot.certificates.values()
                if not r.is_revoked and at <= r.not_after <= at + within]


class PeerPin:
    """The identity a peer we call must present (a C-MOVE destination's ``identity``).

    Checked on the certificate of every connection to that destination, after the TLS
    handshake verified it against the CA: the certificate must be the one the trust store
    issued under that name (same serial and fingerprint, not revoked), so another
    certificate from the same CA, or a revoked one, is refused. With :class:`FileTrust`
    (TLS files configured by hand) only the subject CN can be compared.

    Parameters
    ----------
    gatekeeper : Gatekeeper
        The trust policy that admits callers (:class:`StoreTrust` or :class:`FileTrust`).
    identity : str
        The certificate name (CN) the peer must present.
    """

    def __init__(self, gatekeeper: Gatekeeper, identity: str) -> None:
        self._gatekeeper = gatekeeper
        self.identity = identity

    def check(self, *, serial: int, fingerprint: str, name: str,
              organization: str | None) -> None:
        """Return if the presented certificate is the pinned identity.

        Raises
        ------
        AccessRefused
            Another identity, unknown to the trust store, revoked, or not as issued.
        """
        admitted = self._gatekeeper.admit(serial=serial, fingerprint=fingerprint, name=name,
                                          organization=organization)
        if admitted.name != self.identity:
            raise AccessRefused(f"the peer presented the certificate of {admitted.name!r} "
                                f"(serial {serial:x}), not the pinned identity "
                                f"{self.identity!r}")


class TrustMonitor:
    """A background thread that polls the trust store and reacts to changes.

    Parameters
    ----------
    trust : StoreTrust or FileTrust
    on_change : callable
        Called (with the set of revoked serials) after every reload.
    interval : float
        Seconds between polls.
    """

    def __init__(self, trust: StoreTrust | FileTrust, on_change: Callable[[set[int]], None],
                 *, interval: float = 1.0, extra: Callable[[], object] | None = None) -> None:
        self._trust = trust
        self._on_change = on_change
        self._extra = extra
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trust-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if self._trust.refresh():
                    self._on_change(self._trust.revoked())
                if self._extra is not None:
                    self._extra()
            except PacsError as exc:
                log.error("trust store poll failed: %s", exc)
            except Exception:  # noqa: BLE001 - the monitor must survive anything
                log.exception("trust monitor error")
