"""Label and field selectors, parsed and matched as the API server does.

Label selectors take the full grammar of k8s.io/apimachinery/pkg/labels: `k=v`,
`k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, and `k>n`/`k<n` for
integer values, joined by commas. `k!=v` and `notin` also match objects that lack
the label. Field selectors take `f=v`, `f==v` and `f!=v` with backslash escapes,
and only the field labels that the resource type supports. Any other label fails
with the same message as on the real server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .resources import ResourceType

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_key(key: str, selector: str) -> None:
    prefix, _, name = key.rpartition("/")
    valid = (
        bool(name)
        and len(name) <= 63
        and _NAME.match(name) is not None
        and (not prefix or (len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix) is not None))
        and "/" not in prefix
    )
    if not valid:
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in selector {selector!r}")


def _check_value(value: str, selector: str) -> None:
    if len(value) > 63 or _NAME.match(value) is None:
        raise bad_request(f"unable to parse requirement: invalid label value {value!r} in selector {selector!r}")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # one of =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present or value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == "gt" else number < bound


_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)")


def _tokens(text: str) -> list[str]:
    tokens = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise bad_request(f"unable to parse requirement: unexpected character at {position} in {text!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class LabelSelector:
    """A parsed label selector; the empty selector matches every object."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.requirements = self._parse(text)

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    @staticmethod
    def _parse(text: str) -> tuple[Requirement, ...]:
        tokens = _tokens(text)
        requirements: list[Requirement] = []
        position = 0

        def take() -> str:
            nonlocal position
            if position >= len(tokens):
                raise bad_request(f"unable to parse requirement: unexpected end of selector {text!r}")
            position += 1
            return tokens[position - 1]

        def peek() -> str | None:
            return tokens[position] if position < len(tokens) else None

        while position < len(tokens):
            token = take()
            if token == "!":
                key = take()
                _check_key(key, text)
                requirements.append(Requirement(key, "!"))
            else:
                key = token
                _check_key(key, text)
                operator = peek()
                if operator in (None, ","):
                    requirements.append(Requirement(key, "exists"))
                elif operator in ("=", "==", "!="):
                    take()
                    value = peek()
                    if value in (None, ","):
                        value = ""
                    else:
                        take()
                    _check_value(value, text)
                    requirements.append(Requirement(key, "!=" if operator == "!=" else "=", (value,)))
                elif operator in ("in", "notin"):
                    take()
                    if take() != "(":
                        raise bad_request(f"unable to parse requirement: expected '(' after {operator!r} in {text!r}")
                    values: list[str] = []
                    while True:
                        item = take()
                        if item == ")":
                            break
                        if item == ",":
                            continue
                        _check_value(item, text)
                        values.append(item)
                    if not values:
                        raise bad_request(f"unable to parse requirement: {operator!r} needs at least one value in {text!r}")
                    requirements.append(Requirement(key, operator, tuple(values)))
                elif operator in (">", "<"):
                    take()
                    bound = take()
                    if not re.fullmatch(r"-?\d+", bound):
                        raise bad_request(f"unable to parse requirement: {bound!r} is not an integer in {text!r}")
                    requirements.append(Requirement(key, "gt" if operator == ">" else "lt", (bound,)))
                else:
                    raise bad_request(
                        f"unable to parse requirement: found {operator!r}, expected one of "
                        f"'=', '==', '!=', 'in', 'notin', ',' in {text!r}"
                    )
            separator = peek()
            if separator is not None:
                if take() != ",":
                    raise bad_request(f"unable to parse requirement: expected ',' after {key!r} in {text!r}")
                if peek() is None:
                    raise bad_request(f"unable to parse requirement: trailing ',' in {text!r}")
        return tuple(requirements)


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise bad_request(f"invalid field selector {text!r}: trailing backslash")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class FieldSelector:
    """A parsed field selector for one resource type."""

    def __init__(self, text: str, resource: ResourceType) -> None:
        self.text = text
        self.resource = resource
        self.terms: list[tuple[str, bool, str]] = []  # (field label, must equal, value)
        if not text:
            return
        for term in _split_unescaped(text, ","):
            match = re.match(r"^(.*?)(==|!=|=)(.*)$", term)
            if match is None:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
            label, operator, value = match.group(1), match.group(2), _unescape(match.group(3))
            if label not in resource.field_labels:
                # The real server words it like this too, so clients that match on it keep working.
                raise bad_request(f'field label not supported: {label}')
            self.terms.append((label, operator != "!=", value))

    def matches(self, obj: dict[str, Any]) -> bool:
        for label, must_equal, value in self.terms:
            actual = self.resource.field_labels[label](obj)
            if (actual == value) != must_equal:
                return False
        return True


def parse_selectors(resource: ResourceType, label_text: str, field_text: str) -> tuple[LabelSelector, FieldSelector]:
    """Parse both selectors of a list or watch request; each failure is a 400 `ApiError`."""
    return LabelSelector(label_text), FieldSelector(field_text, resource)
