"""The client profile: where a client's server, AE titles and TLS files are remembered.

``securepacs enroll`` writes it; ``echo``, ``send``, ``find``, ``get``, ``move`` and
``media import`` read it for every connection option not given on the command line.
Default location: ``$XDG_CONFIG_HOME/securepacs/client.toml`` (``~/.config/...``), or
``SECUREPACS_PROFILE``. Relative paths inside are relative to the profile's folder.

Example::

    server = "pacs.example.org:2762"
    called_ae = "SECUREPACS"
    calling_ae = "CT01"
    cert = "client.pem"
    key = "client.key"
    ca = "ca.pem"
    tls = true
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from securepacs import DICOM_TLS_PORT
from securepacs.errors import ConfigError


@dataclass(frozen=True)
class ClientProfile:
    """Connection defaults for the client commands."""

    server: str = f"127.0.0.1:{DICOM_TLS_PORT}"
    called_ae: str = "SECUREPACS"
    calling_ae: str = "SECUREPACS-SCU"
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    tls: bool = True

    @property
    def host(self) -> str:
        return split_server(self.server)[0]

    @property
    def port(self) -> int:
        return split_server(self.server)[1]

    def with_overrides(self, **values: Any) -> ClientProfile:
        """A copy with every non-None value replaced (command-line flags win)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def split_server(server: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or ``host`` alone for port 2762) -> (host, port)."""
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"server {server!r}: no host (expected HOST:PORT)")
    try:
        port = int(port_text) if port_text else DICOM_TLS_PORT
    except ValueError:
        raise ConfigError(f"server {server!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"server {server!r}: port {port} is out of range")
    return host, port


def default_profile_path() -> Path:
    explicit = os.environ.get("SECUREPACS_PROFILE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "securepacs" / "client.toml"


def load_profile(path: Path | None = None) -> ClientProfile:
    """The profile at `path` (default location if None); defaults when the default is absent.

    Raises
    ------
    ConfigError
        An explicitly named profile that does not exist, or an invalid one.
    """
    target = path or default_profile_path()
    if not target.exists():
        if path is not None:
            raise ConfigError(f"client profile not found: {target}")
        return ClientProfile()
    import tomllib  # here: a command given every flag reads no profile (start-up time)

    try:
        data = tomllib.loads(target.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"client profile {target}: {exc}") from None
    known = {f.name for f in fields(ClientProfile)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"client profile {target}: unknown setting(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in ("cert", "key", "ca"):
            p = Path(str(raw)).expanduser()
            values[key] = p if p.is_absolute() else target.parent / p
        elif key == "tls":
            values[key] = bool(raw)
        else:
            values[key] = str(raw)
    profile = ClientProfile(**values)
    split_server(profile.server)
    return profile


def write_profile(path: Path, profile: ClientProfile) -> None:
    """Write `profile` atomically, mode 0600 (it names private key files)."""
    lines = []
    for f in fields(ClientProfile):
        value = getattr(profile, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"{f.name} = {'true' if value else 'false'}")
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{f.name} = "{text}"')
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def valid_ae_title(value: str, option: str) -> str:
    """`value` stripped, if it is a valid AE title (PS3.5 6.2 AE); ConfigError naming `option` otherwise."""
    text = value.strip()
    if not 0 < len(text) <= 16 or "\\" in text or not text.isascii() or not text.isprintable():
        raise ConfigError(f"{option} {value!r}: an AE title is 1 to 16 printable ASCII "
                          "characters without backslash")
    return text
