"""Running the real `carbon-scheduler run` against fake API servers, for tests.

`clusters` starts the three demo regions' fake API servers with two 8-CPU nodes
each; `start_daemon` writes a regions.toml for them (static carbon intensity,
eu-west cleanest) and starts the daemon as a child process, as a user would;
`daemon` does both and stops it with SIGTERM afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.kubefake.fixtures import FakeRegions, running_regions
from tests.influxd import free_port

INTENSITY = {"eu-west": 100.0, "us-east": 400.0, "asia-east": 450.0}
CAP = 4


def write_config(path: Path, regions: FakeRegions, intensity: dict[str, float], *, max_pods: int = CAP) -> Path:
    lines = ["[scheduler]", "standard_max_wait_seconds = 2", ""]
    for name in regions:
        lines += [
            f"[regions.{name}]",
            f'kubeconfig = "{regions.kubeconfig}"',
            f'context = "{name}"',
            f"max_pods = {max_pods}",
            f"[regions.{name}.levels]",
            'mode = "absolute"',
            "low_below_g_per_kwh = 150",
            "high_above_g_per_kwh = 420",
            f"[regions.{name}.carbon]",
            'source = "static"',
            f"intensity_g_per_kwh = {intensity[name]}",
            f"[[regions.{name}.nodes]]",
            f'name = "{name}-node-1"',
            'cpu = "8"',
            'memory = "32Gi"',
            f"[[regions.{name}.nodes]]",
            f'name = "{name}-node-2"',
            'cpu = "8"',
            'memory = "32Gi"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def daemon_environment() -> dict[str, str]:
    """Environment of a daemon under test: loopback without proxies, and never an
    in-cluster API server, even when the tests themselves run in a pod."""
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


class Daemon:
    """A running `carbon-scheduler run` child process."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path, log_file) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.log_file = log_file

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.port}{path}") as response:
                return response.status, await response.text()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.process.returncode is not None:
                break
            try:
                status, _ = await self.get("/readyz")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout} s; log:\n{self.log.read_text()[-4000:]}")

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.log_file.close()
        return self.process.returncode


@pytest_asyncio.fixture
async def clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeRegions]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with running_regions(tmp_path) as regions:
        for name, server in regions.items():
            server.add_node(f"{name}-node-1", cpu="8", memory="32Gi")
            server.add_node(f"{name}-node-2", cpu="8", memory="32Gi")
        yield regions


async def start_daemon(tmp_path: Path, regions: FakeRegions, intensity=INTENSITY, **options) -> Daemon:
    config = write_config(tmp_path / "regions.toml", regions, intensity, **options)
    port = free_port()
    log = tmp_path / "daemon.log"
    env = daemon_environment()
    log_file = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "--log-level", "debug", "run", "--config", str(config),
        "--metrics-port", str(port),
        stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    daemon = Daemon(process, port, log, log_file)
    try:
        await daemon.wait_ready()
    except BaseException:
        await daemon.stop()
        raise
    return daemon


@pytest_asyncio.fixture
async def daemon(tmp_path: Path, clusters: FakeRegions) -> AsyncIterator[Daemon]:
    running = await start_daemon(tmp_path, clusters)
    yield running
    assert await running.stop() == 0, running.log.read_text()[-4000:]


async def wait_until(predicate, *, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
