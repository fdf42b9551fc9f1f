"""Fuzz the DICOMDIR reader (PS3.10 8.6, PS3.3 F.5) of the media commands and the viewer.

The seed is a real DICOMDIR as ``media create`` makes it for a small study. Hypothesis mutates
its bytes (mostly after the preamble, where the meta header, the directory records and their
lengths are) and:

- :func:`securepacs.media.fileset.check_dicomdir` must return its list of one-line problems,
  never raise;
- on a disc whose DICOMDIR is that mutated file, sealed as a Secure DICOM File (so that it
  decrypts and verifies: the damage is in what the writer wrote, past every cryptographic
  check), ``verify_media``, ``extract_media`` and the viewer's ``open_catalog`` must raise
  nothing but :class:`~securepacs.errors.PacsError` subclasses, and in bounded time.

``SECUREPACS_FUZZ_EXAMPLES`` sets the number of examples (200 by default); see docs/fuzzing.md.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from factories import write_study  # noqa: E402
from securepacs.errors import PacsError  # noqa: E402
from securepacs.media import cms, fileset  # noqa: E402
from securepacs.services.media import create_media, extract_media, verify_media  # noqa: E402
from securepacs.services.media_view import open_catalog  # noqa: E402

EXAMPLES = int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "200"))
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on damaged values
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
PASSWORD = "fuzzing the dicomdir 123"
SLOW = 10.0  # seconds: a hang detector, not a speed test


class Disc:
    """A real disc (3 images) whose DICOMDIR each example replaces."""

    def __init__(self, root: Path) -> None:
        src = root / "src"
        write_study(src, 3, patient_id="FUZZ1")
        self.path = root / "disc"
        create_media(folders=[src], out_dir=self.path, password=PASSWORD,
                     at=datetime.now(UTC), iterations=1000)
        self.keyring = cms.Keyring(password=PASSWORD.encode())
        opened = cms.open_file((self.path / fileset.DICOMDIR).read_bytes(), self.keyring)
        self.dicomdir = opened.content
        self.instances = {p.relative_to(self.path).as_posix(): "" for p in
                          self.path.rglob("IM*")}
        kdf = cms.describe((self.path / fileset.DICOMDIR).read_bytes()).recipients[0].kdf
        assert kdf is not None
        from securepacs.media.pwri import derive_kek

        self.writer = cms.PasswordRecipient(kdf, derive_kek(PASSWORD.encode(), kdf, 32))
        self.out = root / "out"

    def install(self, dicomdir: bytes) -> None:
        (self.path / fileset.DICOMDIR).write_bytes(cms.seal(dicomdir, [self.writer]))
        shutil.rmtree(self.out, ignore_errors=True)


_ROOT = Path(tempfile.mkdtemp(prefix="fuzz-dicomdir-"))
atexit.register(shutil.rmtree, _ROOT, True)  # also when the tests are deselected
DISC = Disc(_ROOT)  # made once: the strategy needs its DICOMDIR when the module loads
SEED = DISC.dicomdir


@pytest.fixture(scope="module")
def disc() -> Iterator[Disc]:
    try:
        yield DISC
    finally:
        shutil.rmtree(_ROOT, ignore_errors=True)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if len(data) <= 132:
            break
        kind = draw(st.sampled_from(["set", "set", "flip", "length", "truncate", "insert"]))
        at = draw(st.integers(128, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "flip":
            for i in range(at, min(len(data), at + draw(st.integers(1, 8)))):
                data[i] ^= 0xFF
        elif kind == "length":  # a 16- or 32-bit length (or tag) set to an extreme
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE]))
            size = draw(st.sampled_from([2, 4]))
            data[at:at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif kind == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
    return bytes(data)


def test_seed_is_a_consistent_dicomdir(disc: Disc) -> None:
    assert SEED[128:132] == b"DICM"
    report = verify_media(disc.path, disc.keyring)
    assert report.passed, report


@FUZZ
@given(mutated(SEED))
def test_check_dicomdir_only_reports(data: bytes) -> None:
    started = time.monotonic()
    problems = fileset.check_dicomdir(data, {"PT000000/ST000000/SE000000/IM000000": "1.2.3"})
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    assert all("\n" not in p for p in problems)
    assert time.monotonic() - started < SLOW


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(mutated(SEED))
def test_readers_of_a_disc_with_a_damaged_dicomdir_fail_cleanly(disc: Disc, data: bytes) -> None:
    disc.install(data)
    for action in (lambda: verify_media(disc.path, disc.keyring),
                   lambda: extract_media(disc.path, disc.out, disc.keyring, keep_going=True),
                   lambda: open_catalog(disc.path, disc.keyring).close()):
        started = time.monotonic()
        try:
            action()
        except PacsError as exc:
            assert str(exc) and "\n" not in str(exc), repr(exc)
        assert time.monotonic() - started < SLOW
