"""Faults that a test switches on at run time; the server consults them per request.

A fault matches a request by Kubernetes verb (`get`, `list`, `watch`, `create`,
`update`, `patch`, `delete`, `deletecollection`), by resource (`pods`, `pods/binding`,
`leases`, ...) and by a substring of the URL path. A filter left as None matches
every request.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError, internal_error
from .routing import RequestInfo

_STATUS_REASONS = {
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", None),
    503: ("ServiceUnavailable", "The server is currently unable to handle the request"),
    504: ("Timeout", "The server was unable to return a response in the time allotted, but may still be processing the request"),
}


@dataclass
class _Filter:
    verb: str | None
    resource: str | None
    path: str | None

    def matches(self, info: RequestInfo) -> bool:
        if self.verb is not None and info.verb != self.verb:
            return False
        if self.resource is not None and info.resource_name != self.resource:
            return False
        return self.path is None or self.path in info.path


@dataclass
class _Failure:
    match: _Filter
    remaining: int
    status: int
    message: str


@dataclass
class _Delay:
    match: _Filter
    seconds: float
    remaining: int | None


class Faults:
    def __init__(self) -> None:
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._watch_expiries = 0

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        verb: str | None = None,
        resource: str | None = None,
        path: str | None = None,
        message: str = "injected fault",
    ) -> None:
        """Fail the next `count` matching requests with HTTP `status` (429, 500, 503 or 504)."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if status not in _STATUS_REASONS:
            raise ValueError(f"unsupported fault status {status}: use one of {sorted(_STATUS_REASONS)}")
        self._failures.append(_Failure(_Filter(verb, resource, path), count, status, message))

    def delay(
        self,
        seconds: float,
        *,
        verb: str | None = None,
        resource: str | None = None,
        path: str | None = None,
        count: int | None = None,
    ) -> None:
        """Delay matching requests by `seconds`, for the next `count` of them or until `clear()` if None."""
        if seconds < 0:
            raise ValueError(f"delay must not be negative, got {seconds}")
        self._delays.append(_Delay(_Filter(verb, resource, path), seconds, count))

    def expire_next_watch(self, count: int = 1) -> None:
        """Fail the next `count` watches that resume from a resourceVersion with 410 Expired."""
        self._watch_expiries += count

    def clear(self) -> None:
        self._failures.clear()
        self._delays.clear()
        self._watch_expiries = 0

    # Used by the server.

    def take_delay(self, info: RequestInfo) -> float:
        total = 0.0
        for delay in list(self._delays):
            if delay.match.matches(info):
                total += delay.seconds
                if delay.remaining is not None:
                    delay.remaining -= 1
                    if delay.remaining == 0:
                        self._delays.remove(delay)
        return total

    def take_failure(self, info: RequestInfo) -> ApiError | None:
        for failure in self._failures:
            if failure.match.matches(info):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                reason, message = _STATUS_REASONS[failure.status]
                if failure.status == 500:
                    return internal_error(failure.message)
                error = ApiError(failure.status, reason, message or failure.message, details={})
                if failure.status == 429:
                    # API Priority and Fairness sends this header with its 429s.
                    error.headers["Retry-After"] = "1"
                return error
        return None

    def take_watch_expiry(self) -> bool:
        if self._watch_expiries > 0:
            self._watch_expiries -= 1
            return True
        return False
