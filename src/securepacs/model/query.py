"""A C-FIND / C-MOVE / C-GET request as pure values (PS3.4 C.4.1.1.3, C.6).

A :class:`Query` holds the information model, the level and the keys of an identifier:
each key is a keyword with its VR and the value sent (empty for a return key).
"""

from __future__ import annotations

from dataclasses import dataclass

from securepacs.model import matching
from securepacs.model.levels import Level, Root
from securepacs.model.record import level_of


@dataclass(frozen=True)
class Key:
    """One attribute of an identifier: keyword, VR, value in DICOM string form."""

    keyword: str
    vr: str
    value: str = ""

    @property
    def matcher(self) -> matching.Matcher:
        return matching.parse(self.vr, self.value)

    @property
    def is_return_only(self) -> bool:
        return isinstance(self.matcher, matching.Universal)


@dataclass(frozen=True)
class Query:
    """An identifier at one level of one information model.

    Keys whose attribute the index does not keep are still returned (empty) but do not
    constrain the match, as PS3.4 C.2.2.1 allows for optional keys.
    """

    root: Root
    level: Level
    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        if self.level not in self.root.levels:
            raise ValueError(
                f"level {self.level.value} is not part of the {self.root.value} root model"
            )

    def constraints(self) -> dict[str, matching.Matcher]:
        """Keyword -> matcher for every key that constrains the match (not universal)
        and that the index keeps at this level or above."""
        allowed = set(self.level.at_or_above())
        out: dict[str, matching.Matcher] = {}
        for key in self.keys:
            level = level_of(key.keyword)
            if level is None or level not in allowed:
                continue
            m = key.matcher
            if not isinstance(m, matching.Universal):
                out[key.keyword] = m
        return out

    def return_keywords(self) -> tuple[str, ...]:
        """Keywords to put in each response, in the order asked."""
        return tuple(k.keyword for k in self.keys)
