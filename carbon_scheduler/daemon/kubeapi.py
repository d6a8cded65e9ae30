"""The daemon's HTTP edge to one region's Kubernetes API server.

kubernetes-asyncio supplies configuration, credentials and the aiohttp session;
requests go through `ApiClient.call_api(..., _preload_content=False)`, which hands
back the raw aiohttp response without looking at its status. This module checks
the status, parses bodies with `json.loads` on the raw bytes and keeps every object
as the plain camelCase dict the server sent, because model classes cost far too
much time and memory for thousands of pods.

Error tree (every failure of a request surfaces as one of these):

    KubeError              any failed request; `.region`, `.verb`, `.path`,
    │                      `.status` (HTTP code or None), `.reason` and `.message`
    │                      (from the Status body, message trimmed to 300 chars)
    ├── Invalid            400, 422: the request body or query was rejected
    ├── Forbidden          401, 403: credentials or RBAC
    ├── NotFound           404
    ├── Conflict           409: a precondition, resourceVersion or name clash
    ├── Gone               410: resourceVersion too old, relist and watch again
    └── Unavailable        retryable: connection errors, timeouts, 408, 429, 5xx;
                           `.retry_after` holds Retry-After in seconds, if sent

Other statuses (405, 415, ...) and responses that are not valid JSON raise the
base `KubeError`. Messages name the region, verb and path, never headers or
tokens, and the underlying aiohttp error is chained as the cause. Nothing here
retries: callers know whether a request is safe to repeat.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp.http_exceptions import LineTooLong
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import ConfigException

MAX_MESSAGE_CHARS = 300
LIST_PAGE_SIZE = 500
JSON = "application/json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
DEFAULT_REQUEST_TIMEOUT_SECONDS = 30.0
# A watch reads nothing while the cluster is quiet, so its read timeout has to
# outlast the server-side `timeoutSeconds`. The slack covers a server that closes
# the stream a little late.
WATCH_READ_SLACK_SECONDS = 30.0

_CORE = "/api/v1"
_BATCH = "/apis/batch/v1"
_COORDINATION = "/apis/coordination.k8s.io/v1"
# Transport failures that aiohttp and asyncio raise for a request or a read.
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

log = structlog.get_logger(__name__)


class KubeError(Exception):
    """A request to a region's API server failed."""

    def __init__(
        self,
        summary: str,
        *,
        region: str,
        verb: str,
        path: str,
        status: int | None = None,
        reason: str = "",
        message: str = "",
    ) -> None:
        super().__init__(f"region {region}: {verb} {path} failed: {summary}")
        self.region = region
        self.verb = verb
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message


class Invalid(KubeError):
    """400 or 422: the server rejected the request's body, query or field values."""


class Forbidden(KubeError):
    """401 or 403: missing or wrong credentials, or RBAC denies the verb."""


class NotFound(KubeError):
    """404: the object or the resource type does not exist."""


class Conflict(KubeError):
    """409: a uid or resourceVersion precondition failed, or the name is taken."""


class Gone(KubeError):
    """410: the requested resourceVersion is too old. List again, then watch."""


