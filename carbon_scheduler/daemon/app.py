"""`carbon-scheduler run`: wire regions, caches, carbon feeds, the scheduler loop
and the HTTP endpoints together, and shut them down in order.

Start-up: connect to every region's API server, start its list+watch cache and
its carbon poller, wait (up to `SYNC_TIMEOUT_SECONDS`) for the caches to sync,
then start the scheduler loop. A region whose API server does not answer is
marked down and skipped by placement; the others schedule meanwhile.

Shutdown on SIGTERM or SIGINT: stop taking new work, let in-flight API calls
finish, then cancel the watchers and pollers and close the connections.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import structlog

from carbon_scheduler.carbon.errors import SourceError
from carbon_scheduler.carbon.factory import make_source
from carbon_scheduler.carbon.source import CarbonSource
from carbon_scheduler.config.types import CarbonSourceKind, Config, RegionSpec
from carbon_scheduler.daemon.cache import ClusterCache
from carbon_scheduler.daemon.carbon_feed import CarbonFeed
from carbon_scheduler.daemon.connections import connect
from carbon_scheduler.daemon.kubeapi import KubeError
from carbon_scheduler.daemon.metrics import DaemonMetrics
from carbon_scheduler.daemon.queue import SchedulingQueue
from carbon_scheduler.daemon.runtime import RegionRuntime
from carbon_scheduler.daemon.scheduler import Scheduler
from carbon_scheduler.daemon.server import make_app, start_server
from carbon_scheduler.daemon.state import RegionState
from carbon_scheduler.forecasting import make_forecaster
from carbon_scheduler.model import LEVEL_LABEL

log = structlog.get_logger(__name__)

SYNC_TIMEOUT_SECONDS = 30.0
SOURCE_RETRY_MAX_SECONDS = 60.0


class _Clock:
    """The wall clock as carbon sources expect it (an object with `time()`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock()


def _wall_step_seconds(region: RegionSpec) -> float:
    carbon = region.carbon
    if carbon is not None and carbon.kind is CarbonSourceKind.REPLAY and carbon.seconds_per_hour:
        return float(carbon.seconds_per_hour)
    return 3600.0


def _poll_seconds(region: RegionSpec) -> float:
    """How often to ask the source: four times per step, at most once a minute for
    live providers (their own caches keep repeated calls cheap)."""
    return max(0.05, min(_wall_step_seconds(region) / 4, 60.0))


class Daemon:
    def __init__(self, config: Config, *, metrics_port: int | None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics_port = metrics_port
        self.clock = clock
        self.metrics = DaemonMetrics()
        self.regions: dict[str, RegionRuntime] = {}
        self.sources: dict[str, CarbonSource] = {}
        self.stop = asyncio.Event()
        self.scheduler: Scheduler | None = None
        self.loop_running = False
        self._labelling: set[str] = set()

    async def run(self) -> int:
        log.info("daemon_starting", regions=list(self.config.region_names))
        runner = None
        background: list[asyncio.Task] = []
        try:
            await self._connect()
            queue = SchedulingQueue(clock=self.clock)
            self.scheduler = Scheduler(self.config, self.regions, queue, metrics=self.metrics, clock=self.clock)
            for runtime in self.regions.values():
                runtime.cache.add_listener(self.scheduler.on_cache_event)
                runtime.cache.add_listener(self._on_node_event)
                background.append(asyncio.create_task(runtime.cache.run(), name=f"cache-{runtime.name}"))
                background.append(asyncio.create_task(self._poll_carbon(runtime), name=f"carbon-{runtime.name}"))
            background.append(asyncio.create_task(self._watch_health(), name="health"))
            if self.metrics_port is not None:
                runner = await start_server(make_app(self.metrics.registry, self.readiness), "0.0.0.0", self.metrics_port)
                log.info("http_started", port=self.metrics_port)

            await self._wait_for_sync()
            for runtime in self.regions.values():
                if runtime.feed.latest is not None:
                    await self._label_nodes(runtime)
            loop_task = asyncio.create_task(self.scheduler.run(), name="scheduler")
            self.loop_running = True
            background.append(loop_task)
            await self.stop.wait()
            log.info("daemon_stopping")
            await self.scheduler.drain()
            return 0
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            for source in self.sources.values():
                await source.aclose()
            for runtime in self.regions.values():
                await runtime.client.close()
            log.info("daemon_stopped")

    async def _connect(self) -> None:
        source_clock = _Clock(self.clock)
        for spec in self.config.regions:
            client = await connect(spec)
            forecaster = make_forecaster(self.config.scheduler.forecaster)
            feed = CarbonFeed(
                spec,
                forecaster,
                wall_step_seconds=_wall_step_seconds(spec),
                horizon_hours=self.config.scheduler.planning_horizon_hours,
                clock=self.clock,
            )
            cache = ClusterCache(spec.name, client, namespaces=spec.namespaces)
            self.regions[spec.name] = RegionRuntime(spec, client, cache, RegionState(spec), feed)
            self.sources[spec.name] = make_source(spec, clock=source_clock)

    async def _wait_for_sync(self) -> None:
        waits = [runtime.cache.synced.wait() for runtime in self.regions.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), SYNC_TIMEOUT_SECONDS)
        except TimeoutError:
            down = [name for name, runtime in self.regions.items() if not runtime.cache.synced.is_set()]
            log.warning("regions_not_synced", regions=down, timeout_seconds=SYNC_TIMEOUT_SECONDS)

    async def _poll_carbon(self, runtime: RegionRuntime) -> None:
        source = self.sources[runtime.name]
        delay = _poll_seconds(runtime.spec)
        failures = 0
        while True:
            try:
                sample = await source.latest()
            except SourceError as error:
                failures += 1
                log.warning("carbon_poll_failed", region=runtime.name, attempt=failures, error=str(error))
                await asyncio.sleep(min(delay * 2**failures, SOURCE_RETRY_MAX_SECONDS))
                continue
            failures = 0
            if runtime.feed.record(sample.time, sample.intensity_g_per_kwh):
                self.metrics.intensity.labels(runtime.name).set(sample.intensity_g_per_kwh)
                self.metrics.level.labels(runtime.name).set(int(runtime.feed.level))
                await self._label_nodes(runtime)
                if self.scheduler is not None:
                    self.scheduler.on_carbon_step(runtime.name)
            await asyncio.sleep(delay)

    def _on_node_event(self, region: str, kind: str, event_type: str, obj: dict) -> None:
        """Label a node that appears, or changes, without the region's current level."""
        if kind.lower() != "node" or event_type not in ("ADDED", "MODIFIED", "SYNC"):
            return
        runtime = self.regions[region]
        if runtime.feed.latest is None:
            return
        labels = obj["metadata"].get("labels") or {}
        if labels.get(LEVEL_LABEL) != runtime.feed.level.label and region not in self._labelling:
            self._labelling.add(region)
            task = asyncio.get_running_loop().create_task(self._label_nodes(runtime))
            task.add_done_callback(lambda _: self._labelling.discard(region))

    async def _label_nodes(self, runtime: RegionRuntime) -> None:
        """Publish the region's level as a node label, so `kubectl get nodes -L` shows it."""
        level = runtime.feed.level.label
        for name, node in list(runtime.cache.nodes.items()):
            labels = node["metadata"].get("labels") or {}
            if labels.get(LEVEL_LABEL) == level:
                continue
            try:
                await runtime.client.patch_node(name, {"metadata": {"labels": {LEVEL_LABEL: level}}})
            except KubeError as error:
                log.warning("label_node_failed", region=runtime.name, node=name, error=str(error))

    async def _watch_health(self) -> None:
        while True:
            for name, runtime in self.regions.items():
                self.metrics.region_up.labels(name).set(1 if runtime.ready else 0)
            await asyncio.sleep(1.0)

    def readiness(self) -> tuple[bool, str]:
        waiting = [name for name, runtime in self.regions.items() if not runtime.cache.synced.is_set()]
        if waiting:
            return False, "waiting for caches: " + ", ".join(waiting)
        if not self.loop_running:
            return False, "scheduler loop not started"
        return True, "ready"


async def run_daemon(config: Config, *, metrics_port: int | None) -> int:
    daemon = Daemon(config, metrics_port=metrics_port)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop.set)
    return await daemon.run()
