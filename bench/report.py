"""docs/benchmarks.md from the raw results (:mod:`bench.results`): medians, ratios, targets.

Each section is rendered from its own entry (its variants, counts, rounds), under a line
saying when, on which commit and with which command it was measured. Everything below the
line ``<!-- notes: kept when the file is regenerated -->`` in an existing benchmarks.md is
hand-written analysis and is kept as it is.
"""

from __future__ import annotations

import json
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
            "does neither; the ingest section says what Orthanc and the durable floor do "
            "(`--peers storescp,orthanc,floor,floor-index`, the default, chooses the receivers "
            "beside ours).",
            ""]
    return out


#: the receivers beside our server, in the order of the tables, with their headings
_PEERS = {"storescp": "storescp", "orthanc": "Orthanc", "floor": "floor",
          "floor-index": "floor+index"}


def _cell(ing: list[dict[str, Any]], server: str, sel: dict[str, Any]) -> str:
    """"220.0 (115) · 3.9": img/s (MB/s) · server CPU ms per image, medians."""
    rate = _med(ing, "images_per_s", server=server, **sel)
    if rate != rate:
        return "–"
    cpu = _med(ing, "cpu_ms_per_image", server=server, **sel)
    return (f"{_fmt(rate, 1)} ({_fmt(_med(ing, 'mb_per_s', server=server, **sel))})"
            + (f" · {_fmt(cpu, 1)}" if cpu == cpu else ""))


def _ingest_method(sec: Entry) -> list[str]:
    """How the receivers were run, and what each does before it answers Success."""
    ing = sec["results"]
    tls = {r["server"]: r["tls"] for r in ing if r.get("kind") == "ingest-tls"}
    peer = next((r for r in ing if r.get("kind") == "ingest-peer" and r["server"] == "orthanc"),
                None)
    out = []
    if tls:
        out += ["TLS negotiated by DCMTK (`echoscu -d`, same TLS code and default profile as "
                "the storescu of the runs) with each receiver: "
                + "; ".join(f"{k} {v}" for k, v in tls.items()) + ".", ""]
    present = {r.get("server") for r in ing if "images_per_s" in r}
    out += ["What each receiver does before it answers a C-STORE with Success:", "",
            "- **securepacs**: blob written to a temp file, `fsync`, renamed into place, folder "
            "`fsync`; index row committed (SQLite WAL, `synchronous=FULL`: the commit is "
            "fsynced); every check and the audit record. Client certificate required."]
    if "storescp" in present:
        out += ["- **storescp** (DCMTK, `--fork`, one process per association): writes the "
                "file, no fsync, no index."]
    if "floor" in present:
        out += ["- **floor** (`bench/floor.py`, written for the benchmark): one thread per "
                "association, each data set's P-DATA fragments written to a file of its own as "
                "they arrive, then `fsync` of the file and of its folder, then the C-STORE-RSP; no "
                "index, no parsing, no checks. TLS from `securepacs.pki.tlspolicy.server_context` "
                "(as ours: TLS 1.2/1.3, AEAD suites, client certificate required), the same PDU "
                "size. The fastest durable ingest this disk and this Python allow; every run "
                "checks that its files are byte for byte the data sets sent."]
    if "floor-index" in present:
        out += ["- **floor+index** (`bench/floor.py --index`): the floor, then one row (SOP "
                "Instance UID, file name) inserted into SQLite (WAL, `synchronous=FULL`) and "
                "committed before the C-STORE-RSP, one commit per image. The least a receiver "
                "can do under securepacs' durability contract (blob durable, then index row "
                "durable, then Success): floor+index / floor is the most ours / floor can be "
                "with one association, whatever the rest costs."]
    if peer is not None and "orthanc" in present:
        settings = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in peer["config"].items()
                             if not k.endswith(("Directory", "Certificate", "PrivateKey",
                                                "Certificates")) and k != "DicomPort")
        out += [f"- **Orthanc** ({peer['version']}, Debian package; index (SQLite) and "
                "storage in a folder of its own; `TCP_NODELAY=1` in its environment, read by "
                "DCMTK's network layer, since Orthanc 1.10 has no option of its own for the "
                "DICOM port; TLS from the same certificates, where its DCMTK BCP 195 profile "
                "picks the suites and the client certificate is required): " + settings
                + "; everything else as shipped. Durability as shipped: " + peer["durability"]]
    if any("cpu_ms_per_image" in r for r in ing):
        out += ["", "CPU: user + system time of the receiving process and its descendants "
                "(our `workers`, storescp's forked children) from `/proc/PID/stat`, from just "
                "before the storescu run to just after it (start-up excluded), divided by the "
                "images: milliseconds of server CPU per image, shown after the `·`."]
    return [*out, ""]


