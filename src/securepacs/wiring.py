"""Composition root: settings -> concrete objects. Only entry points (cli) import this."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from securepacs.blobs.filesystem import FileBlobStore
from securepacs.dimse.handlers import Destination, Handlers
from securepacs.dimse.server import DicomServer, make_server
from securepacs.index.repository import SqlIndex
from securepacs.pki import authority, tlspolicy
from securepacs.services.ingest import IngestService, SweepReport, sweep_orphans
from securepacs.services.query import QueryService, RetrieveService
from securepacs.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Archive:
    """Everything `serve` runs, wired from one settings object."""

    settings: Settings
    index: SqlIndex
    blobs: FileBlobStore
    server: DicomServer
    bootstrap: authority.BootstrapResult | None
    sweep: SweepReport


def local_hostnames() -> list[str]:
    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    return sorted(n for n in names if n)


def ensure_pki(settings: Settings) -> authority.BootstrapResult | None:
    """First run with no TLS files configured: bootstrap a local CA into the data folder."""
    if not settings.uses_default_pki:
        return None
    return authority.bootstrap(
        settings.pki_dir,
        hostnames=[*local_hostnames(), *settings.hostnames],
        at=datetime.now(UTC),
    )


def server_tls(settings: Settings):  # noqa: ANN201 - ssl.SSLContext, kept out of this module
    return tlspolicy.server_context(
        settings.server_cert_path, settings.server_key_path, settings.ca_bundle_path)


def build_archive(settings: Settings) -> Archive:
    """Open the stores, run the start-up check, bind the listeners (not yet serving)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    boot = ensure_pki(settings)
    index = SqlIndex(settings.index_url)
    index.create_schema()
    blobs = FileBlobStore(settings.blob_root)
    sweep = sweep_orphans(index, blobs, grace_seconds=settings.orphan_grace_seconds)

    move_tls = tlspolicy.client_context(
        settings.ca_bundle_path, settings.server_cert_path, settings.server_key_path)

    def destination(ae_title: str) -> Destination | None:
        dest = settings.destination(ae_title)
        if dest is None:
            return None
        return Destination(dest.ae_title, dest.host, dest.port, move_tls if dest.tls else None)

    handlers = Handlers(
        ingest=IngestService(index, blobs, replace_duplicates=settings.replace_duplicates),
        query=QueryService(index, ae_title=settings.ae_title,
                           max_results=settings.max_find_results),
        retrieve=RetrieveService(index, blobs),
        destinations=destination,
        max_pdu=settings.max_pdu,
    )
    server = make_server(
        ae_title=settings.ae_title,
        handlers=handlers,
        host=settings.host,
        port=settings.port,
        tls_context=server_tls(settings),
        plain_port=settings.plain_port,
        max_pdu=settings.max_pdu,
        network_timeout=settings.network_timeout,
        acse_timeout=settings.acse_timeout,
        dimse_timeout=settings.dimse_timeout,
        handshake_timeout=settings.handshake_timeout,
    )
    return Archive(settings, index, blobs, server, boot, sweep)
