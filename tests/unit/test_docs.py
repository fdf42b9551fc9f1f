"""The repository's own docs stand alone (issue 18 item 12): no pointer outside the
repository, and every relative link names a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_readme_documents_the_audit_command_and_no_interim_promise() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "securepacs audit [--data-dir DIR] list" in readme
    assert "Until the audit" not in readme and "interim log" not in readme
    assert (ROOT / "docs" / "architecture.md").is_file()
