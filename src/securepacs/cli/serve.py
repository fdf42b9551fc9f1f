"""``securepacs serve``: run the secure DICOM archive until interrupted."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import typer

from securepacs.cli import workers
from securepacs.errors import PacsError
from securepacs.settings import load

log = logging.getLogger("securepacs.serve")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every PDU at INFO/DEBUG, and a traceback for every undecodable AE
    # title or UID a peer sends; the server only uses its PDU codec and logs each failure
    # itself in one line: keep pynetdicom quiet unless debugging
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
        # the Azure SDK logs every HTTP request and response, header by header, at INFO
        logging.getLogger("azure").setLevel(logging.WARNING)


def serve(
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (index, blobs, pki)."),
    host: str | None = typer.Option(None, "--host", help=(
        "Address to listen on (default 0.0.0.0, every interface; 127.0.0.1 for this machine "
        "only).")),
    port: int | None = typer.Option(None, "--port", help="TLS port (default 2762)."),
    ae_title: str | None = typer.Option(None, "--ae-title", help="This server's AE title."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Server certificate (PEM, chain)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Server private key (PEM)."),
    tls_ca: Path | None = typer.Option(None, "--tls-ca",
                                       help="CA bundle client certificates must chain to."),
    plain_port: int | None = typer.Option(None, "--plain-port",
                                          help="Also listen without TLS on this port (unsafe)."),
    database_url: str | None = typer.Option(None, "--database-url",
                                            help="Index database URL (default: SQLite in the data folder)."),
) -> None:
    """Run the secure DICOM archive (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET over TLS)."""
    try:
        settings = load(config, overrides={
            "data_dir": data_dir, "host": host, "port": port, "ae_title": ae_title,
            "tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca, "plain_port": plain_port,
            "database_url": database_url,
        })
        configure_logging(settings.log_level)
        # A thread that waits on the network (or a disk) gives up the GIL; with the default
        # 5 ms switch interval it then waits up to 5 ms to get it back from a busy thread
        # (the audit writer, another association): 1 ms keeps per-image latency low.
        sys.setswitchinterval(0.001)
        from securepacs.wiring import build_archive, now

        inherited = workers.inherited_sockets()
        slots = workers.inherited_slots()
        if inherited:
            workers.die_with_parent()
        archive = build_archive(settings, inherited=inherited)
        pool = None
        if inherited and slots is not None:
            archive.server.share_limits(slots, settings.worker_count)
        elif not inherited and settings.worker_count > 1:
            pool = workers.Workers(settings.worker_count - 1, archive.server.share())
            archive.server.share_limits(pool.slots, settings.worker_count)
    except (PacsError, OSError) as exc:
        typer.echo(f"securepacs serve: {exc}", err=True)
        raise typer.Exit(2) from None
    if inherited:
        _run_worker(archive)
        return

    s = settings
    boot = archive.bootstrap
    if boot is not None and boot.created:
        typer.echo(f"Created a local CA and certificates in {s.pki_dir} (private keys mode 0600).")
    typer.echo(f"securepacs: AE title {s.ae_title}, data in {s.data_dir}")
    _print_listeners(archive)
    if boot is not None:
        tls = ["+tls", str(boot.client_key), str(boot.client_cert), "+cf", str(boot.ca_cert),
               "-aec", s.ae_title, "127.0.0.1", str(s.port)]
        for tool, extra in (("echoscu", []), ("storescu", ["FILE.dcm"])):
            line = " ".join(shlex.quote(p) for p in [tool, *tls, *extra])
            typer.echo(f"  Try it:  TCP_NODELAY=1 {line}")
    if s.plain_port is not None:
        log.warning("plain TCP listener enabled on port %d: traffic there is NOT encrypted "
                    "and clients are NOT authenticated", s.plain_port)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    def _reload(signum: int, _frame: object) -> None:
        log.info("SIGHUP: reloading the TLS files")
        archive.tls_files.reload_if_changed(force=True)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _reload)
    if archive.audit is not None:
        archive.audit.application(started=True)
    archive.server.start()
    archive.monitor.start()
    if archive.enrolment is not None:
        archive.enrolment.start()
    if archive.viewer is not None:
        archive.viewer.start()
    if archive.dicomweb is not None:
        archive.dicomweb.start()
    if pool is not None:
        pool.start()

        def _reload_all(signum: int, frame: object) -> None:
            _reload(signum, frame)
            pool.signal(signum)  # type: ignore[union-attr]

        signal.signal(signal.SIGHUP, _reload_all)
    archive.warn_expiring(now())
    log.info("ready: %d instance(s) in the index", archive.index.count_instances())
    last_expiry_check = time.monotonic()
    while not stop.wait(1.0):
        if pool is not None:
            pool.check()
        if time.monotonic() - last_expiry_check > 86400:
            archive.warn_expiring(now())
            last_expiry_check = time.monotonic()
    if pool is not None:
        pool.stop()
    archive.monitor.stop()
    if archive.enrolment is not None:
        archive.enrolment.stop()
    if archive.viewer is not None:
        archive.viewer.stop()
    if archive.dicomweb is not None:
        archive.dicomweb.stop()
    archive.server.stop()
    if archive.audit is not None:
        archive.audit.application(started=False)
        archive.audit.close()
    archive.close()
    log.info("stopped")


def _where(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = str(address[0]), int(address[1])
    if host in ("0.0.0.0", "::", ""):
        return f"{host or '0.0.0.0'}:{port} (every interface)"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _print_listeners(archive) -> None:  # noqa: ANN001 - wiring.Archive
    """Every address and port listened on, with what each is for."""
    typer.echo("  Listening on:")
    for listener in archive.server.listeners:
        if listener.ssl_context is not None:
            what = "DICOM over TLS (PS3.15 B.12, client certificate required)"
        else:
            what = "DICOM plain TCP (NOT encrypted, clients NOT authenticated)"
        typer.echo(f"    {_where(listener.server_address)}  {what}")
    if archive.enrolment is not None:
        typer.echo(f"    {_where(archive.enrolment.server_address)}  enrolment, HTTPS "
                   "(`securepacs enroll` with a token from `ca invite`)")
    if archive.viewer is not None:
        typer.echo(f"    {_where(archive.viewer.server_address)}  archive viewer (HTTPS, the "
                   "archive's images; client certificate with find+get required): "
                   f"{archive.viewer.url}")
    if archive.dicomweb is not None:
        base = archive.settings.dicomweb_base
        typer.echo(f"    {_where(archive.dicomweb.server_address)}  DICOMweb (HTTPS; QIDO-RS find, "
                   f"WADO-RS get, STOW-RS store; client certificate, or an import token for "
                   f"STOW-RS): {archive.dicomweb.url.rstrip('/')}{base}")


def _run_worker(archive) -> None:  # noqa: ANN001 - wiring.Archive (imported lazily)
    """A worker process: serve DICOM on the inherited sockets until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    signal.signal(signal.SIGHUP, lambda signum, frame: archive.tls_files.reload_if_changed(
        force=True))
    archive.server.start()
    archive.monitor.start()
    log.info("worker %d serving", os.getpid())
    while not stop.wait(1.0):
        pass
    archive.monitor.stop()
    archive.server.stop()
    if archive.audit is not None:
        archive.audit.close()
    archive.close()
