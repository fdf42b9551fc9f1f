"""Query/Retrieve levels and information models (DICOM PS3.4 C.3, C.6)."""

from enum import Enum


class Level(str, Enum):
    """A Query/Retrieve Level (0008,0052) value."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        """0 for PATIENT down to 3 for IMAGE."""
        return _ORDER.index(self)

    def at_or_above(self) -> tuple["Level", ...]:
        """This level and every level above it, top first."""
        return _ORDER[: self.depth + 1]


_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)


class Root(str, Enum):
    """The Query/Retrieve information model (PS3.4 C.6.1 Patient Root, C.6.2 Study Root)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"

    @property
    def levels(self) -> tuple[Level, ...]:
        """Levels this model allows."""
        return _ORDER if self is Root.PATIENT else _ORDER[1:]
