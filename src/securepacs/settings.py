"""Frozen settings: defaults < TOML file < environment (``SECUREPACS_*``) < command-line flags.

Paths left unset derive from the data folder. Secrets (passphrases) are never part of a
settings object's repr, so logging one cannot leak them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from securepacs import DICOM_TLS_PORT
from securepacs.errors import ConfigError

ENV_PREFIX = "SECUREPACS_"


@dataclass(frozen=True)
class MoveDestination:
    """A C-MOVE destination named in the config: where to send, whether over TLS, and
    optionally the identity (certificate name in the trust store) the peer must present."""

    ae_title: str
    host: str
    port: int
    tls: bool = True
    identity: str | None = None


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "securepacs"


@dataclass(frozen=True)
class Settings:
    """Everything `serve` needs; see ``docs/securepacs.example.toml`` for each option."""

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "0.0.0.0"
    port: int = DICOM_TLS_PORT
    ae_title: str = "SECUREPACS"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    plain_port: int | None = None
    database_url: str | None = field(default=None, repr=False)  # may hold a password
    blob_dir: Path | None = None
    replace_duplicates: bool = False
    max_pdu: int = 131072
    accept_compressed: str = "as-proposed"  # or "prefer", "uncompressed"
    accept_unknown_storage: bool = True  # private/unknown storage SOP classes, stored as received
    workers: int = 1  # processes accepting DICOM associations on the same port(s); 0: one per core
    network_timeout: float = 60.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    handshake_timeout: float = 10.0
    orphan_grace_seconds: float = 30.0
    max_find_results: int = 10000
    max_associations: int = 64
    max_associations_per_identity: int = 16
    max_association_request: int = 64 * 1024
    max_command_set: int = 64 * 1024
    max_identifier: int = 1024 * 1024
    inflight_memory: int = 512 * 1024 * 1024
    accept_any_called_ae: bool = False
    hostnames: tuple[str, ...] = ()
    log_level: str = "INFO"
    viewer_port: int | None = None  # HTTPS archive viewer; None: port + 2; 0: off
    dicomweb_port: int | None = None  # HTTPS DICOMweb (PS3.18); None: port + 3; 0: off
    dicomweb_base: str = "/dicomweb"  # base path of the DICOMweb routes
    dicomweb_cors_origins: tuple[str, ...] = ("null",)  # origins whose STOW-RS is answered
    audit_required: bool = True
    audit_jsonl: Path | None = None
    audit_syslog: str | None = None
    audit_syslog_ca: Path | None = None
    audit_spool_dir: Path | None = None
    audit_queue_size: int = 10000
    audit_checkpoint_seconds: float = 300.0  # signed chain checkpoints; 0: only at shutdown
    audit_checkpoint_file: Path | None = None  # default <data_dir>/audit-checkpoints.jsonl
    blob_backend: str = "filesystem"  # or "azure" (Azure Blob Storage, extra [azure])
    azure_connection_string: str | None = field(default=None, repr=False)  # holds a key
    azure_container: str = "securepacs"
    trust_source: str = "auto"
    trust_poll_seconds: float = 1.0
    default_organisation: str = "default"  # owner of files-trust and pre-tenant instances
    expiry_warning_days: int = 30
    trash_days: float = 0.0  # deleted studies restorable this long (docs/deletion.md); 0: none
    enroll_port: int | None = None
    move_destinations: tuple[MoveDestination, ...] = ()

    # -- derived paths -------------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def server_cert_path(self) -> Path:
        return self.tls_cert or self.pki_dir / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.tls_key or self.pki_dir / "server.key"

    @property
    def ca_bundle_path(self) -> Path:
        return self.tls_ca or self.pki_dir / "ca.pem"

    @property
    def uses_default_pki(self) -> bool:
        return self.tls_cert is None and self.tls_key is None and self.tls_ca is None

    @property
    def trust_from_index(self) -> bool:
        """Trust from the index's trust store ("auto": when the data folder's CA is used)."""
        if self.trust_source == "auto":
            return self.uses_default_pki
        return self.trust_source == "index"

    @property
    def checkpoint_file_path(self) -> Path:
        return self.audit_checkpoint_file or self.data_dir / "audit-checkpoints.jsonl"

    @property
    def checkpoint_key_path(self) -> Path:
        """The Ed25519 key that signs audit checkpoints (never in the database; not in
        ``pki/``, which the CA bootstrap wants to itself)."""
        return self.data_dir / "audit-key" / "checkpoint.key"

    @property
    def index_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'index.sqlite'}"

    @property
    def worker_count(self) -> int:
        """How many processes serve DICOM: ``workers``, or when it is 0 one per core the
        process may use if the index lets several processes write at once (PostgreSQL, or
        SQLite, which the index always opens in WAL mode), else 1."""
        if self.workers:
            return self.workers
        url = self.index_url
        backend = url.split(":", 1)[0].split("+", 1)[0].lower()
        if backend == "sqlite" and (":memory:" in url or url.rstrip("/") in ("sqlite:",
                                                                                "sqlite+pysqlite:")):
            return 1  # a private database per process
        if backend not in ("sqlite", "postgresql"):
            return 1
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(cores, 64))

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    def destination(self, ae_title: str) -> MoveDestination | None:
        """The configured C-MOVE destination for `ae_title`, if any."""
        for dest in self.move_destinations:
            if dest.ae_title == ae_title.strip():
                return dest
        return None


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, with a one-line error."""
    target = _FIELDS[name].type
    try:
        if name == "move_destinations":
            if isinstance(raw, Mapping):  # [move_destinations.AE] tables
                raw = [{"ae_title": k, **v} for k, v in raw.items()]
            return tuple(MoveDestination(**dict(d)) for d in raw)
        if name in ("hostnames", "dicomweb_cors_origins"):
            if isinstance(raw, str):
                raw = [h for h in raw.split(",") if h]
            return tuple(str(h) for h in raw)
        if raw is None:
            return None
        if "Path" in str(target):
            return Path(raw).expanduser()
        if "bool" in str(target):
            if isinstance(raw, str):
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            return bool(raw)
        if "int" in str(target) and "float" not in str(target):
            return int(raw)
        if "float" in str(target):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: invalid value {raw!r} ({exc})") from None


