"""``securepacs ca``: the certificate authority of a data folder (same folder as ``serve``).

Scripts and docs rely on these names: ``ca init [--rsa]``; ``ca group create GROUP --allow
echo,store,find,move,get``; ``ca issue server --name HOST [--san NAME_OR_IP]... --out DIR``;
``ca issue client --name NAME --org ORG --group GROUP [--ae AE]... --out DIR``;
``ca issue node --name NAME --org ORG --group GROUP [--ae AE]... [--san NAME_OR_IP]... --out DIR``;
``ca revoke
NAME_OR_SERIAL [--reason R]``; ``ca renew``; ``ca export NAME --p12 FILE --password-file F
[--legacy]``; ``ca list [--expiring 30d] [--json]``; ``ca crl --out FILE``; ``ca invite``;
``ca import-token --org ORG --group GROUP [--expires 24h]`` (``--list``, ``--revoke ID``).
Every change lands in the index database, so running servers see it within a second.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import typer

from securepacs.cli.options import duration, fail, read_secret
from securepacs.errors import PacsError
from securepacs.model.identity import Permission
from securepacs.settings import load

app = typer.Typer(help="Certificate authority: issue, list, revoke, renew, export, invite.",
                  no_args_is_help=True)
group_app = typer.Typer(help="Groups of clients and their permissions.", no_args_is_help=True)
issue_app = typer.Typer(help="Issue a server, client or node certificate.", no_args_is_help=True)
app.add_typer(group_app, name="group")
app.add_typer(issue_app, name="issue")


class _State:
    data_dir: Path | None = None
    config: Path | None = None
    passphrase_file: Path | None = None


_state = _State()


@app.callback()
def ca_options(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (as for serve)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file (as for serve)."),
    ca_passphrase_file: Path | None = typer.Option(
        None, "--ca-passphrase-file", help="File holding the CA key's passphrase, if any "
        "(or SECUREPACS_CA_PASSPHRASE)."),
) -> None:
    """Certificate authority of a data folder."""
    _state.data_dir, _state.config, _state.passphrase_file = data_dir, config, ca_passphrase_file


def _ca():  # noqa: ANN202 - securepacs.services.authority.CertificateAuthority
    from securepacs.wiring import certificate_authority

    try:
        settings = load(_state.config, overrides={"data_dir": _state.data_dir})
        passphrase = read_secret(_state.passphrase_file, what="CA passphrase")
        if passphrase is None and os.environ.get("SECUREPACS_CA_PASSPHRASE"):
            passphrase = os.environ["SECUREPACS_CA_PASSPHRASE"].encode()
        return certificate_authority(settings, passphrase)
    except PacsError as exc:
        raise fail(str(exc)) from None


def _now():  # noqa: ANN202
    from securepacs.wiring import now

    return now()


def _audit(alert: str, *, subject: str, detail: str) -> None:
    """Record the change in the data folder's audit trail (Security Alert, PS3.15 A.5.3.11),
    with the local user who made it; a trail that cannot be written is a warning."""
    from securepacs.services.audit_events import Alert
    from securepacs.wiring import admin_audit

    try:
        audit = admin_audit(load(_state.config, overrides={"data_dir": _state.data_dir}))
    except PacsError as exc:
        typer.echo(f"warning: this change could not be audited: {exc}", err=True)
        return
    with audit:
        audit.changed(Alert(alert), subject=subject, detail=detail)


def _cert_subject(record) -> str:  # noqa: ANN001 - pki CertificateRecord
    return f"CN={record.name} serial {record.serial:x}"


def _run(action):  # noqa: ANN001, ANN202
    try:
        return action()
    except (PacsError, ValueError) as exc:
        raise fail(str(exc)) from None


@app.command("init")
def init(
    rsa: bool = typer.Option(False, "--rsa", help="RSA 3072 instead of ECDSA P-256."),
    name: str = typer.Option("securepacs CA", "--name", help="The CA's common name."),
    org: str | None = typer.Option(None, "--org", help="The CA's organisation."),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Encrypt the CA key with the passphrase in this file."),
) -> None:
    """Create the root CA of the data folder (key mode 0600)."""
    ca = _ca()
    ca._passphrase = read_secret(passphrase_file, what="passphrase") or ca._passphrase
    record = _run(lambda: ca.init(at=_now(), rsa=rsa, name=name, organization=org))
    typer.echo(f"CA created in {ca.pki_dir}")
    typer.echo(f"  fingerprint (SHA-256): {record.fingerprint}")
    _audit("ca-created", subject=_cert_subject(record),
           detail=f"root CA created, fingerprint {record.fingerprint}")


@group_app.command("create")
def group_create(
    group: str = typer.Argument(..., help="Group name."),
    allow: str = typer.Option(..., "--allow", help="Permissions: echo,store,find,move,get,export "
                              "or all; cross_org (read every organisation) and delete (delete the "
                              "organisation's studies) only by name."),
) -> None:
    """Create a group (or change its permissions)."""
    permissions = _run(lambda: Permission.parse_list(allow))
    _run(lambda: _ca().create_group(group, permissions))
    allowed = ', '.join(sorted(p.value for p in permissions)) or 'nothing'
    typer.echo(f"group {group}: {allowed}")
    _audit("group-changed", subject=f"group {group}", detail=f"group {group} allows {allowed}")


@group_app.command("list")
def group_list() -> None:
    """The groups and their permissions."""
    for g in _run(lambda: _ca().store.groups()):
        crosses = Permission.CROSS_ORG in g.permissions
        deletes = Permission.DELETE in g.permissions
        typer.echo(f"{g.name}: {', '.join(sorted(p.value for p in g.permissions)) or '-'}"
                   + ("  (reads every organisation's studies)" if crosses else "")
                   + ("  (deletes its organisation's studies)" if deletes else ""))


@issue_app.command("server")
def issue_server(
    name: str = typer.Option(..., "--name", help="Host name (the certificate's CN)."),
    san: list[str] = typer.Option([], "--san", help="Extra DNS name or IP address (repeat)."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.key, NAME.pem and ca.pem."),
    days: int = typer.Option(825, "--days", help="Validity in days."),
) -> None:
    """Issue a server certificate (serverAuth + clientAuth, for C-MOVE)."""
    issued = _run(lambda: _ca().issue_server(name, sans=san, out=out, at=_now(), days=days))
    _print_issued(issued)
    _audit("certificate-issued", subject=_cert_subject(issued.record),
           detail=f"server certificate issued, fingerprint {issued.record.fingerprint}")


@issue_app.command("client")
def issue_client(
    name: str = typer.Option(..., "--name", help="Client name (the certificate's CN)."),
    org: str = typer.Option(..., "--org", help="Organisation of the client."),
    group: str = typer.Option(..., "--group", help="Group (its permissions apply)."),
    ae: list[str] = typer.Option([], "--ae", help="Calling AE title allowed (repeat; none: any)."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.key, NAME.pem and ca.pem."),
    days: int = typer.Option(825, "--days", help="Validity in days."),
) -> None:
    """Issue a client certificate bound to an organisation, a group and AE titles."""
    issued = _run(lambda: _ca().issue_client(name, organization=org, group=group, ae_titles=ae,
                                              out=out, at=_now(), days=days))
    _print_issued(issued)
    _audit("certificate-issued", subject=_cert_subject(issued.record),
           detail=f"client certificate issued for {org}/{group}, AE titles "
                  f"{','.join(ae) or 'any'}, fingerprint {issued.record.fingerprint}")


@issue_app.command("node")
def issue_node(
    name: str = typer.Option(..., "--name", help="Node name (the certificate's CN; also a SAN "
                             "when it is a host name)."),
    org: str = typer.Option(..., "--org", help="Organisation of the node."),
    group: str = typer.Option(..., "--group", help="Group (its permissions apply)."),
    ae: list[str] = typer.Option([], "--ae", help="Calling AE title allowed (repeat; none: any)."),
    san: list[str] = typer.Option([], "--san", help="DNS name or IP address (repeat)."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.key, NAME.pem and ca.pem."),
    days: int = typer.Option(825, "--days", help="Validity in days."),
) -> None:
    """Issue one certificate for a DICOM node that calls us and that we call (C-MOVE):
    serverAuth + clientAuth, bound to an organisation, a group and AE titles."""
    issued = _run(lambda: _ca().issue_node(name, organization=org, group=group, ae_titles=ae,
                                            sans=san, out=out, at=_now(), days=days))
    _print_issued(issued)
    _audit("certificate-issued", subject=_cert_subject(issued.record),
           detail=f"node certificate issued for {org}/{group}, AE titles "
                  f"{','.join(ae) or 'any'}, SANs {','.join(san) or '-'}, "
                  f"fingerprint {issued.record.fingerprint}")


def _print_issued(issued) -> None:  # noqa: ANN001
    typer.echo(f"issued {issued.record.kind} certificate {issued.record.name} "
               f"(serial {issued.record.serial:x}, valid until {issued.record.not_after.date()})")
    if issued.key_path:
        typer.echo(f"  key:         {issued.key_path} (mode 0600)")
    typer.echo(f"  certificate: {issued.cert_path}")
    typer.echo(f"  CA:          {issued.ca_path}")


@app.command("list")
def list_(
    expiring: str | None = typer.Option(None, "--expiring", help="Only those expiring within "
                                        "this long, e.g. 30d."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Certificates with status, expiry and fingerprint."""
    within = duration(expiring) if expiring else None
    at = _now()
    records = _run(lambda: _ca().list(at=at, expiring=within))
    if as_json:
        typer.echo(json.dumps([{
            "name": r.name, "serial": f"{r.serial:x}", "kind": r.kind, "status": r.status,
            "organization": r.organization, "group": r.group, "ae_titles": list(r.ae_titles),
            "not_before": r.not_before.isoformat(), "not_after": r.not_after.isoformat(),
            "fingerprint": r.fingerprint,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            "revocation_reason": r.revocation_reason} for r in records], indent=2))
        return
    import shutil

    from securepacs.cli.table import Column, render
    from securepacs.model.printable import one_line

    columns = [Column("name", uid=True), Column("kind", priority=1),
               Column("org / group", priority=1), Column("AE titles"), Column("status", priority=2),
               Column("expires", priority=1), Column("serial"),
               Column("fingerprint (SHA-256)", uid=True)]
    rows = []
    for r in records:
        left = r.not_after - at
        expires = f"{r.not_after.date()}" + (" (soon)" if left <= timedelta(days=30) else "")
        status = r.status if not r.is_revoked else f"revoked ({r.revocation_reason})"
        rows.append([one_line(r.name, 64), r.kind,
                     one_line("/".join(p for p in (r.organization, r.group) if p) or "-", 64),
                     one_line(",".join(r.ae_titles) or "any", 64), one_line(status, 64), expires,
                     f"{r.serial:x}", r.fingerprint])
    # name and fingerprint never cut: compare it with what an error message shows
    lines, left_out = render(columns, rows, shutil.get_terminal_size((240, 24)).columns)
    typer.echo(f"{len(records)} certificate(s)")
    for line in lines:
        typer.echo(line)
    if left_out:
        typer.echo(f"(left out to fit: {', '.join(left_out)}; --json has everything)", err=True)


