"""Helpers for the daemon's fault-injection tests: killing the daemon, reading its
metrics, and checking the task invariants on every write to the fake clusters.

`TaskWatch` subscribes to the stores of the three fake API servers. The servers
and the test share one event loop and every store write is synchronous, so the
check after each committed write sees every state the daemon ever produced, not
a sample of them.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.daemon_harness import daemon_environment, CAP, INTENSITY, Daemon, free_port, write_config
from tests.kubefake.fixtures import FakeRegions
from tests.kubefake.resources import PODS

MOVED_FROM_UID = "carbon-scheduler.io/moved-from-uid"
MOVED_FROM_REGION = "carbon-scheduler.io/moved-from-region"
NAMESPACE = "default"


async def kill(daemon: Daemon) -> int:
    """SIGKILL the daemon process, reap it and return its exit status."""
    if daemon.process.returncode is None:
        daemon.process.kill()
    status = await daemon.process.wait()
    daemon.log_file.close()
    return status


async def start_in(
    directory: Path,
    clusters: FakeRegions,
    *,
    scheduler: dict[str, str] | None = None,
    max_pods: int = CAP,
    wait_ready: bool = True,
) -> Daemon:
    """Start a daemon whose config and log live in their own `directory`, with
    `scheduler` settings (TOML values as text) added to the harness config, and
    wait until /readyz succeeds, or only /healthz without `wait_ready`."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory / "regions.toml", clusters, INTENSITY, max_pods=max_pods)
    extra = "".join(f"{key} = {value}\n" for key, value in (scheduler or {}).items())
    config.write_text(config.read_text().replace("[scheduler]\n", "[scheduler]\n" + extra, 1))
    port = free_port()
    log = directory / "daemon.log"
    log_file = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "--log-level", "debug", "run", "--config", str(config),
        "--metrics-port", str(port),
        stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=daemon_environment(),
    )
    daemon = Daemon(process, port, log, log_file)
    try:
        if wait_ready:
            await daemon.wait_ready()
        else:
            await wait_healthy(daemon)
    except BaseException:
        await daemon.stop()
        raise
    return daemon


async def wait_healthy(daemon: Daemon, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and daemon.process.returncode is None:
        try:
            if (await daemon.get("/healthz"))[0] == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"daemon not serving /healthz after {timeout} s; log:\n{daemon.log.read_text()[-4000:]}")


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Return the value of one sample in Prometheus text format, or None when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = ",".join(sorted(part for part in (match.group(2) or "").split(",") if part))
        if found == wanted:
            return float(match.group(3))
    return None


def is_bound(pod: dict) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def copies_of(clusters: FakeRegions, name: str) -> dict[str, dict]:
    """Every pod named `name` in the default namespace, by region."""
    found = {}
    for region, server in clusters.items():
        pod = server.store.find(PODS, NAMESPACE, name)
        if pod is not None:
            found[region] = pod
    return found


def delete_all_pods(clusters: FakeRegions) -> None:
    for server in clusters.values():
        for pod in server.list("pods", namespace=None):
            server.delete("pods", pod["metadata"]["name"], namespace=pod["metadata"]["namespace"])


@dataclass
class TaskWatch:
    """Checks, after every committed write in any cluster, that no tracked task is
    missing everywhere and none is bound in two clusters at once."""

    clusters: FakeRegions
    # Task name -> uid of the pod the test created.
    tasks: dict[str, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    checks: int = 0

    def __enter__(self) -> TaskWatch:
        for server in self.clusters.values():
            server.store.subscribe(self._on_change)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in self.clusters.values():
            server.store.unsubscribe(self._on_change)

    def track(self, name: str, uid: str) -> None:
        self.tasks[name] = uid

    def untrack_all(self) -> None:
        self.tasks.clear()

    def _on_change(self, change) -> None:
        # A listener that raised would fail the fake's write, so problems are recorded.
        self.checks += 1
        for name in self.tasks:
            found = copies_of(self.clusters, name)
            if not found:
                self.violations.append(f"task {name} lost: in no cluster after rv {change.resource_version}")
            bound = sorted(region for region, pod in found.items() if is_bound(pod))
            if len(bound) > 1:
                self.violations.append(f"task {name} bound in {bound} at once")

    def problems_at_rest(self) -> list[str]:
        """Return what is wrong with the tracked tasks once the daemon is quiescent:
        each must exist in exactly one cluster, bound, as its original or as a copy
        of its original."""
        problems = []
        for name, uid in self.tasks.items():
            found = copies_of(self.clusters, name)
            if len(found) != 1:
                problems.append(f"task {name} exists in {sorted(found)}, expected exactly one cluster")
                continue
            ((region, pod),) = found.items()
            if not is_bound(pod):
                problems.append(f"task {name} in {region} is not bound")
            annotations = pod["metadata"].get("annotations") or {}
            if pod["metadata"]["uid"] != uid and annotations.get(MOVED_FROM_UID) != uid:
                problems.append(
                    f"task {name} in {region} has uid {pod['metadata']['uid']} and moved-from-uid "
                    f"{annotations.get(MOVED_FROM_UID)!r}, expected the original {uid} or a copy of it"
                )
        return problems

    def settled(self) -> bool:
        return not self.problems_at_rest()


async def wait_settled(watch: TaskWatch, *, timeout: float, hold: float = 0.3) -> None:
    """Wait until every tracked task is bound exactly once, and still is `hold` seconds later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if watch.settled():
            await asyncio.sleep(hold)
            if watch.settled():
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"tasks did not settle within {timeout} s: {watch.problems_at_rest()}")


def bound_counts(clusters: FakeRegions, names: Iterable[str]) -> dict[str, int]:
    """Number of clusters in which each named pod is bound."""
    return {name: sum(1 for pod in copies_of(clusters, name).values() if is_bound(pod)) for name in names}
