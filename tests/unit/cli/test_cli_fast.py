"""The short path of ``send`` and ``echo`` (cli/fast.py): the Typer commands' options, values,
output and exit codes, without importing Typer."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from securepacs.cli import client_run, fast, main


def _command(name: str) -> Any:
    return typer.main.get_command(main.build(only=name)).commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["send", "echo"])
def test_option_tables_are_the_typer_commands(name: str) -> None:
    """Every option of the short path is the Typer command's, with its parameter, kind and
    range; every Typer option it leaves out is declined; the defaults are the same."""
    table = fast.OPTIONS[name]
    body = client_run.run_send if name == "send" else client_run.run_echo
    defaults = {p: v.default for p, v in inspect.signature(body).parameters.items()}
    seen = set()
    for param in _command(name).params:
        if param.param_type_name == "argument":
            assert name == "send" and param.name == "paths" and param.required
            continue
        for opt in (*param.opts, *param.secondary_opts):
            if opt not in table:
                assert fast.parse(name, ["x", opt, "1"] if name == "send" else [opt, "1"]) is None
                continue
            seen.add(opt)
            parameter, kind = table[opt]
            assert parameter == param.name
            descriptor = param.type_descriptor
            info, annotation = descriptor.parameter_info, descriptor.annotation
            assert not param.multiple and not info.clamp and info.parser is None
            if param.is_flag:
                assert kind == "flag" and annotation is bool
            elif isinstance(kind, tuple):
                assert kind == (annotation, info.min, info.max)
            else:
                assert (kind, annotation) in (("path", Path), ("str", str)), param
                assert not (info.exists or info.resolve_path or info.path_type)
        parameter = "set_" if param.name == "set_" else param.name
        if parameter in defaults:
            assert defaults[parameter] == param.default, parameter
    assert seen == set(table)


ACCEPTED = [
    ["send", "a", "b"],
    ["send", "a", "--server", "h:1", "--aec", "X", "--aet=Y", "-j", "4", "--retries", "0",
     "-v", "--no-tls", "--timeout", "2.5", "--cert", "c.pem", "--key", "k.pem", "--ca", "ca.pem",
     "--profile", "p.toml"],
    ["send", "-j3", "a", "--parallel=32", "--timeout=1"],
    ["echo"],
    ["echo", "--server", "h:2", "--timeout", "10", "--ca=x"],
]

DECLINED = [
    ["send"], ["send", "--help"], ["send", "a", "--bogus"], ["send", "a", "-j", "0"],
    ["send", "a", "-j", "33"], ["send", "a", "-j", "x"], ["send", "a", "--timeout", "0.5"],
    ["send", "a", "--timeout", "1e3"], ["send", "a", "--server"], ["send", "a", "--server", "-x"],
    ["send", "a", "--set", "PatientID=1"], ["send", "a", "--resume"], ["send", "a", "--deidentify"],
    ["send", "a", "--", "b"], ["send", "-", "a"], ["send", "a", "--no-tls=1"], ["send", "a", "-vj4"],
    ["echo", "extra"], ["echo", "--help"], ["echo", "-j", "2"], ["echo", "--cert", ""],
]


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Replace the command bodies by recorders of the values they are called with."""
    calls: list[dict[str, object]] = []

    def record(body: Any) -> Any:
        defaults = {p: v.default for p, v in inspect.signature(body).parameters.items()
                    if v.default is not inspect.Parameter.empty}

        def recorder(*args: object, **kwargs: object) -> None:
            if args:
                kwargs["paths"] = args[0]
            kwargs.pop("deidentifier", None)
            calls.append({**{k: v for k, v in defaults.items() if k != "deidentifier"}, **kwargs})
        return recorder

    monkeypatch.setattr(client_run, "run_send", record(client_run.run_send))
    monkeypatch.setattr(client_run, "run_echo", record(client_run.run_echo))
    return calls


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_short_path_passes_the_values_typer_passes(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    calls = _captured(monkeypatch)
    with pytest.raises(SystemExit) as ended:
        fast.run(argv)
    assert ended.value.code == 0
    result = CliRunner().invoke(main.build(only=argv[0]), argv)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2
    assert calls[0] == calls[1]


@pytest.mark.parametrize("argv", DECLINED, ids=" ".join)
def test_short_path_declines_what_typer_must_answer(argv: list[str]) -> None:
    assert fast.parse(argv[0], argv[1:]) is None
    assert fast.run(argv) is False


def test_unreadable_path_is_left_to_typer(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    assert fast.parse("send", [str(secret)]) is None
    assert fast.parse("send", [str(tmp_path / "no-such-file")]) is not None  # Typer takes it


def _run(argv: list[str], *, short: bool, cwd: Path) -> tuple[int, str, str]:
    """`argv` through main() (the short path) or through Typer alone, in a new process."""
    code = ("import sys\n"
            f"sys.argv = ['securepacs', *{argv!r}]\n"
            + ("from securepacs.cli.main import main\nmain()\n" if short else
               "from securepacs.cli.main import build\n"
               f"build(only={argv[0]!r})(prog_name='securepacs')\n"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def test_short_path_says_what_typer_says(tmp_path: Path) -> None:
    """Whole runs, one per outcome: the same lines and the same exit code either way."""
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    (tmp_path / "notes.txt").write_text("not DICOM")
    cases = [
        ["echo", "--no-tls", "--server", f"127.0.0.1:{port}"],  # 3: connection refused
        ["echo", "--server", f"127.0.0.1:{port}", "--profile", "none.toml"],  # 2: no CA
        ["send", "notes.txt", "--no-tls", "--server", f"127.0.0.1:{port}"],  # 2: nothing to send
        ["send", "notes.txt", "--no-tls", "--server", "nohost"],  # 2: bad server
    ]
    for argv in cases:
        short = _run(argv, short=True, cwd=tmp_path)
        typer_said = _run(argv, short=False, cwd=tmp_path)
        assert short == typer_said, argv
        assert short[0] in (2, 3) and f"securepacs {argv[0]}: " in short[2], short
    # declined: usage errors and help are Typer's own, through main() too
    for argv in (["send", "--bogus", "x"], ["echo", "--timeout", "0"], ["send", "--help"]):
        assert _run(argv, short=True, cwd=tmp_path) == _run(argv, short=False, cwd=tmp_path)


def test_a_malformed_server_name_is_unreachable_not_a_codec_error(tmp_path: Path) -> None:
    """``a..b`` (an empty label) is a name no resolver knows: exit 3 and "cannot resolve",
    as for any unknown name, not the IDNA codec's "label empty or too long" (exit 2)."""
    code, _, err = _run(["echo", "--no-tls", "--server", "a..b:104"], short=True, cwd=tmp_path)
    assert code == 3 and "cannot resolve the server name 'a..b'" in err, err
    assert "idna" not in err


def test_short_path_imports_no_typer(tmp_path: Path) -> None:
    """``send`` and ``echo`` on the short path: no Typer, Click, rich, pydantic, pydicom,
    cryptography, logging or TOML parser (start-up is most of a small send)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "notes.txt").write_text("not DICOM")
    heavy = ["typer", "click", "rich", "pydantic", "pydicom", "numpy", "pynetdicom",
             "cryptography", "sqlalchemy", "logging", "tomllib", "securepacs.cli.app",
             "securepacs.cli.client", "securepacs.settings"]
    for argv, code in ((["send", str(tmp_path), "--no-tls", "--server", f"127.0.0.1:{port}"], 2),
                       (["echo", "--no-tls", "--server", f"127.0.0.1:{port}"], 3)):
        script = ("import sys\n"
                  f"sys.argv = ['securepacs', *{argv!r}]\n"
                  "from securepacs.cli.main import main\n"
                  "try:\n"
                  "    main()\n"
                  "except SystemExit as exc:\n"
                  f"    assert exc.code == {code}, exc.code\n"
                  f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[]", (argv, done.stdout)


def test_deidentify_with_set_is_still_a_usage_error(tmp_path: Path) -> None:
    """The check that moved into client_run reaches the user as Typer's usage error."""
    (tmp_path / "a.dcm").write_bytes(b"x")
    result = CliRunner().invoke(main.app, ["send", str(tmp_path), "--no-tls", "--server",
                                           "127.0.0.1:9", "--deidentify", "--set", "PatientID=1"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Usage: ")
    assert "--deidentify does not go with --set or --resume" in result.output
