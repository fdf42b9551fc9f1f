"""The disc viewer's files as they go onto media (securepacs.media.viewer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from securepacs.errors import MediaError
from securepacs.media import viewer


def _built(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_viewer_files_in_order_with_level_1_names(tmp_path: Path) -> None:
    root = _built(tmp_path, {"INDEX.HTM": b"<html>", "VIEWER/VIEWER.JS": b"js",
                             "VIEWER/LICENSES.TXT": b"MIT"})
    files = viewer.viewer_files(root)  # type: ignore[arg-type]
    assert [rel for rel, _ in files] == ["INDEX.HTM", "VIEWER/LICENSES.TXT", "VIEWER/VIEWER.JS"]
    assert dict(files)["VIEWER/VIEWER.JS"] == b"js"


def test_missing_viewer_says_how_to_build_or_skip(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as err:
        viewer.viewer_files(tmp_path)  # type: ignore[arg-type]
    assert "--no-viewer" in str(err.value) and "discviewer/build.sh" in str(err.value)


def test_names_that_do_not_fit_iso_9660_level_1_are_refused(tmp_path: Path) -> None:
    root = _built(tmp_path, {"INDEX.HTM": b"x", "VIEWER/VIEWER.JS": b"x",
                             "VIEWER/viewer-long-name.js": b"x"})
    with pytest.raises(MediaError, match="ISO 9660 level 1"):
        viewer.viewer_files(root)  # type: ignore[arg-type]


def test_over_budget_is_refused(tmp_path: Path) -> None:
    root = _built(tmp_path, {"INDEX.HTM": b"x", "VIEWER/VIEWER.JS": b"x" * (viewer.BUDGET + 1)})
    with pytest.raises(MediaError, match="budget"):
        viewer.viewer_files(root)  # type: ignore[arg-type]


@pytest.mark.parametrize("path, plain", [("INDEX.HTM", True), ("index.htm", True),
                                         ("VIEWER/VIEWER.JS", True), ("DICOMDIR", False),
                                         ("PT000000/ST000000/SE000000/IM000000", False),
                                         ("VIEWERX", False)])
def test_readers_skip_only_the_viewer(path: str, plain: bool) -> None:
    assert viewer.is_viewer_path(path) is plain


def test_the_installed_bundle_fits_its_budget() -> None:
    """The package data built by discviewer/build.sh (scripts/install): one classic script,
    its licences, under the ~5 MB budget."""
    files = dict(viewer.viewer_files())
    index = files["INDEX.HTM"].decode("utf-8")
    assert '<script src="VIEWER/VIEWER.JS"></script>' in index
    assert "default-src 'none'" in index and 'type="module"' not in index
    assert b"dicom-parser" in files["VIEWER/LICENSES.TXT"]
    assert sum(map(len, files.values())) <= 5 * 1024 * 1024
