"""The PS3.15 A.5.1.1 audit message schema (tests/data/audit-message.rnc) as an lxml validator.

The standard gives the schema in RELAX NG compact syntax; lxml validates the XML syntax, so
the text is converted with rnc2rng. The schema uses ``##`` documentation comments after a
value (``"C" | ## Create``), which strict RELAX NG compact grammar (and rnc2rng) accepts only
before a pattern: they are turned into plain ``#`` comments first, which changes nothing of
the grammar.
"""

from __future__ import annotations

import functools
from pathlib import Path

SCHEMA_FILE = Path(__file__).parent / "data" / "audit-message.rnc"


@functools.cache
def relaxng():  # noqa: ANN201 - lxml.etree.RelaxNG
    import rnc2rng
    from lxml import etree

    text = SCHEMA_FILE.read_text().replace("##", "#")
    return etree.RelaxNG(etree.fromstring(rnc2rng.dumps(rnc2rng.loads(text)).encode()))


def assert_valid(document: bytes) -> None:
    """Fail with lxml's error log unless `document` is a valid PS3.15 AuditMessage."""
    from lxml import etree

    schema = relaxng()
    if not schema.validate(etree.fromstring(document)):
        raise AssertionError(f"not a valid DICOM audit message: {schema.error_log}\n"
                             f"{document.decode(errors='replace')}")
