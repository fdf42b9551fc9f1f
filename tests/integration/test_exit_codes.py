"""The exit codes of the README's table (issue 18 item 5), from each command's failure cases.

Every command runs as a program with a clean HOME (no client profile), as a shell sees it:
0 done; 1 something failed (files, sub-operations, checks, media that is not secure);
2 bad arguments, files or configuration, a wrong or weak media password; 3 no connection,
association or permission refused; 130 interrupted (``test_client_tools``). The README table
is checked against the codes seen here, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from harness import HOST, ROOT, SECUREPACS, free_port

from factories import write_study

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """Files for the failure cases and a CA with a valid invitation token."""
    root = tmp_path_factory.mktemp("exitcodes")
    (root / "home").mkdir()
    (root / "garbage.dcm").write_bytes(b"\x18\x00" * 300)
    (root / "junk").mkdir()
    (root / "junk" / "garbage.dcm").write_bytes(b"\x18\x00" * 300)
    write_study(root / "plain", 1)
    (root / "weak.txt").write_text("abc\n")
    env = _env(root)
    ca = root / "ca"
    for args in (["init"], ["group", "create", "g", "--allow", "echo"]):
        subprocess.run([*SECUREPACS, "ca", "--data-dir", str(ca), *args], check=True,
                       capture_output=True, env=env, cwd=ROOT, timeout=60)
    invite = subprocess.run([*SECUREPACS, "ca", "--data-dir", str(ca), "invite", "--org", "O",
                             "--group", "g"], check=True, capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=60)
    token = re.search(r"SPK1\.\S+", invite.stdout)
    assert token, invite.stdout
    return {"root": root, "token": token.group(0), "ca": ca}


def _env(root: Path) -> dict[str, str]:
    home = root / "home"
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SECUREPACS_")},
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share")}


def _cases(p: dict[str, Path | str]) -> list[tuple[list[str], int]]:
    root, port = p["root"], str(free_port())
    nowhere = ["--server", f"{HOST}:{port}", "--no-tls", "--timeout", "5"]
    return [
        (["send", f"{root}/garbage.dcm", *nowhere], 2),
        (["send", f"{root}/plain", *nowhere], 3),
        (["send", f"{root}/nothing-here", *nowhere], 2),
        (["echo", *nowhere], 3),
        (["find", "-k", "NoSuchKeyword=1", *nowhere], 2),
        (["find", *nowhere], 3),
        (["get", "--study", " ", "--to", f"{root}/out", *nowhere], 2),
        (["move", "--study", "1.2.3", "--dest", "X", *nowhere], 3),
        (["enroll", "--server", f"{HOST}:{port}", "--token", "not-a-token"], 2),
        (["enroll", "--server", f"{HOST}:{port}", "--token", str(p["token"]),
          "--dir", f"{root}/enrolled", "--profile", f"{root}/enrolled.toml"], 3),
        (["media", "create", f"{root}/plain", "--out", f"{root}/disc",
          "--password-file", f"{root}/weak.txt"], 2),
        (["media", "info", f"{root}/plain"], 1),
        (["media", "info", f"{root}/no-such-media"], 2),
        (["media", "extract", f"{root}/no-such-media", "--to", f"{root}/x1",
          "--password-file", f"{root}/weak.txt"], 2),
        (["media", "verify", f"{root}/no-such-media", "--password-file", f"{root}/weak.txt"], 2),
        (["media", "extract", f"{root}/plain", "--to", f"{root}/x2",
          "--media-key", f"{root}/weak.txt"], 2),
        (["media", "create", f"{root}/plain", "--out", f"{root}/disc2",
          "--recipient", f"{root}/weak.txt"], 2),
        (["media", "import", f"{root}/no-such-media", *nowhere], 2),
        (["view", f"{root}/no-such-media", "--no-browser"], 2),
        (["media", "import", f"{root}/plain", "--issuer", "X", *nowhere], 2),
        (["media", "import", f"{root}/plain", *nowhere], 3),
        (["media", "import", f"{root}/junk", *nowhere], 2),
        (["ca", "--data-dir", str(p["ca"]), "revoke", "nobody"], 2),
        (["ca", "--data-dir", str(p["ca"]), "issue", "client", "--name", "x", "--group", "nogroup",
          "--org", "O", "--out", f"{root}/issued"], 2),
        (["check", "--data-dir", f"{root}/no-such-data"], 1),
        (["audit", "--data-dir", f"{root}/no-such-data", "list"], 2),
        (["delete", "--data-dir", str(p["ca"]), "--study", "1.2.3", "--yes"], 1),
        (["delete", "--data-dir", f"{root}/no-such-data", "--study", "1.2.3"], 2),
        (["delete", "--study", "1.2.3", *nowhere[:2]], 2),
        (["serve", "--config", f"{root}/no-such.toml"], 2),
        (["no-such-command"], 2),
    ]


def test_every_failure_case_exits_as_the_readme_says(place) -> None:  # noqa: ANN001
    seen: dict[int, set[str]] = {}
    problems = []
    for args, expected in _cases(place):
        result = subprocess.run([*SECUREPACS, *args], capture_output=True, text=True, timeout=60,
                                cwd=ROOT, env=_env(place["root"]))  # type: ignore[arg-type]
        name = " ".join(a for a in args[:2] if not a.startswith(("-", "/")))
        if result.returncode != expected:
            problems.append(f"{name}: exit {result.returncode}, expected {expected}: "
                            f"{result.stderr.strip()[-300:]}")
        elif "Traceback" in result.stderr:
            problems.append(f"{name}: traceback\n{result.stderr}")
        seen.setdefault(expected, set()).add(args[0])
    assert not problems, "\n".join(problems)
    # the README's table lists each code with (at least) the commands seen giving it here
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| [^|]+\| ([^|]+) \|$", readme, re.M))
    for code, commands in seen.items():
        assert str(code) in table, f"exit {code} missing from the README's table"
        for command in commands:
            assert command in table[str(code)] or "every command" in table[str(code)], \
                (code, command, table[str(code)])


def test_check_creates_nothing(place) -> None:  # noqa: ANN001
    """Issue 18 item 11: ``check`` on a client machine leaves no empty index.sqlite behind."""
    data = place["root"] / "client-data"  # type: ignore[operator]
    data.mkdir()
    result = subprocess.run([*SECUREPACS, "check", "--data-dir", str(data)], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=_env(place["root"]))  # type: ignore[arg-type]
    assert result.returncode == 1
    assert list(data.iterdir()) == []
    assert "FAIL  database: no index database at" in result.stderr
    assert "database: reachable" not in result.stdout
    audit = subprocess.run([*SECUREPACS, "audit", "--data-dir", str(data), "verify"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT,
                           env=_env(place["root"]))  # type: ignore[arg-type]
    assert audit.returncode == 2 and "no audit trail in" in audit.stderr, audit.stderr
    assert list(data.iterdir()) == []
