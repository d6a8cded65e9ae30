"""Line numbers of key paths in a TOML document, for error messages.

`tomllib` returns plain dicts with no positions, so this module scans the source
text a second time and records where each key path is defined:

- `[a.b]` and `[[a.b]]` headers, with the element index that an array-of-tables
  header appends (the third `[[regions.eu-west.nodes]]` is path
  `("regions", "eu-west", "nodes", 2)`);
- `key = value` lines, dotted keys (`levels.mode = ...`) and quoted keys
  (`"topology.kubernetes.io/zone" = ...`);
- the keys of inline tables and the elements of arrays, also when an array spans
  several lines.

Tables that only exist because a deeper header or dotted key names them get the
line of that first mention, until an explicit header for them appears.

The scanner trusts the document to be valid TOML, since it runs only after
`tomllib` accepted the text. If it meets something it does not expect, it stops
and keeps what it recorded so far, and lookups fall back to the nearest recorded
parent, which is at worst line 1.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from enum import Enum

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_SIMPLE_ESCAPES = {
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "f": "\f",
    "r": "\r",
    '"': '"',
    "\\": "\\",
}
# Characters that end a bare value (number, boolean, date-time). A date-time may
# contain a space, so trailing spaces are not a terminator.
_VALUE_END = frozenset(",]}#\r\n")


class Kind(Enum):
    """Kind of definition that introduced a key path."""

    TABLE = "table"  # [a.b]
    ARRAY_TABLE = "array-table"  # [[a.b]], path ends with the element index
    ARRAY = "array"  # the array behind [[a.b]], path without the index
    KEY = "key"  # a = ..., including the last part of a dotted key
    ELEMENT = "element"  # an element of an array value
    IMPLICIT = "implicit"  # a parent table named by a deeper header or dotted key


@dataclass(frozen=True, slots=True)
class Definition:
    """Definition of one key path: its 1-based line and its kind."""

    line: int
    kind: Kind


class SourceMap:
    """Definitions of the key paths of one TOML document."""

    def __init__(self, definitions: dict[KeyPath, Definition]) -> None:
        self._definitions = definitions

    def definition(self, path: KeyPath) -> Definition | None:
        return self._definitions.get(tuple(path))

    def line_of(self, path: KeyPath) -> int:
        """Return the line that defines `path`, else that of its nearest defined parent,
        else 1."""
        path = tuple(path)
        for end in range(len(path), 0, -1):
            found = self._definitions.get(path[:end])
            if found is not None:
                return found.line
        return 1


def format_key_path(path: KeyPath) -> str:
    """Format a key path as TOML writes it, with `[i]` for array elements:
    `regions.eu-west.nodes[0].labels."kubernetes.io/hostname"`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if text:
            text += "."
        text += part if _BARE_KEY.fullmatch(part) else _quote_key(part)
    return text


def _quote_key(key: str) -> str:
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(
        f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in escaped
    )
    return f'"{escaped}"'


def build_source_map(text: str) -> SourceMap:
    """Scan a TOML document and record the line of every key path it defines."""
    scanner = _Scanner(text)
    try:
        scanner.scan_document()
    except _Unexpected:
        # Best effort: keep the definitions found before the unexpected input.
        pass
    return SourceMap(scanner.definitions)


