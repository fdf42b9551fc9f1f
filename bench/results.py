"""docs/benchmarks.json: one entry per section, each saying when, on which commit and with
which command it was measured.

A run replaces the sections it ran and keeps the others (``--only query`` leaves the
ingest figures alone). A file in the first, flat layout (one run, every result in one
list) is read as one entry per section, all with that run's date and commit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FORMAT = 2
SECTIONS = ("ingest", "send", "memory", "query", "media", "scale", "media-viewer",
            "dicomweb")
#: result "kind" -> the section that measures it
SECTION_OF = {"media-derivations": "media", "dicomweb-memory": "dicomweb", "ingest-tls": "ingest",
              "ingest-peer": "ingest",
              **{name: name for name in SECTIONS}}
#: run-wide keys the flat layout held once, and every section now holds for itself
_RUN_KEYS = ("started", "quick", "counts", "variants", "machine")


def rounds_of(section: str, rounds: int) -> int:
    """Rounds a section runs when the run asks for `rounds` (memory and query run once,
    media at most 3 times)."""
    if section in ("memory", "query"):
        return 1
    if section in ("media", "media-viewer", "dicomweb"):
        return max(1, min(rounds, 3))
    return rounds


def commit_of(machine: dict[str, str]) -> str:
    """"45cd579, uncommitted changes" from the version line "0.1.0 (45cd579, ...)"."""
    found = re.search(r"\((.*)\)", machine.get("securepacs", ""))
    return found.group(1) if found else "?"


def _from_flat(old: dict[str, Any]) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {}
    for row in old.get("results", []):
        name = SECTION_OF.get(row["kind"], row["kind"])
        if name not in sections:
            log = [line for line in old.get("log", []) if line.split(" ", 1)[0].rstrip(":") == name]
            sections[name] = {**{k: old[k] for k in _RUN_KEYS if k in old},
                              "rounds": rounds_of(name, old.get("rounds", 1)), "minutes": None,
                              "command": f"python -m bench ... (flags not recorded; one run of "
                                         f"{old.get('minutes', '?')} min for every section)",
                              "commit": commit_of(old.get("machine", {})), "results": [],
                              "log": log}
        sections[name]["results"].append(row)
    return {"format": FORMAT, "sections": sections}


def load(path: Path) -> dict[str, Any]:
    """The results file (either layout) as ``{"format": 2, "sections": {name: entry}}``;
    an empty one when the file does not exist."""
    if not path.exists():
        return {"format": FORMAT, "sections": {}}
    data = json.loads(path.read_text())
    return data if data.get("format") == FORMAT else _from_flat(data)


def merge(old: dict[str, Any], new: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`old` with the sections of `new` replacing its own, in the order of SECTIONS."""
    both = {**old["sections"], **new}
    order = [n for n in SECTIONS if n in both] + [n for n in both if n not in SECTIONS]
    return {"format": FORMAT, "sections": {n: both[n] for n in order}}


def save(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
