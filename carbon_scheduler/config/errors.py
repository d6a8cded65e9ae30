"""The error that configuration loading raises, with one issue per problem found."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file.

    `line` and `column` are 1-based, and None where the problem has no position
    (a file that cannot be read). `path` is the formatted key path, such as
    `regions.eu-west.max_pods`, or empty for the document as a whole.
    """

    file: str
    line: int | None
    path: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        location = format_location(self.file, self.line, self.column)
        if self.path:
            return f"{location}: {self.path}: {self.message}"
        return f"{location}: {self.message}"


def format_location(file: str, line: int | None, column: int | None = None) -> str:
    """Return `FILE`, `FILE:LINE` or `FILE:LINE:COLUMN`, as compilers print them."""
    location = file
    if line is not None:
        location += f":{line}"
        if column is not None:
            location += f":{column}"
    return location


class ConfigError(ValueError):
    """An invalid configuration. `issues` contains every problem found, in line order,
    and the message has one line per issue."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = tuple(sorted(issues, key=lambda issue: issue.line or 0))
        super().__init__("\n".join(str(issue) for issue in self.issues))
