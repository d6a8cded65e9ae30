"""Pytest fixtures that run the fake API servers of the three demo regions.

`kube_regions` starts one `FakeApiServer` per region (eu-west, us-east,
asia-east) on free loopback ports, writes a kubeconfig with a context per region,
yields them as `FakeRegions`, and stops them all at teardown. `running_regions`
is the same as an async context manager, for tests that need other regions or
server options.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .kubeconfig import write_kubeconfig
from .server import FakeApiServer

REGIONS = ("eu-west", "us-east", "asia-east")


@dataclass
class FakeRegions(Mapping[str, FakeApiServer]):
    """Running fake API servers by region name, and the kubeconfig that reaches them."""

    servers: dict[str, FakeApiServer]
    kubeconfig: Path

    def __getitem__(self, region: str) -> FakeApiServer:
        try:
            return self.servers[region]
        except KeyError:
            raise KeyError(f"no fake region {region!r}: running regions are {sorted(self.servers)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)


@asynccontextmanager
async def running_regions(directory: Path, regions: tuple[str, ...] = REGIONS, **options: Any) -> AsyncIterator[FakeRegions]:
    """Start a server per region with `options`, write `directory/kubeconfig`, stop them on exit."""
    async with AsyncExitStack() as stack:
        servers = {}
        for region in regions:
            servers[region] = await stack.enter_async_context(FakeApiServer(region, **options))
        kubeconfig = write_kubeconfig(directory / "kubeconfig", servers.values())
        yield FakeRegions(servers, kubeconfig)


@pytest.fixture
def loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # kubernetes-asyncio's session trusts proxy variables from the environment, so
    # keep loopback traffic away from any proxy a CI machine sets.
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(variable, "127.0.0.1,localhost")


@pytest_asyncio.fixture
async def kube_regions(tmp_path: Path, loopback_without_proxy: None) -> AsyncIterator[FakeRegions]:
    async with running_regions(tmp_path) as regions:
        yield regions
