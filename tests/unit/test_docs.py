"""The repository's own docs stand alone (issue 18 item 12): no pointer outside the
repository, and every relative link names a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_point_only_inside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "../shared" not in text and "/work/" not in text, doc
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), (doc.name, target)


def test_nothing_in_the_repository_points_outside_it() -> None:
    """No tracked file names the team's notes (DESIGN.md, ../shared) or this machine's
    folders: the repository stands alone (issue 18 item 12)."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    outside = re.compile(rb"\.\./shared|/work/(shared|wt|main)\b|\bDESIGN\.md\b|\bBRIEF\.md\b")
    names = [n for n in listed.stdout.decode().split("\0") if n]
    assert not [n for n in names if ".tmp-" in n], "a build folder is committed"
    found = []
    for name in names:
        path = ROOT / name
        if name == "tests/unit/test_docs.py" or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        found += [f"{name}: {m.group(0).decode()}" for m in outside.finditer(data)]
    assert not found, found


def test_readme_documents_the_audit_command_and_no_interim_promise() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "securepacs audit [--data-dir DIR] list" in readme
    assert "Until the audit" not in readme and "interim log" not in readme
    assert (ROOT / "docs" / "architecture.md").is_file()
