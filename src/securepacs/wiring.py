"""Composition root: settings -> concrete objects. Only entry points (cli) import this."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from securepacs.errors import ConfigError, PacsError

# Each function imports what it wires, so that a command pays only for its own part of
# the system at start-up (``securepacs send`` needs neither SQLAlchemy nor the web server).
if TYPE_CHECKING:
    from securepacs.audit.trail import AuditTrail
    from securepacs.dimse.client import DicomClient
    from securepacs.dimse.server import DicomServer
    from securepacs.index.repository import SqlIndex
    from securepacs.pki import authority
    from securepacs.services.audit_events import AdminAudit, AuditEvents, BackupAudit, MediaAudit
    from securepacs.services.authority import CertificateAuthority
    from securepacs.services.deletion import DeletionService
    from securepacs.services.ingest import SweepReport
    from securepacs.services.ports import BlobPort
    from securepacs.services.trust import FileTrust, StoreTrust, TrustMonitor
    from securepacs.settings import Settings
    from securepacs.web.archive import ArchiveViewerServer
    from securepacs.web.dicomweb.listener import DicomwebServer
    from securepacs.web.enrolment import EnrolmentServer



class _Log:
    """This module's logger, with :mod:`logging` imported on first use: the client commands
    (``securepacs send``) wire their part through here and never log."""

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger(__name__), name)


log = _Log()
P = ParamSpec("P")
T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def local_hostnames() -> list[str]:
    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    return sorted(n for n in names if n)


def certificate_authority(settings: Settings, passphrase: bytes | None = None
                          ) -> CertificateAuthority:
    """The data folder's CA over the index database's trust store."""
    from securepacs.index.trust import SqlTrustStore
    from securepacs.services.authority import CertificateAuthority

    store = SqlTrustStore(settings.index_url)
    store.create_schema()
    return CertificateAuthority(store, settings.pki_dir, passphrase=passphrase)


@dataclass
class TlsFiles:
    """Rebuilds the server's TLS context when its certificate, key or CA bundle change."""

    settings: Settings
    server: DicomServer | None = None
    _stamp: tuple[float, ...] = field(default=(), init=False)

    def _mtimes(self) -> tuple[float, ...]:
        s = self.settings
        out = []
        for p in (s.server_cert_path, s.server_key_path, s.ca_bundle_path):
            try:
                out.append(p.stat().st_mtime)
            except OSError:
                out.append(-1.0)
        return tuple(out)

    enrolment: EnrolmentServer | None = None
    viewer: ArchiveViewerServer | None = None
    dicomweb: DicomwebServer | None = None

    def context(self, require_client_cert: bool = True,  # noqa: ANN201 - ssl.SSLContext
                optional_client_cert: bool = False):
        from securepacs.pki import tlspolicy

        self._stamp = self._mtimes()
        s = self.settings
        return tlspolicy.server_context(s.server_cert_path, s.server_key_path, s.ca_bundle_path,
                                        require_client_cert=require_client_cert,
                                        optional_client_cert=optional_client_cert)

    def reload_if_changed(self, force: bool = False) -> bool:
        """New connections get the new files; running associations finish unchanged."""
        from securepacs.pki import authority

        if self.server is None or (not force and self._mtimes() == self._stamp):
            return False
        try:
            context = self.context()
        except PacsError as exc:  # half-replaced files: keep serving with the old ones
            log.error("TLS files changed but cannot be loaded yet, keeping the old ones: %s", exc)
            return False
        self.server.set_tls_context(context)
        if self.enrolment is not None:
            self.enrolment.tls_context = self.context(require_client_cert=False)
        if self.viewer is not None:
            self.viewer.tls_context = context
        if self.dicomweb is not None:
            self.dicomweb.tls_context = self.context(require_client_cert=False,
                                                     optional_client_cert=True)
        cert = authority.load_certificates(self.settings.server_cert_path)[0]
        log.warning("TLS files reloaded: server certificate serial %x, valid until %s",
                    cert.serial_number, cert.not_valid_after_utc.date())
        return True


