"""Media passwords: the character rule, a minimum strength, and a passphrase generator.

One responsibility: decide whether a password may protect media, and say why not.

- Characters (PS3.15 D.1.1): "the octet string that contains the password used to generate
  the key shall be limited to the encoding and the graphic character representation defined
  by the Default Character Repertoire", i.e. printable US-ASCII, 0x20 (space) to 0x7E. The
  same keystrokes then give the same octets on every system that opens the disc.
- Strength: an estimate in bits in the manner of zxcvbn, simplified: runs of one character,
  keyboard and alphabet sequences, and very common password words count for a few bits each;
  the other characters count ``log2`` of the character classes used. New media need
  :data:`MIN_BITS`; a refusal names the reason (too short, repetitive, a common word ...).
  An estimate is not a guarantee: it refuses the obviously weak, it cannot certify the strong.
- :func:`generate_passphrase`: words of random consonant-vowel syllables joined by ``-``,
  about 19 bits per word from the operating system's CSPRNG; easy to read over a telephone.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from securepacs.errors import PasswordRefusedError

__all__ = [
    "MIN_BITS",
    "MIN_LENGTH",
    "Passphrase",
    "check_characters",
    "check_new_password",
    "estimate_bits",
    "generate_passphrase",
    "strip_line_end",
]

MIN_LENGTH = 12
"""Shortest password accepted for new media."""

MIN_BITS = 60.0
"""Least estimated strength for new media (offline attack on PBKDF2 at 600,000 iterations)."""

_CONSONANTS = "bdfghjklmnprstvz"
_VOWELS = "aeiou"
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiop", "asdfghjkl", "zxcvbnm", "qwertzuiop", "azertyuiop", "1234567890",
)
_COMMON = (
    "password", "passwort", "passw0rd", "letmein", "welcome", "admin", "qwerty", "azerty",
    "iloveyou", "monkey", "dragon", "master", "secret", "hospital", "radiology", "dicom",
    "pacs", "patient", "doctor", "changeme", "default", "login", "trustno1", "football",
    "baseball", "sunshine", "princess", "shadow", "summer", "winter", "spring", "autumn",
    "abc123", "test", "guest", "root", "user", "hello", "love", "god",
)


@dataclass(frozen=True)
class Passphrase:
    """A generated passphrase and its strength.

    Attributes
    ----------
    text : str
        Lower-case words joined by ``-``, printable US-ASCII only.
    bits : float
        Entropy of the generator (not an estimate: the words are uniformly random).
    """

    text: str
    bits: float

    def __repr__(self) -> str:
        return f"Passphrase(<hidden>, bits={self.bits:.0f})"


def strip_line_end(text: str) -> str:
    """Drop one trailing line end (``\\n`` or ``\\r\\n``) as a file or stdin ends a line."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _describe_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        names = {"\t": "a tab", "\r": "a carriage return", "\n": "a line break"}
        return names.get(ch, f"the control character U+{code:04X}")
    if code > 0x7F:
        return "a character outside US-ASCII (an accented letter, symbol or emoji)"
    return f"U+{code:04X}"


def check_characters(password: str) -> bytes:
    """The password's octets, if every character is printable US-ASCII (PS3.15 D.1.1).

    Raises
    ------
    PasswordRefusedError
        Empty, or a character outside 0x20..0x7E; the message gives the position and kind of
        the character, never the character or the password.
    """
    if not password:
        raise PasswordRefusedError("the password is empty")
    for index, ch in enumerate(password, start=1):
        if not " " <= ch <= "~":
            raise PasswordRefusedError(
                f"the password has {_describe_char(ch)} at position {index}: media passwords "
                "are limited to printable US-ASCII (PS3.15 D.1.1), so that every reader "
                "turns the same keystrokes into the same key")
    return password.encode("ascii")


def _pool(password: str) -> int:
    pool = 0
    if any(c.islower() for c in password):
        pool += 26
    if any(c.isupper() for c in password):
        pool += 26
    if any(c.isdigit() for c in password):
        pool += 10
    if any(not c.isalnum() for c in password):
        pool += 33
    return max(pool, 1)


def _sequence_at(lower: str, i: int) -> int:
    """Length (>= 3) of an alphabet/keyboard run starting at `i`, forwards or backwards."""
    best = 0
    for seq in _SEQUENCES:
        for s in (seq, seq[::-1]):
            pos = s.find(lower[i:i + 3])
            if pos < 0 or len(lower) - i < 3:
                continue
            n = 3
            while i + n < len(lower) and pos + n < len(s) and lower[i + n] == s[pos + n]:
                n += 1
            best = max(best, n)
    return best


def estimate_bits(password: str) -> tuple[float, list[str]]:
    """A strength estimate and the weaknesses found.

    Returns
    -------
    tuple of (float, list of str)
        Estimated bits, and short reasons such as ``"a common password word"``.
    """
    lower = password.lower()
    per_char = math.log2(_pool(password))
    bits = 0.0
    reasons: list[str] = []
    i = 0
    while i < len(password):
        word = next((w for w in _COMMON if lower.startswith(w, i)), None)
        if word is not None:
            bits += 8.0
            reasons.append("a common password word")
            i += len(word)
            continue
        run = 1
        while i + run < len(password) and password[i + run] == password[i]:
            run += 1
        if run >= 3:
            bits += per_char + math.log2(run)
            reasons.append("a character repeated")
            i += run
            continue
        seq = _sequence_at(lower, i)
        if seq:
            bits += per_char + math.log2(seq)
            reasons.append("a sequence such as abc or 123")
            i += seq
            continue
        bits += per_char
        i += 1
    return bits, list(dict.fromkeys(reasons))


def check_new_password(password: str) -> bytes:
    """Check a password for new media; return its octets.

    Raises
    ------
    PasswordRefusedError
        Not printable US-ASCII, shorter than :data:`MIN_LENGTH`, or estimated below
        :data:`MIN_BITS`; the message says which and what to do instead.
    """
    octets = check_characters(password)
    hint = "use --generate-passphrase, or four or more unrelated words"
    if len(password) < MIN_LENGTH:
        raise PasswordRefusedError(
            f"the password is too short ({len(password)} characters, at least {MIN_LENGTH} "
            f"are needed): {hint}")
    if len(set(password)) < 5:
        raise PasswordRefusedError(
            f"the password is too repetitive (only {len(set(password))} different characters): "
            f"{hint}")
    bits, reasons = estimate_bits(password)
    if bits < MIN_BITS:
        why = f" (it contains {', '.join(reasons)})" if reasons else ""
        raise PasswordRefusedError(
            f"the password is too weak: about {bits:.0f} bits, at least {MIN_BITS:.0f} are "
            f"needed{why}: {hint}")
    return octets


def generate_passphrase(words: int = 6) -> Passphrase:
    """A random passphrase of `words` three-syllable words, e.g. ``"tobari-kemuzo-..."``.

    Parameters
    ----------
    words : int
        Number of words; 6 (the default) gives about 114 bits.

    Raises
    ------
    ValueError
        Fewer than 4 words (weaker than :data:`MIN_BITS` promises).
    """
    if words < 4:
        raise ValueError("a passphrase needs at least 4 words")
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    text = "-".join("".join(secrets.choice(syllables) for _ in range(3)) for _ in range(words))
    bits = words * 3 * math.log2(len(syllables))
    return Passphrase(text, bits)