class _Unexpected(Exception):
    """The scanner met input it does not understand."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [index for index, char in enumerate(text) if char == "\n"]
        self.definitions: dict[KeyPath, Definition] = {}
        # Number of elements each array of tables has so far, so that a header
        # naming a path through an array of tables points at its last element.
        self.array_lengths: dict[KeyPath, int] = {}
        self.table: KeyPath = ()

    # Positions and low-level reading.

    def line(self) -> int:
        return bisect.bisect_right(self.newlines, self.pos - 1) + 1

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def startswith(self, prefix: str) -> bool:
        return self.text.startswith(prefix, self.pos)

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Unexpected
        self.pos += 1

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def skip_blank(self) -> None:
        """Skip spaces, comments and newlines, as allowed between array elements."""
        while True:
            self.skip_spaces()
            self.skip_comment()
            if self.peek() in ("\n", "\r") and self.peek():
                self.pos += 1
                continue
            return

    # Recording definitions.

    def define(self, path: KeyPath, line: int, kind: Kind) -> None:
        known = self.definitions.get(path)
        if known is None or known.kind is Kind.IMPLICIT:
            self.definitions[path] = Definition(line, kind)

    def define_parents(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path)):
            self.definitions.setdefault(path[:end], Definition(line, Kind.IMPLICIT))

    def resolve(self, parts: list[str]) -> KeyPath:
        """Turn header key parts into a concrete path, entering the last element of
        every array of tables on the way."""
        path: list[str | int] = []
        for part in parts:
            path.append(part)
            length = self.array_lengths.get(tuple(path))
            if length:
                path.append(length - 1)
        return tuple(path)

    # The grammar.

    def scan_document(self) -> None:
        while True:
            self.skip_blank()
            if not self.peek():
                return
            if self.peek() == "[":
                self.scan_header()
            else:
                self.scan_key_value(self.table)
            self.skip_spaces()
            self.skip_comment()

    def scan_header(self) -> None:
        line = self.line()
        is_array = self.startswith("[[")
        self.pos += 2 if is_array else 1
        self.skip_spaces()
        parts = self.read_key()
        self.skip_spaces()
        self.expect("]")
        if is_array:
            self.expect("]")
            array_path = self.resolve(parts[:-1]) + (parts[-1],)
            index = self.array_lengths.get(array_path, 0)
            self.array_lengths[array_path] = index + 1
            self.define_parents(array_path, line)
            self.define(array_path, line, Kind.ARRAY)
            self.table = array_path + (index,)
            self.define(self.table, line, Kind.ARRAY_TABLE)
        else:
            self.table = self.resolve(parts)
            self.define_parents(self.table, line)
            self.define(self.table, line, Kind.TABLE)

    def scan_key_value(self, table: KeyPath) -> None:
        line = self.line()
        parts = self.read_key()
        path = table + tuple(parts)
        self.define_parents(path, line)
        self.define(path, line, Kind.KEY)
        self.skip_spaces()
        self.expect("=")
        self.skip_spaces()
        self.scan_value(path)

    def read_key(self) -> list[str]:
        parts = [self.read_simple_key()]
        while True:
            self.skip_spaces()
            if self.peek() != ".":
                return parts
            self.pos += 1
            self.skip_spaces()
            parts.append(self.read_simple_key())

    def read_simple_key(self) -> str:
        char = self.peek()
        if char == '"':
            return self.read_basic_string()
        if char == "'":
            return self.read_literal_string()
        match = _BARE_KEY.match(self.text, self.pos)
        if match is None:
            raise _Unexpected
        self.pos = match.end()
        return match.group()

    def read_basic_string(self) -> str:
        self.expect('"')
        chars: list[str] = []
        while True:
            char = self.peek()
            if char in ("", "\n"):
                raise _Unexpected
            self.pos += 1
            if char == '"':
                return "".join(chars)
            if char != "\\":
                chars.append(char)
                continue
            escape = self.peek()
            self.pos += 1
            if escape in _SIMPLE_ESCAPES:
                chars.append(_SIMPLE_ESCAPES[escape])
            elif escape in ("u", "U"):
                width = 4 if escape == "u" else 8
                digits = self.text[self.pos : self.pos + width]
                self.pos += width
                try:
                    chars.append(chr(int(digits, 16)))
                except ValueError as error:
                    raise _Unexpected from error
            else:
                raise _Unexpected

    def read_literal_string(self) -> str:
        self.expect("'")
        end = self.text.find("'", self.pos)
        newline = self.text.find("\n", self.pos)
        if end < 0 or 0 <= newline < end:
            raise _Unexpected
        key = self.text[self.pos : end]
        self.pos = end + 1
        return key

    def skip_multiline_string(self, quote: str) -> None:
        delimiter = quote * 3
        self.pos += 3
        while True:
            end = self.text.find(delimiter, self.pos)
            if end < 0:
                raise _Unexpected
            if quote == '"' and _escaped(self.text, end):
                self.pos = end + 1
                continue
            self.pos = end + 3
            # Up to two quotes right before the closing delimiter belong to the string.
            for _ in range(2):
                if self.peek() == quote:
                    self.pos += 1
            return

    def scan_value(self, path: KeyPath) -> None:
        char = self.peek()
        if self.startswith('"""') or self.startswith("'''"):
            self.skip_multiline_string(char)
        elif char == '"':
            self.read_basic_string()
        elif char == "'":
            self.read_literal_string()
        elif char == "[":
            self.scan_array(path)
        elif char == "{":
            self.scan_inline_table(path)
        else:
            start = self.pos
            while self.peek() and self.peek() not in _VALUE_END:
                self.pos += 1
            if self.pos == start:
                raise _Unexpected

    def scan_array(self, path: KeyPath) -> None:
        self.expect("[")
        index = 0
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.pos += 1
                return
            self.define(path + (index,), self.line(), Kind.ELEMENT)
            self.scan_value(path + (index,))
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1
                index += 1
            elif self.peek() != "]":
                raise _Unexpected

    def scan_inline_table(self, path: KeyPath) -> None:
        self.expect("{")
        self.skip_spaces()
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            self.skip_spaces()
            self.scan_key_value(path)
            self.skip_spaces()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() == "}":
                self.pos += 1
                return
            else:
                raise _Unexpected


def _escaped(text: str, index: int) -> bool:
    """Tell whether the character at `index` follows an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1
