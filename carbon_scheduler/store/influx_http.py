"""HTTP transport for InfluxDB's v1 API: requests with retries, mapped onto the store errors.

Retry policy. Connection errors, timeouts, HTTP 429 and 5xx are retried up to
`retries` times. Before attempt n+1 the client sleeps `backoff_seconds * 2**(n-1)`,
or exactly the Retry-After that a 429 or 503 response carries (seconds or an
HTTP date). A Retry-After above MAX_RETRY_AFTER_SECONDS is not waited for: the
request fails at once with StoreUnavailableError, so a caller's thread is never
parked for minutes. Any other status below 200 or from 300 up is permanent and
raises StoreRequestError (StoreAuthError for 401 and 403) without a retry.

Retrying is safe because every request the store sends is idempotent: a write
replaces points that have the same series and timestamp, queries only read, and
CREATE DATABASE does nothing when the database exists. So a request that timed
out after reaching the server does no harm when sent again.

Credentials. A token goes in an `Authorization: Token ...` header, and a username
and password go in an `Authorization: Basic ...` header (RFC 7617), which
InfluxDB 1.x accepts as well as the `u` and `p` query parameters. A header keeps
the password out of the URLs that proxies and load balancers log. Log entries and
error messages carry the URL path without its query string, and response bodies
are trimmed and have any credential replaced before they are shown.

Each request opens its own connection and closes it, so the client is safe to use
from several threads and never reuses a connection that the server dropped.
NOTE: the connection goes straight to the server; HTTP(S)_PROXY settings are not used.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import math
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.message import Message
from urllib.parse import urlencode, urlsplit

import structlog

from carbon_scheduler import __version__
from carbon_scheduler.config.redaction import redact_url
from carbon_scheduler.store.errors import (
    StoreAuthError,
    StoreConnectionError,
    StoreError,
    StoreRequestError,
    StoreUnavailableError,
)

MAX_RETRY_AFTER_SECONDS = 60.0
MAX_BODY_IN_MESSAGE = 300

_log = structlog.get_logger(__name__)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Return the delay in seconds that a Retry-After header requests, or None.

    `now` is the current Unix time, used for the HTTP-date form. A date in the
    past means "retry now" (0.0). A value that is neither form is ignored.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def basic_authorization(username: str, password: str) -> str:
    """Return the `Authorization` header value of HTTP Basic authentication.

    The scheme joins the two with a colon, so a username that contains one
    cannot be sent. Non-ASCII text is sent as UTF-8.
    """
    if ":" in username:
        raise ValueError("an InfluxDB username must not contain ':', which HTTP Basic authentication cannot send")
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {credentials}"


def _split_base_url(url: str) -> tuple[bool, str, int | None, str]:
    """Validate a server's base URL and return (https, host, port, path prefix)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"InfluxDB url {redact_url(url)!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"InfluxDB url {redact_url(url)!r} has no host; use e.g. http://localhost:8086")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "InfluxDB url must not contain credentials; pass username and password "
            "as arguments, or use open_store(), which moves them out of the URL"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"InfluxDB url {parts.scheme}://{parts.netloc}{parts.path} must not have a "
            "query string or fragment; pass options as arguments"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"InfluxDB url {redact_url(url)!r} has an invalid port: {exc}") from None
    # The path is kept as a prefix, for servers behind a proxy at e.g. https://host/influx.
    return parts.scheme == "https", parts.hostname, port, parts.path.rstrip("/")


