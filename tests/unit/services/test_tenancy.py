"""The tenant boundary of the service layer (issue 15): who owns what an identity stores,
what it sees, which retrieved instances are another organisation's, and the rules of a
share; and the QIDO-RS / WADO-RS services filtering through it on a real SQLite index."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from securepacs.index.repository import SqlIndex
from securepacs.index.trust import SqlTrustStore
from securepacs.model.identity import ALL_PERMISSIONS, Identity, Permission
from securepacs.model.levels import Level
from securepacs.model.record import InstanceRecord, StoredInstance
from securepacs.services.tenancy import Shares, Tenancy

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def who(org: str | None, *extra: Permission) -> Identity:
    return Identity(name="ws", serial=1, organization=org, group="g",
                    permissions=ALL_PERMISSIONS | set(extra))


def test_all_never_grants_cross_org() -> None:
    assert Permission.CROSS_ORG not in Permission.parse_list("all")
    assert Permission.CROSS_ORG in Permission.parse_list("find,cross_org")
    assert Permission.CROSS_ORG not in ALL_PERMISSIONS


def test_owner_and_view() -> None:
    tenancy = Tenancy(default_organisation="home")
    assert tenancy.owner(who("Clinic A")) == "Clinic A"
    assert tenancy.owner(who(None)) == tenancy.owner(None) == "home"
    a = tenancy.view(who("Clinic A"), at=NOW)
    assert (a.organization, a.everything, a.retrieve) == ("Clinic A", False, False)
    assert tenancy.view(who("R", Permission.CROSS_ORG)).everything
    assert tenancy.crosses(who("R", Permission.CROSS_ORG)) and not tenancy.crosses(who("A"))
    assert not tenancy.view(None).everything  # no identity: the default organisation only
    assert tenancy.view(who("A"), retrieve=True).retrieve
    files = Tenancy(enforced=False)
    assert files.view(who("Clinic A")).everything and not files.crosses(who("R"))


def test_foreign_names_each_owner_with_its_studies() -> None:
    def item(org: str, study: str) -> StoredInstance:
        return StoredInstance("1", "2", "3", "k", 1, study, "s", organization=org)

    tenancy = Tenancy()
    got = tenancy.foreign(who("B"), [item("A", "1.1"), item("B", "2.1"), item("A", "1.2")])
    assert got == {"A": ["1.1", "1.2"]}
    assert Tenancy(enforced=False).foreign(who("B"), [item("A", "1.1")]) == {}


@pytest.fixture
def book(tmp_path: Path) -> Shares:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    index = SqlIndex(url)
    index.create_schema()
    for org in ("A", "C"):
        index.add(InstanceRecord(
            values={Level.PATIENT: {"PatientID": "P"}, Level.STUDY: {"StudyInstanceUID": "1.1"},
                    Level.SERIES: {"SeriesInstanceUID": "1.1.1"},
                    Level.IMAGE: {"SOPInstanceUID": f"1.1.1.{org}", "SOPClassUID": "1.2"}},
            transfer_syntax_uid="1.2.840.10008.1.2.1", blob_key=f"b/{org}", size=1,
            organization=org))
    index.add(dataclasses.replace(InstanceRecord(
        values={Level.PATIENT: {"PatientID": "P"}, Level.STUDY: {"StudyInstanceUID": "2.1"},
                Level.SERIES: {"SeriesInstanceUID": "2.1.1"},
                Level.IMAGE: {"SOPInstanceUID": "2.1.1.1", "SOPClassUID": "1.2"}},
        transfer_syntax_uid="1.2.840.10008.1.2.1", blob_key="b/2", size=1), organization="A"))
    store = SqlTrustStore(url)
    store.create_schema()
    return Shares(store, index)


class Recorded:
    """The audit events :meth:`Tenancy.audit_crossing` records (a CrossingAudit)."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def crossed(self, identity: Identity | None, **kw: object) -> None:
        self.events.append({"identity": identity, **kw})


def test_audit_crossing_is_one_event_per_use_naming_every_other_owner() -> None:
    tenancy, audit = Tenancy(), Recorded()
    b = who("Clinic B")
    owned = [("Clinic B", "1.1"), ("Clinic A", "1.2"), ("Clinic A", "1.2"), ("Clinic C", "1.3"),
             ("Clinic A", "1.4")]
    assert tenancy.audit_crossing(audit, b, address="10.0.0.1", owned=owned, action="found")
    assert audit.events == [{"identity": b, "ae_title": "", "address": "10.0.0.1",
                             "caller_org": "Clinic B", "how": "share", "action": "found",
                             "owners": {"Clinic A": ["1.2", "1.4"], "Clinic C": ["1.3"]}}]
    # only its own studies, nothing at all, or no organisations (trust from files): none
    assert not tenancy.audit_crossing(audit, b, address="", owned=[("Clinic B", "1.1")])
    assert not tenancy.audit_crossing(audit, b, address="", owned=[])
    assert not Tenancy(enforced=False).audit_crossing(audit, b, address="", owned=owned)
    assert len(audit.events) == 1
    reader = who("Reading", Permission.CROSS_ORG)
    tenancy.audit_crossing(audit, reader, address="", owned=owned, action="viewed")
    assert audit.events[-1]["how"] == "cross_org" and audit.events[-1]["action"] == "viewed"
    assert set(audit.events[-1]["owners"]) == {"Clinic A", "Clinic B", "Clinic C"}  # type: ignore[arg-type]


def test_an_organisation_named_by_the_operator() -> None:
    view = Tenancy().of(" Clinic A ", retrieve=True, at=NOW)
    assert (view.organization, view.everything, view.retrieve) == ("Clinic A", False, True)
    assert Tenancy(enforced=False).of("Clinic A").everything


def test_share_rules(book: Shares) -> None:
    with pytest.raises(ValueError, match="no study 9.9"):
        book.grant("9.9", "B", at=NOW)
    with pytest.raises(ValueError, match="several organisations .A, C.: name one with --from"):
        book.grant("1.1", "B", at=NOW)
    with pytest.raises(ValueError, match="'B' holds no study 1.1"):
        book.grant("1.1", "C", at=NOW, owner="B")
    with pytest.raises(ValueError, match="another organisation than the study's owner"):
        book.grant("2.1", "A", at=NOW)
    with pytest.raises(ValueError, match="future"):
        book.grant("2.1", "B", at=NOW, until=NOW - timedelta(days=1))
    share = book.grant(" 2.1 ", "B", at=NOW, read_only=True, until=NOW + timedelta(days=1))
    assert (share.study_uid, share.owner, share.grantee, share.read_only) == ("2.1", "A", "B", True)
    picked = book.grant("1.1", "B", at=NOW, owner="C")
    assert picked.owner == "C"
    assert {s.share_id for s in book.list()} == {share.share_id, picked.share_id}
    gone = book.revoke(share.share_id, at=NOW)
    assert gone.revoked_at is not None and not gone.active(NOW)
    from securepacs.errors import PkiError

    with pytest.raises(PkiError, match="already revoked"):
        book.revoke(share.share_id, at=NOW)
