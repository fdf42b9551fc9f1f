"""docs/benchmarks.md from the raw results (:mod:`bench.results`): medians, ratios, targets.

Each section is rendered from its own entry (its variants, counts, rounds), under a line
saying when, on which commit and with which command it was measured. Everything below the
line ``<!-- notes: kept when the file is regenerated -->`` in an existing benchmarks.md is
hand-written analysis and is kept as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import median

NOTES = "<!-- notes: kept when the file is regenerated -->"
Entry = dict[str, Any]


def _med(rows: list[dict[str, Any]], key: str, **match: Any) -> float:
    return median([r[key] for r in rows if all(r.get(k) == v for k, v in match.items())
                   and key in r])


def _fmt(x: float, digits: int = 0) -> str:
    return "–" if x != x else f"{x:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return "–" if a != a or b != b or not b else f"{a / b:.2f}x"


def _measured(sec: Entry) -> str:
    took = f" ({sec['minutes']} min)" if sec["minutes"] is not None else ""
    return (f"*Measured {sec['started']}{took}, commit {sec['commit']}, "
            f"{sec['rounds']} round(s): `{sec['command']}`.*")


def _head(sections: dict[str, Entry], path: Path) -> list[str]:
    newest = max(sections.values(), key=lambda e: e["started"])
    machine = {k: v for k, v in newest["machine"].items() if k != "securepacs"}
    out = ["# Benchmarks", "",
           "Each section was measured by a run of `python -m bench` of its own (table "
           "below; a run with `--only` replaces its sections and keeps the others). Every "
           "figure is the median of that run's interleaved rounds; raw numbers in "
           f"`{path.with_suffix('.json').name}`.", "",
           "| section | measured (UTC) | commit | rounds | minutes | command |",
           "|---|---|---|---|---|---|"]
    for name, sec in sections.items():
        minutes = "–" if sec["minutes"] is None else sec["minutes"]
        out.append(f"| {name} | {sec['started']} | {sec['commit']} | {sec['rounds']} | "
                   f"{minutes} | `{sec['command']}` |")
    out += ["", "Machine (newest run): " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
            "",
            "Rerun: `.venv/bin/python -m bench` from the repository root (`--quick` for a short "
            "trial, `--only ingest,send` for some sections, `--server-src before=DIR --server-src "
            "after=DIR` to run copies of `src/` side by side, `--query-backends sqlite,postgresql`, "
            "`--report-only docs/benchmarks.json` to rebuild this file). The run generates its "
            "data, a throwaway CA, and starts every server (and PostgreSQL, Azurite, HAProxy) on "
            "loopback; DCMTK runs with `TCP_NODELAY=1`; both sides use 128 KB PDUs "
            "(`-pdu 131072`, `max_pdu = 131072`); `storescp --fork` so parallel associations run "
            "in parallel. Each ingest run starts a fresh server with an empty data folder. Note: "
            "our server fsyncs every blob and commits every index row before answering; storescp "
            "does neither.", ""]
    return out


def _ingest(sec: Entry) -> list[str]:
    ing, variants, c = sec["results"], sec["variants"], sec["counts"]
    out = ["## Ingest: DCMTK storescu -> server", "", _measured(sec), "",
           f"small: {c['small']} images of 512x512x16 bit (0.5 MB); large: {c['large']} "
           f"images of ~{c['large_mb']} MB. Rate over the whole storescu run(s), "
           "association and TLS handshake included.", ""]
    head = "| size | transport | assoc. | " + " | ".join(
        f"{v} img/s (MB/s)" for v in variants) + " | storescp img/s (MB/s) | " + " | ".join(
        f"{v} / storescp" for v in variants) + " |"
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for size in ("small", "large"):
        for tls in (False, True):
            for par in (1, 4):
                sel = {"size": size, "tls": tls, "parallel": par}
                dc = _med(ing, "images_per_s", server="storescp", **sel)
                dcm = _med(ing, "mb_per_s", server="storescp", **sel)
                if dc != dc:
                    continue
                cells = []
                ratios = []
                for v in variants:
                    ours = _med(ing, "images_per_s", server=v, **sel)
                    cells.append(f"{_fmt(ours, 1)} ({_fmt(_med(ing, 'mb_per_s', server=v, **sel))})")
                    ratios.append(_ratio(ours, dc))
                out.append(f"| {size} | {'TLS' if tls else 'plain'} | {par} | "
                           + " | ".join(cells) + f" | {_fmt(dc, 1)} ({_fmt(dcm)}) | "
                           + " | ".join(ratios) + " |")
    out += ["", "### TLS cost (TLS rate / plain rate, same server)", "",
            "| size | assoc. | " + " | ".join(variants) + " | storescp |",
            "|---|---|" + "---|" * (len(variants) + 1)]
    for size in ("small", "large"):
        for par in (1, 4):
            cells = []
            for v in [*variants, "storescp"]:
                t = _med(ing, "images_per_s", server=v, size=size, tls=True, parallel=par)
                p = _med(ing, "images_per_s", server=v, size=size, tls=False, parallel=par)
                cells.append(_ratio(t, p).rstrip("x"))
            out.append(f"| {size} | {par} | " + " | ".join(cells) + " |")
    return out


def _send(sec: Entry) -> list[str]:
    snd = sec["results"]
    out = ["## Send over TLS: client -> DCMTK storescp", "", _measured(sec), "",
           "`securepacs send FOLDER` (whole command: Python start-up, file discovery, "
           "association, transfer) and its own transfer time (the `in N s` of its summary) "
           "vs `storescu FILES` (whole command), one association.", "",
           "| size | securepacs send img/s (MB/s) | transfer only img/s (MB/s) | storescu "
           "img/s (MB/s) | whole / storescu | transfer / storescu |", "|---|---|---|---|---|---|"]
    for size in ("small", "large"):
        ours = _med(snd, "images_per_s", client="securepacs send", size=size)
        tr = _med(snd, "transfer_images_per_s", client="securepacs send", size=size)
        dc = _med(snd, "images_per_s", client="storescu", size=size)
        if dc != dc:
            continue
        ours_mb = _med(snd, "mb_per_s", client="securepacs send", size=size)
        tr_mb = _med(snd, "transfer_mb_per_s", client="securepacs send", size=size)
        out.append(f"| {size} | {_fmt(ours, 1)} ({_fmt(ours_mb)}) "
                   f"| {_fmt(tr, 1)} ({_fmt(tr_mb)}) "
                   f"| {_fmt(dc, 1)} ({_fmt(_med(snd, 'mb_per_s', client='storescu', size=size))}) "
                   f"| {_ratio(ours, dc)} | {_ratio(tr, dc)} |")
    starts = [r for r in snd if r.get("kind") == "startup"]
    if starts:
        out += ["", "Start-up (whole command, median wall seconds; target < 0.3 s):", "",
                "| command | seconds |", "|---|---|"]
        for name in ("securepacs --help", "securepacs echo", "echoscu",
                     "securepacs send (1 file)", "storescu (1 file)"):
            if any(r.get("client") == name for r in starts):  # measured in this run
                out.append(f"| `{name}` | {_fmt(_med(starts, 'seconds', client=name), 3)} |")
    return out


def _memory(sec: Entry) -> list[str]:
    out = ["## Server memory while receiving one large object over TLS", "", _measured(sec), "",
           "| server | object | idle VmHWM | peak VmHWM | rate |", "|---|---|---|---|---|"]
    for r in sec["results"]:
        out.append(f"| {r['server']} | {r['bytes'] / 2**20:,.0f} MiB | "
                   f"{r['idle_hwm_kb'] / 1024:,.0f} MiB | {r['hwm_kb'] / 1024:,.0f} MiB | "
                   f"{r['mb_per_s']:,.0f} MB/s |")
    return out


def _dicomweb(sec: Entry) -> list[str]:
    rows = [r for r in sec["results"] if r["kind"] == "dicomweb"]
    out = ["## DICOMweb beside DIMSE (one study, one connection)", "", _measured(sec), "",
           "securepacs over TLS with a client certificate (C-STORE: DCMTK storescu; C-GET: "
           "`securepacs get`; STOW-RS / WADO-RS: Python requests, the study in one streamed "
           "request); Orthanc's DICOMweb plugin over plain HTTP. Medians of the rounds.", "",
           "| server | operation | images/s | MB/s |", "|---|---|---|---|"]
    for server, op in dict.fromkeys((r["server"], r["op"]) for r in rows):
        out.append(f"| {server} | {op} | "
                   f"{_fmt(_med(rows, 'images_per_s', server=server, op=op))} | "
                   f"{_fmt(_med(rows, 'mb_per_s', server=server, op=op))} |")
    stow = _med(rows, "images_per_s", server="securepacs", op="stow-rs")
    store = _med(rows, "images_per_s", server="securepacs", op="c-store")
    out += ["", f"STOW-RS / C-STORE: {_ratio(stow, store)} (goal >= 0.8x)"]
    for r in sec["results"]:
        if r["kind"] == "dicomweb-memory":
            out += ["", f"One {r['bytes'] / 2**20:,.0f} MiB object up by STOW-RS and down by "
                        f"WADO-RS: server VmHWM idle {r['idle_hwm_kb'] / 1024:,.0f} MiB, after "
                        f"STOW-RS {r['stow_hwm_kb'] / 1024:,.0f} MiB, after WADO-RS "
                        f"{r['hwm_kb'] / 1024:,.0f} MiB (goal < 200 MiB)."]
    return out


def _query(sec: Entry) -> list[str]:
    out = ["## C-FIND latency (TLS, one persistent association)", "", _measured(sec), "",
           "Synthetic rows (2 studies per patient, 2 series per study, 25 instances per "
           "series) bulk-loaded into a fresh index: SQLite (SQLAlchemy core inserts) or "
           "PostgreSQL (a private cluster with its default settings plus `shared_buffers = "
           "256MB`; `COPY`, then `VACUUM (ANALYZE)`). STUDY: PatientID = a random patient, "
           "returning 8 attributes incl. ModalitiesInStudy and NumberOfStudyRelatedInstances "
           "(2 matches). IMAGE: one random series by Study + Series Instance UID (25 "
           f"matches). {sec['counts']['query_repeats']} queries per line after 5 warm-ups; "
           "time from request to final response, identifiers decoded.", ""]
    tenants = any("tenancy" in r for r in sec["results"])
    if tenants:
        orgs = next(r.get("orgs", 20) for r in sec["results"] if "tenancy" in r)
        out += [f"Organisations as tenants (docs/tenants.md): the rows belong to {orgs} "
                "organisations, about 1 % of the studies are shared with the caller's "
                "organisation and as many between others; nine queries in ten name the "
                "caller's own patients or series, one in ten one of a study shared with it. "
                "Two servers on the same index answer the same queries, interleaved query by "
                "query: `org` (trust from the index; the client is an identity of one "
                "organisation, so the SQL visibility condition is on the path) and `none` "
                "(trust from files: no organisations, no condition). `org/none` is the ratio "
                "of the p95 figures of that run (the filter's cost); matches: median (mean).",
                ""]
        out += ["| backend | instances | level | tenancy | p50 ms | p95 ms | org/none p95 | "
                "matches |", "|---|---|---|---|---|---|---|---|"]
    else:
        out += ["| backend | instances | level | p50 ms | p95 ms | matches |",
                "|---|---|---|---|---|---|"]
    levels = ["STUDY", "IMAGE"]
    rows = sorted(sec["results"], key=lambda r: (r["instances"], levels.index(r["level"]),
                                                 r.get("backend", "sqlite") != "sqlite",
                                                 r.get("tenancy", "")))
    for r in rows:
        if not tenants:
            out.append(f"| {r.get('backend', 'sqlite')} | {r['instances']:,} | {r['level']} | "
                       f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['matches_median']:.0f} |")
            continue
        ratio = ""
        if r.get("tenancy") == "org":
            base = [b for b in rows if b.get("tenancy") == "none" and all(
                b.get(k) == r.get(k) for k in ("backend", "instances", "level"))]
            if base and base[0]["p95_ms"]:
                ratio = f"{r['p95_ms'] / base[0]['p95_ms']:.2f}x"
        mean = r.get("matches_mean")
        matches = f"{r['matches_median']:.0f}" + (f" ({mean:.2f})" if mean is not None else "")
        out.append(f"| {r.get('backend', 'sqlite')} | {r['instances']:,} | {r['level']} | "
                   f"{r.get('tenancy', '')} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {ratio} | "
                   f"{matches} |")
    return out


def _media(sec: Entry) -> list[str]:
    med = sec["results"]
    out = ["## Secure media: create / extract", "", _measured(sec), "",
           f"{sec['counts']['media']} files of 256x256x16 bit (~130 KB). `securepacs media "
           "create --password-file` / `media extract` (whole commands, DICOMDIR included) vs "
           "`openssl cms -encrypt/-decrypt -binary -aes-256-cbc -pwri_password` on the "
           "same files, one process per file, and on all the bytes concatenated in one "
           "process (the cipher's own speed).", "",
           "| operation | tool | files/s | MB/s | securepacs / tool |", "|---|---|---|---|---|"]
    for op in ("create", "extract"):
        ours_mb = _med(med, "mb_per_s", tool="securepacs media", op=op)
        for tool in ("securepacs media", "openssl cms (1 proc/file)", "openssl cms (1 proc, all)"):
            f = _med(med, "files_per_s", tool=tool, op=op)
            mb = _med(med, "mb_per_s", tool=tool, op=op)
            out.append(f"| {op} | {tool} | {_fmt(f, 1) if 'all' not in tool else '–'} | "
                       f"{_fmt(mb)} | {'' if tool == 'securepacs media' else _ratio(ours_mb, mb)} |")
    for r in med:
        if r["kind"] == "media-derivations":
            out += ["", f"PBKDF2 derivations for one open of the {r['files']}-file media "
                        f"(counted by the reader's KEK cache): **{r['derivations_per_open']}**."]
    return out


#: CPU columns of the scale table: result key -> heading
_CPU = {"cpu_servers_s": "servers", "cpu_postgres_s": "PostgreSQL", "cpu_azurite_s": "Azurite",
        "cpu_haproxy_s": "HAProxy", "cpu_senders_s": "4 storescu", "cpu_busy_s": "whole machine"}


def _scale(sec: Entry) -> list[str]:
    rows = sec["results"]
    layouts = list(dict.fromkeys((r["layout"], r["label"]) for r in rows))
    images = rows[0]["images"] if rows else 0
    out = ["## Scale-out: 1 vs 2 instances behind HAProxy, 4 parallel TLS senders", "",
           _measured(sec), "",
           f"{images} images of 512x512x16 bit (0.5 MB), split over 4 `storescu +tls` processes "
           "started together (one association each). PostgreSQL + Azurite: a private "
           "PostgreSQL cluster (durable defaults: `fsync` and `synchronous_commit` on) and "
           "Azurite (blob data on disk), both on this machine; HAProxy in TCP mode (TLS passes "
           "through, each instance verifies the client certificate), round robin per "
           "association, so 2 instances get 2 senders each. Fresh database, container, data "
           "folders and server processes for every run; layouts interleaved in each round, "
           "order rotated between rounds. CPU: milliseconds of CPU per image, by party, "
           "during the send (whole machine: every core's busy time, other users included).", "",
           "| layout | img/s | MB/s | per round img/s | vs 1 instance SQLite | cores busy | "
           + " | ".join(f"CPU ms/img {h}" for h in _CPU.values()) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(_CPU)]
    base = _med(rows, "images_per_s", layout="sqlite-direct")
    for key, label in layouts:
        sel = [r for r in rows if r["layout"] == key]
        rate = _med(sel, "images_per_s")
        per_round = ", ".join(f"{r['images_per_s']:.0f}" for r in sorted(sel, key=lambda r: r["round"]))
        cpu = [_fmt(median([r[k] * 1000 / r["images"] for r in sel if k in r]), 1) for k in _CPU]
        out.append(f"| {label} | {_fmt(rate, 1)} | {_fmt(_med(sel, 'mb_per_s'))} | {per_round} | "
                   f"{_ratio(rate, base)} | {_fmt(_med(sel, 'cores_busy'), 2)} | "
                   + " | ".join(cpu) + " |")
    two, one = _med(rows, "images_per_s", layout="pg-2"), _med(rows, "images_per_s", layout="pg-1")
    out += ["", f"**2 instances / 1 instance (PostgreSQL + Azurite, HAProxy): {_ratio(two, one)}** "
                f"({_fmt(two, 1)} vs {_fmt(one, 1)} img/s, medians)."]
    return out


def _media_viewer(sec: Entry) -> list[str]:
    rows = [r for r in sec["results"] if r["kind"] == "media-viewer"]
    images = rows[0]["images"] if rows else 0
    out = ["## Disc viewer in Chromium (issue 13)", "", _measured(sec), "",
           f"A {images}-image disc (512x512x16 bit, ~0.5 MB each) from `securepacs media create "
           "--password-file` (PBKDF2-SHA256, 600,000 iterations), opened from file:// in Debian "
           "chromium (headless, Playwright), the disc folder chosen in the page. Times from the "
           "page's own clock: submit of the password -> first image drawn (one PBKDF2, the "
           "DICOMDIR, the list, the first image); scroll: every image of the series shown in "
           "turn (read, decrypt, parse, decode, render, draw), first pass and second pass.", "",
           "| measure | median | per round |", "|---|---|---|"]
    for key, label, unit in (("first_image_s", "password -> first image", "s"),
                             ("unlock_s", "of which: opening the DICOMDIR (PBKDF2)", "s"),
                             ("checked_all_s", "password -> every file checked", "s"),
                             ("scroll_cold_img_s", "scroll, first pass", "img/s"),
                             ("scroll_warm_img_s", "scroll, second pass", "img/s")):
        vals = [r[key] for r in rows]
        digits = 2 if unit == "s" else 0
        out.append(f"| {label} | {_fmt(median(vals), digits)} {unit} | "
                   f"{', '.join(_fmt(v, digits) for v in vals)} |")
    return out


_RENDER: dict[str, Callable[[Entry], list[str]]] = {
    "media-viewer": _media_viewer,
    "ingest": _ingest, "send": _send, "memory": _memory, "query": _query, "media": _media,
    "scale": _scale,
    "dicomweb": _dicomweb,
}


def write_markdown(data: dict[str, Any], path: Path) -> None:
    """benchmarks.md from a results file (:func:`bench.results.load`), notes kept."""
    sections: dict[str, Entry] = data["sections"]
    out = _head(sections, path) if sections else ["# Benchmarks", ""]
    for name, sec in sections.items():
        if name in _RENDER and sec["results"]:
            out += [*_RENDER[name](sec), ""]
    out += _targets(sections)
    text = "\n".join(out) + "\n"
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES in old:
            notes = old[old.index(NOTES):]
    path.write_text(text + "\n" + (notes or NOTES + "\n"))


def _rows(sections: dict[str, Entry], name: str) -> tuple[list[dict[str, Any]], str]:
    """A section's results and the variant checked against the targets (its last)."""
    sec = sections.get(name)
    if sec is None:
        return [], ""
    return sec["results"], (sec["variants"] or [""])[-1]


