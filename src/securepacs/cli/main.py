"""The ``securepacs`` command: global options and the command groups."""

from __future__ import annotations

import typer

from securepacs import __version__
from securepacs.cli import audit, ca, client, db, enroll, media, media_import, serve, view

app = typer.Typer(
    name="securepacs",
    help="A secure PACS: DICOM archive over mutual TLS, its own CA, encrypted media.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"securepacs {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """A secure PACS: DICOM archive over mutual TLS, its own CA, encrypted media."""


app.command("serve")(serve.serve)
app.command("echo")(client.echo)
app.command("send")(client.send)
app.command("find")(client.find)
app.command("get")(client.get)
app.command("move")(client.move)
app.add_typer(ca.app, name="ca")
app.command("enroll")(enroll.enroll)
media.app.command("import")(media_import.import_media)
app.add_typer(media.app, name="media")
app.command("view")(view.view)
app.add_typer(audit.app, name="audit")
app.add_typer(db.app, name="db")
app.command("check")(db.check)


def main() -> None:
    app()
