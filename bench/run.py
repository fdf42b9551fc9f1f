"""Run the benchmark and write docs/benchmarks.md and docs/benchmarks.json.

    .venv/bin/python -m bench              # full run (~30 min on 2 cores)
    .venv/bin/python -m bench --quick      # small counts, to try it out (benchmarks-quick.*)
    .venv/bin/python -m bench --only scale,query --rounds 3
    .venv/bin/python -m bench --server-src before=/tmp/before/src --server-src after=src
    .venv/bin/python -m bench --report-only docs/benchmarks.json   # redo the markdown

Sections: ingest (beside storescp, Orthanc, the durable floor with and without an
index), send, memory (one 1 GB object), query (C-FIND on SQLite and PostgreSQL), media,
scale (1 vs 2 instances behind HAProxy on PostgreSQL + Azurite), media-viewer (the
disc viewer in Chromium: password to first image, scroll rate). The results file
keeps one entry per section: a run replaces the sections it ran, after each section, and
keeps the others, each with its own date, commit and command.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import engines, results, transfer  # noqa: E402
from bench import media as media_bench  # noqa: E402
from bench import scale as scale_bench  # noqa: E402
from bench.common import ROOT, Pki, ServerSpec, first_line, make_pki, write_images  # noqa: E402
from bench.peers import orthanc_version  # noqa: E402
from bench.report import write_markdown  # noqa: E402
from bench.results import SECTIONS, rounds_of  # noqa: E402


def _versions() -> dict[str, str]:
    import cryptography
    import psycopg
    import pydicom
    import pynetdicom
    import sqlalchemy

    import securepacs

    commit, dirty = _commit()
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "securepacs": f"{securepacs.__version__} ({commit}{', uncommitted changes' if dirty else ''})",
        "python": sys.version.split()[0], "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__, "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "cryptography": cryptography.__version__, "dcmtk": first_line("storescu", "--version"),
        "openssl": first_line("openssl", "version"), "orthanc": orthanc_version(),
        **engines.versions(), "kernel": platform.release(),
        "cpu": f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores",
        "memory": f"{int(mem) // 1024} MiB",
    }


def _commit() -> tuple[str, bool]:
    """HEAD's short hash and whether src/ has uncommitted changes (read-only git calls;
    ``--no-optional-locks`` so that a concurrent commit never meets our index lock)."""
    git = ["git", "--no-optional-locks", "-C", str(ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run([*git, "status", "--porcelain", "src"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        return "?", False
    return commit or "?", dirty


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, one round")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated sections (default: all of " + ",".join(SECTIONS) + ")")
    ap.add_argument("--server-src", action="append", default=[], metavar="NAME=DIR[,KEY=VALUE]",
                    help="run the server from this copy of src/ (`installed`: the installed "
                    "package) as a variant named NAME, with extra settings "
                    "(repeatable, e.g. before=/tmp/before/src after-w2=src,workers=2 "
                    "after=src); default: the installed package; the last variant is checked "
                    "against the targets and is the one the query and scale sections run")
    ap.add_argument("--sizes", default="small,large", help="ingest/send image sizes to run")
    ap.add_argument("--peers", default=",".join(transfer.PEERS),
                    help="receivers beside ours in the ingest section (default: "
                    + ",".join(transfer.PEERS) + "; Orthanc is left out when not installed)")
    ap.add_argument("--query-backends", default="sqlite,postgresql",
                    help="index backends of the query section (sqlite,postgresql)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write results")
    ap.add_argument("--report-only", type=Path, help="rewrite the markdown from a JSON file")
    return ap


@dataclass
class Run:
    """What every section of one invocation shares."""

    args: argparse.Namespace
    work: Path
    pki: Pki
    rounds: int
    counts: dict[str, Any]
    variants: dict[str, ServerSpec]
    log: Callable[[str], None]

    def images(self, name: str, count: int, **kw: Any) -> list[Path]:
        folder = self.work / f"data-{name}"
        return sorted(folder.glob("*.dcm")) or write_images(folder, count, **kw)

    @property
    def ours(self) -> Path | None:
        return list(self.variants.values())[-1].src


def _transfer_data(run: Run) -> dict[str, list[Path]]:
    c = run.counts
    frames_large = max(1, round(c["large_mb"] * 1e6 / (512 * 512 * 2)))
    sizes = [s.strip() for s in run.args.sizes.split(",") if s.strip()]
    data = {}
    if "small" in sizes:
        data["small"] = run.images("small", c["small"])
    if "large" in sizes:
        data["large"] = run.images("large", c["large"], frames=frames_large)
    return data


def _memory(run: Run) -> list[dict[str, Any]]:
    frames = round(run.counts["huge_mb"] * 2**20 / (512 * 512 * 2))
    huge = write_images(run.work / "data-huge", 1, frames=frames)
    try:
        return transfer.memory(run.work, run.pki, huge, run.variants, run.log)
    finally:
        shutil.rmtree(run.work / "data-huge", ignore_errors=True)


def _section(run: Run, name: str) -> list[dict[str, Any]]:
    """Run one section; its result rows."""
    r, c = rounds_of(name, run.rounds), run.counts
    if name == "ingest":
        peers = tuple(p.strip() for p in run.args.peers.split(",") if p.strip())
        return transfer.ingest(run.work, run.pki, _transfer_data(run), r, run.variants, run.log,
                               peers)
    if name == "send":
        return transfer.send(run.work, run.pki, _transfer_data(run), r, run.log)
    if name == "memory":
        return _memory(run)
    if name == "query":  # imported here: it drives securepacs.dimse's own client internals
        from bench import query as query_bench

        backends = tuple(b.strip() for b in run.args.query_backends.split(",") if b.strip())
        return query_bench.query(run.work, run.pki, c["query"], c["query_repeats"], run.log,
                                 src=run.ours, backends=backends)
    if name == "media":
        return media_bench.media(run.work, run.images("media", c["media"], rows=256, cols=256),
                                 r, run.log)
    if name == "media-viewer":
        from bench import media_viewer

        return media_viewer.media_viewer(run.work, c["viewer"], r, run.log)
    if name == "dicomweb":
        from bench import dicomweb as dicomweb_bench

        frames = round(c["huge_mb"] * 2**20 / (512 * 512 * 2))
        huge = write_images(run.work / "data-huge-dicomweb", 1, frames=frames)
        try:
            return dicomweb_bench.dicomweb(run.work, run.pki, run.images("small", c["small"]),
                                           huge, r, list(run.variants.values())[-1], run.log)
        finally:
            shutil.rmtree(run.work / "data-huge-dicomweb", ignore_errors=True)
    if name == "scale":
        return scale_bench.scale(run.work, run.pki, run.images("scale", c["scale"]), r, run.log,
                                 src=run.ours)
    raise ValueError(f"unknown section {name!r} (sections: {', '.join(SECTIONS)})")


def _entry(run: Run, name: str, rows: list[dict[str, Any]], started: float,
           log_from: int, log_lines: list[str], argv: list[str]) -> dict[str, Any]:
    machine = _versions()
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
            "minutes": round((time.time() - started) / 60, 1), "quick": run.args.quick,
            "rounds": rounds_of(name, run.rounds), "counts": run.counts, "variants": list(run.variants),
            "command": shlex.join(["python", "-m", "bench", *argv]),
            "commit": results.commit_of(machine),
            "machine": machine, "results": rows, "log": log_lines[log_from:]}


def _variants(ap: argparse.ArgumentParser, specs: list[str]) -> dict[str, ServerSpec]:
    variants: dict[str, ServerSpec] = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        folder, *options = rest.split(",")
        if not folder:
            ap.error("--server-src takes NAME=DIR[,KEY=VALUE...]")
        settings: list[tuple[str, object]] = []
        for option in options:
            key, _, value = option.partition("=")
            settings.append((key, int(value) if value.isdigit() else value))
        src = None if folder == "installed" else Path(folder).resolve()
        variants[name] = ServerSpec(src, tuple(settings))
    return variants or {"securepacs": ServerSpec()}


def _counts(quick: bool) -> dict[str, Any]:
    """How much data each section uses (scale: 400 small images, ~5 s a run on one
    instance, long enough that start-up and the last straggler weigh little)."""
    return {"small": 40 if quick else 200, "large": 2 if quick else 5,
            "large_mb": 20 if quick else 50, "huge_mb": 200 if quick else 1024,
            "media": 100 if quick else 1000,
            "query": [10_000, 100_000] if quick else [100_000, 1_000_000],
            "query_repeats": 40 if quick else 200, "scale": 80 if quick else 400,
            "viewer": 100 if quick else 500}


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    suffix = "-quick" if args.quick else ""
    json_path, md_path = args.out / f"benchmarks{suffix}.json", args.out / f"benchmarks{suffix}.md"
    if args.report_only:
        args.out.mkdir(parents=True, exist_ok=True)
        write_markdown(results.load(args.report_only), args.out / "benchmarks.md")
        return 0

    rounds = args.rounds or (1 if args.quick else 5)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    variants = _variants(ap, args.server_src)
    unknown = {p.strip() for p in args.peers.split(",") if p.strip()} - set(transfer.PEERS)
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(sorted(unknown))}; peers: {', '.join(transfer.PEERS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="securepacs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {line}", flush=True)
        log_lines.append(line)

    started = time.time()
    log(f"work folder {work}; sections {sections}; rounds {rounds}; variants {list(variants)}")
    run = Run(args, work, make_pki(work / "pki"), rounds, _counts(args.quick), variants, log)
    try:
        for name in sections:
            t0, first = time.time(), len(log_lines)
            rows = _section(run, name)
            entry = _entry(run, name, rows, t0, first, log_lines, argv)
            merged = results.merge(results.load(json_path), {name: entry})
            results.save(merged, json_path)  # after each section: a later failure keeps it
            write_markdown(merged, md_path)
            log(f"{name}: written to {json_path.name} and {md_path.name}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
