"""Watch streams: newline-delimited JSON events over one chunked HTTP response.

A watch from resourceVersion N replays the stored changes after N and then follows
new ones. A watch without a version (or from "0") first sends ADDED for every
current match, as the real server does. Selectors are applied to both the old
and the new state of each change, so an object that stops matching arrives as
DELETED (with its previous content) and one that starts matching as ADDED.

With `allowWatchBookmarks=true`, the stream sends a BOOKMARK (an object with only
kind, apiVersion and metadata.resourceVersion) every `bookmark_interval_seconds`
of quiet and whenever the test calls `FakeApiServer.send_bookmarks()`.
`sendInitialEvents=true` ends the initial ADDED events with a bookmark annotated
`k8s.io/initial-events-end: "true"`.

A stream ends cleanly at `timeoutSeconds`, when the test calls
`drop_watches(graceful=True)`, or when the client goes away. `drop_watches()`
closes the TCP connection without the final chunk, so the client sees a broken
response, as when an API server restarts.
"""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import ApiError
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import ADDED, DELETED, MODIFIED, Change, Store

BOOKMARK = "BOOKMARK"
ERROR = "ERROR"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class Stop(enum.Enum):
    END = "end"
    ABORT = "abort"


@dataclass(frozen=True)
class BookmarkRequest:
    resource_version: int


def bookmark_event(rt: ResourceType, resource_version: int, *, initial_events_end: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if initial_events_end:
        metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"type": BOOKMARK, "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata}}


def error_event(error: ApiError) -> dict[str, Any]:
    return {"type": ERROR, "object": error.status()}


class Watcher:
    """One open watch: its filter and the queue of events not yet written."""

    def __init__(
        self,
        rt: ResourceType,
        namespace: str,
        labels: LabelSelector,
        fields: FieldSelector,
        *,
        bookmarks: bool,
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.bookmarks = bookmarks
        self.queue: asyncio.Queue[dict[str, Any] | Stop | BookmarkRequest] = asyncio.Queue()

    def matches(self, obj: dict[str, Any]) -> bool:
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.labels.matches(obj["metadata"].get("labels")) and self.fields.matches(obj)

    def event_for(self, change: Change) -> dict[str, Any] | None:
        """Translate a stored change into the event this watcher receives, if any."""
        if change.resource is not self.rt:
            return None
        now_matches = self.matches(change.object)
        if change.type == ADDED:
            return {"type": ADDED, "object": change.object} if now_matches else None
        if change.type == DELETED:
            return {"type": DELETED, "object": change.object} if now_matches else None
        was_matching = change.previous is not None and self.matches(change.previous)
        if now_matches:
            return {"type": MODIFIED if was_matching else ADDED, "object": change.object}
        if was_matching and change.previous is not None:
            # The real watch cache sends the old content with the new resourceVersion.
            gone = json.loads(json.dumps(change.previous))
            gone["metadata"]["resourceVersion"] = str(change.resource_version)
            return {"type": DELETED, "object": gone}
        return None

    def offer(self, change: Change) -> None:
        event = self.event_for(change)
        if event is not None:
            self.queue.put_nowait(event)

    def request_bookmark(self, resource_version: int) -> bool:
        if self.bookmarks:
            self.queue.put_nowait(BookmarkRequest(resource_version))
        return self.bookmarks

    def stop(self, how: Stop) -> None:
        self.queue.put_nowait(how)


def _encode(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


async def stream_events(
    request: web.Request,
    store: Store,
    watcher: Watcher,
    initial: list[dict[str, Any]],
    *,
    end_after_initial: bool,
    timeout_seconds: float | None,
    bookmark_interval_seconds: float,
) -> web.StreamResponse:
    """Write `initial`, then the watcher's queue, until timeout, stop or disconnect."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await _write_events(request, response, store, watcher, initial, end_after_initial, timeout_seconds, bookmark_interval_seconds)
    except ConnectionResetError:
        # The client closed the stream during a write, so there is no one to send an error to.
        pass
    return response


async def _write_events(
    request: web.Request,
    response: web.StreamResponse,
    store: Store,
    watcher: Watcher,
    initial: list[dict[str, Any]],
    end_after_initial: bool,
    timeout_seconds: float | None,
    bookmark_interval_seconds: float,
) -> None:
    for event in initial:
        await response.write(_encode(event))
    if end_after_initial:
        await response.write_eof()
        return

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds if timeout_seconds is not None else None
    next_bookmark = loop.time() + bookmark_interval_seconds
    while True:
        now = loop.time()
        waits = [next_bookmark - now] if watcher.bookmarks else []
        if deadline is not None:
            waits.append(deadline - now)
        wait = max(min(waits), 0.0) if waits else None
        try:
            item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                break
            # The queue is empty, so every committed change this watch can see has been sent.
            await response.write(_encode(bookmark_event(watcher.rt, store.resource_version)))
            next_bookmark = loop.time() + bookmark_interval_seconds
            continue
        if item is Stop.END:
            break
        if item is Stop.ABORT:
            abort_connection(request)
            return
        if isinstance(item, BookmarkRequest):
            await response.write(_encode(bookmark_event(watcher.rt, item.resource_version)))
            next_bookmark = loop.time() + bookmark_interval_seconds
            continue
        await response.write(_encode(item))
    await response.write_eof()


def abort_connection(request: web.Request) -> None:
    """Close the socket under a streaming response without the last chunk."""
    transport = request.transport
    if transport is not None:
        transport.abort()