@dataclass
class Archive:
    """Everything `serve` runs, wired from one settings object."""

    settings: Settings
    index: SqlIndex
    blobs: BlobPort
    server: DicomServer
    bootstrap: authority.BootstrapResult | None
    sweep: SweepReport
    trust: StoreTrust | FileTrust
    monitor: TrustMonitor
    tls_files: TlsFiles
    enrolment: EnrolmentServer | None = None
    viewer: ArchiveViewerServer | None = None
    audit: AuditEvents | None = None
    dicomweb: DicomwebServer | None = None
    #: Closes what else the archive opened (the deletion index's connection pool).
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Dispose of the database connection pools: the index's and the others'."""
        for close in self.closers:
            close()
        self.index.close()

    def warn_expiring(self, at: datetime) -> None:
        from securepacs.pki import authority
        from securepacs.services.trust import StoreTrust

        within = timedelta(days=self.settings.expiry_warning_days)
        if isinstance(self.trust, StoreTrust):
            for record in self.trust.expiring(at=at, within=within):
                log.warning("certificate %s (serial %x, %s) expires on %s", record.name,
                            record.serial, record.kind, record.not_after.date())
        cert = authority.load_certificates(self.settings.server_cert_path)[0]
        if cert.not_valid_after_utc - at <= within:
            log.warning("this server's certificate expires on %s: renew it "
                        "(`securepacs ca renew`), it is reloaded without a restart",
                        cert.not_valid_after_utc.date())


def warn_loose_modes(settings: Settings) -> None:
    """Log a warning for each entry of the data folder other local users can open."""
    from securepacs.datafolder import loose_modes

    extra = [settings.blob_root] if settings.blob_backend == "filesystem" else []
    loose = loose_modes(settings.data_dir, extra=extra)
    for line in loose[:10]:
        log.warning("data folder: %s", line)
    if len(loose) > 10:
        log.warning("data folder: %d more entries open to other users (chmod -R go-rwx %s)",
                    len(loose) - 10, settings.data_dir)


@dataclass
class StartUp:
    """What :func:`start_up` made: the stores, the audit trail, the CA (if ours)."""

    audit_trail: AuditTrail
    bootstrap: authority.BootstrapResult | None
    ca: CertificateAuthority | None
    index: SqlIndex
    blobs: BlobPort
    sweep: SweepReport


def start_up(settings: Settings, *, worker: bool = False) -> StartUp:
    """The start-up steps that write shared state, safe when N instances run them at once
    on one database: the audit tables, the CA's bootstrap files and trust store records,
    the index schema and the orphan sweep (none for a worker process), one instance after
    another under the database's start-up lock (:mod:`securepacs.index.startup`), each
    step idempotent.

    Raises
    ------
    PacsError
        A step failed (ConfigError, StorageError, PkiError), with a one-line message.
    """
    from securepacs.index.repository import SqlIndex
    from securepacs.index.startup import startup_lock
    from securepacs.services.ingest import SweepReport, sweep_orphans

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with startup_lock(settings.index_url):
        trail = build_audit_trail(settings)
        boot = None
        ca = None
        if settings.uses_default_pki or settings.trust_from_index:
            secret = os.environ.get("SECUREPACS_CA_PASSPHRASE")
            ca = certificate_authority(settings, secret.encode() if secret else None)
            if settings.uses_default_pki:
                hostnames = [*local_hostnames(), *settings.hostnames]
                boot = ca.bootstrap_server(hostnames=hostnames, at=now())
        index = SqlIndex(settings.index_url)
        index.create_schema()
        blobs = blob_store(settings)
        if worker:
            sweep = SweepReport(0, 0)
        else:
            from securepacs.index.deletion import SqlDeletion
            from securepacs.services.trash import KeepTrash

            trash = SqlDeletion(settings.index_url)
            try:  # a blob in the trash has no row but is no orphan
                sweep = sweep_orphans(KeepTrash(index, trash), blobs,  # type: ignore[arg-type]
                                      grace_seconds=settings.orphan_grace_seconds)
            finally:
                trash.close()
            finish_deletions(settings, blobs, trail)
    return StartUp(trail, boot, ca, index, blobs, sweep)


def finish_deletions(settings: Settings, blobs: BlobPort, trail: AuditTrail) -> None:
    """The start-up sweep of deletions a stop interrupted (services.deletion.sweep_deleted)
    and the purge of the trash entries whose time is over (services.trash)."""
    from securepacs.index.deletion import SqlDeletion
    from securepacs.services.audit_events import AuditEvents
    from securepacs.services.deletion import sweep_deleted
    from securepacs.services.trash import purge_expired

    index = SqlDeletion(settings.index_url)
    try:
        sweep_deleted(index, blobs)
        purge_expired(index, blobs, AuditEvents(trail, ae_title=settings.ae_title,
                                                address=socket.getfqdn()), now=now())
    finally:
        index.close()


def trash_purge(deletion: DeletionService):  # noqa: ANN201
    """The periodic purge of expired trash entries (services.trash.PeriodicPurge) that the
    serving process runs from its trust-poll loop, on `deletion`'s index and blobs."""
    from securepacs.services.trash import PeriodicPurge, purge_expired

    return PeriodicPurge(lambda: purge_expired(deletion.index, deletion.blobs,  # type: ignore[arg-type]
                                               deletion.audit, now=now()))