class Unavailable(KubeError):
    """A temporary failure: the same request may succeed later."""

    def __init__(self, summary: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(summary, **fields)
        self.retry_after = retry_after


_ERROR_BY_STATUS: dict[int, type[KubeError]] = {
    400: Invalid,
    422: Invalid,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    408: Unavailable,
    429: Unavailable,
}


def error_class(status: int) -> type[KubeError]:
    """Return the error type for an HTTP status code that is not a success."""
    if status >= 500:
        return Unavailable
    return _ERROR_BY_STATUS.get(status, KubeError)


def trim(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Return `text` cut to `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return seconds to wait from a Retry-After header (delay-seconds or an HTTP
    date), or None when the header is missing or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def segment(name: str) -> str:
    """Return `name` percent-encoded for a URL path, so '?', '#' or '%' in a name
    cannot change the URL."""
    return quote(name, safe="")


class KubeClient:
    """Requests to one region's API server, with JSON dicts in and out.

    `request_timeout_seconds` bounds each non-watch request from connect to the
    last byte of the body.
    """

    def __init__(
        self,
        region: str,
        api_client: ApiClient,
        *,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        if request_timeout_seconds <= 0:
            raise ValueError(f"request_timeout_seconds must be positive, got {request_timeout_seconds}")
        self.region = region
        self.api_client = api_client
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
        self._connect_timeout_seconds = request_timeout_seconds

    # Generic verbs -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict:
        """Send one request and return the decoded JSON body ({} for an empty body).

        Raises the `KubeError` subclass for the status, or `Unavailable` when the
        server cannot be reached or the connection breaks.
        """
        response = await self._send(method, path, query=query, body=body, content_type=content_type, timeout=self._timeout)
        try:
            data = await response.read()
        except _TRANSPORT_ERRORS as error:
            raise self._transport_error(method, path, error) from error
        finally:
            response.release()
        if not 200 <= response.status < 300:
            raise self._status_error(method, path, response.status, data, response.headers)
        if not data:
            return {}
        return self._decode(method, path, data)

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[dict], str]:
        """Return all items of a collection and the list's resourceVersion, fetched in
        pages of `LIST_PAGE_SIZE` that follow the `continue` token.

        A continue token that expired mid-list raises `Gone`, and the caller lists again.
        """
        items: builtins.list[dict] = []
        token: str | None = None
        while True:
            query = {"limit": str(LIST_PAGE_SIZE)}
            if label_selector:
                query["labelSelector"] = label_selector
            if field_selector:
                query["fieldSelector"] = field_selector
            if token:
                query["continue"] = token
            page = await self.request("GET", path, query=query)
            items.extend(page.get("items") or ())
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if token:
                continue
            version = metadata.get("resourceVersion")
            if not version:
                raise KubeError(
                    "the list response has no metadata.resourceVersion, so it cannot be watched",
                    region=self.region,
                    verb="GET",
                    path=path,
                    status=200,
                    reason="InvalidResponse",
                )
            return items, version

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        field_selector: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict]:
        """Yield the watch events of a collection after `resource_version`, BOOKMARK
        events included, as the raw dicts {"type": ..., "object": ...}.

        The iterator ends when the server closes the stream (after about
        `timeout_seconds`) or the connection drops mid-stream. The caller then
        resumes from the last resourceVersion it saw. A failure to open the stream
        raises the error for its status, and an ERROR event raises the error for the
        code in its Status (`Gone` for 410).
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if field_selector:
            query["fieldSelector"] = field_selector
        if label_selector:
            query["labelSelector"] = label_selector
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._connect_timeout_seconds,
            sock_read=timeout_seconds + WATCH_READ_SLACK_SECONDS,
        )
        response = await self._send("GET", path, query=query, body=None, content_type=JSON, timeout=timeout)
        try:
            if response.status != 200:
                try:
                    data = await response.read()
                except _TRANSPORT_ERRORS as error:
                    raise self._transport_error("GET", path, error) from error
                raise self._status_error("GET", path, response.status, data, response.headers)
            events = 0
            while True:
                try:
                    line = await response.content.readline()
                except _TRANSPORT_ERRORS as error:
                    log.info(
                        "kube.watch_dropped",
                        region=self.region,
                        verb="WATCH",
                        path=path,
                        status=response.status,
                        events=events,
                        error=repr(error),
                    )
                    return
                except LineTooLong as error:
                    # aiohttp rejects lines above twice its read buffer size, and
                    # kubernetes-asyncio sets that buffer to 2 MiB.
                    raise KubeError(
                        f"a watch event is too long to read: {error}",
                        region=self.region,
                        verb="WATCH",
                        path=path,
                        status=response.status,
                        reason="InvalidResponse",
                    ) from error
                if not line:
                    return
                if line.isspace():
                    continue
                event = self._decode("WATCH", path, line)
                if event.get("type") == "ERROR":
                    raise self._event_error(path, event.get("object"))
                events += 1
                yield event
        finally:
            # release() returns a connection whose stream has ended to the pool and
            # closes one that is still streaming.
            response.release()

    # Pods --------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict:
        return await self.request("GET", _pod_path(namespace, name))

    async def create_pod(self, namespace: str, body: dict) -> dict:
        return await self.request("POST", f"{_CORE}/namespaces/{segment(namespace)}/pods", body=body)

    async def delete_pod(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> dict:
        """Delete a pod, only if it still has `uid` and `resource_version` when given
        (409 Conflict otherwise). Returns the pod as the server last saw it."""
        body = _delete_options(uid=uid, resource_version=resource_version)
        return await self.request("DELETE", _pod_path(namespace, name), body=body)

    async def bind_pod(self, namespace: str, name: str, node: str, *, uid: str | None = None) -> dict:
        """Bind a pod to `node` through the Binding subresource. With `uid`, the server
        rejects the binding (409) when the pod of that name is a different one."""
        metadata: dict[str, str] = {"name": name, "namespace": namespace}
        if uid is not None:
            metadata["uid"] = uid
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        return await self.request("POST", f"{_pod_path(namespace, name)}/binding", body=body)

    async def patch_pod(self, namespace: str, name: str, patch: dict) -> dict:
        """Apply a strategic merge patch to a pod."""
        return await self.request("PATCH", _pod_path(namespace, name), body=patch, content_type=STRATEGIC_MERGE_PATCH)

    async def patch_node(self, name: str, patch: dict) -> dict:
        """Apply a strategic merge patch to a node."""
        return await self.request("PATCH", f"{_CORE}/nodes/{segment(name)}", body=patch, content_type=STRATEGIC_MERGE_PATCH)

    async def create_event(self, namespace: str, body: dict) -> dict:
        """Create a core/v1 Event."""
        return await self.request("POST", f"{_CORE}/namespaces/{segment(namespace)}/events", body=body)

    # Jobs --------------------------------------------------------------------------

    async def get_job(self, namespace: str, name: str) -> dict:
        return await self.request("GET", _job_path(namespace, name))

    async def create_job(self, namespace: str, body: dict) -> dict:
        return await self.request("POST", f"{_BATCH}/namespaces/{segment(namespace)}/jobs", body=body)

    async def delete_job(self, namespace: str, name: str, *, uid: str | None = None) -> dict:
        """Delete a Job and, in the background, its pods. batch/v1 would orphan the
        pods without an explicit propagationPolicy."""
        body = _delete_options(uid=uid, resource_version=None)
        body["propagationPolicy"] = "Background"
        return await self.request("DELETE", _job_path(namespace, name), body=body)

    # Leases ------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict:
        return await self.request("GET", _lease_path(namespace, name))

    async def create_lease(self, namespace: str, body: dict) -> dict:
        return await self.request("POST", f"{_COORDINATION}/namespaces/{segment(namespace)}/leases", body=body)

    async def replace_lease(self, namespace: str, name: str, body: dict) -> dict:
        """Replace a Lease. The body's metadata.resourceVersion makes this a
        compare-and-swap that fails with 409 when another holder wrote first."""
        return await self.request("PUT", _lease_path(namespace, name), body=body)

    async def close(self) -> None:
        """Close the HTTP session. The client cannot be used afterwards."""
        await self.api_client.close()

    # Internals ---------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": JSON, "Content-Type": content_type}
        try:
            return await self.api_client.call_api(
                path,
                method,
                query_params=builtins.list(query.items()) if query else None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except aiohttp.ClientSSLError as error:
            # A certificate that fails verification does not heal by retrying.
            raise KubeError(
                f"TLS failed: {error}", region=self.region, verb=method, path=path, reason="TLSError"
            ) from error
        except _TRANSPORT_ERRORS as error:
            raise self._transport_error(method, path, error) from error
        except ConfigException as error:
            # Raised by a credential refresh hook, such as an exec plugin that failed.
            raise KubeError(
                f"credentials could not be loaded: {error}",
                region=self.region,
                verb=method,
                path=path,
                reason="CredentialsError",
            ) from error

    def _transport_error(self, verb: str, path: str, error: BaseException) -> Unavailable:
        kind = "timed out" if isinstance(error, asyncio.TimeoutError) else "connection failed"
        detail = str(error) or type(error).__name__
        return Unavailable(f"{kind}: {trim(detail)}", region=self.region, verb=verb, path=path)

    def _status_error(self, verb: str, path: str, status: int, data: bytes, headers: Mapping[str, str]) -> KubeError:
        reason, message = status_fields(data)
        summary = f"{status} {reason}: {message}" if reason else f"{status}: {message}"
        cls = error_class(status)
        fields: dict[str, Any] = dict(region=self.region, verb=verb, path=path, status=status, reason=reason, message=message)
        if cls is Unavailable:
            return Unavailable(summary, retry_after=parse_retry_after(headers.get("Retry-After")), **fields)
        return cls(summary, **fields)

    def _event_error(self, path: str, status: Any) -> KubeError:
        """Map the Status object of a watch ERROR event onto the error tree."""
        status = status if isinstance(status, dict) else {}
        code = status.get("code")
        reason = str(status.get("reason") or "")
        message = trim(str(status.get("message") or ""))
        if not isinstance(code, int) or code < 400:
            # A watch ERROR without a usable code: "Expired" and "Gone" still mean 410.
            code = 410 if reason in ("Expired", "Gone") else 500
        summary = f"watch ERROR event {code} {reason}: {message}"
        return error_class(code)(summary, region=self.region, verb="WATCH", path=path, status=code, reason=reason, message=message)

    def _decode(self, verb: str, path: str, data: bytes) -> dict:
        try:
            value = json.loads(data)
        except ValueError as error:
            raise KubeError(
                f"the response is not valid JSON ({error}): {trim(data.decode('utf-8', 'replace'), 100)}",
                region=self.region,
                verb=verb,
                path=path,
                reason="InvalidResponse",
            ) from error
        if not isinstance(value, dict):
            raise KubeError(
                f"the response is a JSON {type(value).__name__}, not an object",
                region=self.region,
                verb=verb,
                path=path,
                reason="InvalidResponse",
            )
        return value


def status_fields(data: bytes) -> tuple[str, str]:
    """Return (reason, message) of a failure body: the Status fields when the body is
    a Status, else the start of the body text (a proxy's HTML page, say)."""
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return trim(str(body.get("reason") or ""), 100), trim(str(body.get("message") or ""))
    return "", trim(data.decode("utf-8", "replace").strip())


def _delete_options(*, uid: str | None, resource_version: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
    preconditions = {}
    if uid is not None:
        preconditions["uid"] = uid
    if resource_version is not None:
        preconditions["resourceVersion"] = resource_version
    if preconditions:
        body["preconditions"] = preconditions
    return body


def _pod_path(namespace: str, name: str) -> str:
    return f"{_CORE}/namespaces/{segment(namespace)}/pods/{segment(name)}"


def _job_path(namespace: str, name: str) -> str:
    return f"{_BATCH}/namespaces/{segment(namespace)}/jobs/{segment(name)}"


def _lease_path(namespace: str, name: str) -> str:
    return f"{_COORDINATION}/namespaces/{segment(namespace)}/leases/{segment(name)}"
