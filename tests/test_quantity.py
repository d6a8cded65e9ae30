"""Kubernetes quantity parsing: exact values, rounding, rejections and properties.

Many valid and invalid cases come from apimachinery's own TestQuantityParse table,
so a change that drifts from ParseQuantity shows up here.
"""

from __future__ import annotations

import math
import pickle
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_scheduler.quantity import (
    MAX_MAGNITUDE,
    QuantityError,
    milli_value,
    parse_quantity,
    value,
)

KI, MI, GI, TI, PI, EI = (2**n for n in (10, 20, 30, 40, 50, 60))
NANO = Fraction(1, 10**9)

VALID = [
    # (name, input, exact amount)
    ("zero", "0", Fraction(0)),
    ("zero with suffix", "0Mi", Fraction(0)),
    ("plain integer", "1", Fraction(1)),
    ("millicores", "500m", Fraction(1, 2)),
    ("micro", "4u", Fraction(4, 10**6)),
    ("nano", "5n", Fraction(5, 10**9)),
    ("kilo", "8k", Fraction(8000)),
    ("mega", "7M", Fraction(7 * 10**6)),
    ("giga", "6G", Fraction(6 * 10**9)),
    ("tera", "5T", Fraction(5 * 10**12)),
    ("peta", "2P", Fraction(2 * 10**15)),
    ("exa", "1E", Fraction(10**18)),
    ("kibi", "1Ki", Fraction(KI)),
    ("mebi", "7Mi", Fraction(7 * MI)),
    ("gibi", "6Gi", Fraction(6 * GI)),
    ("tebi", "5Ti", Fraction(5 * TI)),
    ("pebi", "4Pi", Fraction(4 * PI)),
    ("exbi", "3Ei", Fraction(3 * EI)),
    ("exponent", "1e3", Fraction(1000)),
    ("capital exponent", "1E6", Fraction(10**6)),
    ("negative exponent", "1E-3", Fraction(1, 1000)),
    ("signed exponent", "1.3E+6", Fraction(1_300_000)),
    ("fractional exponent mantissa", "0.5e-2", Fraction(5, 1000)),
    ("exponent with leading zeros", "2e003", Fraction(2000)),
    ("fraction", "0.5", Fraction(1, 2)),
    ("fraction without integer", ".5", Fraction(1, 2)),
    ("fraction with trailing zeros", "0.50000", Fraction(1, 2)),
    ("integer with point", "1.", Fraction(1)),
    ("integer with point and suffix", "1.G", Fraction(10**9)),
    ("fractional suffix", "100.035k", Fraction(100035)),
    ("fractional binary", "0.5Mi", Fraction(MI // 2)),
    ("fractional binary not whole", "100.035Ki", Fraction(10243584, 100)),
    ("fractional gibi", "0.05Gi", Fraction(536870912, 10)),
    ("leading zeros", "007", Fraction(7)),
    ("plus sign", "+1.5", Fraction(3, 2)),
    ("minus sign", "-1.5", Fraction(-3, 2)),
    ("minus binary", "-2Ki", Fraction(-2 * KI)),
    ("sub-nano rounds up", "3.001n", Fraction(4, 10**9)),
    ("tiny rounds up to one nano", "0.0000000001", NANO),
    ("half nano rounds up", "0.5e-9", NANO),
    ("sub-nano binary rounds up", "0.000000000001Ki", 2 * NANO),
    ("rounding is away from zero", "-0.0000000001", -NANO),
    ("many fraction digits round up", "0.00000012345", Fraction(124, 10**9)),
    ("binary above cap", "9Ei", Fraction(MAX_MAGNITUDE)),
    ("many kibi above cap", "9223372036854775807Ki", Fraction(MAX_MAGNITUDE)),
    ("decimal above cap", "12E", Fraction(MAX_MAGNITUDE)),
    ("negative above cap", "-1e30", Fraction(-MAX_MAGNITUDE)),
    ("huge exponent", "1e1000000", Fraction(MAX_MAGNITUDE)),
    ("tiny exponent", "1e-1000000", NANO),
    ("exponent kept to int32", "1e4294967296", Fraction(1)),
    ("digit-less kibi is zero", "Ki", Fraction(0)),
    ("lone sign is zero", "-", Fraction(0)),
    ("lone point is zero", ".", Fraction(0)),
    ("signed point is zero", "-.", Fraction(0)),
    ("digit-less milli is zero", "m", Fraction(0)),
    ("digit-less exponent is zero", "e5", Fraction(0)),
    ("long fraction", "0." + "0" * 5000 + "1", NANO),
    ("long integer", "1" * 5000, Fraction(MAX_MAGNITUDE)),
    ("json integer", 10, Fraction(10)),
    ("json integer above cap", 10**30, Fraction(MAX_MAGNITUDE)),
    ("json float", 0.5, Fraction(1, 2)),
    ("json float exponent", 1e-05, Fraction(1, 10**5)),
    ("json float large", 1.5e16, Fraction(15 * 10**15)),
    ("decimal number", Decimal("0.30000000000000001"), Fraction(300000001, 10**9)),
    ("decimal exponent form", Decimal("1E+3"), Fraction(1000)),
]

INVALID = [
    # (name, input, expected words in the reason)
    ("empty", "", "empty"),
    ("leading space", " 1", "whitespace"),
    ("trailing space", "1 ", "whitespace"),
    ("inner space", "1 Gi", "whitespace"),
    ("trailing newline", "1\n", "whitespace"),
    ("two points", "1.2.3", "decimal point"),
    ("two points with suffix", "1.1.M", "decimal point"),
    ("suffix then digits", "Ki5", "unknown suffix 'Ki5'"),
    ("byte unit", "1KB", "did you mean k"),
    ("byte unit after binary", "1GiB", "did you mean Gi"),
    ("lower-case binary", "1mi", "did you mean Mi"),
    ("lower-case binary fraction", "0.1mi", "did you mean Mi"),
    ("upper-case kilo", "1K", "did you mean k"),
    ("lone i", "1i", "unknown suffix 'i'"),
    ("fraction then i", ".5i", "unknown suffix 'i'"),
    ("unknown letters", "0.1am", "unknown suffix 'am'"),
    ("words", "aoeu", "expected digits"),
    ("sign in middle", "1+1.0M", "expected digits"),
    ("exponent without digits", "1e", "needs an integer"),
    ("exponent with sign only", "-3.01e-", "invalid exponent"),
    ("exponent beyond int64", "1e99999999999999999999", "invalid exponent"),
    ("fractional exponent", "1e1.5", "expected digits"),
    ("digit-less pebi", "Pi", "no digits"),
    ("digit-less signed exbi", "-Ei", "no digits"),
    ("digit-less small exponent", ".e-10", "no digits"),
    ("non-ascii digit", "\uff11", "expected digits"),
    ("boolean", True, "boolean"),
    ("none", None, "NoneType"),
    ("list", ["1"], "list"),
    ("nan", float("nan"), "not finite"),
    ("infinity", float("inf"), "not finite"),
    ("decimal infinity", Decimal("Infinity"), "not finite"),
]

ROUNDING = [
    # (name, input, value(), milli_value())
    ("whole", "2", 2, 2000),
    ("millicores", "250m", 1, 250),
    ("sub-milli", "0.0001", 1, 1),
    ("fraction of a byte", "0.5", 1, 500),
    ("binary fraction", "1.5Ki", 1536, 1536000),
    ("just above whole", "1000001m", 1001, 1000001),
    ("negative rounds away from zero", "-1.5", -2, -1500),
    ("negative sub-milli", "-0.0001", -1, -1),
    ("zero", "0", 0, 0),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in VALID], ids=[case[0] for case in VALID])
def test_parse_valid(text: object, expected: Fraction) -> None:
    assert parse_quantity(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "words"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_parse_invalid(text: object, words: str) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity(text)  # type: ignore[arg-type]
    assert words in caught.value.reason
    assert caught.value.value is text or caught.value.value == text


@pytest.mark.parametrize(
    ("text", "whole", "milli"), [case[1:] for case in ROUNDING], ids=[case[0] for case in ROUNDING]
)
def test_value_and_milli_value_round_up(text: str, whole: int, milli: int) -> None:
    quantity = parse_quantity(text)
    assert value(quantity) == whole
    assert milli_value(quantity) == milli


def test_error_message_names_value_and_examples() -> None:
    with pytest.raises(QuantityError) as caught:
        parse_quantity("1KB")
    message = str(caught.value)
    assert "'1KB'" in message
    assert "500m" in message
    assert "2Gi" in message
    assert "Ki Mi Gi Ti Pi Ei" in message


def test_error_is_value_error() -> None:
    assert issubclass(QuantityError, ValueError)


def test_error_pickles() -> None:
    error = QuantityError("1KB", "unknown suffix 'KB'")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert copy.value == "1KB"


def test_value_accepts_int() -> None:
    assert value(3) == 3
    assert milli_value(3) == 3000


# --- properties ----------------------------------------------------------------

DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def expected_amount(exact: Fraction) -> Fraction:
    """Round away from zero to whole nano units and cap, as ParseQuantity promises."""
    nano = exact * 10**9
    rounded = math.ceil(nano) if nano >= 0 else math.floor(nano)
    rounded = max(-MAX_MAGNITUDE * 10**9, min(MAX_MAGNITUDE * 10**9, rounded))
    return Fraction(rounded, 10**9)


signs = st.sampled_from(["", "+", "-"])
integer_parts = st.integers(min_value=0, max_value=10**15).map(str)
fraction_parts = st.text(alphabet="0123456789", max_size=12)


def apply_sign(sign: str, amount: Fraction) -> Fraction:
    return -amount if sign == "-" else amount


@given(signs, integer_parts, fraction_parts, st.sampled_from(sorted(DECIMAL_SUFFIXES)))
def test_decimal_suffix_round_trip(sign: str, integer: str, fraction: str, suffix: str) -> None:
    text = f"{sign}{integer}.{fraction}{suffix}" if fraction else f"{sign}{integer}{suffix}"
    exact = Fraction(f"{integer}.{fraction or '0'}") * Fraction(10) ** DECIMAL_SUFFIXES[suffix]
    assert parse_quantity(text) == apply_sign(sign, expected_amount(exact))


@given(signs, st.integers(min_value=0, max_value=2**62), st.sampled_from(sorted(BINARY_SUFFIXES)))
def test_binary_suffix_round_trip(sign: str, number: int, suffix: str) -> None:
    exact = Fraction(number * 2 ** BINARY_SUFFIXES[suffix])
    assert parse_quantity(f"{sign}{number}{suffix}") == apply_sign(sign, expected_amount(exact))


@given(
    signs,
    integer_parts,
    fraction_parts,
    st.sampled_from(["e", "E"]),
    st.integers(min_value=-40, max_value=40),
)
def test_exponent_round_trip(sign: str, integer: str, fraction: str, letter: str, exponent: int) -> None:
    text = f"{sign}{integer}.{fraction}{letter}{exponent}"
    exact = Fraction(f"{integer}.{fraction or '0'}") * Fraction(10) ** exponent
    assert parse_quantity(text) == apply_sign(sign, expected_amount(exact))


@given(st.integers(min_value=-(10**25), max_value=10**25))
def test_json_integer_matches_its_text(number: int) -> None:
    assert parse_quantity(number) == parse_quantity(str(number))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_json_float_matches_its_repr(number: float) -> None:
    assert parse_quantity(number) == parse_quantity(repr(number))


@given(st.text())
def test_arbitrary_text_raises_only_quantity_error(text: str) -> None:
    try:
        parse_quantity(text)
    except QuantityError:
        pass


@given(st.text(alphabet="0123456789.+-eEinumkKMGTPB ", max_size=12))
def test_quantity_like_text_raises_only_quantity_error(text: str) -> None:
    try:
        result = parse_quantity(text)
    except QuantityError:
        return
    assert (result * 10**9).denominator == 1
    assert abs(result) <= MAX_MAGNITUDE


@given(st.from_regex(r"[0-9]{1,8}(\.[0-9]{0,8})?([numkMGTPE]|[KMGTPE]i|e-?[0-9])?", fullmatch=True))
def test_minus_sign_negates(text: str) -> None:
    assert parse_quantity("-" + text) == -parse_quantity(text)


@given(st.fractions(min_value=-(10**12), max_value=10**12))
def test_milli_value_brackets_value(quantity: Fraction) -> None:
    whole = value(quantity)
    milli = milli_value(quantity)
    assert milli >= whole * 1000 - 999
    if quantity >= 0:
        assert milli <= whole * 1000
        assert whole >= quantity
        assert milli >= quantity * 1000
    else:
        assert whole <= quantity
        assert milli <= quantity * 1000


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["m", ""]))
def test_milli_value_of_millicores_is_exact(number: int, suffix: str) -> None:
    quantity = parse_quantity(f"{number}{suffix}")
    assert milli_value(quantity) == (number if suffix == "m" else number * 1000)
