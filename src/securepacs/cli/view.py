"""``securepacs view PATH``: look at a disc in the browser, and import it into a PACS.

One responsibility: wire the local viewer (:mod:`securepacs.web.viewer`, served on loopback
by :mod:`securepacs.web.local`) to the DICOM client for imports, with the connection options
of the client tools (the client profile as default), and open the browser. The viewer needs
no installation or admin rights beyond this program; encrypted media (PS3.10 7.4) are
decrypted in memory only.
"""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from securepacs.cli.client import Aec, Aet, Ca, Cert, Key, NoTls, ProfileOpt, Server, Timeout, endpoint
from securepacs.cli.options import fail
from securepacs.errors import ConfigError, MediaUsageError, PacsError

if TYPE_CHECKING:
    from securepacs.services.scuport import StoreConnector


def view(
    path: Annotated[Path, typer.Argument(help="Media folder, ISO image, or folder of DICOM files.")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port on 127.0.0.1 (0: a free one).")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser",
                                             help="Only print the address; do not open a browser.")] = False,
    server: Server = None, aec: Aec = None, aet: Aet = None, cert: Cert = None, key: Key = None,
    ca: Ca = None, no_tls: NoTls = False, profile: ProfileOpt = None, timeout: Timeout = 30.0,
) -> None:
    """Open media in a local web viewer (studies, images, import with a new Patient ID).

    The connection options say where "Import" sends the images (as for `securepacs send`).
    """
    def connect() -> StoreConnector:
        return endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                        ca=ca, no_tls=no_tls, timeout=timeout)

    try:
        ep = endpoint(profile=profile, server=server, aec=aec, aet=aet, cert=cert, key=key,
                      ca=ca, no_tls=no_tls, timeout=timeout)
        destination = ep.endpoint.where + ("" if ep.endpoint.tls is not None else " (no TLS)")
    except (ConfigError, PacsError) as exc:
        destination = f"not configured ({exc})"
    from securepacs.wiring import local_viewer

    try:
        viewer = local_viewer(Path(path), port=port, connect=connect, destination=destination)
    except MediaUsageError as exc:
        raise fail(str(exc), 2) from None
    except (PacsError, OSError) as exc:
        raise fail(str(exc), 1) from None

    def ready(bound: int) -> None:
        url = f"http://{viewer.host}:{bound}{viewer.path}?token={viewer.token}"
        typer.echo(f"Viewer: {url}")
        typer.echo("Press Ctrl-C to stop (nothing decrypted is kept).")
        sys.stdout.flush()
        if not no_browser:
            webbrowser.open(url)

    viewer.run(ready)
