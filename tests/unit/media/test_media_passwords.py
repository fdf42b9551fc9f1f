"""Media password rules (PS3.15 D.1.1 printable US-ASCII, minimum strength) and passphrases."""

from __future__ import annotations

import pytest

from securepacs.errors import PasswordRefusedError
from securepacs.media.passwords import (
    MIN_BITS,
    check_characters,
    check_new_password,
    estimate_bits,
    generate_passphrase,
    strip_line_end,
)


@pytest.mark.parametrize(("password", "kind", "position"), [
    ("café au lait with milk", "outside US-ASCII", 4),
    ("tab\tinside-a-long-password", "a tab", 4),
    ("emoji 🙂 in a long passphrase", "outside US-ASCII", 7),
    ("line\nbreak-in-a-long-one", "a line break", 5),
    ("del\x7fcharacter-in-long-one", "U+007F", 4),
])
def test_non_printable_ascii_is_refused_with_the_reason(password: str, kind: str,
                                                        position: int) -> None:
    with pytest.raises(PasswordRefusedError) as err:
        check_new_password(password)
    message = str(err.value)
    assert "printable US-ASCII" in message and "PS3.15 D.1.1" in message
    assert kind in message and f"position {position}" in message
    assert password not in message


@pytest.mark.parametrize(("password", "reason"), [
    ("", "empty"),
    ("Sh0rt!pw", "too short"),
    ("aaaaaaaaaaaaaaaaaaaa", "too repetitive"),
    ("Password1234", "common password word"),
    ("qwertyuiop123456", "sequence"),
    ("abcdefghijkl", "sequence"),
    ("hospitalhospital99", "common password word"),
    ("zkqmwbrtplvx", "too weak"),  # 12 random lower-case letters: about 56 bits
])
def test_weak_passwords_are_refused_saying_why(password: str, reason: str) -> None:
    with pytest.raises(PasswordRefusedError, match=reason):
        check_new_password(password)


@pytest.mark.parametrize("password", [
    "correct horse battery staple",
    "T7#qL9!vW2@x",
    "zkqmwbrtplvxhgfd",  # 16 random lower-case letters: about 75 bits
    "Lorem ipsum dolor sit amet, 42",
])
def test_strong_passwords_pass(password: str) -> None:
    assert check_new_password(password) == password.encode("ascii")
    assert estimate_bits(password)[0] >= MIN_BITS


def test_reading_accepts_any_printable_ascii() -> None:
    assert check_characters("weak") == b"weak"


def test_generated_passphrases() -> None:
    seen = set()
    for _ in range(20):
        p = generate_passphrase()
        assert all(" " <= c <= "~" for c in p.text)
        assert len(p.text.split("-")) == 6 and p.bits > 100
        assert check_new_password(p.text)
        assert p.text not in repr(p)
        seen.add(p.text)
    assert len(seen) == 20
    with pytest.raises(ValueError):
        generate_passphrase(3)


def test_strip_line_end() -> None:
    assert strip_line_end("pw\r\n") == "pw"
    assert strip_line_end("pw\n") == "pw"
    assert strip_line_end("pw ") == "pw "