def _ingest(sec: Entry) -> list[str]:
    ing, variants, c = sec["results"], sec["variants"], sec["counts"]
    peers = [p for p in _PEERS if any(r.get("server") == p and "images_per_s" in r for r in ing)]
    out = ["## Ingest: DCMTK storescu -> server", "", _measured(sec), "",
           f"small: {c['small']} images of 512x512x16 bit (0.5 MB); large: {c['large']} "
           f"images of ~{c['large_mb']} MB. Rate over the whole storescu run(s), "
           "association and TLS handshake included; each run on a fresh receiver with an "
           "empty folder; receivers interleaved in each round, order reversed every other "
           "round.", "", *_ingest_method(sec)]
    servers = [*variants, *peers]
    cpu = " · CPU ms/img" if any("cpu_ms_per_image" in r for r in ing) else ""
    head = ("| size | transport | assoc. | "
            + " | ".join(f"{_PEERS.get(v, v)} img/s (MB/s){cpu}" for v in servers)
            + " | " + " | ".join(f"{v} / {_PEERS[p]}" for v in variants for p in peers) + " |")
    out += [head, "|" + "---|" * (head.count("|") - 1)]
    for size in ("small", "large"):
        for tls in (False, True):
            for par in (1, 4):
                sel = {"size": size, "tls": tls, "parallel": par}
                if not any(r.get("kind") == "ingest" and all(r.get(k) == x for k, x in sel.items())
                           for r in ing):
                    continue
                ratios = [_ratio(_med(ing, "images_per_s", server=v, **sel),
                                 _med(ing, "images_per_s", server=p, **sel))
                          for v in variants for p in peers]
                out.append(f"| {size} | {'TLS' if tls else 'plain'} | {par} | "
                           + " | ".join(_cell(ing, v, sel) for v in servers) + " | "
                           + " | ".join(ratios) + " |")
    out += ["", "### TLS cost (TLS rate / plain rate, same server)", "",
            "| size | assoc. | " + " | ".join(_PEERS.get(v, v) for v in servers) + " |",
            "|---|---|" + "---|" * len(servers)]
    for size in ("small", "large"):
        for par in (1, 4):
            cells = []
            for v in servers:
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
    out = ["## Targets (issues 8, 9 and 19), as measured in the sections above", "",
           "| target | measured | met |", "|---|---|---|"]

    def line(name: str, value: float, goal: float | None, text: str, higher: bool = True) -> None:
        """One row; `goal` None: a bound measured beside the goals, not a goal itself."""
        if value != value:
            return
        if goal is None:
            out.append(f"| {name} | {text} | (bound) |")
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
            scroll = median([r[key] for r in mv])
            line(f"disc viewer: scroll >= 20 img/s ({label})", scroll, 20, f"{scroll:.0f} img/s")
    _goals19(sections, line)
    out.append("")
    return out


def _goals19(sections: dict[str, Entry], line: Callable[..., None]) -> None:
    """The goals of issue 19: ratios to Orthanc, the durable floor and storescp measured in
    the same run, server CPU per image, TLS/plain and the send command."""
    ing, ours = _rows(sections, "ingest")

    def ratio(goal: float | None, a: float, b: float, text: str, unit: str = "img/s") -> None:
        if b == b and b:
            line(text, a / b, goal, f"{a:.0f} vs {b:.0f} {unit} = {a / b:.2f}x")

    small = {"size": "small", "tls": True}
    for par, peer, goal in ((1, "orthanc", 2.0), (1, "floor", 0.8), (4, "orthanc", 2.5),
                            (4, "storescp", 0.5)):
        ratio(goal, _med(ing, "images_per_s", server=ours, parallel=par, **small),
              _med(ing, "images_per_s", server=peer, parallel=par, **small),
              f"issue 19: small TLS ingest, {par} assoc. >= {goal}x {_PEERS[peer]}")
    for par in (1, 4):
        ratio(None, _med(ing, "images_per_s", server="floor-index", parallel=par, **small),
              _med(ing, "images_per_s", server="floor", parallel=par, **small),
              f"bound: floor+index / floor, small TLS, {par} assoc. (the most ours / floor "
              "can be under the durability contract)")
        ratio(None, _med(ing, "images_per_s", server=ours, parallel=par, **small),
              _med(ing, "images_per_s", server="floor-index", parallel=par, **small),
              f"ours / floor+index, small TLS, {par} assoc.")
    for par in (1, 4):
        cpu = _med(ing, "cpu_ms_per_image", server=ours, parallel=par, **small)
        line(f"issue 19: server CPU per small image <= 2.0 ms (SQLite, TLS, {par} assoc.)",
             cpu, 2.0, f"{cpu:.2f} ms", higher=False)
    scale, _ = _rows(sections, "scale")
    pg = [r["cpu_servers_s"] * 1000 / r["images"] for r in scale
          if r.get("layout") == "pg-1" and "cpu_servers_s" in r]
    if pg:
        line("issue 19: server CPU per small image <= 5 ms (PostgreSQL + Azurite, scale section)",
             median(pg), 5.0, f"{median(pg):.2f} ms", higher=False)
    large = {"size": "large", "parallel": 1}
    t = _med(ing, "mb_per_s", server=ours, tls=True, **large)
    p = _med(ing, "mb_per_s", server=ours, tls=False, **large)
    if p == p and p:
        line("issue 19: large TLS / plain >= 0.85 (1 assoc.)", t / p, 0.85, f"{t / p:.2f}")
    ratio(0.8, t, _med(ing, "mb_per_s", server="storescp", tls=True, **large),
          "issue 19: large TLS MB/s >= 0.8x storescp (1 assoc.)", "MB/s")
    snd, _ = _rows(sections, "send")
    for size, goal, key, unit in (("small", 0.7, "images_per_s", "img/s"),
                                  ("large", 1.0, "mb_per_s", "MB/s")):
        ratio(goal, _med(snd, key, client="securepacs send", size=size),
              _med(snd, key, client="storescu", size=size),
              f"issue 19: securepacs send whole command >= {goal}x storescu ({size})", unit)
