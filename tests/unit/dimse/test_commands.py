"""Hand-encoded DIMSE command sets (PS3.7 E) agree with pydicom's Implicit VR Little Endian."""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dsutils import encode

from securepacs.dimse import commands as cmd


def test_store_request_matches_pydicom() -> None:
    raw = cmd.request(cmd.C_STORE_RQ, 7, "1.2.840.10008.5.1.4.1.1.2", has_data_set=True,
                      sop_instance_uid="1.2.3.4.5")
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.CommandField == 0x0001 and ds.MessageID == 7 and ds.Priority == 0
    assert ds.CommandDataSetType == 0x0000
    assert ds.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert len(raw) % 2 == 0


def test_move_request_and_decode_roundtrip() -> None:
    raw = cmd.request(cmd.C_MOVE_RQ, 3, "1.2.840.10008.5.1.4.1.2.2.2", has_data_set=True,
                      move_destination="DEST")
    decoded = cmd.decode(raw)
    assert decoded[cmd.MOVE_DESTINATION] == "DEST"
    assert decoded[cmd.COMMAND_FIELD] == cmd.C_MOVE_RQ


def test_decode_a_pydicom_encoded_response() -> None:
    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.CommandField = 0x8001
    ds.MessageIDBeingRespondedTo = 9
    ds.CommandDataSetType = 0x0101
    ds.Status = 0xB006
    ds.OffendingElement = [0x00100020]
    ds.ErrorComment = "Duplicate SOP Instance UID: first copy kept"
    ds.AffectedSOPInstanceUID = "1.2.3"
    decoded = cmd.decode(encode(ds, True, True))
    assert decoded[cmd.STATUS] == 0xB006
    assert decoded[cmd.ERROR_COMMENT] == "Duplicate SOP Instance UID: first copy kept"
    assert decoded[cmd.MESSAGE_ID_RESPONDED] == 9
    assert decoded[cmd.OFFENDING_ELEMENT] == (0x00100020,)
    assert decoded[cmd.AFFECTED_SOP_INSTANCE] == "1.2.3"


def test_store_response_and_cancel() -> None:
    request = cmd.decode(cmd.request(cmd.C_STORE_RQ, 5, "1.2", has_data_set=True,
                                     sop_instance_uid="1.2.3"))
    rsp = cmd.decode(cmd.store_response(request, 0xA700, "full"))
    assert rsp[cmd.MESSAGE_ID_RESPONDED] == 5 and rsp[cmd.STATUS] == 0xA700
    assert rsp[cmd.AFFECTED_SOP_INSTANCE] == "1.2.3" and rsp[cmd.ERROR_COMMENT] == "full"
    assert cmd.decode(cmd.cancel(5))[cmd.COMMAND_FIELD] == cmd.C_CANCEL_RQ