@app.command("revoke")
def revoke(
    name_or_serial: str = typer.Argument(..., help="Certificate name or serial (hex)."),
    reason: str = typer.Option("unspecified", "--reason", help="RFC 5280 reason: unspecified, "
                               "key_compromise, affiliation_changed, superseded, "
                               "cessation_of_operation, privilege_withdrawn ..."),
) -> None:
    """Revoke a certificate; running servers refuse it within seconds."""
    from securepacs.pki.crl import parse_reason

    code = _run(lambda: parse_reason(reason))
    record = _run(lambda: _ca().revoke(name_or_serial, reason=code, at=_now()))
    from securepacs.model.printable import one_line

    typer.echo(f"revoked {one_line(record.name)} (serial {record.serial:x}, reason {code})")
    _audit("certificate-revoked", subject=_cert_subject(record),
           detail=f"certificate revoked, reason {code}")


@app.command("renew")
def renew(
    name_or_serial: str = typer.Argument(..., help="Certificate name or serial (hex)."),
    same_key: bool = typer.Option(False, "--same-key", help="Keep the public key (default: new key)."),
    out: Path | None = typer.Option(None, "--out", help="Folder (default: where the key is)."),
    days: int = typer.Option(825, "--days", help="Validity in days."),
) -> None:
    """A new certificate for the same identity; a server picks up its own without restart."""
    issued = _run(lambda: _ca().renew(name_or_serial, at=_now(), new_key=not same_key, out=out,
                                      days=days))
    _print_issued(issued)
    _audit("certificate-renewed", subject=_cert_subject(issued.record),
           detail=f"certificate renewed ({'same' if same_key else 'new'} key), fingerprint "
                  f"{issued.record.fingerprint}")


