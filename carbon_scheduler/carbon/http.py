"""Shared HTTP client logic of the provider sources: retries, Retry-After, a TTL cache.

`ProviderHttp.get_json` sends one GET and returns the decoded JSON body.

Retry policy. Timeouts, connection errors, HTTP 408, 429 and 5xx are retried up
to `max_attempts` attempts in all. Before attempt n+1 the client sleeps an
exponential backoff with jitter: a delay drawn uniformly from
[b/2, b] with b = min(backoff_max_seconds, backoff_initial_seconds * 2**(n-1)),
so pollers of several regions that failed together do not retry in lockstep.
When a 429 or 503 response carries Retry-After (delay-seconds or an HTTP date),
the client waits exactly that long instead, and sends nothing to that provider
before then: a call made earlier fails at once with SourceUnavailable. A
Retry-After above `retry_after_max_seconds` is not slept on; the call fails at
once, so a poller is never parked for long. Each retry is logged at warning level
as attempt "n of N"; giving up is logged at error level. Every other 4xx is
permanent and raised without a retry (SourceAuthError for 401 and 403).

Caching. A successful response is kept for `cache_ttl_seconds` under its path and
query, so polling faster than the provider publishes does not call it again.
Concurrent calls for the same key wait for one request. Errors are not cached.
Cached bodies are shared, so callers must not modify them.

Secrets. Headers and query strings never appear in logs or messages. Response
bodies quoted in messages are trimmed and have every secret that the `secrets`
callback returns replaced by "[redacted]".

The client is created here unless the caller passes a shared `httpx.AsyncClient`;
`aclose()` closes only a client created here.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random as random_module
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from carbon_scheduler import __version__
from carbon_scheduler.carbon.errors import (
    SourceAuthError,
    SourceDataError,
    SourceError,
    SourceRequestError,
    SourceUnavailable,
)
from carbon_scheduler.carbon.source import Clock
from carbon_scheduler.store.base import ForecastPoint, Sample

Sleep = Callable[[float], Awaitable[None]]
Random = Callable[[], float]

MAX_BODY_IN_MESSAGE = 200
REDACTED = "[redacted]"
USER_AGENT = f"carbon-scheduler/{__version__}"

# 408 Request Timeout and 429 Too Many Requests are the 4xx codes worth a retry.
_RETRYABLE_4XX = frozenset({408, 429})
_DELAY_SECONDS = re.compile(r"\d+", re.ASCII)
# Shorter secrets could match ordinary words in a body, and real keys are far longer.
_MIN_SECRET_LENGTH = 4

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """HTTP settings of a provider source.

    - `base_url`: scheme, host and optional path prefix, such as
      "https://api.electricitymaps.com"; request paths are appended to it.
    - `timeout_seconds`: limit for connecting, each read and each write.
    - `max_attempts`: attempts per call, counting the first one.
    - `backoff_initial_seconds`, `backoff_max_seconds`: the backoff before the
      second attempt, and its cap (see the module docstring).
    - `retry_after_max_seconds`: the longest Retry-After the client sleeps on.
    - `cache_ttl_seconds`: how long a successful response is reused; 0 disables
      the cache.
    """

    base_url: str
    timeout_seconds: float = 10.0
    max_attempts: int = 4
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    retry_after_max_seconds: float = 120.0
    cache_ttl_seconds: float = 300.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url {self.base_url!r} must be an http:// or https:// URL with a host, "
                "such as https://api.electricitymaps.com"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"base_url {self.base_url!r} must not contain a query or fragment")
        positive = {
            "timeout_seconds": self.timeout_seconds,
            "backoff_initial_seconds": self.backoff_initial_seconds,
            "backoff_max_seconds": self.backoff_max_seconds,
        }
        for name, number in positive.items():
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {number!r}")
        for name, number in (
            ("retry_after_max_seconds", self.retry_after_max_seconds),
            ("cache_ttl_seconds", self.cache_ttl_seconds),
        ):
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {number!r}")
        if isinstance(self.max_attempts, bool) or not (
            isinstance(self.max_attempts, int) and self.max_attempts >= 1
        ):
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Return the delay in seconds that a Retry-After header requests, or None.

    The header contains either a whole number of seconds or an HTTP date (RFC 9110,
    section 10.2.3); `now` is the current Unix time for the date form. A date in
    the past means no wait (0.0). Any other text is ignored and returns None.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, *, initial: float, maximum: float, random: Random) -> float:
    """Return the sleep after failed attempt `attempt` (1-based): a uniform draw from
    [b/2, b] with b = min(maximum, initial * 2**(attempt-1))."""
    ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + random() * ceiling / 2


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in `text` by "[redacted]"."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def describe(provider: str, context: Mapping[str, str]) -> str:
    """Name a provider and its region for messages: "electricitymaps (region eu-west, zone DE)"."""
    if not context:
        return provider
    return f"{provider} ({', '.join(f'{key} {value}' for key, value in context.items())})"


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt that may be retried."""

    reason: str
    status: int | None = None
    retry_after: float | None = None
    cause: BaseException | None = None


