"""Run the benchmark and write docs/benchmarks.md and docs/benchmarks.json.

    .venv/bin/python -m bench              # full run (~20 min on 2 cores)
    .venv/bin/python -m bench --quick      # small counts, to try it out
    .venv/bin/python -m bench --server-src before=/tmp/before/src --server-src after=src
    .venv/bin/python -m bench --report-only docs/benchmarks.json   # redo the markdown
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import media as media_bench  # noqa: E402
from bench import query as query_bench  # noqa: E402
from bench import transfer  # noqa: E402
from bench.common import ROOT, make_pki, write_images  # noqa: E402
from bench.report import write_markdown  # noqa: E402

SECTIONS = ("ingest", "send", "memory", "query", "media")


def _versions() -> dict[str, str]:
    import cryptography
    import pydicom
    import pynetdicom
    import sqlalchemy

    import securepacs

    def first_line(*cmd: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "?", False
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
        "cryptography": cryptography.__version__, "dcmtk": first_line("storescu", "--version"),
        "openssl": first_line("openssl", "version"), "kernel": platform.release(),
        "cpu": f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores",
        "memory": f"{int(mem) // 1024} MiB",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, one round")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--server-src", action="append", default=[], metavar="NAME=DIR",
                    help="run the server from this copy of src/ as a variant named NAME "
                    "(repeatable, e.g. before=/tmp/before/src after=/tmp/after/src); default: "
                    "the installed package; the last variant is checked against the targets")
    ap.add_argument("--sizes", default="small,large", help="ingest/send image sizes to run")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write results")
    ap.add_argument("--report-only", type=Path, help="rewrite the markdown from a JSON file")
    args = ap.parse_args(argv)

    if args.report_only:
        data = json.loads(args.report_only.read_text())
        write_markdown(data, args.out / "benchmarks.md")
        return 0

    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    variants: dict[str, Path | None] = {}
    for spec in args.server_src:
        name, _, folder = str(spec).partition("=")
        if not folder:
            ap.error("--server-src takes NAME=DIR")
        variants[name] = Path(folder).resolve()
    variants = variants or {"securepacs": None}
    work = args.work or Path(tempfile.mkdtemp(prefix="securepacs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {line}", flush=True)
        log_lines.append(line)

    counts: dict[str, Any] = {"small": 40 if quick else 200, "large": 2 if quick else 5,
              "large_mb": 20 if quick else 50, "huge_mb": 200 if quick else 1024,
              "media": 100 if quick else 1000,
              "query": [10_000, 100_000] if quick else [100_000, 1_000_000],
              "query_repeats": 40 if quick else 200}
    started = time.time()
    log(f"work folder {work}; sections {sections}; rounds {rounds}; variants {list(variants)}")
    pki = make_pki(work / "pki")
    frames_large = max(1, round(counts["large_mb"] * 1e6 / (512 * 512 * 2)))
    data = {}
    if {"ingest", "send"} & set(sections):
        data["small"] = write_images(work / "data-small", counts["small"])
        data["large"] = write_images(work / "data-large", counts["large"], frames=frames_large)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    data = {k: v for k, v in data.items() if k in sizes}
    results: list[dict[str, Any]] = []
    try:
        if "ingest" in sections:
            results += transfer.ingest(work, pki, data, rounds, variants, log)
        if "send" in sections:
            results += transfer.send(work, pki, data, rounds, log)
        if "memory" in sections:
            frames = round(counts["huge_mb"] * 2**20 / (512 * 512 * 2))
            huge = write_images(work / "data-huge", 1, frames=frames)
            results += transfer.memory(work, pki, huge, variants, log)
            shutil.rmtree(work / "data-huge", ignore_errors=True)
        if "query" in sections:
            results += query_bench.query(work, pki, counts["query"], counts["query_repeats"], log,
                                         src=list(variants.values())[-1])
        if "media" in sections:
            files = write_images(work / "data-media", counts["media"], rows=256, cols=256)
            results += media_bench.media(work, files, max(1, min(rounds, 3)), log)
    finally:
        out = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
               "minutes": round((time.time() - started) / 60, 1), "quick": quick,
               "rounds": rounds, "counts": counts, "variants": list(variants),
               "machine": _versions(), "results": results, "log": log_lines}
        args.out.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if quick else ""
        (args.out / f"benchmarks{suffix}.json").write_text(json.dumps(out, indent=1))
        write_markdown(out, args.out / f"benchmarks{suffix}.md")
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