@app.command("crl")
def crl_(
    out: Path = typer.Option(..., "--out", help="CRL file to write."),
    der: bool = typer.Option(False, "--der", help="DER instead of PEM (DCMTK reads PEM)."),
    days: int = typer.Option(7, "--next-update-days", help="Days until nextUpdate."),
) -> None:
    """Write a signed CRL (for DCMTK's +crl, openssl, other peers)."""
    from securepacs.pki.crl import crl_der, crl_pem

    revocation_list = _run(lambda: _ca().crl(at=_now(), next_update=timedelta(days=days)))
    out.write_bytes(crl_der(revocation_list) if der else crl_pem(revocation_list))
    typer.echo(f"CRL with {len(list(revocation_list))} revoked certificate(s) written to {out}")


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Certificate name or serial."),
    p12: Path | None = typer.Option(None, "--p12", help="Write a PKCS#12 file (Windows store)."),
    pem: Path | None = typer.Option(None, "--pem", help="Write a PEM bundle: key + chain."),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="Password protecting the export."),
    legacy: bool = typer.Option(False, "--legacy", help="3DES/SHA-1 PKCS#12 for older Windows."),
    key: Path | None = typer.Option(None, "--key", help="The private key, if not where issued."),
) -> None:
    """Export a certificate with its key and chain (PKCS#12 or PEM)."""
    if (p12 is None) == (pem is None):
        raise fail("give exactly one of --p12 FILE or --pem FILE")
    password = read_secret(password_file)
    data = _run(lambda: _ca().export(name, key_path=key, passphrase=password, p12=p12 is not None,
                                     legacy=legacy))
    target = p12 or pem
    assert target is not None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    typer.echo(f"wrote {target} (mode 0600)")


