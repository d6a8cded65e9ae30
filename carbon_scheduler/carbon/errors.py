"""Errors that carbon-intensity sources raise.

    SourceError                  any failure to get intensity from a source
    ├── SourceUnavailable        retryable: timeout, connection error, HTTP 5xx or
    │                            429, or a Retry-After longer than the client
    │                            waits (`retry_after_seconds`)
    ├── SourceAuthError          permanent: HTTP 401 or 403, or a missing or empty
    │                            API key, password or token
    ├── SourceRequestError       permanent: any other HTTP 4xx, such as an unknown
    │                            zone or a range the provider rejects
    └── SourceDataError          permanent for that response: malformed JSON,
                                 missing fields, unknown units or no data at all

A poller retries SourceUnavailable on its next round; the other errors need a
change of configuration or credentials, or a new response, before they go away.

Every message names the provider, the region (and the provider's zone or grid
region) and the URL path. Messages never contain an API key, password or token:
they carry no request headers or query strings, and the HTTP layer redacts
credentials from the response bodies it quotes.
"""

from __future__ import annotations


class SourceError(Exception):
    """A carbon source failed. `provider` names it ("electricitymaps", ...), `path`
    is the URL path involved (None for sources without HTTP) and `status` the HTTP
    status, if a response arrived."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        path: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.path = path
        self.status = status


class SourceUnavailable(SourceError):
    """A temporary failure; the same request may succeed later.

    `retry_after_seconds` is set when the provider sent Retry-After with HTTP 429 or
    503, and the source sends it no request before that delay has passed.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        path: str | None = None,
        status: int | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, path=path, status=status)
        self.retry_after_seconds = retry_after_seconds


class SourceAuthError(SourceError):
    """Credentials are missing, empty or rejected (HTTP 401 or 403)."""


class SourceRequestError(SourceError):
    """The provider rejected the request itself (HTTP 4xx other than 401, 403, 408
    and 429), for example an unknown zone."""


class SourceDataError(SourceError):
    """A response arrived but cannot be used: malformed JSON, a missing or invalid
    field, an unknown unit, or no data points."""
