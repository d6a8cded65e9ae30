"""Errors raised by the time-series stores.

Every backend maps its own failures onto one tree, so callers decide what to do
from the class alone and never import sqlite3 or HTTP details:

    StoreError
    ├── RetryableStoreError        the same call may succeed later
    │   ├── StoreConnectionError   could not connect, connection dropped, timed out
    │   └── StoreUnavailableError  server overloaded or failing (429, 5xx), database locked
    └── PermanentStoreError        repeating the call unchanged fails the same way
        ├── StoreRequestError      the server rejected the request (4xx other than 429)
        │   └── StoreAuthError     401 or 403: missing or wrong credentials
        ├── StoreQueryError        the server could not run a query statement
        ├── StoreResponseError     the response was malformed or had an unexpected shape
        └── StoreClosedError       the store was used after close()

The backend's original exception, where there is one, is chained as `__cause__`.
Messages name the URL path or file, never credentials.
"""

from __future__ import annotations

from typing import ClassVar


class StoreError(Exception):
    """Base class of every error raised by a store."""

    retryable: ClassVar[bool] = False


class RetryableStoreError(StoreError):
    """A temporary failure: the same call may succeed later."""

    retryable = True


class PermanentStoreError(StoreError):
    """A failure that repeating the same call will not fix."""


class StoreConnectionError(RetryableStoreError):
    """The server could not be reached, closed the connection, or timed out."""


class StoreUnavailableError(RetryableStoreError):
    """The backend is overloaded or failing: HTTP 429 or 5xx, or a locked database file.

    `status` is the HTTP status code, or None for backends without one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreRequestError(PermanentStoreError):
    """The server rejected a request with a 4xx status other than 429.

    `body` is the start of the response body, trimmed and with credentials removed.
    """

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class StoreAuthError(StoreRequestError):
    """The server rejected the credentials (HTTP 401) or their permissions (HTTP 403)."""


class StoreQueryError(PermanentStoreError):
    """The server accepted a query request but could not run its statement."""


class StoreResponseError(PermanentStoreError):
    """The response could not be parsed or did not have the expected shape."""


class StoreClosedError(PermanentStoreError):
    """A method was called after `close()`."""