@app.command("invite")
def invite(
    org: str = typer.Option(..., "--org", help="Organisation of the new client."),
    group: str = typer.Option(..., "--group", help="Group of the new client."),
    ae: list[str] = typer.Option([], "--ae", help="Calling AE title allowed (repeat)."),
    expires: str = typer.Option("24h", "--expires", help="Token lifetime, e.g. 24h, 7d."),
) -> None:
    """Print a one-time enrolment token for `securepacs enroll` (no key ever travels)."""
    lifetime = duration(expires)
    token = _run(lambda: _ca().invite(organization=org, group=group, ae_titles=ae,
                                      valid_for=lifetime, at=_now()))
    typer.echo(token)
    _audit("enrolment-invited", subject=f"invitation {org}/{group}",
           detail=f"one-time enrolment token for {org}/{group}, AE titles "
                  f"{','.join(ae) or 'any'}, valid {expires}")
    typer.echo(f"(single use, expires in {expires}; the client runs: securepacs enroll "
               f"--server HOST:PORT --token <token>)", err=True)


@app.command("import-token")
def import_token(
    org: str | None = typer.Option(None, "--org", help="Organisation the imports belong to."),
    group: str | None = typer.Option(None, "--group", help="Group (it must allow store)."),
    expires: str = typer.Option("24h", "--expires", help="Token lifetime, e.g. 24h, 7d."),
    list_: bool = typer.Option(False, "--list", help="List the import tokens instead."),
    revoke: str | None = typer.Option(None, "--revoke", help="Revoke the token with this id."),
) -> None:
    """Issue a DICOMweb import token (STOW-RS only, for the disc viewer's import)."""
    from securepacs.services.import_tokens import ImportTokens

    tokens = ImportTokens(_ca().store, clock=_now)  # type: ignore[arg-type]
    if list_:
        now = _now()
        for t in _run(tokens.list):
            state = ("revoked" if t.revoked_at is not None
                     else "expired" if t.expires_at <= now else "valid")
            typer.echo(f"{t.token_id}  {t.organization}/{t.group}  expires "
                       f"{t.expires_at:%Y-%m-%d %H:%M}Z  {state}")
        return
    if revoke is not None:
        done = _run(lambda: tokens.revoke(revoke))
        typer.echo(f"import token {done.token_id} revoked")
        return
    if not org or not group:
        raise fail("--org and --group are required to issue an import token")
    lifetime = duration(expires)
    token = _run(lambda: tokens.issue(organization=org, group=group, valid_for=lifetime))
    typer.echo(token)
    typer.echo(f"(store only, reusable until it expires in {expires} or is revoked with "
               f"--revoke {token.split('.')[1]}; send it as Authorization: Bearer <token>)",
               err=True)