class ProviderHttp:
    """GET requests to one provider, with retries, Retry-After and a TTL cache.

    `context` names the region and the provider's zone for logs and messages, such
    as {"region": "eu-west", "zone": "DE"}. `secrets` returns the credentials
    currently in use, for redaction. `auth_hint` is appended to the message of a
    401 or 403 and names the setting to check. `sleep` and `random` exist so tests
    can observe delays without waiting.
    """

    def __init__(
        self,
        *,
        provider: str,
        settings: HttpSettings,
        clock: Clock,
        context: Mapping[str, str],
        client: httpx.AsyncClient | None = None,
        secrets: Callable[[], Iterable[str]] = tuple,
        auth_hint: str = "",
        sleep: Sleep = asyncio.sleep,
        random: Random = random_module.random,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.context = dict(context)
        self.label = describe(provider, self.context)
        self._clock = clock
        self._secrets = secrets
        self._auth_hint = auth_hint
        self._sleep = sleep
        self._random = random
        self._timeout = httpx.Timeout(settings.timeout_seconds)
        self._owns_client = client is None
        self._client = client if client is not None else self._new_client()
        self._base = settings.base_url.rstrip("/")
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, tuple[tuple[str, str], ...]], asyncio.Lock] = {}
        self._not_before = 0.0
        self._closed = False

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it. Closing twice is allowed."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    async def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        use_cache: bool = True,
    ) -> Any:
        """GET `base_url + path` and return its JSON body, with the retries and cache
        that the module docstring describes.

        Raises SourceUnavailable, SourceAuthError, SourceRequestError or
        SourceDataError (for a body that is not JSON).
        """
        if self._closed:
            raise SourceError(
                f"{self.label}: the source is closed", provider=self.provider, path=path
            )
        query = tuple(sorted((params or {}).items()))
        key = (path, query)
        if not use_cache or self.settings.cache_ttl_seconds <= 0:
            return await self._fetch(path, params, headers, auth)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock.time() < cached[0]:
                _log.debug("carbon_cache_hit", provider=self.provider, path=path, **self.context)
                return cached[1]
            body = await self._fetch(path, params, headers, auth)
            now = self._clock.time()
            self._evict_expired(now)
            self._cache[key] = (now + self.settings.cache_ttl_seconds, body)
            return body

    def _evict_expired(self, now: float) -> None:
        """Drop expired responses and idle locks, because history and forecast
        requests use a new key every period and a daemon runs for months."""
        for key in [key for key, (expires_at, _) in self._cache.items() if expires_at <= now]:
            del self._cache[key]
        for key in [key for key, lock in self._locks.items() if not lock.locked()]:
            if key not in self._cache:
                del self._locks[key]

    async def _fetch(
        self,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | tuple[str, str] | None,
    ) -> Any:
        waited = self._not_before - self._clock.time()
        if waited > 0:
            raise SourceUnavailable(
                f"{self.label}: GET {path} not sent, because the Retry-After of an "
                f"earlier HTTP 429 or 503 has {waited:.0f} s left",
                provider=self.provider,
                path=path,
                retry_after_seconds=waited,
            )
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            outcome = await self._attempt(path, params, headers, auth)
            if not isinstance(outcome, _Failure):
                self._not_before = 0.0
                return outcome
            failure = outcome
            if failure.retry_after is not None:
                self._not_before = self._clock.time() + failure.retry_after
            if attempt == attempts:
                _log.error(
                    "carbon_source_unavailable",
                    provider=self.provider,
                    path=path,
                    attempts=attempts,
                    reason=failure.reason,
                    **self.context,
                )
                raise self._unavailable(path, failure, f"gave up after {attempts} attempts")
            if (
                failure.retry_after is not None
                and failure.retry_after > self.settings.retry_after_max_seconds
            ):
                _log.error(
                    "carbon_source_rate_limited",
                    provider=self.provider,
                    path=path,
                    attempt=f"{attempt} of {attempts}",
                    retry_after_seconds=failure.retry_after,
                    **self.context,
                )
                raise self._unavailable(
                    path,
                    failure,
                    f"the provider requested a retry after {failure.retry_after:.0f} s, longer "
                    f"than the {self.settings.retry_after_max_seconds:.0f} s this client waits",
                )
            if failure.retry_after is not None:
                delay = failure.retry_after
            else:
                delay = backoff_delay(
                    attempt,
                    initial=self.settings.backoff_initial_seconds,
                    maximum=self.settings.backoff_max_seconds,
                    random=self._random,
                )
            _log.warning(
                "carbon_request_retry",
                provider=self.provider,
                path=path,
                attempt=f"{attempt} of {attempts}",
                reason=failure.reason,
                retry_in_seconds=round(delay, 3),
                **self.context,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(
        self,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | tuple[str, str] | None,
    ) -> Any:
        """Send one request. Return the decoded body, return a _Failure for a
        retryable problem, or raise a permanent SourceError."""
        url = self._base + path
        extra: dict[str, Any] = {}
        if auth is not None:
            extra["auth"] = auth
        try:
            response = await self._client.get(
                url,
                params=dict(params or {}),
                headers=dict(headers or {}),
                timeout=self._timeout,
                **extra,
            )
        except httpx.TimeoutException as error:
            reason = f"timed out after {self.settings.timeout_seconds:g} s ({type(error).__name__})"
            return _Failure(reason, cause=error)
        except httpx.TransportError as error:
            reason = f"connection failed ({type(error).__name__})"
            return _Failure(reason, cause=error)
        except httpx.HTTPError as error:
            message = f"{self.label}: GET {path} failed: {type(error).__name__}"
            raise SourceRequestError(message, provider=self.provider, path=path) from error

        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError as error:
                message = (
                    f"{self.label}: GET {path} returned a body that is not valid JSON: "
                    f"{self._snippet(response)}"
                )
                raise SourceDataError(
                    message, provider=self.provider, path=path, status=status
                ) from error

        described = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status >= 500 or status in _RETRYABLE_4XX:
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now=self._clock.time()
                )
            return _Failure(described, status=status, retry_after=retry_after)
        if status in (401, 403):
            message = f"{self.label}: GET {path} was rejected with {described}"
            if self._auth_hint:
                message += f"; {self._auth_hint}"
            raise SourceAuthError(message, provider=self.provider, path=path, status=status)
        message = (
            f"{self.label}: GET {path} was rejected with {described}: {self._snippet(response)}"
        )
        raise SourceRequestError(message, provider=self.provider, path=path, status=status)

    def _unavailable(self, path: str, failure: _Failure, outcome: str) -> SourceUnavailable:
        error = SourceUnavailable(
            f"{self.label}: GET {path} failed: {failure.reason}; {outcome}",
            provider=self.provider,
            path=path,
            status=failure.status,
            retry_after_seconds=failure.retry_after,
        )
        error.__cause__ = failure.cause
        return error

    def _snippet(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())
        text = redact(text, self._secrets())
        if not text:
            return "(empty body)"
        if len(text) > MAX_BODY_IN_MESSAGE:
            text = text[: MAX_BODY_IN_MESSAGE - 3] + "..."
        return text


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a credential comes from: an environment variable or a file, such as a
    mounted Kubernetes Secret. Exactly one of `env` and `file` is set.

    `setting` is the configuration key without its suffix ("api_key", "password"),
    so messages name the key to fix. The value is read on every `read()`, so
    a rotated Secret file takes effect without a restart.
    """

    setting: str
    env: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError(
                f"{self.setting}: give exactly one of {self.setting}_env and {self.setting}_file"
            )

    def describe(self) -> str:
        if self.env is not None:
            return f"environment variable {self.env} ({self.setting}_env)"
        return f"file {self.file} ({self.setting}_file)"

    def read(self, *, provider: str, label: str) -> str:
        """Return the credential with surrounding whitespace removed.

        Raises SourceAuthError when it is missing, unreadable or empty; the message
        names where it was looked for, never its value.
        """
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SourceAuthError(
                    f"{label}: {self.describe()} is not set; set it to the {self.setting}",
                    provider=provider,
                )
        else:
            assert self.file is not None
            try:
                value = Path(self.file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or type(error).__name__
                raise SourceAuthError(
                    f"{label}: cannot read {self.describe()}: {reason}", provider=provider
                ) from error
        value = value.strip()
        if not value:
            raise SourceAuthError(f"{label}: {self.describe()} is empty", provider=provider)
        return value


class ResponseReader:
    """Typed access to a decoded JSON body; every problem raises SourceDataError
    naming the provider, region, URL path and the field."""

    def __init__(self, provider: str, label: str, path: str) -> None:
        self.provider = provider
        self.label = label
        self.path = path

    def error(self, problem: str) -> SourceDataError:
        return SourceDataError(
            f"{self.label}: GET {self.path} returned unusable data: {problem}",
            provider=self.provider,
            path=self.path,
        )

    def object(self, value: object, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"{name} must be a JSON object, got {_json_type(value)}")
        return value

    def array(self, value: object, name: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(f"{name} must be a JSON array, got {_json_type(value)}")
        return value

    def field(self, container: Mapping[str, Any], key: str, name: str) -> Any:
        if key not in container:
            raise self.error(f"{name} has no field {key!r}")
        return container[key]

    def time(self, value: object, name: str) -> int:
        """Parse an ISO 8601 time with a UTC offset into Unix seconds, rounded down."""
        if not isinstance(value, str):
            raise self.error(f"{name} must be an ISO 8601 time string, got {_json_type(value)}")
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise self.error(f"{name} {value!r} is not an ISO 8601 time") from None
        if moment.utcoffset() is None:
            raise self.error(f"{name} {value!r} has no UTC offset")
        return math.floor(moment.timestamp())

    def intensity(self, value: object, name: str, *, factor: float = 1.0) -> float | None:
        """Return a non-negative finite number times `factor`, or None for JSON null."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"{name} must be a number, got {_json_type(value)} {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise self.error(f"{name} {value!r} is not a finite non-negative number")
        return number * factor


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def sorted_points(
    points: Iterable[tuple[int, float]], reader: ResponseReader
) -> list[tuple[int, float]]:
    """Sort (time, intensity) pairs by time and drop exact repeats.

    Providers may list points in any order. A time listed twice with the same
    value is kept once. A time listed with two different values makes the
    response ambiguous, so it raises SourceDataError instead of picking one.
    """
    by_time: dict[int, float] = {}
    for moment, value in points:
        if moment in by_time and by_time[moment] != value:
            raise reader.error(
                f"time {format_utc(moment)} is listed twice with different intensities "
                f"({by_time[moment]:g} and {value:g})"
            )
        by_time[moment] = value
    return sorted(by_time.items())


def samples_in_range(
    points: Iterable[tuple[int, float]],
    *,
    region: str,
    source: str,
    start: int,
    end: int,
    reader: ResponseReader,
) -> list[Sample]:
    """Turn (time, intensity) pairs into Samples sorted by time with start <= time < end."""
    return [
        Sample(region=region, time=moment, intensity_g_per_kwh=value, source=source)
        for moment, value in sorted_points(points, reader)
        if start <= moment < end
    ]


def forecast_points(
    points: Iterable[tuple[int, float]],
    *,
    region: str,
    issued_at: int,
    forecaster: str,
    reader: ResponseReader,
) -> list[ForecastPoint]:
    """Turn (time, intensity) pairs into ForecastPoints sorted by time; no points
    at all raises SourceDataError."""
    ordered = sorted_points(points, reader)
    if not ordered:
        raise reader.error("the forecast has no points with a value")
    return [
        ForecastPoint(
            region=region,
            issued_at=issued_at,
            time=moment,
            intensity_g_per_kwh=value,
            forecaster=forecaster,
        )
        for moment, value in ordered
    ]


def format_utc(seconds: float, *, timespec: str = "seconds") -> str:
    """Format Unix seconds as ISO 8601 UTC with a Z: "2024-01-01T00:00:00Z"."""
    text = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec=timespec)
    return text.replace("+00:00", "Z")


def time_chunks(start: int, end: int, size_seconds: int) -> list[tuple[int, int]]:
    """Split [start, end) into consecutive ranges of at most `size_seconds`."""
    chunks = []
    cursor = start
    while cursor < end:
        chunks.append((cursor, min(end, cursor + size_seconds)))
        cursor += size_seconds
    return chunks