def _targets(sections: dict[str, Entry]) -> list[str]:
    out = ["## Targets (issues 8 and 9), as measured in the sections above", "",
           "| target | measured | met |", "|---|---|---|"]

    def line(name: str, value: float, goal: float, text: str, higher: bool = True) -> None:
        if value != value:
            return
        ok = value >= goal if higher else value < goal
        out.append(f"| {name} | {text} | {'yes' if ok else 'no'} |")

    ing, ours = _rows(sections, "ingest")

    def rate(server: str, **k: Any) -> float:
        return _med(ing, "images_per_s", server=server, **k)

    for par, goal in ((4, 1.0), (1, 0.5)):
        a = rate(ours, size="small", tls=True, parallel=par)
        b = rate("storescp", size="small", tls=True, parallel=par)
        line(f"small TLS ingest, {par} assoc. >= {goal}x storescp", a / b if b else float("nan"), goal,
             f"{a:.0f} vs {b:.0f} img/s = {a / b:.2f}x" if b else "–")
    for size in ("small", "large"):
        for par in (1, 4):
            t = rate(ours, size=size, tls=True, parallel=par)
            p = rate(ours, size=size, tls=False, parallel=par)
            line(f"TLS / plain >= 0.9 ({size}, {par} assoc.)", t / p if p else float("nan"), 0.9,
                 f"{t / p:.2f}" if p else "–")
    a = _med(ing, "mb_per_s", server=ours, size="large", tls=True, parallel=1)
    b = _med(ing, "mb_per_s", server="storescp", size="large", tls=True, parallel=1)
    line("large TLS MB/s >= 0.8x storescp (1 assoc.)", a / b if b else float("nan"), 0.8,
         f"{a:.0f} vs {b:.0f} MB/s = {a / b:.2f}x" if b else "–")
    mem, ours = _rows(sections, "memory")
    for r in mem:
        if r["server"] == ours:
            line(f"server peak RSS receiving {r['bytes'] / 2**20:,.0f} MiB < 200 MB",
                 r["hwm_kb"] * 1024 / 1e6, 200, f"{r['hwm_kb'] * 1024 / 1e6:,.0f} MB", higher=False)
    snd, _ = _rows(sections, "send")
    for key, label in (("images_per_s", "whole command"), ("transfer_images_per_s", "transfer only")):
        a = _med(snd, key, client="securepacs send", size="small")
        b = _med(snd, "images_per_s", client="storescu", size="small")
        line(f"securepacs send TLS >= storescu (small, {label})", a / b if b else float("nan"), 1.0,
             f"{a:.0f} vs {b:.0f} img/s = {a / b:.2f}x" if b else "–")
    for r in _rows(sections, "query")[0]:
        if r["level"] == "STUDY" and r["instances"] >= 1_000_000 and r.get("tenancy") != "none":
            line(f"C-FIND study p95 < 100 ms at {r['instances']:,} ({r.get('backend', 'sqlite')})",
                 r["p95_ms"], 100, f"{r['p95_ms']:.1f} ms", higher=False)
    med, _ = _rows(sections, "media")
    for op in ("create", "extract"):
        a = _med(med, "mb_per_s", tool="securepacs media", op=op)
        for tool in ("openssl cms (1 proc/file)", "openssl cms (1 proc, all)"):
            b = _med(med, "mb_per_s", tool=tool, op=op)
            line(f"media {op} >= 0.8x {tool}", a / b if b else float("nan"), 0.8,
                 f"{a:.0f} vs {b:.0f} MB/s = {a / b:.2f}x" if b else "–")
    for r in med:
        if r["kind"] == "media-derivations":
            n = r["derivations_per_open"]
            line("one PBKDF2 derivation per media open", 1.0 if n == 1 else 0.0, 1.0, str(n))
    mv = [r for r in _rows(sections, "media-viewer")[0] if r["kind"] == "media-viewer"]
    if mv:
        first = median([r["first_image_s"] for r in mv])
        line(f"disc viewer: password -> first image of {mv[0]['images']} images < 3 s", first, 3,
             f"{first:.2f} s", higher=False)
        for key, label in (("scroll_cold_img_s", "first pass"), ("scroll_warm_img_s", "loaded")):
            rate = median([r[key] for r in mv])
            line(f"disc viewer: scroll >= 20 img/s ({label})", rate, 20, f"{rate:.0f} img/s")
    out.append("")
    return out
