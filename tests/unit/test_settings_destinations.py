"""C-MOVE destinations and storage options in the config (issue 17 items 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from securepacs.errors import ConfigError
from securepacs.settings import load


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "securepacs.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n' + text)
    return path


def test_a_destination_names_the_identity_it_must_present(tmp_path: Path) -> None:
    settings = load(_config(tmp_path, '[[move_destinations]]\nae_title = "ORTHANC"\n'
                            'host = "10.0.0.5"\nport = 4242\nidentity = "orthanc1"\n'))
    dest = settings.destination("ORTHANC")
    assert dest is not None and dest.identity == "orthanc1" and dest.tls
    assert settings.accept_unknown_storage is True


def test_an_identity_needs_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="identity needs tls"):
        load(_config(tmp_path, '[[move_destinations]]\nae_title = "ORTHANC"\nhost = "h"\n'
                     'port = 4242\ntls = false\nidentity = "orthanc1"\n'))


def test_unknown_storage_can_be_turned_off(tmp_path: Path) -> None:
    assert load(_config(tmp_path, "accept_unknown_storage = false\n")).accept_unknown_storage \
        is False
