"""Kubernetes resource quantities, parsed as k8s.io/apimachinery's ParseQuantity does.

Grammar, from the documentation of resource.Quantity:

    <quantity>        ::= <sign>? <number> <suffix>
    <number>          ::= <digits> | <digits>. | <digits>.<digits> | .<digits>
    <suffix>          ::= <binarySI> | <decimalSI> | <decimalExponent>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei           (2^10 .. 2^60)
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E (10^-9 .. 10^18)
    <decimalExponent> ::= e <signed integer> | E <signed integer>

A suffix in the tables wins over an exponent, so `1E` is 10^18 and `1E3` is 1000.
Suffixes are case-sensitive: `1mi`, `1K` and `1KB` are rejected, as are spaces
anywhere, a second decimal point and an empty string.

The result is an exact Fraction. Like ParseQuantity, a value is rounded away from
zero to a whole number of nano units (10^-9) and capped at 2^63-1 in magnitude.
These quirks of ParseQuantity in recent apimachinery releases are kept, so that
every value Kubernetes accepts is accepted here, with the same amount up to the cap
in the NOTE below:

- A number part without digits counts as zero: `+`, `-`, `.`, `Ki` and `-.m` are 0.
  ParseQuantity rejects such a value only when it leaves its int64 fast path,
  which happens for `Pi`, `Ei` and exponents below -9 (`Pi`, `e-10`).
- `1.` and `1.G` are valid. The exponent of `1e<n>` must fit an int64 and is then
  truncated to int32, so `1e4294967296` is 1.

NOTE: apimachinery applies the 2^63-1 cap only to binary-suffixed values, so a
decimal value such as `12E` keeps its full size there. Quantity.Value() and
MilliValue() overflow int64 on such a value, so no Kubernetes component compares it
meaningfully. Here the cap applies to every form, as the Quantity documentation states.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_CEILING, Context, Decimal
from fractions import Fraction

__all__ = ["MAX_MAGNITUDE", "QuantityError", "milli_value", "parse_quantity", "value"]

MAX_MAGNITUDE = 2**63 - 1
"""Largest magnitude a quantity can have, in base units (2^63-1)."""

_NANO_PER_UNIT = 10**9
_MAX_NANO = Decimal(MAX_MAGNITUDE * _NANO_PER_UNIT)

_DECIMAL_EXPONENTS = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_EXPONENTS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}

# The same shape ParseQuantity's scanner accepts: sign, leading zeros, integer
# digits, optional fraction, then suffix letters, an optional sign and digits. The
# suffix is checked against the tables afterwards. [0-9] keeps out non-ASCII digits.
_SYNTAX = re.compile(
    r"(?P<sign>[+-]?)0*(?P<integer>[0-9]*)(?P<point>\.(?P<fraction>[0-9]*))?"
    r"(?P<suffix>[eEinumkKMGTP]*[+-]?[0-9]*)"
)
_SIGNED_INTEGER = re.compile(r"[+-]?(?P<digits>[0-9]+)")
_NUMBER = re.compile(r"[+-]?[0-9]*(?:\.[0-9]*)?")

# Short inputs repeat across pods and nodes, so their results are cached. Long ones
# are parsed each time so that the cache never keeps large strings.
_CACHED_TEXT_MAX = 64

_HINT = (
    "write a number with an optional suffix, such as 500m, 0.5, 2Gi, 1e3 or 128974848 "
    "(decimal suffixes n u m k M G T P E, binary suffixes Ki Mi Gi Ti Pi Ei)"
)


class QuantityError(ValueError):
    """A value that is not a valid Kubernetes quantity.

    `value` is the rejected input and `reason` describes what is wrong with it.
    """

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid quantity {value!r}: {reason}; {_HINT}")

    def __reduce__(self) -> tuple[type[QuantityError], tuple[object, str]]:
        return (type(self), (self.value, self.reason))


def parse_quantity(value: str | int | float | Decimal) -> Fraction:
    """Parse a Kubernetes quantity into its exact amount in base units.

    Strings follow the grammar in the module docstring. Numbers are accepted because
    Kubernetes JSON may carry a quantity as a JSON number, which apimachinery parses
    from its text. Raises QuantityError for anything else.

    NOTE: a float has lost the digits of its JSON text beyond 17 significant
    digits, so it is parsed from its shortest repr. Decode JSON with
    `parse_float=Decimal` to keep every digit.
    """
    if isinstance(value, str):
        if len(value) <= _CACHED_TEXT_MAX:
            return _parse_text_cached(value)
        return _parse_text(value)
    if isinstance(value, bool):
        raise QuantityError(value, "a boolean is not a quantity")
    if isinstance(value, int):
        # The decimal text of an int needs no rounding; only the cap applies.
        return Fraction(max(-MAX_MAGNITUDE, min(MAX_MAGNITUDE, value)))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(value, "the number is not finite")
        return _parse_text(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise QuantityError(value, "the number is not finite")
        return _parse_text(str(value))
    raise QuantityError(value, f"expected a string or a number, got {type(value).__name__}")


def value(quantity: Fraction | int) -> int:
    """Return `quantity` in whole base units, rounded away from zero like
    Quantity.Value() (so 0.1 gives 1 and -0.1 gives -1)."""
    return _round_away_from_zero(Fraction(quantity))


def milli_value(quantity: Fraction | int) -> int:
    """Return `quantity` in thousandths of a base unit, rounded away from zero like
    Quantity.MilliValue() on parsed quantities (so 0.0001 gives 1)."""
    return _round_away_from_zero(Fraction(quantity) * 1000)


def _round_away_from_zero(amount: Fraction) -> int:
    numerator, denominator = amount.numerator, amount.denominator
    if numerator >= 0:
        return -(-numerator // denominator)
    return numerator // denominator


@functools.lru_cache(maxsize=4096)
def _parse_text_cached(text: str) -> Fraction:
    return _parse_text(text)


def _parse_text(text: str) -> Fraction:
    if not text:
        raise QuantityError(text, "the value is empty")
    match = _SYNTAX.fullmatch(text)
    if match is None:
        raise QuantityError(text, _syntax_reason(text))

    integer = match["integer"]
    fraction = match["fraction"] or ""
    suffix = match["suffix"]
    base, exponent = _interpret_suffix(text, suffix)

    has_digits = bool(integer or fraction) or "0" in text[: match.start("integer")]
    if not has_digits and not _zero_takes_fast_path(base, exponent):
        raise QuantityError(text, f"no digits before the suffix {suffix!r}")

    nano = _nano_magnitude(integer, fraction, base, exponent)
    if match["sign"] == "-":
        nano = -nano
    return Fraction(nano, _NANO_PER_UNIT)


def _syntax_reason(text: str) -> str:
    if any(character.isspace() for character in text):
        return "whitespace is not allowed"
    if text.count(".") > 1:
        return "the number has more than one decimal point"
    # The pattern also matches an empty prefix, so `number` is never None.
    number = _NUMBER.match(text)
    assert number is not None
    rest = text[number.end() :]
    has_digits = any(character in "0123456789" for character in number.group())
    if has_digits and rest.isascii() and rest.isalpha():
        return f"unknown suffix {rest!r}{_suffix_hint(rest)}"
    return "expected digits with an optional sign, decimal point and suffix"


def _interpret_suffix(text: str, suffix: str) -> tuple[int, int]:
    """Return (base, exponent) for `suffix`, like apimachinery's suffixer."""
    if suffix in _DECIMAL_EXPONENTS:
        return 10, _DECIMAL_EXPONENTS[suffix]
    if suffix in _BINARY_EXPONENTS:
        return 2, _BINARY_EXPONENTS[suffix]

    if suffix == "e":
        raise QuantityError(text, "the exponent e needs an integer after it, as in 1e3")
    if len(suffix) > 1 and suffix[0] in "eE":
        match = _SIGNED_INTEGER.fullmatch(suffix, 1)
        # strconv.ParseInt(..., 10, 64) must accept the exponent: at most 19
        # significant digits and within the int64 range.
        if match is not None and len(match["digits"].lstrip("0")) <= 19:
            parsed = int(suffix[1:])
            if -(2**63) <= parsed < 2**63:
                # ParseQuantity converts the exponent with int32(parsed), which keeps
                # only the low 32 bits.
                return 10, (parsed + 2**31) % 2**32 - 2**31
        raise QuantityError(text, f"invalid exponent {suffix!r}; an exponent is e or E followed by an integer")

    raise QuantityError(text, f"unknown suffix {suffix!r}{_suffix_hint(suffix)}")