def load(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and explicit overrides.

    Parameters
    ----------
    config_file : Path, optional
        A TOML file; its keys are the field names of :class:`Settings`.
    overrides : mapping, optional
        Values from command-line flags; ``None`` values are ignored.
    environ : mapping, optional
        Defaults to ``os.environ``; ``SECUREPACS_PORT=11112`` sets ``port``.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config_file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        for key, raw in data.items():
            if key not in _FIELDS:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[key] = _coerce(key, raw)
    env = os.environ if environ is None else environ
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and name != "move_destinations":
            values[name] = _coerce(name, raw)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw)
    settings = replace(Settings(), **values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 0 < s.port < 65536:
        raise ConfigError(f"port {s.port} is out of range")
    if not 0 <= s.workers <= 64:
        raise ConfigError(f"workers must be 0 (one per core) to 64, not {s.workers}")
    if s.plain_port is not None and s.plain_port == s.port:
        raise ConfigError("plain_port must differ from the TLS port (PS3.15 B.1)")
    if not 0 < len(s.ae_title.strip()) <= 16:
        raise ConfigError(f"AE title {s.ae_title!r} must be 1 to 16 characters")
    if not 0 <= s.trash_days <= 36500:
        raise ConfigError(f"trash_days must be 0 (delete at once) to 36500, not {s.trash_days}")
    if s.audit_checkpoint_seconds < 0:
        raise ConfigError("audit_checkpoint_seconds must be 0 (only at shutdown) or more")
    if not s.dicomweb_base.startswith("/") or s.dicomweb_base.endswith("/"):
        raise ConfigError(f"dicomweb_base must start and not end with '/', not "
                          f"{s.dicomweb_base!r}")
    for name in ("max_associations", "max_association_request", "max_command_set",
                 "max_identifier"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1, not {getattr(s, name)}")
    if s.max_associations_per_identity < 0 or s.inflight_memory < 0:
        raise ConfigError("max_associations_per_identity and inflight_memory must be 0 or more")
    if s.accept_compressed not in ("as-proposed", "prefer", "uncompressed"):
        raise ConfigError("accept_compressed must be as-proposed, prefer or uncompressed, "
                          f"not {s.accept_compressed!r}")
    for dest in s.move_destinations:
        if dest.identity is not None and (not dest.tls or not str(dest.identity).strip()):
            raise ConfigError(f"move destination {dest.ae_title}: identity needs tls = true "
                              "and a certificate name")
    if s.trust_source not in ("auto", "index", "files"):
        raise ConfigError(f"trust_source must be auto, index or files, not {s.trust_source!r}")
    partial = [s.tls_cert, s.tls_key, s.tls_ca]
    if any(p is not None for p in partial) and not all(p is not None for p in partial):
        raise ConfigError("--tls-cert, --tls-key and --tls-ca go together")
