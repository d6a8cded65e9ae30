"""Duration parsing and formatting."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbon_scheduler.policy.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("90s", 90, id="seconds"),
        pytest.param("45m", 2700, id="minutes"),
        pytest.param("2h", 7200, id="hours"),
        pytest.param("1d", 86400, id="days"),
        pytest.param("1h30m", 5400, id="hours-and-minutes"),
        pytest.param("1d2h3m4s", 93784, id="every-unit"),
        pytest.param("30m1h", 5400, id="any-order-as-in-go"),
        pytest.param("3600", 3600, id="plain-integer-seconds"),
        pytest.param("0", 0, id="zero"),
        pytest.param("0s", 0, id="zero-with-unit"),
        pytest.param("1.5h", 5400, id="decimal-fraction"),
        pytest.param(".5m", 30, id="fraction-without-integer"),
        pytest.param("2.m", 120, id="trailing-point"),
        pytest.param("  6h ", 21600, id="surrounding-whitespace"),
        pytest.param("007m", 420, id="leading-zeros"),
    ],
)
def test_parse_duration_valid(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "invalid duration '': empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param("-5m", "must not be negative", id="negative"),
        pytest.param("-30", "must not be negative", id="negative-integer"),
        pytest.param("5x", "unknown unit 'x'; units are d, h, m and s", id="unknown-unit"),
        pytest.param("5min", "unknown unit 'min'", id="long-unit-name"),
        pytest.param("2H", "unknown unit 'H'", id="upper-case-unit"),
        pytest.param("5ms", "unknown unit 'ms'", id="milliseconds"),
        pytest.param("1.5", "missing unit after '1.5'", id="fraction-without-unit"),
        pytest.param("1h30", "missing unit after '30'", id="trailing-number"),
        pytest.param("1h 30m", "remove the spaces around unit 'h'", id="inner-space"),
        pytest.param("h", "expected a number at 'h'", id="unit-only"),
        pytest.param("0.5s", "0.5 seconds is not a whole number of seconds", id="sub-second"),
        pytest.param("+5m", "expected a number at '+5m'", id="plus-sign"),
        pytest.param("١h", "expected a number", id="non-ascii-digit"),
        pytest.param("1..5h", "missing unit after '1.'", id="two-points"),
    ],
)
def test_parse_duration_invalid(text, message):
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value)


def test_parse_duration_rejects_non_string():
    with pytest.raises(DurationError, match="expected a string"):
        parse_duration(45)  # type: ignore[arg-type]


def test_duration_error_is_value_error():
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(45, "45s", id="seconds"),
        pytest.param(2700, "45m", id="minutes"),
        pytest.param(5400, "1h30m", id="hours-and-minutes"),
        pytest.param(3661, "1h1m1s", id="every-unit"),
        pytest.param(90000, "25h", id="no-days"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1, 1.5, True, "60"])
def test_format_duration_rejects(bad):
    with pytest.raises(ValueError):
        format_duration(bad)


@given(st.integers(min_value=0, max_value=10**12))
def test_format_then_parse_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from("dhms")),
        min_size=1,
        max_size=6,
    )
)
def test_parse_sums_terms(terms):
    text = "".join(f"{number}{unit}" for number, unit in terms)
    size = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    assert parse_duration(text) == sum(number * size[unit] for number, unit in terms)


@given(st.text(max_size=40))
def test_parse_arbitrary_text_only_raises_duration_error(text):
    try:
        seconds = parse_duration(text)
    except DurationError as error:
        assert str(error).startswith("invalid duration")
    else:
        assert isinstance(seconds, int)
        assert seconds >= 0
        assert re.fullmatch(r"[0-9.dhms]+", text.strip(), re.ASCII)
