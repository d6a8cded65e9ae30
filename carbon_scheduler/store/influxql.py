"""InfluxQL text and `/query` responses.

Statements quote every identifier, since `end` and other field names are
InfluxQL keywords, and quote string literals with backslash escapes. Time bounds
are bare integers, which InfluxQL compares with `time` as nanoseconds.

A `/query` response is JSON: `{"results": [{"statement_id": 0, "series": [...]}]}`,
where each series has `columns`, `values` and, under GROUP BY, `tags`. With
`chunked=true` the server sends several such documents one after another, each
with part of the rows. `parse_rows` reads them all. Chunked results are not cut
at the server's row limit for unchunked queries (`max-row-limit`).
"""

from __future__ import annotations

import json
from typing import Any

from carbon_scheduler.store.errors import StoreQueryError, StoreResponseError

_MAX_TEXT_IN_MESSAGE = 300


class MissingDatabaseError(StoreQueryError):
    """The query named a database that does not exist (yet)."""


def quote_identifier(name: str) -> str:
    """Quote a database, measurement, tag or field name."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """Quote a string literal, such as a tag value in a WHERE clause."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_rows(data: bytes, *, statement: str) -> list[dict[str, Any]]:
    """Return the rows of a one-statement `/query` response, each a dict of column to value.

    A row also maps each GROUP BY tag to its value. Raises MissingDatabaseError,
    StoreQueryError when the statement failed, and StoreResponseError when the
    body is not the JSON that InfluxDB sends.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreResponseError(f"InfluxDB /query response is not UTF-8: {exc}") from exc
    decoder = json.JSONDecoder()
    rows: list[dict[str, Any]] = []
    documents = 0
    position = _skip_whitespace(text, 0)
    while position < len(text):
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise StoreResponseError(
                f"InfluxDB /query returned invalid JSON ({exc.msg} at character {exc.pos}): "
                f"{_trim(text)}"
            ) from exc
        rows.extend(_document_rows(document, statement))
        documents += 1
        position = _skip_whitespace(text, position)
    if documents == 0:
        raise StoreResponseError("InfluxDB /query returned an empty body; expected JSON results")
    return rows


def _document_rows(document: object, statement: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise _shape_error("a JSON object", document)
    if "error" in document:
        raise _statement_error(document["error"], statement)
    results = document.get("results")
    if not isinstance(results, list):
        raise _shape_error('an object with a "results" list', document)
    rows: list[dict[str, Any]] = []
    for result in results:
        if not isinstance(result, dict):
            raise _shape_error("each result to be an object", document)
        if "error" in result:
            raise _statement_error(result["error"], statement)
        for series in result.get("series", []):
            rows.extend(_series_rows(series, document))
    return rows


def _series_rows(series: object, document: object) -> list[dict[str, Any]]:
    if not isinstance(series, dict):
        raise _shape_error("each series to be an object", document)
    columns = series.get("columns")
    values = series.get("values", [])
    tags = series.get("tags") or {}
    if not isinstance(columns, list) or not isinstance(values, list) or not isinstance(tags, dict):
        raise _shape_error("series with a columns list, a values list and a tags object", document)
    rows = []
    for value_row in values:
        if not isinstance(value_row, list) or len(value_row) != len(columns):
            raise _shape_error(f"each row to have {len(columns)} values", document)
        row = dict(zip(columns, value_row, strict=True))
        row.update(tags)
        rows.append(row)
    return rows


def _statement_error(error: object, statement: str) -> StoreQueryError:
    message = str(error)
    if message.startswith("database not found"):
        return MissingDatabaseError(message)
    return StoreQueryError(f"InfluxDB could not run {_trim(statement)!r}: {_trim(message)}")


def _shape_error(expected: str, document: object) -> StoreResponseError:
    return StoreResponseError(
        f"InfluxDB /query response has an unexpected shape, expected {expected}: "
        f"{_trim(json.dumps(document))}"
    )


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _trim(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_TEXT_IN_MESSAGE:
        return text[:_MAX_TEXT_IN_MESSAGE] + f"... ({len(text)} characters)"
    return text