def deletion_service(settings: Settings, blobs: BlobPort, audit: AuditEvents):  # noqa: ANN201
    """The deletion service (services.deletion.DeletionService) on the settings' index,
    with the trash of ``trash_days``. Returns (service, close); close disposes of its
    database connection pool."""
    from securepacs.index.deletion import SqlDeletion
    from securepacs.services.deletion import DeletionService
    from securepacs.services.trash import purge_expired

    index = SqlDeletion(settings.index_url)

    def purge() -> None:
        purge_expired(index, blobs, audit, now=now())

    return DeletionService(index, blobs, make_tenancy(settings), audit,
                           trash_days=settings.trash_days, purge=purge), index.close


def trash_restorer(settings: Settings):  # noqa: ANN201
    """``securepacs restore-deleted``: restore(user, study_uid, organization) -> Restored,
    on the data folder's index, blobs and audit trail. Returns (restore, close)."""
    from securepacs.index.deletion import SqlDeletion
    from securepacs.index.repository import SqlIndex
    from securepacs.services.trash import restore_study

    index = SqlIndex(settings.index_url)
    index.create_schema()
    trash = SqlDeletion(settings.index_url)
    blobs = blob_store(settings)
    audit, user = _local_audit(settings)

    def restore(study_uid: str, organization: str | None):  # noqa: ANN202
        return restore_study(trash, index, blobs, audit, user=user, study_uid=study_uid,  # type: ignore[arg-type]
                             organization=organization)

    def close() -> None:
        index.close()
        trash.close()
        audit.close()

    return restore, close


def operator_deletion(settings: Settings):  # noqa: ANN201
    """``securepacs delete --data-dir``: the deletion service on the data folder's index and
    blobs, audited as the local user. Returns (service, user, close)."""
    from securepacs.index.repository import SqlIndex

    index = SqlIndex(settings.index_url)
    try:
        index.create_schema()  # a data folder made by `ca init` has no index tables yet
    finally:
        index.close()
    audit, user = _local_audit(settings)
    service, close_index = deletion_service(settings, blob_store(settings), audit)

    def close() -> None:
        close_index()
        audit.close()

    return service, user, close


