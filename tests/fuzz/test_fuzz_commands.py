"""Fuzz the DIMSE command set decoder (PS3.7 6.3.1, Annex E).

Property: :func:`securepacs.dimse.commands.decode` raises nothing but ValueError on any
bytes, and decodes what :func:`~securepacs.dimse.commands.encode` wrote back to the same
values. A longer run: ``SECUREPACS_FUZZ_EXAMPLES=20000 pytest tests/fuzz``.
"""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from securepacs.dimse import commands as cmd

FUZZ = settings(max_examples=int(os.environ.get("SECUREPACS_FUZZ_EXAMPLES", "200")),
                deadline=None)

elements = st.builds(
    lambda group, element, value, declared: struct.pack("<HHI", group, element,
                                                        declared if declared is not None
                                                        else len(value)) + value,
    st.sampled_from([0x0000, 0x0000, 0x0000, 0x0008, 0xFFFE]),
    st.sampled_from([0x0000, 0x0002, 0x0100, 0x0110, 0x0800, 0x0900, 0x0901, 0x1005, 0x1000,
                     0x0902, 0x1234]),
    st.binary(max_size=40),
    st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
)


@FUZZ
@given(st.lists(elements, max_size=12), st.binary(max_size=6))
def test_decode_raises_only_value_error(parts: list[bytes], tail: bytes) -> None:
    raw = b"".join(parts) + tail
    try:
        out = cmd.decode(raw)
    except ValueError:
        return
    for value in out.values():
        assert isinstance(value, int | str | tuple)


@FUZZ
@given(st.binary(max_size=2000))
def test_decode_raw_bytes(raw: bytes) -> None:
    try:
        cmd.decode(raw)
    except ValueError:
        pass


@FUZZ
@given(st.sampled_from([cmd.C_STORE_RQ, cmd.C_FIND_RQ, cmd.C_GET_RQ, cmd.C_MOVE_RQ,
                        cmd.C_ECHO_RQ]),
       st.integers(1, 65535), st.from_regex(r"[0-9]{1,8}(\.[0-9]{1,8}){0,6}", fullmatch=True),
       st.booleans())
def test_encode_then_decode_gives_the_values_back(field: int, message_id: int, uid: str,
                                                  has_data: bool) -> None:
    raw = cmd.request(field, message_id, uid, has_data_set=has_data, sop_instance_uid=uid)
    out = cmd.decode(raw)
    assert out[cmd.COMMAND_FIELD] == field and out[cmd.MESSAGE_ID] == message_id
    assert out[cmd.AFFECTED_SOP_CLASS] == uid and out[cmd.AFFECTED_SOP_INSTANCE] == uid
    assert out[cmd.DATA_SET_TYPE] == (cmd.HAS_DATA_SET if has_data else cmd.NO_DATA_SET)
    assert out[0x0000] == len(raw) - 12  # the group length counts what follows it


def _reference_decode(raw: bytes | bytearray) -> cmd.Command:
    """The decoder as it was before issue 19's second trim (memoryview, a copy per value):
    the faster one must give the same values and the same errors."""
    out: cmd.Command = {}
    view = memoryview(raw)
    pos = 0
    while pos + 8 <= len(view):
        group, element, length = struct.unpack_from("<HHI", view, pos)
        pos += 8
        if group != 0x0000 or pos + length > len(view):
            raise ValueError(f"malformed command set at byte {pos - 8}")
        value = bytes(view[pos:pos + length])
        pos += length
        if element in cmd._US and length == 2:
            out[element] = struct.unpack("<H", value)[0]
        elif element == 0x0000 and length == 4:
            out[element] = struct.unpack("<I", value)[0]
        elif element in cmd._AT:
            out[element] = tuple(
                (g << 16) | e for g, e in struct.iter_unpack("<HH", value[: length // 4 * 4]))
        else:
            out[element] = value.decode("ascii", "replace").rstrip("\x00 ")
    if pos != len(view):
        raise ValueError("command set has trailing bytes")
    return out


def _outcome(decoder, raw: bytes) -> object:  # noqa: ANN001
    try:
        return decoder(raw)
    except ValueError as exc:
        return str(exc)


@FUZZ
@given(st.lists(elements, max_size=12), st.binary(max_size=6))
def test_decode_agrees_with_the_reference_decoder(parts: list[bytes], tail: bytes) -> None:
    raw = b"".join(parts) + tail
    assert _outcome(cmd.decode, raw) == _outcome(_reference_decode, raw)
    assert _outcome(cmd.decode, bytearray(raw)) == _outcome(_reference_decode, raw)


def _reference_encode(elements: dict[int, int | str]) -> bytes:
    body = bytearray()
    for element in sorted(elements):
        value = elements[element]
        if element in cmd._US:
            raw = struct.pack("<H", int(value))
        else:
            raw = str(value).encode("ascii")
            if len(raw) % 2:
                raw += b" " if element in cmd._AE or element == cmd.ERROR_COMMENT else b"\x00"
        body += struct.pack("<HHI", 0x0000, element, len(raw)) + raw
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + bytes(body)


_ELEMENTS = [0x0002, 0x0100, 0x0110, 0x0120, 0x0600, 0x0700, 0x0800, 0x0900, 0x0902, 0x1000,
             0x1020, 0x1021, 0x1030, 0x1031]
_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=65)


@FUZZ
@given(st.lists(st.sampled_from(_ELEMENTS), unique=True, max_size=10), st.data())
def test_encode_agrees_with_the_reference_encoder(chosen: list[int], data: st.DataObject) -> None:
    elements: dict[int, int | str] = {
        element: data.draw(st.integers(0, 0xFFFF) if element in cmd._US else _text)
        for element in chosen}
    assert cmd.encode(elements) == _reference_encode(elements)
