"""``securepacs enroll``: get a client certificate with a one-time token; no key travels."""

from __future__ import annotations

from pathlib import Path

import typer

from securepacs.cli.options import fail
from securepacs.clientprofile import default_profile_path, split_server
from securepacs.errors import PacsError


def enroll(
    server: str = typer.Option(..., "--server", help="The DICOM server, HOST:PORT."),
    token: str = typer.Option(..., "--token", help="The token printed by `securepacs ca invite`."),
    name: str | None = typer.Option(None, "--name", help="This client's name (certificate CN); "
                                    "default: the host name."),
    enroll_port: int | None = typer.Option(None, "--enroll-port",
                                           help="Enrolment port (default: the DICOM port + 1)."),
    folder: Path | None = typer.Option(None, "--dir", help="Where to keep key and certificates "
                                       "(default: next to the profile)."),
    profile: Path | None = typer.Option(None, "--profile", help="Client profile to write."),
    aet: str | None = typer.Option(None, "--aet", help="Calling AE title to remember."),
    aec: str | None = typer.Option(None, "--aec", help="Called AE title to remember."),
) -> None:
    """Enrol this machine as a client: make a key here, get it certified, save a profile."""
    import socket

    from securepacs.model.printable import one_line
    from securepacs.services.enrolment import enrol
    from securepacs.services.scuport import ConnectionFailed
    from securepacs.wiring import now

    try:
        host, dicom_port = split_server(server)
        profile_path = profile or default_profile_path()
        client_name = name or socket.gethostname().split(".")[0] or "client"
        done = enrol(host=host, port=enroll_port or dicom_port + 1, dicom_port=dicom_port,
                     token=token, name=client_name, folder=folder or profile_path.parent,
                     profile_path=profile_path, at=now(), calling_ae=aet, called_ae=aec)
    except ConnectionFailed as exc:  # exit 3, as the other client commands
        raise fail(str(exc), 3) from None
    except PacsError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"enrolled as {one_line(done.name)} ({done.organization}/{done.group}), certificate "
               f"{done.fingerprint}")
    typer.echo(f"  key {done.key} (mode 0600), certificate {done.cert}, CA {done.ca}")
    typer.echo(f"  profile {done.profile}: the client commands now use it by default")
