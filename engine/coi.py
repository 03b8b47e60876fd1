"""Chain of identity (COI) identifiers: ISBT 128 Data Structure 040.

A COI is the data identifier ``&/`` followed by 15 characters: ``CH``, the issuing facility's
5-character FIN, the 2-digit year and a 6-character sequence, e.g. ``&/CHW12342600A1B7``.
The eye-readable form adds one ISO/IEC 7064 mod 37-2 check character: ``CHW12342600A1B7 C``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DATA_IDENTIFIER = "&/"
PREFIX = "CH"
VALUE_LENGTH = 15

#: Facility identification number: a letter A-N or P-Z or a digit 1-9, then four digits.
FACILITY_FIN_PATTERN = re.compile(r"[A-NP-Z1-9][0-9]{4}")
SEQUENCE_PATTERN = re.compile(r"[A-Z0-9]{6}")

_MOD37_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_BASE36_ALPHABET = _MOD37_ALPHABET[:36]

#: Number of distinct sequences (6 base-36 characters).
SEQUENCE_SPACE = 36**6
# Multiplier for sequence_for: the integer nearest SEQUENCE_SPACE * (sqrt(5) - 1) / 2, plus one so it is
# coprime to SEQUENCE_SPACE (2**12 * 3**12). Multiples of a golden-ratio fraction of the space are spread
# evenly, and this value was checked so that for any two numbers less than 2,000,000 apart the
# sequences never differ in a single character or by swapping two adjacent characters.
_SEQUENCE_MULTIPLIER = 1_345_325_471
_SEQUENCE_INVERSE = pow(_SEQUENCE_MULTIPLIER, -1, SEQUENCE_SPACE)


class CoiError(ValueError):
    """A COI (or one of its parts) is malformed."""

    code = "coi_invalid"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class CoiCheckFailed(CoiError):
    """The check character does not match the 15 characters: the COI was probably mistyped."""

    code = "coi_check_failed"


def check_character(chars15: str) -> str:
    """The ISO/IEC 7064 mod 37-2 check character for ``chars15`` (characters 0-9, A-Z, ``*``)."""
    text = chars15.upper()
    if not text:
        raise CoiError("cannot compute a check character for an empty string")
    total = 0
    for position, char in enumerate(reversed(text), start=1):
        value = _MOD37_ALPHABET.find(char)
        if value < 0:
            raise CoiError(f"character {char!r} is not allowed (only 0-9, A-Z and '*')")
        total += value * pow(2, position, 37)
    return _MOD37_ALPHABET[(38 - total % 37) % 37]


def validate_fin(fin: str) -> str:
    """Return the facility identification number in upper case, or raise CoiError."""
    if not isinstance(fin, str):
        raise CoiError(f"FIN must be a string, got {type(fin).__name__}")
    normal = fin.strip().upper()
    if len(normal) != 5:
        raise CoiError(f"FIN must have 5 characters, got {len(normal)} ({fin!r})")
    if not FACILITY_FIN_PATTERN.fullmatch(normal):
        if not re.fullmatch(r"[A-NP-Z1-9]", normal[0]):
            raise CoiError(f"FIN {fin!r} must start with a letter A-N or P-Z or a digit 1-9, not {normal[0]!r}")
        raise CoiError(f"FIN {fin!r} must end with 4 digits")
    return normal


@dataclass(frozen=True)
class Coi:
    """One chain of identity identifier; ``str(coi)`` is its 15 characters."""

    fin: str
    year: int
    sequence: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "fin", validate_fin(self.fin))
        if isinstance(self.year, bool) or not isinstance(self.year, int) or not 0 <= self.year <= 99:
            raise CoiError(f"year must be a 2-digit number 0-99, got {self.year!r}")
        sequence = self.sequence.upper() if isinstance(self.sequence, str) else self.sequence
        if not isinstance(sequence, str) or not SEQUENCE_PATTERN.fullmatch(sequence):
            raise CoiError(f"sequence must be 6 characters A-Z or 0-9, got {self.sequence!r}")
        object.__setattr__(self, "sequence", sequence)

    @property
    def value(self) -> str:
        """The 15 characters, e.g. ``CHW12342600A1B7``."""
        return f"{PREFIX}{self.fin}{self.year:02d}{self.sequence}"

    @property
    def check(self) -> str:
        """The mod 37-2 check character of :attr:`value`."""
        return check_character(self.value)

    @property
    def barcode(self) -> str:
        """The barcode content: data identifier ``&/`` and the 15 characters."""
        return DATA_IDENTIFIER + self.value

    @property
    def eye_readable(self) -> str:
        """The 15 characters, a space and the check character, e.g. ``CHW12342600A1B7 C``."""
        return f"{self.value} {self.check}"

    def __str__(self) -> str:
        return self.value


def _split_value(value: str, original: str) -> Coi:
    """Build a Coi from 15 upper-case characters, saying which part is malformed."""
    if not value.startswith(PREFIX):
        raise CoiError(f"COI {original!r} must start with {PREFIX!r}, got {value[:2]!r}")
    fin, year, sequence = value[2:7], value[7:9], value[9:]
    try:
        fin = validate_fin(fin)
    except CoiError as exc:
        raise CoiError(f"COI {original!r}: {exc.message}") from None
    if not re.fullmatch(r"[0-9]{2}", year):
        raise CoiError(f"COI {original!r}: year must be 2 digits, got {year!r}")
    if not SEQUENCE_PATTERN.fullmatch(sequence):
        raise CoiError(f"COI {original!r}: sequence must be 6 characters A-Z or 0-9, got {sequence!r}")
    return Coi(fin, int(year), sequence)


def parse_coi(text: str) -> Coi:
    """Parse a COI from its barcode content, its 15 characters, or its eye-readable form.

    Accepted: ``&/CHW12342600A1B7``, ``CHW12342600A1B7``, ``CHW12342600A1B7 C`` and ``CHW12342600A1B7C``
    (surrounding whitespace and lower case are tolerated). A wrong check character raises
    CoiCheckFailed; anything else malformed raises CoiError.
    """
    if not isinstance(text, str):
        raise CoiError(f"COI must be a string, got {type(text).__name__}")
    original = text
    text = text.strip().upper()
    if not text:
        raise CoiError("COI is empty")
    check = None
    if text.startswith(DATA_IDENTIFIER):
        value = text[len(DATA_IDENTIFIER) :]
        if len(value) != VALUE_LENGTH:
            raise CoiError(
                f"COI barcode {original!r} must have {VALUE_LENGTH} characters after "
                f"{DATA_IDENTIFIER!r}, got {len(value)}"
            )
    elif text[0] in "&=":
        raise CoiError(f"COI {original!r} has the wrong data identifier {text[:2]!r}, expected {DATA_IDENTIFIER!r}")
    else:
        parts = text.split()
        if len(parts) == 2 and len(parts[0]) == VALUE_LENGTH and len(parts[1]) == 1:
            value, check = parts
        elif len(parts) == 1 and len(text) in (VALUE_LENGTH, VALUE_LENGTH + 1):
            value, check = text[:VALUE_LENGTH], text[VALUE_LENGTH:] or None
        else:
            raise CoiError(
                f"COI {original!r} must have {VALUE_LENGTH} characters, optionally followed "
                f"by a check character; got {len(text)} characters"
            )
    coi = _split_value(value, original)
    if check is not None and check not in _MOD37_ALPHABET:
        raise CoiError(f"COI {original!r}: check character must be 0-9, A-Z or '*', got {check!r}")
    if check is not None and check != coi.check:
        raise CoiCheckFailed(
            f"COI {original!r}: check character {check!r} does not match; the identifier was probably mistyped"
        )
    return coi


def sequence_for(number: int) -> str:
    """Map a counter 0 <= number < 36**6 to a distinct 6-character sequence of A-Z and 0-9.

    The number is multiplied by a constant coprime to 36**6, modulo 36**6, and written in base 36
    with leading zeros. Multiplying by a unit is a bijection, so distinct numbers never share a
    sequence, and consecutive numbers land far apart: their sequences never differ in a single
    character or by two swapped neighbouring characters.
    """
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < SEQUENCE_SPACE:
        raise CoiError(f"sequence number must be an integer 0 <= n < 36**6, got {number!r}")
    scrambled = number * _SEQUENCE_MULTIPLIER % SEQUENCE_SPACE
    chars = []
    for _ in range(6):
        scrambled, digit = divmod(scrambled, 36)
        chars.append(_BASE36_ALPHABET[digit])
    return "".join(reversed(chars))


def number_for(sequence: str) -> int:
    """The counter that :func:`sequence_for` maps to ``sequence`` (its inverse)."""
    sequence = sequence.upper()
    if not SEQUENCE_PATTERN.fullmatch(sequence):
        raise CoiError(f"sequence must be 6 characters A-Z or 0-9, got {sequence!r}")
    return int(sequence, 36) * _SEQUENCE_INVERSE % SEQUENCE_SPACE


def issue_coi(fin: str, year: int, number: int) -> Coi:
    """The COI of facility ``fin`` for ``year`` (4-digit or 2-digit) and counter ``number``."""
    if isinstance(year, bool) or not isinstance(year, int):
        raise CoiError(f"year must be an integer, got {year!r}")
    if 1000 <= year <= 9999:
        year %= 100
    elif not 0 <= year <= 99:
        raise CoiError(f"year must have 2 or 4 digits, got {year!r}")
    return Coi(fin, year, sequence_for(number))
