"""DIMSE command sets (PS3.7 Annex E, 9.3, 10.3): encode requests and responses, decode both.

A command set is always Implicit VR Little Endian (PS3.7 6.3.1) and holds a handful of
group 0000 elements; encoding them by hand costs microseconds per C-STORE, where building a
pydicom data set costs a good part of a millisecond.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

# Command Field values (PS3.7 E.1-1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF

# Group 0000 tags (element numbers) used here
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_RESPONDED = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023

NO_DATA_SET = 0x0101
HAS_DATA_SET = 0x0000

_US = {COMMAND_FIELD, MESSAGE_ID, MESSAGE_ID_RESPONDED, PRIORITY, DATA_SET_TYPE, STATUS,
       REMAINING, COMPLETED, FAILED, WARNING, 0x0903, 0x1031}
_AE = {MOVE_DESTINATION, 0x1030}
_AT = {OFFENDING_ELEMENT, 0x1005}

Command = dict[int, int | str | tuple[int, ...]]

_ELEMENT = struct.Struct("<HHI")  # group, element, value length (Implicit VR LE)
_GROUP_LENGTH = struct.Struct("<HHII")  # (0000,0000) UL with its value
_U16 = struct.Struct("<H")
_SPACE_PADDED = _AE | {ERROR_COMMENT}


def _value(element: int, value: int | str) -> bytes:
    if element in _US:
        return _U16.pack(int(value))
    text = str(value).encode("ascii")
    if len(text) % 2:
        text += b" " if element in _SPACE_PADDED else b"\x00"
    return text


def encode(elements: Mapping[int, int | str]) -> bytes:
    """Encode group 0000 `elements` (element number -> value) with their group length.

    Parameters
    ----------
    elements : mapping
        Element number (the low 16 bits of the tag) -> int (US) or str (UI, AE, LO).

    Returns
    -------
    bytes
        The command set, Implicit VR Little Endian, starting with (0000,0000).
    """
    parts: list[bytes] = []
    for element in sorted(elements):
        raw = _value(element, elements[element])
        parts += (_ELEMENT.pack(0x0000, element, len(raw)), raw)
    body = b"".join(parts)
    return _GROUP_LENGTH.pack(0x0000, 0x0000, 4, len(body)) + body


def decode(raw: bytes | bytearray) -> Command:
    """Decode an Implicit VR Little Endian command set into element number -> value.

    US elements become int, AT elements a tuple of tags, everything else str (stripped).

    Raises
    ------
    ValueError
        The bytes are not a well-formed group 0000.
    """
    out: Command = {}
    data = bytes(raw)  # one copy of a few hundred bytes; slices of it below
    size = len(data)
    unpack = _ELEMENT.unpack_from
    pos = 0
    while pos + 8 <= size:
        group, element, length = unpack(data, pos)
        pos += 8
        end = pos + length
        if group != 0x0000 or end > size:
            raise ValueError(f"malformed command set at byte {pos - 8}")
        if element in _US and length == 2:
            out[element] = data[pos] | data[pos + 1] << 8
        elif element == 0x0000 and length == 4:
            out[element] = int.from_bytes(data[pos:end], "little")
        elif element in _AT:
            out[element] = tuple(
                (g << 16) | e for g, e in struct.iter_unpack("<HH", data[pos:pos + length // 4 * 4]))
        else:
            out[element] = data[pos:end].decode("ascii", "replace").rstrip("\x00 ")
        pos = end
    if pos != size:
        raise ValueError("command set has trailing bytes")
    return out


def request(command_field: int, message_id: int, sop_class_uid: str, *,
            has_data_set: bool, **extra: int | str) -> bytes:
    """A request command set: C-STORE/C-FIND/C-GET/C-MOVE/C-ECHO-RQ (PS3.7 9.3, Annex E).

    Parameters
    ----------
    command_field : int
        One of the ``*_RQ`` constants.
    message_id : int
        1..65535, unique among outstanding requests.
    sop_class_uid : str
        Affected SOP Class UID.
    has_data_set : bool
        Whether a data set follows.
    **extra
        ``sop_instance_uid``, ``move_destination``, ``priority`` (0 medium by default
        for the services that carry one).
    """
    elements: dict[int, int | str] = {
        AFFECTED_SOP_CLASS: sop_class_uid,
        COMMAND_FIELD: command_field,
        MESSAGE_ID: message_id,
        DATA_SET_TYPE: HAS_DATA_SET if has_data_set else NO_DATA_SET,
    }
    if command_field != C_ECHO_RQ:
        elements[PRIORITY] = int(extra.get("priority", 0))
    if "sop_instance_uid" in extra:
        elements[AFFECTED_SOP_INSTANCE] = str(extra["sop_instance_uid"])
    if "move_destination" in extra:
        elements[MOVE_DESTINATION] = str(extra["move_destination"])
    if "move_originator_ae" in extra:  # a C-STORE sub-operation of a C-MOVE (PS3.7 9.3.1.1)
        elements[MOVE_ORIGINATOR_AE] = str(extra["move_originator_ae"])
        elements[MOVE_ORIGINATOR_ID] = int(extra.get("move_originator_id", 0))
    return encode(elements)


#: Request command field -> its response's (PS3.7 E.1-1)
RESPONSE_TO = {C_STORE_RQ: C_STORE_RSP, C_GET_RQ: C_GET_RSP, C_FIND_RQ: C_FIND_RSP,
               C_MOVE_RQ: C_MOVE_RSP, C_ECHO_RQ: C_ECHO_RSP}
_SUB_OPERATIONS = (("remaining", REMAINING), ("completed", COMPLETED), ("failed", FAILED),
                   ("warning", WARNING))


def response(request_command: Command, status: int, *, comment: str = "",
             has_data_set: bool = False, counts: Mapping[str, int | None] | None = None
             ) -> bytes:
    """The response to a request we received (PS3.7 9.3): same SOP Class (and Instance for
    C-STORE), Message ID Being Responded To, Status, an Error Comment (LO, 64 characters)
    and, for C-GET/C-MOVE, the sub-operation `counts` (keys ``remaining``, ``completed``,
    ``failed``, ``warning``; None leaves one out).
    """
    field = int(request_command.get(COMMAND_FIELD, 0))  # type: ignore[arg-type]
    elements: dict[int, int | str] = {
        COMMAND_FIELD: RESPONSE_TO.get(field, field | 0x8000),
        MESSAGE_ID_RESPONDED: int(request_command.get(MESSAGE_ID, 0)),  # type: ignore[arg-type]
        DATA_SET_TYPE: HAS_DATA_SET if has_data_set else NO_DATA_SET,
        STATUS: status,
    }
    if AFFECTED_SOP_CLASS in request_command:
        elements[AFFECTED_SOP_CLASS] = str(request_command[AFFECTED_SOP_CLASS])
    if field == C_STORE_RQ:
        elements[AFFECTED_SOP_INSTANCE] = str(request_command.get(AFFECTED_SOP_INSTANCE, ""))
    if comment:
        elements[ERROR_COMMENT] = comment.replace("\\", "/")[:64]
    for name, element in _SUB_OPERATIONS:
        value = (counts or {}).get(name)
        if value is not None:
            elements[element] = value
    return encode(elements)


def store_response(request_command: Command, status: int, comment: str = "") -> bytes:
    """The C-STORE-RSP (PS3.7 9.3.1.2) answering a C-STORE-RQ we received."""
    return response(request_command, status, comment=comment)


def cancel(message_id: int) -> bytes:
    """A C-CANCEL-RQ for the operation with `message_id` (PS3.7 9.3.2.3)."""
    return encode({COMMAND_FIELD: C_CANCEL_RQ, MESSAGE_ID_RESPONDED: message_id,
                   DATA_SET_TYPE: NO_DATA_SET})
