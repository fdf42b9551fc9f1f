"""Successful C-STOREs of one association are audited together (issue 19): one DICOM
Instances Transferred message per study (PS3.15 A.5.3.5) that lists every instance, written
when the association ends (released, aborted, dropped) or after AGGREGATE_SECONDS."""

from __future__ import annotations

import socket
import struct
import threading
import time
from datetime import UTC, datetime

import pytest
from lxml import etree

from auditschema import assert_valid
from audittrails import RecordingTrail
from securepacs.audit.record import AuditRecord, AuditSource, EventId
from securepacs.audit.serialize import canonical, from_json, to_xml
from securepacs.dimse import commands as cmd
from securepacs.dimse.association import AcceptorSettings, Registry, serve_connection
from securepacs.dimse.channel import PduChannel
from securepacs.dimse.contexts import supported_contexts
from securepacs.dimse.negotiation import supported
from securepacs.model.identity import Identity
from securepacs.services import audit_events
from securepacs.services.audit_events import AuditEvents

SRC = AuditSource("SECUREPACS")
WS1 = Identity("ws1", 0x1A2B, organization="Clinic", group="radiology")
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"


class Capture(RecordingTrail):
    """A trail that keeps what it is given."""

    def transfers(self) -> list[AuditRecord]:
        with self.lock:
            return [r for r in self.records if r.event_id == EventId.INSTANCES_TRANSFERRED]


def events(trail: Capture) -> AuditEvents:
    return AuditEvents(trail, ae_title="SECUREPACS", address="pacs.example.org",
                       clock=lambda: datetime(2026, 12, 3, 12, 0, tzinfo=UTC))


def listed(record: AuditRecord) -> dict[str, dict[str, list[str]]]:
    """Study UID -> SOP Class UID -> instance UIDs, read back from the message's XML (which
    must validate against the PS3.15 schema), each class's count checked against its list."""
    from dataclasses import replace

    xml = to_xml(replace(record, audit_source=SRC))
    assert_valid(xml)
    out: dict[str, dict[str, list[str]]] = {}
    for obj in etree.fromstring(xml).iter("ParticipantObjectIdentification"):
        if obj.find("ParticipantObjectIDTypeCode").get("csd-code") != "110180":
            continue
        classes = out.setdefault(obj.get("ParticipantObjectID"), {})
        for sop_class in obj.iter("SOPClass"):
            uids = [i.get("UID") for i in sop_class.iter("Instance")]
            assert int(sop_class.get("NumberOfInstances")) == len(uids)
            classes[sop_class.get("UID")] = uids
    return out


def test_one_message_per_study_lists_every_instance() -> None:
    trail = Capture()
    audit = events(trail)
    stores = audit.stored_instances(WS1, ae_title="WS1", address="192.0.2.10")
    sent = [("P1", "1.2.3.1", CT, "1.2.3.1.1"), ("P1", "1.2.3.1", CT, "1.2.3.1.2"),
            ("P2", "1.2.3.2", MR, "1.2.3.2.1"), ("P1", "1.2.3.1", MR, "1.2.3.1.3")]
    for patient, study, sop_class, uid in sent:
        stores.add(patient_id=patient, study_uid=study, sop_class_uid=sop_class,
                   sop_instance_uid=uid)
    assert trail.transfers() == []  # held while the association runs
    stores.close()
    got = trail.transfers()
    assert len(got) == 2
    by_study = {next(iter(listed(r))): r for r in got}
    assert listed(by_study["1.2.3.1"]) == {"1.2.3.1": {CT: ["1.2.3.1.1", "1.2.3.1.2"],
                                                       MR: ["1.2.3.1.3"]}}
    assert listed(by_study["1.2.3.2"]) == {"1.2.3.2": {MR: ["1.2.3.2.1"]}}
    assert by_study["1.2.3.2"].patient_ids == ("P2",)
    record = by_study["1.2.3.1"]
    assert record.action.value == "C" and int(record.outcome) == 0
    assert [p.user_id for p in record.participants if p.requestor] == ["CN=ws1,O=Clinic"]
    # the listing survives the database's canonical JSON (what the hash chain covers)
    assert from_json(canonical(record)) == record
    stores.close()  # twice: nothing more
    assert len(trail.transfers()) == 2


