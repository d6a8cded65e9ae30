"""Typed reading of parsed TOML tables, recording every problem instead of stopping.

A TableReader reads one value at a time (`integer`, `number`, `quantity`, ...). For
a bad or missing value it records a ConfigIssue with the key path, the line from the
SourceMap and the offending value. It then returns the default or a placeholder, so
the caller can go on and find the next problem. Any recorded issue makes loading
fail, so a placeholder never reaches a Config.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from carbon_scheduler.config.errors import ConfigIssue
from carbon_scheduler.config.source_map import KeyPath, Kind, SourceMap, format_key_path
from carbon_scheduler.quantity import QuantityError, milli_value, parse_quantity, value

QuantityUnit = Literal["cpu", "bytes", "count"]
NameCheck = Callable[[str], "str | None"]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING: Any = _Sentinel("MISSING")
# Passed as `default` to mark a key that must be present.
REQUIRED: Any = _Sentinel("REQUIRED")

_VALUE_TEXT_MAX = 60
_QUANTITY_EXAMPLES: dict[str, str] = {
    "cpu": "4, 3500m or 0.5",
    "bytes": "16Gi, 512Mi or 1e9",
    "count": "1 or 8",
}


def render_value(item: object) -> str:
    """Render a parsed TOML value the way TOML writes it, shortened for messages."""
    if isinstance(item, bool):
        text = "true" if item else "false"
    elif isinstance(item, str):
        text = json.dumps(item, ensure_ascii=False)
    elif isinstance(item, float) and math.isnan(item):
        text = "nan"
    elif isinstance(item, float) and math.isinf(item):
        text = "inf" if item > 0 else "-inf"
    elif isinstance(item, dict):
        text = "a table"
    elif isinstance(item, list):
        text = "[" + ", ".join(render_value(element) for element in item) + "]"
    elif hasattr(item, "isoformat"):
        text = item.isoformat()
    else:
        text = repr(item)
    if len(text) > _VALUE_TEXT_MAX:
        text = text[: _VALUE_TEXT_MAX - 3] + "..."
    return text


def is_number(item: object) -> bool:
    return isinstance(item, (int, float)) and not isinstance(item, bool)


def as_float(item: object) -> float | None:
    """Return a TOML integer or float as a finite float, else None."""
    if not is_number(item):
        return None
    try:
        number = float(item)  # type: ignore[arg-type]
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def in_range(item: object, minimum: float, maximum: float | None = None) -> bool:
    """Tell whether `item` is a finite number within the inclusive bounds."""
    number = as_float(item)
    if number is None or number < minimum:
        return False
    return maximum is None or number <= maximum


class TableReader:
    """Reads values out of parsed tables and records an issue for each bad one."""

    def __init__(self, file: str, source_map: SourceMap, base_dir: Path | None) -> None:
        self.file = file
        self.source_map = source_map
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []

    # Recording issues.

    def report(
        self,
        path: KeyPath,
        message: str,
        *,
        got: object = MISSING,
        allowed: Iterable[str] | None = None,
        line: int | None = None,
    ) -> None:
        text = message
        if got is not MISSING:
            text += f", got {render_value(got)}"
        if allowed is not None:
            text += "; allowed: " + ", ".join(allowed)
        if line is None:
            line = self.source_map.line_of(path)
        self.issues.append(ConfigIssue(self.file, line, format_key_path(path), text))

    def describe_table(self, path: KeyPath) -> str:
        """Name a table the way the file writes it: `[a.b]`, `[[a.b]] number 2`, ..."""
        definition = self.source_map.definition(path)
        written = format_key_path(path)
        dotted = format_key_path(tuple(part for part in path if isinstance(part, str)))
        if definition is None:
            return f"[{written}]" if path else "the top level"
        if definition.kind is Kind.TABLE:
            return f"[{dotted}]"
        if definition.kind is Kind.ARRAY_TABLE and isinstance(path[-1], int):
            return f"[[{dotted}]] number {path[-1] + 1}"
        if definition.kind is Kind.IMPLICIT:
            return f"table {written}"
        return f"inline table {written}"

    def report_missing(self, table_path: KeyPath, key: str, example: str = "") -> None:
        """Report a missing required key at the line of the table it belongs in."""
        line = self.source_map.line_of(table_path)
        where = self.describe_table(table_path)
        message = f"missing required key; add it to {where} (line {line})"
        if example:
            message += f", for example {example}"
        self.report(table_path + (key,), message, line=line)

    def check_keys(
        self,
        table: Mapping[str, object],
        path: KeyPath,
        allowed: Iterable[str],
        *,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Report every key of `table` that is not in `allowed`. `hints` gives a reason
        for particular keys; other keys get the closest allowed key as a suggestion."""
        allowed = sorted(allowed)
        for key in table:
            if key in allowed:
                continue
            message = "unknown key"
            if hints and key in hints:
                message += f" ({hints[key]})"
            else:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.8)
                if close:
                    message += f" (did you mean {close[0]}?)"
            self.report(path + (key,), message, allowed=allowed)

    # Typed getters.

    def table(
        self, item: object, path: KeyPath, expected: str = "a table"
    ) -> dict[str, Any] | None:
        if isinstance(item, dict):
            return item
        self.report(path, f"must be {expected}", got=item)
        return None

    def _lookup(self, table: Mapping[str, Any], path: KeyPath, key: str, default: Any) -> Any:
        found = table.get(key, MISSING)
        if found is MISSING and default is REQUIRED:
            self.report_missing(path, key)
        return found

    def integer(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        *,
        default: Any,
        minimum: int,
    ) -> int:
        fallback = 0 if default is REQUIRED else default
        found = self._lookup(table, path, key, default)
        if found is MISSING:
            return fallback
        if isinstance(found, int) and not isinstance(found, bool) and found >= minimum:
            return found
        if minimum == 1:
            requirement = "must be a positive integer"
        else:
            requirement = f"must be an integer >= {minimum}"
        self.report(path + (key,), requirement, got=found)
        return fallback

    def number(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        *,
        default: Any,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
    ) -> float:
        """Read a finite number (TOML integer or float). `minimum` and `maximum` are
        inclusive bounds and `above` is an exclusive lower bound."""
        fallback = 0.0 if default is REQUIRED else float(default)
        found = self._lookup(table, path, key, default)
        if found is MISSING:
            return fallback
        number = as_float(found)
        if (
            number is not None
            and (minimum is None or number >= minimum)
            and (maximum is None or number <= maximum)
            and (above is None or number > above)
        ):
            return number
        if minimum is not None and maximum is not None:
            requirement = f"must be a number from {minimum:g} to {maximum:g}"
        elif minimum is not None:
            requirement = f"must be a number >= {minimum:g}"
        elif above is not None:
            requirement = f"must be a number > {above:g}"
        else:
            requirement = "must be a finite number"
        self.report(path + (key,), requirement, got=found)
        return fallback

    def string(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        *,
        default: Any,
        check: NameCheck | None = None,
    ) -> Any:
        """Read a non-empty string, checked by `check` if given. Returns `default`
        (which may be None) when the key is absent."""
        found = self._lookup(table, path, key, default)
        if found is MISSING:
            return "" if default is REQUIRED else default
        if not isinstance(found, str) or not found:
            self.report(path + (key,), "must be a non-empty string", got=found)
            return ""
        problem = check(found) if check is not None else None
        if problem is not None:
            self.report(path + (key,), problem, got=found)
        return found

    def boolean(self, table: Mapping[str, Any], path: KeyPath, key: str, *, default: bool) -> bool:
        found = table.get(key, MISSING)
        if found is MISSING:
            return default
        if isinstance(found, bool):
            return found
        self.report(path + (key,), "must be true or false", got=found)
        return default

    def choice(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        allowed: tuple[str, ...],
        *,
        example: str,
        problem: str = "invalid value",
    ) -> str | None:
        """Read a required string out of a fixed set, or return None if it is missing
        or invalid."""
        found = table.get(key, MISSING)
        if found is MISSING:
            self.report_missing(path, key, example)
            return None
        if isinstance(found, str) and found in allowed:
            return found
        self.report(path + (key,), problem, got=found, allowed=allowed)
        return None

    def file_path(
        self, table: Mapping[str, Any], path: KeyPath, key: str, *, required: bool
    ) -> str | None:
        """Read a file path, expanding `~` and resolving a relative path against the
        directory of the configuration file."""
        found = table.get(key, MISSING)
        if found is MISSING:
            if required:
                self.report_missing(path, key)
            return None
        if not isinstance(found, str) or not found.strip():
            self.report(path + (key,), "must be a non-empty path", got=found)
            return None
        expanded = os.path.expanduser(found)
        if self.base_dir is not None and not os.path.isabs(expanded):
            expanded = os.path.normpath(self.base_dir / expanded)
        return expanded

    def quantity(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        *,
        unit: QuantityUnit,
        required: bool,
        positive: bool,
    ) -> int:
        found = table.get(key, MISSING)
        if found is MISSING:
            if required:
                self.report_missing(path, key)
            return 0
        return self.quantity_value(found, path + (key,), unit=unit, positive=positive)

    def quantity_value(
        self, found: object, path: KeyPath, *, unit: QuantityUnit, positive: bool
    ) -> int:
        """Convert a Kubernetes quantity to millicores for `unit="cpu"` and to whole
        base units otherwise, rounding up as Kubernetes does. Extended resources
        (`unit="count"`) must be whole numbers."""
        examples = _QUANTITY_EXAMPLES[unit]
        if not (isinstance(found, str) or is_number(found)):
            self.report(path, f"must be a Kubernetes quantity such as {examples}", got=found)
            return 0
        try:
            quantity = parse_quantity(found)  # type: ignore[arg-type]
        except QuantityError as error:
            requirement = f"invalid quantity: {error.reason}; write it like {examples}"
            self.report(path, requirement, got=found)
            return 0
        if quantity < 0 or (positive and quantity == 0):
            requirement = "must be a positive quantity" if positive else "must not be negative"
            self.report(path, requirement, got=found)
            return 0
        if unit == "count" and quantity.denominator != 1:
            self.report(path, "must be a whole number for an extended resource", got=found)
            return 0
        return milli_value(quantity) if unit == "cpu" else value(quantity)

    def string_table(
        self,
        item: object,
        path: KeyPath,
        *,
        key_check: NameCheck,
        value_check: NameCheck,
    ) -> dict[str, str]:
        """Read a table of string values, such as node labels."""
        table = self.table(item, path, "a table of strings")
        if table is None:
            return {}
        result: dict[str, str] = {}
        for key, entry in table.items():
            problem = key_check(key)
            if problem is not None:
                self.report(path + (key,), f"invalid key: {problem}")
            if not isinstance(entry, str):
                self.report(path + (key,), "must be a string", got=entry)
                continue
            problem = value_check(entry)
            if problem is not None:
                self.report(path + (key,), f"invalid value: {problem}", got=entry)
            result[key] = entry
        return result