def _suffix_hint(suffix: str) -> str:
    """Suggest the suffix a user probably meant: the right case, or no byte unit."""
    known = [name for name in (*_DECIMAL_EXPONENTS, *_BINARY_EXPONENTS) if name]
    same_letters = [name for name in known if name.lower() == suffix.lower()]
    if same_letters:
        return f" (suffixes are case-sensitive: did you mean {' or '.join(same_letters)}?)"
    if suffix[-1:] in ("B", "b"):
        stem = suffix[:-1].lower()
        # n, u and m are fractions of a unit, never what a byte size means.
        sizes = [name for name in known if name.lower() == stem and name not in ("n", "u", "m")]
        if not stem:
            return " (quantities count bytes without a unit: drop the B)"
        if sizes:
            return f" (quantities count bytes without a unit: did you mean {' or '.join(sizes)}?)"
    return ""


def _zero_takes_fast_path(base: int, exponent: int) -> bool:
    """Return whether ParseQuantity takes its int64 fast path for a number without
    digits and this suffix. Its slow path rejects such a number."""
    if base == 10:
        # Decimal precision is 18 - len("0") >= 0, so only the scale matters.
        return exponent >= -9
    # Binary precision is 15 - len("0") - int(exponent * 3 / 10) - 1.
    return 13 - exponent * 3 // 10 >= 0


def _nano_magnitude(integer: str, fraction: str, base: int, exponent: int) -> int:
    """Return |number * base**exponent| in nano units, rounded up and capped."""
    if not (integer + fraction).strip("0"):
        return 0
    # Decimal arithmetic in a context wide enough for every digit keeps the product
    # exact, and the unbounded exponent range copes with exponents up to 2^31.
    context = Context(
        prec=len(integer) + len(fraction) + 40,
        rounding=ROUND_CEILING,
        Emax=MAX_EMAX,
        Emin=MIN_EMIN,
    )
    magnitude = Decimal(f"{integer or '0'}.{fraction or '0'}")
    if base == 10:
        nano = magnitude.scaleb(exponent + 9, context)
    else:
        nano = context.multiply(magnitude, Decimal((1 << exponent) * _NANO_PER_UNIT))
    if nano >= _MAX_NANO:
        return MAX_MAGNITUDE * _NANO_PER_UNIT
    return int(nano.to_integral_value(rounding=ROUND_CEILING, context=context))
