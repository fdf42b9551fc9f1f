"""The direct File Meta Information encoder agrees with pydicom's, byte for byte."""

from __future__ import annotations

import random

import pytest
from pydicom.uid import generate_uid

from securepacs.services import part10

SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("ae", ["", "A", "AB", "STORESCU", "X" * 16, "Y" * 17, " PAD", "A\\B"])
def test_header_for_matches_pydicom(ts: str, ae: str) -> None:
    rng = random.Random(f"{ts}{ae}")
    for _ in range(10):
        sop_class = f"1.2.840.10008.5.1.4.1.1.{rng.randrange(1, 200)}"
        sop_instance = generate_uid()[:rng.randrange(10, 64)].rstrip(".")
        expected = part10.part10_header(part10.file_meta(sop_class, sop_instance, ts, ae))
        assert part10.header_for(sop_class, sop_instance, ts, ae) == expected


def test_header_for_falls_back_for_unusual_values() -> None:
    odd = ("1.2.840.10008.5.1.4.1.1.4", "1.2.3 ", "1.2.840.10008.1.2.1", "SCU")
    assert part10.header_for(*odd) == part10.part10_header(part10.file_meta(*odd))
