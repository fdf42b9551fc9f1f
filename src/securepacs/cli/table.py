"""A plain-text table for ``securepacs find`` in which a UID is never wrapped or cut.

One responsibility: fit columns into a terminal width. UIDs (VR UI, PS3.5 6.2) are printed
whole on one line, to be pasted into ``get`` / ``move``; when the line is too wide, the
other columns are shortened first (an ellipsis marks a cut value), then left out from the
right, and the caller is told which. Pure: strings in, lines out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GAP = "  "
MIN_WIDTH = 6  # a shortened column keeps at least this many characters
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """A column: its header, whether its values are UIDs (never cut), and its priority
    (when columns must be left out, the lowest priority goes first, rightmost first)."""

    name: str
    uid: bool = False
    priority: int = 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + ELLIPSIS


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]],
        width: int) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide, so that a line fits `width` when it can.

    Returns
    -------
    (list of int, list of int)
        Indices of the columns shown, in order, and the width of each. UID columns are
        always shown at full width, even if they alone exceed `width`.
    """
    natural = [max([len(c.name), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    widths = dict(enumerate(natural))

    def total() -> int:
        return sum(widths[i] for i in shown) + len(GAP) * max(len(shown) - 1, 0)

    # shorten the widest non-UID column, one character at a time, down to MIN_WIDTH
    while total() > width:
        candidates = [i for i in shown if not columns[i].uid and widths[i] > MIN_WIDTH]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: (widths[i], i))
        widths[widest] -= 1
    # then leave out non-UID columns, lowest priority and rightmost first
    while total() > width:
        others = [i for i in shown if not columns[i].uid]
        if not others:
            break
        shown.remove(min(others, key=lambda i: (columns[i].priority, -i)))
    # give back the room a dropped column freed, to the shortened ones
    room = width - total()
    for i in shown:
        if room <= 0:
            break
        extra = min(room, natural[i] - widths[i])
        widths[i] += extra
        room -= extra
    return shown, [widths[i] for i in shown]


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]],
           width: int) -> tuple[list[str], list[str]]:
    """The lines of the table (header, rule, rows) and the names of the columns left out."""
    shown, widths = fit(columns, rows, width)

    def line(values: Sequence[str]) -> str:
        cells = [_cut(values[i], w).ljust(w) for i, w in zip(shown, widths, strict=True)]
        return GAP.join(cells).rstrip()

    lines = [line([c.name for c in columns]), GAP.join("-" * w for w in widths)]
    lines += [line(r) for r in rows]
    left_out = [c.name for i, c in enumerate(columns) if i not in shown]
    return lines, left_out