def remote_deletion(*, profile: Path | None, server: str | None, dicomweb: str | None,
                    cert: Path | None, key: Path | None, ca: Path | None, timeout: float):  # noqa: ANN201
    """``securepacs delete``: the client of the server's DICOMweb DELETE
    (services.deletion_client.RemoteDeletion). `dicomweb` is ``https://HOST:PORT[/base]``;
    default: the profile's server host, its DICOM port + 3, ``/dicomweb``.

    Raises
    ------
    ConfigError, PkiError
        A bad profile, flag or URL, or TLS files that cannot be used.
    """
    from urllib.parse import urlsplit

    from securepacs.clientprofile import load_profile, split_server
    from securepacs.pki import tlspolicy
    from securepacs.services.deletion_client import RemoteDeletion

    p = load_profile(profile).with_overrides(server=server, cert=cert, key=key, ca=ca)
    host, port = split_server(p.server)
    base = "/dicomweb"
    if dicomweb:
        parts = urlsplit(dicomweb.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(f"--dicomweb {dicomweb!r}: expected https://HOST:PORT/dicomweb")
        try:
            host, port = parts.hostname, parts.port or 443
        except ValueError:
            raise ConfigError(f"--dicomweb {dicomweb!r}: bad port") from None
        base = parts.path or base
    else:
        port += 3
    if p.ca is None:
        raise ConfigError("deleting needs the CA certificate that issued the server's "
                          "certificate: pass --ca FILE, or run securepacs enroll")
    if p.cert is None:
        raise ConfigError("deleting needs a client certificate: pass --cert and --key, or run "
                          "securepacs enroll")
    context = tlspolicy.client_context(p.ca, p.cert, p.key)
    return RemoteDeletion(host, port, base, context, timeout=timeout)


def make_tenancy(settings: Settings):  # noqa: ANN201 - services.tenancy.Tenancy
    """The tenant boundary: enforced when trust comes from the index (where identities
    carry organisations); with trust from files every caller sees everything."""
    from securepacs.services.tenancy import Tenancy

    return Tenancy(default_organisation=settings.default_organisation,
                   enforced=settings.trust_from_index)


def share_book(settings: Settings):  # noqa: ANN201 - services.tenancy.Shares
    """``securepacs share``: the shares in the index database's trust store, with the index
    to find a study's owner. Returns (shares, close)."""
    from securepacs.index.repository import SqlIndex
    from securepacs.index.trust import SqlTrustStore
    from securepacs.services.tenancy import Shares

    index = SqlIndex(settings.index_url)
    index.create_schema()
    store = SqlTrustStore(settings.index_url)
    store.create_schema()

    def close() -> None:
        index.close()
        store.close()

    return Shares(store, index), close


def build_archive(settings: Settings, *, inherited: Sequence[socket.socket] = ()) -> Archive:
    """Open the stores, run the start-up check, bind the listeners (not yet serving).

    With `inherited` listening sockets this is a worker process (``workers`` setting): it
    accepts DICOM associations on its parent's sockets and runs no start-up check, no
    enrolment and no viewer (the parent does)."""
    from securepacs.dimse.handlers import Destination, Handlers
    from securepacs.dimse.server import Limits, make_server
    from securepacs.pki import tlspolicy
    from securepacs.services.audit_events import AuditEvents
    from securepacs.services.ingest import IngestService
    from securepacs.services.query import QueryService, RetrieveService
    from securepacs.services.trust import FileTrust, PeerPin, StoreTrust, TrustMonitor
    from securepacs.web.enrolment import EnrolmentServer

    worker = bool(inherited)
    up = start_up(settings, worker=worker)
    if not worker:
        warn_loose_modes(settings)
    audit = AuditEvents(up.audit_trail, ae_title=settings.ae_title, address=socket.getfqdn())
    boot, ca, index, blobs, sweep = up.bootstrap, up.ca, up.index, up.blobs, up.sweep
    trust: StoreTrust | FileTrust = FileTrust()
    if ca is not None and settings.trust_from_index:
        trust = StoreTrust(ca.store)  # type: ignore[arg-type]

    move_tls = tlspolicy.client_context(
        settings.ca_bundle_path, settings.server_cert_path, settings.server_key_path)

    def destination(ae_title: str) -> Destination | None:
        dest = settings.destination(ae_title)
        if dest is None:
            return None
        pin = PeerPin(trust, dest.identity) if dest.tls and dest.identity else None
        return Destination(dest.ae_title, dest.host, dest.port, move_tls if dest.tls else None,
                           pin.check if pin is not None else None)

    tenancy = make_tenancy(settings)
    handlers = Handlers(
        ingest=IngestService(index, blobs, replace_duplicates=settings.replace_duplicates,
                             default_organisation=settings.default_organisation),
        query=QueryService(index, ae_title=settings.ae_title,
                           max_results=settings.max_find_results, blobs=blobs),
        retrieve=RetrieveService(index, blobs),
        destinations=destination,
        max_pdu=settings.max_pdu,
        tenancy=tenancy,
    )
    tls_files = TlsFiles(settings)
    dicom_ports = f"{settings.port}" + (f" (plain {settings.plain_port})"
                                        if settings.plain_port is not None else "")
    server = _listening("DICOM", settings.host, dicom_ports)(make_server)(
        ae_title=settings.ae_title,
        handlers=handlers,
        host=settings.host,
        port=settings.port,
        tls_context=tls_files.context(),
        plain_port=settings.plain_port,
        max_pdu=settings.max_pdu,
        network_timeout=settings.network_timeout,
        acse_timeout=settings.acse_timeout,
        dimse_timeout=settings.dimse_timeout,
        handshake_timeout=settings.handshake_timeout,
        gatekeeper=trust,
        audit=audit,
        inherited=inherited,
        limits=Limits(
            max_associations=settings.max_associations,
            max_associations_per_identity=settings.max_associations_per_identity,
            max_association_request=settings.max_association_request,
            max_command_set=settings.max_command_set, max_identifier=settings.max_identifier,
            inflight_memory=settings.inflight_memory,
            accept_any_called_ae=settings.accept_any_called_ae),
        accept_compressed=settings.accept_compressed,
        accept_unknown_storage=settings.accept_unknown_storage,
    )
    tls_files.server = server
    enrolment = None
    if (ca is not None and ca.exists and settings.trust_from_index and settings.enroll_port != 0
            and not worker):
        enrolment = _listening("enrolment (enroll_port)", settings.host,
                               str(settings.enroll_port or settings.port + 1))(EnrolmentServer)(
            (settings.host, settings.enroll_port or settings.port + 1), ca,
            tls_files.context(require_client_cert=False), ae_title=settings.ae_title, clock=now,
            handshake_timeout=settings.handshake_timeout, audit=audit)
        tls_files.enrolment = enrolment

    def on_change(revoked: set[int]) -> None:
        log.info("trust store changed (version %s)", getattr(trust, "version", "?"))
        server.close_revoked(revoked)

    closers: list[Callable[[], None]] = []
    if ca is not None and hasattr(ca.store, "close"):  # the trust store's pool
        closers.append(ca.store.close)
    deletion = None
    if not worker:  # one deletion index (one pool) for DICOMweb, the viewer and the purge
        deletion, close_deletion = deletion_service(settings, blobs, audit)
        closers.append(close_deletion)
    purge_trash = None if deletion is None else trash_purge(deletion)

    def periodic() -> None:
        tls_files.reload_if_changed()
        if purge_trash is not None:  # at most every PURGE_EVERY seconds
            purge_trash()

    monitor = TrustMonitor(trust, on_change, interval=settings.trust_poll_seconds,
                           extra=periodic)
    viewer = None
    if settings.viewer_port != 0 and not worker:
        try:
            viewer = tls_files.viewer = archive_viewer(settings, index, blobs,
                                                       tls_files.context(), trust, audit,
                                                       deletion=deletion)
        except ConfigError as exc:
            if settings.viewer_port is not None:  # asked for: a real error
                raise
            log.warning("no archive viewer (set viewer_port, 0 to disable): %s", exc)
    dicomweb = None
    if settings.dicomweb_port != 0 and not worker:
        try:
            dicomweb = tls_files.dicomweb = dicomweb_server(
                settings, handlers.ingest, handlers.query, handlers.retrieve,
                tls_files.context(require_client_cert=False, optional_client_cert=True), trust,
                audit, ca.store if ca is not None and settings.trust_from_index else None,
                deletion=deletion)
        except ConfigError as exc:
            if settings.dicomweb_port is not None:  # asked for: a real error
                raise
            log.warning("no DICOMweb (set dicomweb_port, 0 to disable): %s", exc)
    return Archive(settings, index, blobs, server, boot, sweep, trust, monitor, tls_files,
                   enrolment, viewer, audit, dicomweb, closers)


def _listening(what: str, host: str, ports: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Wrap a listener's constructor so that a failed bind names the listener and its port
    (not a bare ``[Errno 98] Address already in use``): :class:`ConfigError`."""
    def wrap(build: Callable[P, T]) -> Callable[P, T]:
        def bound(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return build(*args, **kwargs)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    reason = ("address already in use (another securepacs serve or another "
                              "program listens there: stop it, or choose another port)")
                elif exc.errno == errno.EACCES:
                    reason = "permission denied (ports below 1024 need privileges)"
                elif exc.errno == errno.EADDRNOTAVAIL:
                    reason = "no such address on this machine (check --host)"
                else:
                    reason = exc.strerror or str(exc)
                raise ConfigError(f"cannot listen for {what} on {host or '0.0.0.0'} port "
                                  f"{ports}: {reason}") from None
        return bound
    return wrap


__all__ = ["Archive", "StartUp", "build_archive", "start_up", "certificate_authority",
           "local_hostnames", "now", "Path"]


def study_archive(settings: Settings,  # noqa: ANN201 - services.media_create.RetrieveStudies
                  organisation: str | None = None):
    """The archive's studies, read only, for ``media create --study UID``: every
    organisation's, or what `organisation` may retrieve (``--org``, docs/tenants.md).

    Raises
    ------
    ConfigError
        The data folder holds no archive (no SQLite index or no blob folder).
    """
    from securepacs.errors import ConfigError
    from securepacs.index.repository import SqlIndex
    from securepacs.services.media_create import RetrieveStudies
    from securepacs.services.query import RetrieveService

    sqlite_file = settings.data_dir / "index.sqlite"
    if settings.database_url is None and not sqlite_file.is_file():
        raise ConfigError(f"no archive in {settings.data_dir} (no index.sqlite)")
    if settings.blob_backend == "filesystem" and not settings.blob_root.is_dir():
        raise ConfigError(f"no archive blob folder {settings.blob_root}")
    index = SqlIndex(settings.index_url)
    view = (make_tenancy(settings).of(organisation, retrieve=True)
            if organisation is not None else None)
    return RetrieveStudies(RetrieveService(index, blob_store(settings)), close=index.close,
                           visibility=view)


def blob_store(settings: Settings) -> BlobPort:
    """The blob store the settings select: a folder (default) or Azure Blob Storage.

    Raises
    ------
    ConfigError
        Unknown ``blob_backend``, or ``azure`` without a connection string or its SDK.
    StorageError
        The Azure container cannot be reached.
    """
    from securepacs.errors import ConfigError

    if settings.blob_backend == "filesystem":
        from securepacs.blobs.filesystem import FileBlobStore

        return FileBlobStore(settings.blob_root)
    if settings.blob_backend == "azure":
        from securepacs.blobs.azure import AzureBlobStore

        if not settings.azure_connection_string:
            raise ConfigError("blob_backend = \"azure\" needs azure_connection_string "
                              "(or SECUREPACS_AZURE_CONNECTION_STRING)")
        return AzureBlobStore(settings.azure_connection_string, settings.azure_container)
    raise ConfigError(f"blob_backend must be filesystem or azure, not {settings.blob_backend!r}")


def audit_log(settings: Settings):  # noqa: ANN201 - securepacs.index.audit.SqlAuditLog
    """The hash-chained audit table of the index database (created if missing)."""
    from securepacs.index.audit import SqlAuditLog

    log_ = SqlAuditLog(settings.index_url)
    log_.create_schema()
    return log_


def build_audit_trail(settings: Settings, *, hostname: str | None = None):  # noqa: ANN201
    """The audit trail of ``serve`` (a :class:`securepacs.audit.trail.AuditTrail`).

    Sinks: the audit table of the index database (always; the *required* store of the
    ``audit_required`` policy), a JSON-lines file (``audit_jsonl``) and a syslog collector over
    TLS (``audit_syslog = "host:port"``, CA ``audit_syslog_ca`` or ``tls_ca``; the server's
    certificate is presented when it exists; spool ``audit_spool_dir`` or
    ``<data_dir>/audit-spool``). AuditSourceID is the server's AE title.

    A :class:`securepacs.audit.checkpoint.CheckpointSink` writes signed checkpoints of the
    chain (``audit_checkpoint_seconds``, and when the trail closes) to the checkpoint file and
    the collector.

    Raises
    ------
    ConfigError
        ``audit_syslog`` is not ``host:port``.
    PkiError
        The collector's CA file (or our certificate) cannot be loaded, or the checkpoint key
        cannot be made or read.
    """
    from securepacs.audit.record import AuditSource
    from securepacs.audit.sinks import DatabaseSink, JsonLinesSink, Sink
    from securepacs.audit.syslog import DirectorySpool, SyslogSink
    from securepacs.audit.trail import AuditTrail
    from securepacs.errors import ConfigError
    from securepacs.pki import tlspolicy

    host, _, port_text = (settings.audit_syslog or "").rpartition(":")
    host = host.strip("[]")
    if settings.audit_syslog and (not host or not port_text.isdigit()
                                  or not 0 < int(port_text) < 65536):
        raise ConfigError(f"audit_syslog must be host:port, not {settings.audit_syslog!r}")
    database = DatabaseSink(audit_log(settings))
    sinks: list[Sink] = [database]
    if settings.audit_jsonl is not None:
        sinks.append(JsonLinesSink(settings.audit_jsonl))
    if settings.audit_syslog:
        port = int(port_text)
        cert = settings.server_cert_path if settings.server_cert_path.is_file() else None
        key = settings.server_key_path if cert is not None else None
        context = tlspolicy.client_context(settings.audit_syslog_ca or settings.ca_bundle_path,
                                           cert, key)
        timeout = settings.network_timeout

        def connect() -> tlspolicy.TlsStream:
            return tlspolicy.connect_tls(host, port, context, timeout=min(timeout, 10.0))

        spool = DirectorySpool(settings.audit_spool_dir or settings.data_dir / "audit-spool")
        sinks.append(SyslogSink(connect, spool, hostname=hostname or socket.getfqdn()))
    syslog = next((s for s in sinks if isinstance(s, SyslogSink)), None)
    # before the syslog sink: closing the trail spools the last checkpoint before it stops
    sinks.insert(len(sinks) - (syslog is not None), audit_checkpoints(
        settings, publish=syslog.emit_checkpoint if syslog is not None else None))
    return AuditTrail(sinks, required=database, audit_source=AuditSource(settings.ae_title),
                      audit_required=settings.audit_required,
                      queue_size=settings.audit_queue_size)


def audit_checkpoints(settings: Settings, *, publish: Callable[[str, datetime], None] | None = None,
                      interval: float | None = None):  # noqa: ANN201 - audit.checkpoint.CheckpointSink
    """Signed checkpoints of the audit chain (key made on first use; own database connection).

    Raises
    ------
    PkiError
        The checkpoint key cannot be made or read.
    """
    from securepacs.audit.checkpoint import CheckpointFile, CheckpointSink
    from securepacs.pki.checkpointkey import load_or_create_signer

    signer = load_or_create_signer(settings.checkpoint_key_path)
    chain = audit_log(settings)
    return CheckpointSink(chain, signer, CheckpointFile(settings.checkpoint_file_path),
                          source=settings.ae_title,
                          interval=settings.audit_checkpoint_seconds if interval is None
                          else interval, publish=publish, close_chain=chain.close)


def dicom_client(*, profile: Path | None, server: str | None, aec: str | None, aet: str | None,
             cert: Path | None, key: Path | None, ca: Path | None, no_tls: bool,
             timeout: float) -> DicomClient:
    """Flags over profile over defaults -> the DICOM client (SCU) for that endpoint.

    Raises
    ------
    ConfigError, PkiError
        A bad profile or flag, or TLS files that cannot be used (the message names them).
    """
    from securepacs.clientprofile import load_profile, split_server, valid_ae_title
    from securepacs.dimse.client import DicomClient, Endpoint
    from securepacs.pki import tlspolicy

    p = load_profile(profile).with_overrides(server=server, called_ae=aec, calling_ae=aet,
                                             cert=cert, key=key, ca=ca,
                                             tls=False if no_tls else None)
    host, port = split_server(p.server)
    called = valid_ae_title(p.called_ae, "--aec")
    calling = valid_ae_title(p.calling_ae, "--aet")
    context = None
    if p.tls:
        if p.ca is None:
            raise ConfigError("TLS needs the CA certificate that issued the server's "
                              "certificate: pass --ca FILE, or run securepacs enroll to write "
                              "a client profile (or --no-tls for a plain DICOM port)")
        if p.key is not None and p.cert is None:
            raise ConfigError("--key needs --cert")
        context = tlspolicy.client_context(p.ca, p.cert, p.key)
    return DicomClient(Endpoint(host, port, called, calling, context,
                                connect_timeout=min(timeout, 10.0), acse_timeout=timeout,
                                dimse_timeout=timeout, cert_file=p.cert, key_file=p.key))


@dataclass
class LocalViewer:
    """The media viewer app bound to a loopback socket, ready to run."""

    app: object
    sock: socket.socket
    token: str
    host: str
    path: str = "/"

    def run(self, ready: Callable[[int], None]) -> None:
        from securepacs.web import local

        local.run(self.app, self.sock, ready)  # type: ignore[arg-type]


def local_viewer(path: Path, *, port: int, connect: Callable[[], object],
                 destination: str) -> LocalViewer:
    """The viewer of ``securepacs view`` for `path`, bound to 127.0.0.1:`port` (0: any)."""
    from securepacs.web import local
    from securepacs.web.viewer import ViewerConfig, create_app

    config = ViewerConfig(path, connect=connect, destination=destination)  # type: ignore[arg-type]
    return LocalViewer(create_app(config), local.bind(port), config.token, local.HOST,
                       config.prefix + "/")


def archive_viewer(settings: Settings, index: SqlIndex, blobs: BlobPort, tls_context: object,
                   gatekeeper: StoreTrust | FileTrust, audit: AuditEvents | None = None, *,
                   deletion: DeletionService | None = None) -> ArchiveViewerServer:
    """The HTTPS image viewer of ``serve`` (bound, not yet serving) on ``viewer_port``.

    Default port: ``port + 2``. Client certificates are required (the DICOM server's TLS
    context) and admitted by the DICOM gatekeeper; viewing needs FIND and GET. With `audit`,
    logins and refusals are audited as for DICOM, and each series opened as a retrieve
    (DICOM Instances Transferred, Read) of its study by the viewing identity. With
    `deletion` (owned and closed by the caller), the caller's own studies can be deleted.

    Raises
    ------
    ConfigError
        The port cannot be bound.
    """
    from securepacs.model.identity import Identity
    from securepacs.services.archive_view import ArchiveCatalog
    from securepacs.services.media_view import StudyEntry
    from securepacs.web.archive import ArchiveViewerServer
    from securepacs.web.viewer import ViewerConfig, create_app

    port = settings.viewer_port if settings.viewer_port is not None else settings.port + 2
    catalog = ArchiveCatalog(index, blobs, name=f"{settings.ae_title} archive")

    def viewed(identity: Identity | None, address: str, study: StudyEntry) -> None:
        if audit is not None:
            audit.retrieved(identity, ae_title="", address=address, destination="",
                            patient_ids=[study.patient_id], study_uids=[study.uid], success=True)

    tenancy = make_tenancy(settings)

    def seen(identity: Identity | None, address: str, studies: list[StudyEntry],
             action: str) -> None:
        if audit is not None:  # one event per page naming the other organisations
            tenancy.audit_crossing(audit, identity, address=address, action=action,
                                   owned=[(s.organization, s.uid) for s in studies])

    app = create_app(ViewerConfig.for_archive(catalog, on_view=viewed,
                                              visibility=tenancy.view,
                                              deletion=deletion, on_seen=seen))
    try:
        return ArchiveViewerServer((settings.host, port), app, tls_context,
                                   gatekeeper=gatekeeper, audit=audit,
                                   handshake_timeout=settings.handshake_timeout)
    except (OSError, OverflowError) as exc:
        raise ConfigError(f"viewer_port: cannot listen on {settings.host}:{port}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def admin_audit(settings: Settings) -> AdminAudit:
    """Audit events of a ``ca`` command, into the data folder's audit trail, as the local user."""
    from securepacs.services.audit_events import AdminAudit

    events, user = _local_audit(settings)
    return AdminAudit(events, user=user)


def dicomweb_server(settings: Settings, ingest: object, query: object, retrieve: object,
                    tls_context: object, gatekeeper: StoreTrust | FileTrust,
                    audit: AuditEvents, token_store: object | None,
                    deletion: object | None = None) -> DicomwebServer:
    """The DICOMweb listener of ``serve`` (bound, not yet serving) on ``dicomweb_port``.

    Default port: ``port + 3``. Client certificates are admitted by the DICOM gatekeeper;
    QIDO-RS, WADO-RS and STOW-RS go through the DIMSE services (`ingest`, `query`,
    `retrieve`); import tokens are checked against `token_store` (None: not accepted).

    Raises
    ------
    ConfigError
        The port cannot be bound.
    """
    import re

    from securepacs.services.dicomweb_access import DicomwebAccess
    from securepacs.services.dicomweb_qido import QidoService
    from securepacs.services.dicomweb_stow import StowService
    from securepacs.services.dicomweb_wado import WadoService
    from securepacs.services.import_tokens import ImportTokens
    from securepacs.web.dicomweb.app import create_app
    from securepacs.web.dicomweb.listener import DicomwebServer
    from securepacs.web.dicomweb.shared import Edge

    port = settings.dicomweb_port if settings.dicomweb_port is not None else settings.port + 3
    access = DicomwebAccess(audit, make_tenancy(settings))
    tokens = (ImportTokens(token_store, audit=audit).check  # type: ignore[arg-type]
              if token_store is not None else None)
    edge = Edge(settings.dicomweb_base, tokens, settings.dicomweb_cors_origins)
    app = create_app(QidoService(query, access, audit),  # type: ignore[arg-type]
                     WadoService(retrieve, access, audit),  # type: ignore[arg-type]
                     StowService(ingest, access, audit), edge,  # type: ignore[arg-type]
                     deletion)  # type: ignore[arg-type]
    stow = re.compile(re.escape(settings.dicomweb_base) + r"/studies(/[0-9.]+)?")
    try:
        return DicomwebServer((settings.host, port), app, tls_context, gatekeeper=gatekeeper,
                              audit=audit, handshake_timeout=settings.handshake_timeout,
                              token_paths=stow)
    except (OSError, OverflowError) as exc:
        raise ConfigError(f"dicomweb_port: cannot listen on {settings.host}:{port}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def _local_audit(settings: Settings) -> tuple[AuditEvents, str]:
    """Audit events of a command run on this machine, into the data folder's audit trail,
    and the user who runs it (the operating system's name)."""
    import getpass

    from securepacs.services.audit_events import AuditEvents

    trail = build_audit_trail(settings)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return AuditEvents(trail, ae_title=settings.ae_title, address=socket.getfqdn()), user


def media_audit(settings: Settings) -> MediaAudit:
    """Audit events of a media command, into the data folder's audit trail."""
    from securepacs.services.audit_events import MediaAudit

    events, user = _local_audit(settings)
    return MediaAudit(events, user=user)


def backup_audit(settings: Settings) -> BackupAudit:
    """Audit events of ``backup`` / ``restore``, into the data folder's audit trail."""
    from securepacs.services.audit_events import BackupAudit

    events, user = _local_audit(settings)
    return BackupAudit(events, user=user)


def backup_tools(settings: Settings):  # noqa: ANN201 - services.backup.BackupTools
    """The SQLite backup API and the blob copier for ``securepacs backup`` / ``restore``.

    Raises
    ------
    ConfigError
        The settings name PostgreSQL or Azure Blob Storage: those are backed up with their
        own tools (docs/deployment.md).
    """
    from securepacs.blobs.copy import copy_blob
    from securepacs.blobs.filesystem import FileBlobStore
    from securepacs.errors import ConfigError
    from securepacs.index import backup as index_backup
    from securepacs.services.backup import BackupTools

    if settings.database_url is not None or settings.blob_backend != "filesystem":
        raise ConfigError("backup and restore cover the embedded archive (SQLite and a blob "
                          "folder); back up PostgreSQL and Azure Blob Storage with their own "
                          "tools (see docs/deployment.md)")
    stores: dict[Path, FileBlobStore] = {}

    def store(root: Path) -> FileBlobStore:
        if root not in stores:
            stores[root] = FileBlobStore(root)
        return stores[root]

    def copy(source: Path, target: Path, key: str, expect: str | None):  # noqa: ANN202
        return copy_blob(source, store(target), key, expect_sha256=expect)

    return BackupTools(snapshot=index_backup.snapshot_sqlite,
                       check_index=index_backup.check_sqlite,
                       blob_keys=index_backup.blob_keys, copy_blob=copy,
                       trashed_keys=index_backup.trashed_blob_keys)
