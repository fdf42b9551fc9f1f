"""The client's retrieve service (services/fetch.py) against a scripted server (no sockets):
the identifier a C-GET or C-MOVE sends is the one asked for, and a C-MOVE the server
answers with Success and no sub-operation is not reported as done (PS3.4 C.4.2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from securepacs.model.levels import Level
from securepacs.services import fetch
from securepacs.services.scuport import (
    DimseStatus,
    PermissionRefused,
    ReceivedInstance,
    RetrieveProgress,
)

SUCCESS, PENDING = DimseStatus(0x0000), DimseStatus(0xFF00)


class ScriptedServer:
    """Answers C-FIND with `listed` instances (or refuses) and C-GET/C-MOVE with `responses`;
    records the identifiers it was sent."""

    def __init__(self, responses: list[RetrieveProgress], listed: int = 0,
                 refuse_find: bool = False):
        self.responses = responses
        self.listed = listed
        self.refuse_find = refuse_find
        self.sent: list[tuple[str, str]] = []

    def find(self, identifier: Dataset, level: Level) -> Iterator[Dataset]:
        self.sent.append(("find", str(identifier.QueryRetrieveLevel)))
        if self.refuse_find:
            raise PermissionRefused("permission refused: find")
        for n in range(self.listed):
            ds = Dataset()
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = f"1.2.3.{n}"
            yield ds

    def _answer(self, on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        for p in self.responses:
            on_progress(p)
        return self.responses[-1]

    def get(self, identifier: Dataset, storage: Sequence[tuple[str, Sequence[str]]],
            on_instance: Callable[[ReceivedInstance], int],
            on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        self.sent.append(("get", str(identifier.QueryRetrieveLevel)))
        return self._answer(on_progress)

    def move(self, identifier: Dataset, destination: str,
             on_progress: Callable[[RetrieveProgress], None]) -> RetrieveProgress:
        self.sent.append(("move", str(identifier.QueryRetrieveLevel)))
        return self._answer(on_progress)


def _study(uid: str = "1.2.3") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def test_get_sends_the_level_asked_for_after_listing_at_image_level(tmp_path: Path) -> None:
    """The C-FIND that lists the SOP classes must not change the C-GET's identifier
    (it shared its elements and sent the C-GET at IMAGE level)."""
    server = ScriptedServer([RetrieveProgress(None, 0, 0, 0, SUCCESS)], listed=2)
    identifier = _study()
    fetch.get(server, server, identifier, Level.STUDY, fetch.InstanceWriter(tmp_path),
              on_progress=lambda _: None)
    assert server.sent == [("find", "IMAGE"), ("get", "STUDY")]
    assert identifier.QueryRetrieveLevel == "STUDY" and "SOPClassUID" not in identifier


def test_a_move_of_some_instances_is_done() -> None:
    server = ScriptedServer([RetrieveProgress(1, 1, 0, 0, PENDING),
                             RetrieveProgress(None, 2, 0, 0, SUCCESS)], listed=2)
    summary = fetch.move(server, _study(), "DEST", on_progress=lambda _: None, finder=server)
    assert summary.ok and not summary.moved_nothing and not summary.withheld
    assert server.sent == [("move", "STUDY")]  # no C-FIND when something was moved


def test_final_counts_left_out_after_pending_ones_still_count_as_moved() -> None:
    server = ScriptedServer([RetrieveProgress(0, 1, 0, 0, PENDING),
                             RetrieveProgress(None, 0, 0, 0, SUCCESS)])
    summary = fetch.move(server, _study(), "DEST", on_progress=lambda _: None, finder=server)
    assert summary.ok and not summary.moved_nothing


def test_a_move_of_an_unknown_study_is_not_ok_and_says_nothing_matches() -> None:
    server = ScriptedServer([RetrieveProgress(None, 0, 0, 0, SUCCESS)], listed=0)
    summary = fetch.move(server, _study(), "DEST", on_progress=lambda _: None, finder=server)
    assert not summary.ok and summary.moved_nothing
    assert summary.expected == 0 and not summary.withheld
    assert server.sent == [("move", "STUDY"), ("find", "IMAGE")]


def test_a_move_of_a_study_found_but_not_retrievable_is_withheld() -> None:
    server = ScriptedServer([RetrieveProgress(None, 0, 0, 0, SUCCESS)], listed=3)
    summary = fetch.move(server, _study(), "DEST", on_progress=lambda _: None, finder=server)
    assert not summary.ok and summary.withheld and summary.expected == 3


def test_a_move_of_nothing_without_find_permission_is_still_not_ok() -> None:
    server = ScriptedServer([RetrieveProgress(None, 0, 0, 0, SUCCESS)], refuse_find=True)
    summary = fetch.move(server, _study(), "DEST", on_progress=lambda _: None, finder=server)
    assert not summary.ok and summary.moved_nothing
    assert summary.expected is None and not summary.withheld


def test_a_failed_move_is_reported_as_failed_not_as_nothing() -> None:
    server = ScriptedServer([RetrieveProgress(None, 0, 2, 0, DimseStatus(0xA702))], listed=2)
    summary = fetch.move(server, _study(), "DEST", on_progress=lambda _: None, finder=server)
    assert not summary.ok and not summary.moved_nothing and summary.final.failed == 2
