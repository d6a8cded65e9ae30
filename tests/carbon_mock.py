"""A scripted HTTP server on 127.0.0.1 that replaces the carbon-intensity APIs in tests.

Tests register, per URL path, the responses the server gives in turn; the last
one repeats. Every request is recorded with its path, query and headers, so tests
can count calls and check what the client sent. The server is a real aiohttp
application on a free loopback port, so the real httpx client code runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest_asyncio
from aiohttp import web

Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


def reply_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=json.dumps(body), status=status, headers=headers, content_type="application/json"
        )

    return respond


def reply_text(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(text=text, status=status, headers=headers, content_type="text/plain")

    return respond


def reply_after(seconds: float, then: Responder) -> Responder:
    """Wait `seconds` before responding, to make the client time out."""

    async def respond(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await then(request)

    return respond


@dataclass
class MockServer:
    """Routes and recorded requests of the running server; `url` is its base URL."""

    url: str = ""
    routes: dict[str, list[Responder]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def route(self, path: str, *responders: Responder) -> None:
        self.routes[path] = list(responders)

    def calls(self, path: str) -> list[Recorded]:
        return [request for request in self.requests if request.path == path]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Recorded(
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
            )
        )
        responders = self.routes.get(request.path)
        if not responders:
            return web.Response(status=404, text=f"no route for {request.path}")
        responder = responders.pop(0) if len(responders) > 1 else responders[0]
        return await responder(request)


async def start_server() -> tuple[MockServer, web.AppRunner]:
    server = MockServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.dispatch)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    return server, runner


@pytest_asyncio.fixture
async def mock_server() -> AsyncIterator[MockServer]:
    server, runner = await start_server()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False keeps proxy settings of the environment away from loopback.
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """An asyncio.sleep stand-in that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
