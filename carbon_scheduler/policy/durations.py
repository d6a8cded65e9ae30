"""Durations written the way Kubernetes users write them: `45m`, `2h`, `1h30m`, `1d`.

The syntax follows Go's `time.ParseDuration`, which kubectl uses for flags such as
`--timeout`, restricted to what a scheduler needs: whole seconds, no sign, and the units `d`
(24 hours), `h`, `m` and `s`. A plain integer is a number of seconds. Each number may
have a decimal fraction (`1.5h`) as long as the total is a whole number of seconds.
Numbers and units may repeat and come in any order (`30m1h` is 5400 seconds), as Go
allows.

The module is pure, because pod annotations and workload files both parse durations
and the policy core must stay free of I/O.
"""

from __future__ import annotations

import re
from fractions import Fraction

UNIT_SECONDS: dict[str, int] = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}

# One number (integer or decimal, with `.5` and `1.` allowed as in Go) and the text up
# to the next digit or dot. Taking that whole text as the unit lets an error name an
# unknown unit such as `5min` or `2 h` exactly.
_TERM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([^0-9.]*)", re.ASCII)
_PLAIN_SECONDS = re.compile(r"[0-9]+", re.ASCII)

_EXAMPLES = "for example 90s, 45m, 2h, 1h30m, 1d or 3600"


class DurationError(ValueError):
    """A duration string that cannot be read. The message names the value and the fix."""


def parse_duration(text: str) -> int:
    """Parse a duration such as `1h30m` or `3600` into whole seconds.

    Surrounding whitespace is ignored. Raises DurationError for an empty string,
    a negative value, an unknown unit, a missing unit after a fraction, or a total
    that is not a whole number of seconds.
    """
    if not isinstance(text, str):
        raise DurationError(
            f"invalid duration {text!r}: expected a string ({_EXAMPLES})"
        )
    stripped = text.strip()
    if not stripped:
        raise DurationError(f"invalid duration {text!r}: empty; write {_EXAMPLES}")
    if stripped.startswith("-"):
        raise DurationError(
            f"invalid duration {text!r}: must not be negative; write a positive "
            f"amount ({_EXAMPLES})"
        )
    if _PLAIN_SECONDS.fullmatch(stripped):
        return int(stripped)

    total = Fraction(0)
    position = 0
    while position < len(stripped):
        match = _TERM.match(stripped, position)
        if match is None:
            raise DurationError(
                f"invalid duration {text!r}: expected a number at "
                f"{stripped[position:]!r}; write {_EXAMPLES}"
            )
        number, unit = match.groups()
        if unit not in UNIT_SECONDS:
            raise DurationError(_unit_problem(text, number, unit))
        if "." in number:
            total += Fraction(number) * UNIT_SECONDS[unit]
        else:
            # Whole numbers, by far the common case, skip the slower Fraction.
            total += int(number) * UNIT_SECONDS[unit]
        position = match.end()

    if total.denominator != 1:
        raise DurationError(
            f"invalid duration {text!r}: {float(total):g} seconds is not a whole "
            f"number of seconds; round it to whole seconds"
        )
    return int(total)


def _unit_problem(text: str, number: str, unit: str) -> str:
    if not unit:
        return (
            f"invalid duration {text!r}: missing unit after {number!r}; units are "
            f"d, h, m and s ({_EXAMPLES})"
        )
    if unit.strip() in UNIT_SECONDS:
        return (
            f"invalid duration {text!r}: remove the spaces around unit "
            f"{unit.strip()!r} ({_EXAMPLES})"
        )
    return (
        f"invalid duration {text!r}: unknown unit {unit!r}; units are d, h, m and s "
        f"({_EXAMPLES})"
    )


def format_duration(seconds: int) -> str:
    """Format whole seconds in the shortest `parse_duration` form, such as `1h30m`.

    Days are not used, because `36h` reads more plainly than `1d12h` for the run times
    and deadlines a scheduler deals with. Raises ValueError for a negative value.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ValueError(f"duration must be whole seconds as an int, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {seconds}")
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs:
        parts.append(f"{secs}s")
    return "".join(parts)
