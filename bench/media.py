"""Secure media: ``securepacs media create/extract`` of N files vs ``openssl cms``
(-encrypt/-decrypt -binary, password recipient) on the same bytes, and the number of
PBKDF2 derivations one open of the media costs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import ROOT

Log = Callable[[str], None]
PASSWORD = "Bench-media-passphrase: tangerine cobalt 7 lantern quarry!"


def _cli(*args: str | Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "securepacs.cli", "media", *map(str, args)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"media {args[0]} failed: {done.stdout[-800:]} {done.stderr[-800:]}")
    return seconds


def _openssl_each(files: list[Path], out: Path, decrypt: bool, jobs: int = 1) -> float:
    out.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> None:
        if decrypt:
            args = ["openssl", "cms", "-decrypt", "-binary", "-inform", "DER",
                    "-pwri_password", PASSWORD, "-in", str(path), "-out", str(out / path.name)]
        else:
            args = ["openssl", "cms", "-encrypt", "-binary", "-aes-256-cbc", "-outform", "DER",
                    "-pwri_password", PASSWORD, "-in", str(path), "-out", str(out / path.name)]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    start = time.perf_counter()
    if jobs == 1:
        for f in files:
            one(f)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, files))
    return time.perf_counter() - start


def _derivations(media: Path, to: Path) -> int:
    from securepacs.services import media as service

    keyring = service.keyring_from(password=PASSWORD)
    report = service.extract_media(media, to, keyring)
    shutil.rmtree(to, ignore_errors=True)
    return int(report.derivations)


def media(work: Path, files: list[Path], rounds: int, log: Log) -> list[dict[str, Any]]:
    src = files[0].parent
    nbytes = sum(f.stat().st_size for f in files)
    pw = work / "media-password.txt"
    pw.write_text(PASSWORD + "\n")
    results: list[dict[str, Any]] = []

    def record(tool: str, op: str, seconds: float, rnd: int) -> None:
        r = {"kind": "media", "tool": tool, "op": op, "round": rnd, "files": len(files),
             "bytes": nbytes, "seconds": seconds, "files_per_s": len(files) / seconds,
             "mb_per_s": nbytes / 1e6 / seconds}
        log(f"media  r{rnd} {op:7s} {tool:22s} {r['files_per_s']:7.1f} files/s "
            f"{r['mb_per_s']:7.1f} MB/s")
        results.append(r)

    for rnd in range(rounds):
        disc, plain = work / "media-disc", work / "media-plain"
        enc, dec = work / "openssl-enc", work / "openssl-dec"
        for d in (disc, plain, enc, dec):
            shutil.rmtree(d, ignore_errors=True)
        order = ["ours", "openssl"] if rnd % 2 == 0 else ["openssl", "ours"]
        for tool in order:
            if tool == "ours":
                record("securepacs media", "create",
                       _cli("create", src, "--out", disc, "--password-file", pw), rnd)
            else:
                record("openssl cms (1 proc/file)", "create", _openssl_each(files, enc, False), rnd)
        secure = sorted(p for p in enc.iterdir())
        for tool in order:
            if tool == "ours":
                record("securepacs media", "extract",
                       _cli("extract", disc, "--to", plain, "--password-file", pw), rnd)
            else:
                record("openssl cms (1 proc/file)", "extract",
                       _openssl_each(secure, dec, True), rnd)
        if rnd == 0:
            for a in files[:20]:  # openssl round trip is byte-exact
                if (dec / a.name).read_bytes() != a.read_bytes():
                    raise RuntimeError(f"openssl round trip changed {a.name}")
            n = _derivations(disc, work / "media-derive")
            results.append({"kind": "media-derivations", "derivations_per_open": n,
                            "files": len(files)})
            log(f"media  PBKDF2 derivations per open of {len(files)} files: {n}")
    # the same bytes in one openssl process: the cipher's own speed, no process start-ups
    blob = work / "media-all.bin"
    with open(blob, "wb") as fh:
        for f in files:
            fh.write(f.read_bytes())
    for rnd in range(rounds):
        start = time.perf_counter()
        subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-aes-256-cbc", "-outform", "DER",
                        "-pwri_password", PASSWORD, "-in", str(blob), "-out", str(blob) + ".p7m"],
                       check=True, capture_output=True)
        record("openssl cms (1 proc, all)", "create", time.perf_counter() - start, rnd)
        start = time.perf_counter()
        subprocess.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER",
                        "-pwri_password", PASSWORD, "-in", str(blob) + ".p7m",
                        "-out", str(blob) + ".out"], check=True, capture_output=True)
        record("openssl cms (1 proc, all)", "extract", time.perf_counter() - start, rnd)
    for p in (blob, Path(str(blob) + ".p7m"), Path(str(blob) + ".out")):
        p.unlink(missing_ok=True)
    for d in (work / "media-disc", work / "media-plain", work / "openssl-enc", work / "openssl-dec"):
        shutil.rmtree(d, ignore_errors=True)
    return results
