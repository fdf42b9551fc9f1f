"""Names made safe for one line of a log or one cell of a table, and names the CA accepts.

One responsibility: text that came from outside (a certificate's subject, an enrolling
client's requested name, a file name on a disc) must not start a new log line or a new table
row, nor move the cursor of a terminal: :func:`one_line` escapes every character that is not
printable (C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides:
Unicode general categories Cc, Cf, Zl, Zp) as ``\\xNN`` / ``\\uNNNN``, so the log reader sees
what was sent. :func:`check_certificate_name` is the rule for names the CA gives certificates.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["NAME_RULE", "check_certificate_name", "one_line"]

_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
NAME_RULE = "1 to 64 of A-Z a-z 0-9 . _ @ - (starting with a letter or digit)"


def one_line(text: object, limit: int = 200) -> str:
    """`text` with every non-printable character escaped, cut to about `limit` characters."""
    out = []
    for ch in str(text)[:limit]:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in _UNSAFE:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
        else:
            out.append(ch)
    if len(str(text)) > limit:
        out.append("...")
    return "".join(out)


def check_certificate_name(name: str) -> str:
    """`name` if it is a name the CA gives a certificate, else ValueError (one line).

    Raises
    ------
    ValueError
        Empty, too long, or a character outside :data:`NAME_RULE`.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid certificate name {one_line(name, 80)!s}: use {NAME_RULE}")
    return name