class InfluxHTTPClient:
    """Sends requests to one InfluxDB server, retrying temporary failures."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None,
        password: str | None,
        token: str | None,
        timeout_seconds: float,
        retries: int,
        backoff_seconds: float,
        sleep: Callable[[float], None],
    ) -> None:
        self._https, self._host, self._port, self._prefix = _split_base_url(url)
        self._ssl_context = ssl.create_default_context() if self._https else None
        self._headers = {"User-Agent": f"carbon-scheduler/{__version__}"}
        if token is not None:
            self._headers["Authorization"] = f"Token {token}"
        elif username is not None:
            self._headers["Authorization"] = basic_authorization(username, password or "")
        self._uses_token = token is not None
        self._secrets = [secret for secret in (password, token) if secret]
        self._timeout_seconds = timeout_seconds
        self._attempts = retries + 1
        self._backoff_seconds = backoff_seconds
        self._sleep = sleep

    @property
    def base_url(self) -> str:
        """The server's address without credentials, for messages and repr."""
        scheme = "https" if self._https else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        port = f":{self._port}" if self._port is not None else ""
        return f"{scheme}://{host}{port}{self._prefix}"

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        *,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> bytes:
        """Send a request and return the body of its 2xx response.

        Raises StoreConnectionError or StoreUnavailableError once the retries are
        used up, and StoreRequestError or StoreAuthError at once for other statuses.
        """
        target = f"{self._prefix}{path}?{urlencode(params)}"
        headers = dict(self._headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        for attempt in range(1, self._attempts + 1):
            retry_after: float | None = None
            try:
                status, response_headers, data = self._send(method, target, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                reason = self._redact(f"{type(exc).__name__}: {exc}")
                failure: StoreError = StoreConnectionError(
                    f"InfluxDB {method} {path} at {self.base_url} failed: {reason}"
                )
                cause: BaseException | None = exc
            else:
                if 200 <= status < 300:
                    return data
                if status != 429 and status < 500:
                    raise self._permanent_error(method, path, status, data)
                reason = f"HTTP {status}: {self._trim(data)}"
                failure = StoreUnavailableError(
                    f"InfluxDB {method} {path} at {self.base_url} failed: {reason}", status=status
                )
                cause = None
                if status in (429, 503):
                    retry_after = parse_retry_after(response_headers.get("Retry-After"), now=time.time())

            if attempt == self._attempts:
                failure.add_note(f"gave up after {self._attempts} attempts")
                raise failure from cause
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS:
                failure.add_note(
                    f"the server asked to retry after {retry_after:.0f} s, longer than the "
                    f"{MAX_RETRY_AFTER_SECONDS:.0f} s this client waits; retry later"
                )
                raise failure from cause

            delay = retry_after if retry_after is not None else self._backoff(attempt)
            _log.warning(
                "influx_request_retry",
                attempt=f"{attempt} of {self._attempts}",
                method=method,
                path=path,
                reason=reason,
                retry_in_seconds=delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _send(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, Message, bytes]:
        connection: http.client.HTTPConnection
        if self._ssl_context is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_seconds, context=self._ssl_context
            )
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_seconds)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.headers, data
        finally:
            connection.close()

    def _backoff(self, attempt: int) -> float:
        return self._backoff_seconds * 2 ** (attempt - 1)

    def _permanent_error(self, method: str, path: str, status: int, data: bytes) -> StoreRequestError:
        body = self._trim(data)
        message = f"InfluxDB {method} {path} at {self.base_url} failed: HTTP {status}: {body}"
        if status in (401, 403):
            if self._uses_token:
                hint = "check the token"
            elif "Authorization" in self._headers:
                hint = "check the username and password"
            else:
                hint = "the server requires credentials; pass a token or a username and password"
            return StoreAuthError(f"{message} ({hint})", status=status, body=body)
        if 300 <= status < 400:
            message += "; the server redirected the request, so set the url to the final address"
        return StoreRequestError(message, status=status, body=body)

    def _trim(self, data: bytes) -> str:
        text = " ".join(data.decode("utf-8", errors="replace").split())
        text = self._redact(text)
        if len(text) > MAX_BODY_IN_MESSAGE:
            text = text[:MAX_BODY_IN_MESSAGE] + f"... ({len(text)} characters)"
        return text or "(empty body)"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text