def test_older_records_keep_their_canonical_bytes() -> None:
    """A record without a listing serialises as before (stored chains still verify)."""
    from securepacs.audit import messages as m

    record = m.instances_transferred(
        action="C", outcome=0, source=m.Peer("CN=ws1"), destination=m.Peer("SECUREPACS"),
        patient_id="P1", study_uids=[m.Study.of("1.2.3", {CT: 1})],
        at=datetime(2026, 12, 3, tzinfo=UTC), record_id="r1", audit_source=SRC)
    assert b'"instances"' not in canonical(record)


def test_held_stores_are_written_after_the_window_and_at_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_events, "AGGREGATE_SECONDS", 0.2)
    monkeypatch.setattr(audit_events, "AGGREGATE_LIMIT", 3)
    trail = Capture()
    audit = events(trail)
    stores = audit.stored_instances(None, ae_title="WS1", address="192.0.2.10")
    for n in range(4):  # the third fills the limit
        stores.add(patient_id="P1", study_uid="1.2.3", sop_class_uid=CT,
                   sop_instance_uid=f"1.2.3.{n}")
    assert [listed(r)["1.2.3"][CT] for r in trail.transfers()] == [["1.2.3.0", "1.2.3.1",
                                                                    "1.2.3.2"]]
    deadline = time.monotonic() + 10
    while len(trail.transfers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # the association is still open: the window writes the fourth
    assert [listed(r)["1.2.3"][CT] for r in trail.transfers()][1:] == [["1.2.3.3"]]
    stores.add(patient_id="P1", study_uid="1.2.3", sop_class_uid=CT, sop_instance_uid="1.2.3.9")
    audit.close()  # shutdown: what any association still holds is written first
    assert listed(trail.transfers()[-1])["1.2.3"][CT] == ["1.2.3.9"]


# ------------------------------------------------------------------ through the acceptor

def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _associate_rq() -> bytes:
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    items += _item(0x20, bytes((1, 0, 0, 0)) + _item(0x30, VERIFICATION.encode())
                   + _item(0x40, b"1.2.840.10008.1.2"))
    items += _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    body = (struct.pack(">HH", 1, 0) + b"SECUREPACS".ljust(16) + b"WS1".ljust(16)
            + bytes(32) + items)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _store_like(assoc, message, context) -> None:  # noqa: ANN001 - as the C-STORE handler
    """Each request counts as one stored instance, then is answered."""
    uid = f"1.2.3.{message.command.get(cmd.MESSAGE_ID)}"
    assoc.stores.add(patient_id="P1", study_uid="1.2.3", sop_class_uid=CT,
                     sop_instance_uid=uid)
    assoc.respond(message, 0)


@pytest.mark.parametrize("ending", ["release", "abort", "drop"])
def test_the_association_writes_its_stores_when_it_ends(ending: str) -> None:
    trail = Capture()
    audit = events(trail)
    settings = AcceptorSettings(ae_title="SECUREPACS", max_pdu=16384,
                                contexts=supported(supported_contexts()[:1]), acse_timeout=5,
                                network_timeout=30, dimse_timeout=5)
    a, b = socket.socketpair()
    a.settimeout(10)
    served = threading.Thread(target=serve_connection, args=(b,), kwargs=dict(
        identity=WS1, address=("192.0.2.10", 1), settings=settings, audit=audit,
        registry=Registry(), dispatch=_store_like,
        spill=lambda assoc: (lambda command, context_id: None)), daemon=True)
    served.start()
    a.sendall(_associate_rq())
    peer = PduChannel(a, 16384)
    assert peer.read_pdu()[0] == 0x02
    for message_id in (1, 2, 3):
        peer.send(1, cmd.request(cmd.C_ECHO_RQ, message_id, VERIFICATION, has_data_set=False))
        assert peer.receive().command.get(cmd.STATUS) == 0
    assert trail.transfers() == []  # three acknowledged, held until the end
    if ending == "release":
        a.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert peer.read_pdu()[0] == 0x06
    elif ending == "abort":
        a.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    else:
        a.close()
    served.join(timeout=10)
    assert not served.is_alive()
    got = trail.transfers()
    assert len(got) == 1
    assert listed(got[0]) == {"1.2.3": {CT: ["1.2.3.1", "1.2.3.2", "1.2.3.3"]}}
    a.close()
    audit.close()
