"""Helpers for the CA / trust tests: run `securepacs ca` and serve on a shared data folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import HOST, SECUREPACS, Server, free_port, write_config


def ca(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*SECUREPACS, "ca", "--data-dir", str(data), *args],
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"ca {' '.join(args)}: {result.stderr}"
    return result


def data_server(tmp: Path, data: Path, name: str, **config: object) -> Server:
    """A server on the data folder's own CA (trust from the index), on free ports."""
    port = free_port()
    values: dict[str, object] = {"host": HOST, "port": port, "enroll_port": free_port(),
                                 "trust_poll_seconds": 0.5, "handshake_timeout": 5}
    values.update(config)
    cfg = write_config(tmp / f"{name}.toml", **values)
    return Server(data, cfg, port, "SECUREPACS", tmp / f"{name}.log",
                  extra_args=["--data-dir", str(data)])
