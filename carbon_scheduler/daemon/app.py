"""`carbon-scheduler run`: wire regions, caches, carbon feeds, the scheduler loop
and the HTTP endpoints together, and shut them down in order.

Start-up: connect to every region's API server, start its list+watch cache and
its carbon poller, wait (up to `SYNC_TIMEOUT_SECONDS`) for the caches to sync,
then campaign for the leader Lease (see `daemon.leader`). Only the leader runs
the scheduler loop and labels nodes; a standby keeps its caches, placement state
and carbon feeds warm and serves metrics, so it can take over at once. A region
whose API server does not answer is marked down and skipped by placement, and the
others schedule meanwhile.

Where the Lease lives (`choose_lease_cluster`): the region named by
`leader_election_region`; else the cluster of `lease_kubeconfig`/`lease_context`,
through a connection of its own; else, in a pod, the pod's own cluster through
in-cluster config; else the first region. The middle two are usually the
management cluster the daemon runs in, outside the scheduled regions. While the
API server that holds the Lease is down no replica can renew or take it, so no
replica schedules in any region. That makes a Lease in a scheduled region a
single point of failure, and the daemon logs a warning when it falls back to the
first region.

Leadership lost: stop taking new work, let in-flight API calls finish, cancel
the loop, and start a fresh `Scheduler` (drained ones accept no work) for the
next term, its queue filled from the caches.

History: once the cluster credentials have loaded, and before the caches and
pollers start, the daemon opens the store of `[store]` (a store that cannot be
opened raises StoreOpenError, which `cli` reports with exit code 2) and preloads
each region's recent samples from it, then merges the source's own history in.
Only a live provider's history goes to the store, because static, replay and
scripted sources make theirs up. Of it, only samples newer than the region's
newest stored one are written, at most an equal share of the writer's buffer
per region. Every polled sample, every forecast it plans on and every finished
pod's emissions go to the store through a background writer (see
`daemon.history`), so a store outage never blocks scheduling.

Staleness: after every poll and once a second, `StalenessMonitor` exports each
region's data age and stale flag, logs transitions and, on the leader, warns
deferred pods planned in a stale region (see `daemon.staleness`).

Shutdown on SIGTERM or SIGINT: stop scheduling as above, release the Lease so a
standby takes over without waiting for it to expire, then cancel the watchers
and pollers, write what the history writer still holds (for at most
`STORE_FLUSH_SECONDS`), and close the store and the connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from carbon_scheduler.carbon.errors import SourceError
from carbon_scheduler.carbon.factory import make_source
from carbon_scheduler.carbon.source import CarbonSource
from carbon_scheduler.config.types import PROVIDER_FORECASTER, Config, RegionSpec, SchedulerSettings
from carbon_scheduler.daemon.accounting import EmissionAccountant
from carbon_scheduler.daemon.cache import ClusterCache
from carbon_scheduler.daemon.carbon_feed import (
    MAX_HISTORY_STEPS,
    CarbonFeed,
    poll_interval_seconds,
    stale_limit_seconds,
    uses_source_forecast,
    wall_step_seconds,
)
from carbon_scheduler.daemon.connections import ClusterConfigError, connect
from carbon_scheduler.daemon.history import (
    HistoryWriter,
    StoreOpenError,
    backfills_store,
    load_recent_samples,
    open_history_store,
    select_backfill,
)
from carbon_scheduler.daemon.kubeapi import KubeClient, KubeError
from carbon_scheduler.daemon.leader import LeaderElector, default_identity
from carbon_scheduler.daemon.metrics_export import count_api_error, publish_forecast
from carbon_scheduler.telemetry.metrics import SchedulerMetrics
from carbon_scheduler.daemon.queue import SchedulingQueue
from carbon_scheduler.daemon.runtime import RegionRuntime
from carbon_scheduler.daemon.scheduler import Scheduler
from carbon_scheduler.daemon.server import make_app, start_server
from carbon_scheduler.daemon.staleness import StalenessMonitor
from carbon_scheduler.daemon.state import RegionState
from carbon_scheduler.forecasting import make_forecaster
from carbon_scheduler.model import LEVEL_LABEL
from carbon_scheduler.store.base import ForecastPoint, Sample, Store
from carbon_scheduler.store.errors import StoreError

log = structlog.get_logger(__name__)

SYNC_TIMEOUT_SECONDS = 30.0
SOURCE_RETRY_MAX_SECONDS = 60.0
STORE_FLUSH_SECONDS = 5.0
STALENESS_CHECK_SECONDS = 1.0
# Emission records this far back are read at start, so pods accounted before a
# restart are not counted again. A week covers the finished pods the caches
# still contain, unless the cluster keeps finished pods for longer.
ACCOUNTED_LOOKBACK_SECONDS = 7 * 86_400


class _Clock:
    """The wall clock as carbon sources expect it (an object with `time()`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def time(self) -> float:
        return self._clock()


# Kubernetes sets this variable in every container, so its presence means the
# daemon runs in a pod and can reach its own cluster's API server.
IN_CLUSTER_HOST_VARIABLE = "KUBERNETES_SERVICE_HOST"
# The client name of a Lease connection outside the regions, shown in its log lines.
LEASE_CONNECTION_NAME = "lease"
FIRST_REGION = "first region"


@dataclass(frozen=True, slots=True)
class LeaseCluster:
    """The cluster that holds the leader Lease: a scheduled region's (`region`), or
    one the daemon connects to for the Lease alone (`connection`). `chosen_by`
    names the setting or fallback that picked it, for the start-up log."""

    chosen_by: str
    region: str | None = None
    connection: RegionSpec | None = None


def choose_lease_cluster(config: Config, *, environ: Mapping[str, str] | None = None) -> LeaseCluster:
    """Choose where the leader Lease lives: `leader_election_region`, else the
    cluster of `lease_kubeconfig`/`lease_context`, else the in-cluster API server
    when `environ` (default `os.environ`) shows a pod, else the first region."""
    settings = config.scheduler
    environ = os.environ if environ is None else environ
    if settings.leader_election_region is not None:
        return LeaseCluster("leader_election_region", region=settings.leader_election_region)
    if settings.lease_kubeconfig is not None or settings.lease_context is not None:
        spec = RegionSpec(name=LEASE_CONNECTION_NAME, kubeconfig=settings.lease_kubeconfig, context=settings.lease_context)
        return LeaseCluster("lease_kubeconfig/lease_context", connection=spec)
    if environ.get(IN_CLUSTER_HOST_VARIABLE):
        # A RegionSpec without kubeconfig and context makes `connect` use in-cluster config.
        return LeaseCluster("in-cluster", connection=RegionSpec(name=LEASE_CONNECTION_NAME))
    return LeaseCluster(FIRST_REGION, region=config.regions[0].name)


class Daemon:
    def __init__(self, config: Config, *, metrics_port: int | None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics_port = metrics_port
        self.clock = clock
        self.metrics = SchedulerMetrics()
        self.metrics.prime(config.region_names)
        self.regions: dict[str, RegionRuntime] = {}
        self.sources: dict[str, CarbonSource] = {}
        self.stop = asyncio.Event()
        self.scheduler: Scheduler | None = None
        self.elector: LeaderElector | None = None
        # The connection to a Lease cluster outside the regions, closed on shutdown.
        self.lease_client: KubeClient | None = None
        # True once the caches synced and the campaign (or, without leader
        # election, the loop) started; a standby is ready too.
        self.started = False
        self.loop_running = False
        self._labelling: set[str] = set()
        self.store: Store | None = None
        # (forecaster, issued_at) of the last forecast stored per region.
        self._written_issuances: dict[str, tuple[str, int]] = {}
        # (time, g/kWh) of the last sample stored per region.
        self._written_samples: dict[str, tuple[int, float]] = {}
        # Time of the newest sample the store held at start, per region.
        self._newest_stored: dict[str, int] = {}
        # Regions whose first poll of the source has ended.
        self._polled: set[str] = set()
        self.writer: HistoryWriter | None = None
        self.accountant: EmissionAccountant | None = None
        self.staleness = StalenessMonitor(self.regions, metrics=self.metrics, clock=self.clock)

    async def run(self) -> int:
        log.info("daemon_starting", regions=list(self.config.region_names))
        runner = None
        background: list[asyncio.Task] = []
        try:
            # The cluster credentials load first, so a daemon that exits on a
            # cluster-config error leaves no SQLite file behind.
            await self._connect()
            # Opened before the caches sync, so a wrong lease_kubeconfig fails at once.
            lease_client = await self._lease_client() if self.config.scheduler.leader_election else None
            try:
                self.store = await asyncio.to_thread(open_history_store, self.config.store)
            except StoreOpenError as error:
                log.error("store_open_failed", key=f"store.{error.key}", error=error.problem)
                raise
            self.writer = HistoryWriter(self.store)
            background.append(asyncio.create_task(self.writer.run(), name="history-writer"))
            self.accountant = EmissionAccountant(
                self.regions,
                settings=self.config.scheduler,
                metrics=self.metrics,
                writer=self.writer,
                leading=lambda: self.leading,
                clock=self.clock,
            )
            await self._reload_history()
            self.scheduler = self._new_scheduler()
            for runtime in self.regions.values():
                runtime.cache.add_listener(self._on_cache_event)
                runtime.cache.add_listener(self._on_node_event)
                if self.accountant is not None:
                    runtime.cache.add_listener(self.accountant.on_cache_event)
                background.append(asyncio.create_task(runtime.cache.run(), name=f"cache-{runtime.name}"))
                background.append(asyncio.create_task(self._poll_carbon(runtime), name=f"carbon-{runtime.name}"))
            background.append(asyncio.create_task(self._watch_health(), name="health"))
            background.append(asyncio.create_task(self._watch_staleness(), name="staleness"))
            if self.metrics_port is not None:
                runner = await start_server(make_app(self.metrics.registry, self.readiness), "0.0.0.0", self.metrics_port)
                log.info("http_started", port=self.metrics_port)

            await self._wait_for_sync()
            elector_task = None
            if lease_client is not None:
                self.elector = self._new_elector(lease_client)
                elector_task = asyncio.create_task(self.elector.run(), name="leader-election")
                background.append(elector_task)
            leading_task = asyncio.create_task(self._schedule_while_leading(), name="leading")
            background.append(leading_task)
            self.started = True
            await self.stop.wait()
            log.info("daemon_stopping")
            # Scheduling stops (in-flight calls drained) before the Lease is released,
            # so the next leader never overlaps with this one.
            leading_task.cancel()
            await asyncio.gather(leading_task, return_exceptions=True)
            if elector_task is not None and self.elector is not None:
                elector_task.cancel()
                await asyncio.gather(elector_task, return_exceptions=True)
                await self.elector.release()
            return 0
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
            for source in self.sources.values():
                await source.aclose()
            await self._close_store()
            for runtime in self.regions.values():
                await runtime.client.close()
            if self.lease_client is not None:
                await self.lease_client.close()
            log.info("daemon_stopped")

    def _new_scheduler(self) -> Scheduler:
        queue = SchedulingQueue(clock=self.clock)
        return Scheduler(self.config, self.regions, queue, metrics=self.metrics, clock=self.clock)

    def _new_elector(self, client: KubeClient) -> LeaderElector:
        settings = self.config.scheduler
        return LeaderElector(
            client,
            namespace=settings.lease_namespace,
            name=settings.lease_name,
            identity=default_identity(),
            lease_duration_seconds=settings.lease_duration_seconds,
            renew_seconds=settings.lease_renew_seconds,
            retry_seconds=settings.lease_retry_seconds,
            clock=self.clock,
        )

    async def _lease_client(self) -> KubeClient:
        """Return the client of the cluster that holds the Lease, and open a
        connection of its own when that cluster is not a scheduled region's."""
        cluster = choose_lease_cluster(self.config)
        if cluster.connection is None:
            assert cluster.region is not None
            if cluster.chosen_by == FIRST_REGION:
                log.warning(
                    "leader_lease_in_first_region",
                    region=cluster.region,
                    consequence=f"while the API server of {cluster.region} is down, no replica schedules in any region",
                    fix="set lease_kubeconfig and lease_context in [scheduler] to a cluster outside the regions, "
                    "such as the management cluster, or run the daemon in a pod so that its own cluster holds the Lease",
                )
            else:
                log.info("leader_lease_cluster", chosen_by=cluster.chosen_by, region=cluster.region)
            return self.regions[cluster.region].client
        try:
            self.lease_client = await connect(cluster.connection)
        except ClusterConfigError as error:
            raise ClusterConfigError(
                f"the cluster of the leader Lease (chosen by {cluster.chosen_by}) cannot be used: {error}",
                region=LEASE_CONNECTION_NAME,
            ) from error
        log.info(
            "leader_lease_cluster",
            chosen_by=cluster.chosen_by,
            kubeconfig=cluster.connection.kubeconfig,
            context=cluster.connection.context,
        )
        return self.lease_client

    def _on_cache_event(self, region: str, kind: str, event_type: str, obj: dict) -> None:
        # Every replica keeps placement state and a queue current, so a new leader
        # starts from warm state; only the leader's loop pops the queue.
        if self.scheduler is not None:
            self.scheduler.on_cache_event(region, kind, event_type, obj)

    def _replace_scheduler(self) -> Scheduler:
        """Start a fresh Scheduler after a drained one, its state and queue rebuilt
        from the caches as after a relist."""
        scheduler = self._new_scheduler()
        self.scheduler = scheduler
        for name, runtime in self.regions.items():
            scheduler.on_cache_event(name, "Node", "RELISTED", {})
            for pod in list(runtime.cache.pods.values()):
                scheduler.on_cache_event(name, "Pod", "SYNC", pod)
        return scheduler

    @property
    def leading(self) -> bool:
        return self.loop_running

    async def _schedule_while_leading(self) -> None:
        """Run the scheduler loop during each term as leader (always, without
        leader election), until cancelled."""
        while True:
            if self.elector is not None:
                await self.elector.elected.wait()
            scheduler = self.scheduler
            if scheduler is None or not scheduler.accepting:
                scheduler = self._replace_scheduler()
            loop_task = asyncio.create_task(scheduler.run(), name="scheduler")
            self.loop_running = True
            self.metrics.leader.set(1)
            log.info("scheduling_started", leader_election=self.elector is not None)
            if self.accountant is not None:
                # Pods that finished while no replica led are accounted now.
                self.accountant.scan()
            try:
                for runtime in self.regions.values():
                    if runtime.feed.latest is not None:
                        await self._label_nodes(runtime)
                if self.elector is None:
                    await loop_task
                else:
                    await self.elector.deposed.wait()
                    log.warning("scheduling_stopped", reason="leadership lost")
            finally:
                self.loop_running = False
                self.metrics.leader.set(0)
                await scheduler.drain()
                loop_task.cancel()
                await asyncio.gather(loop_task, return_exceptions=True)
                # The loop may have started a call while the first drain waited.
                await scheduler.drain()

    async def _connect(self) -> None:
        source_clock = _Clock(self.clock)
        settings = self.config.scheduler
        use_provider = settings.forecaster == PROVIDER_FORECASTER
        # With "provider", the model forecaster is the fallback of each region.
        model_name = SchedulerSettings().forecaster if use_provider else settings.forecaster
        for spec in self.config.regions:
            client = await connect(spec)
            feed = CarbonFeed(
                spec,
                make_forecaster(model_name),
                wall_step_seconds=wall_step_seconds(spec),
                horizon_hours=settings.planning_horizon_hours,
                stale_after_seconds=stale_limit_seconds(spec),
                use_provider_forecast=use_provider or uses_source_forecast(spec),
                clock=self.clock,
            )
            cache = ClusterCache(
                spec.name,
                client,
                namespaces=spec.namespaces,
                on_watch_restart=self._count_watch_restart,
                on_api_error=self._count_api_error,
            )
            self.regions[spec.name] = RegionRuntime(spec, client, cache, RegionState(spec), feed)
            self.sources[spec.name] = make_source(spec, clock=source_clock)

    async def _reload_history(self) -> None:
        """Preload every region's recent samples from the store, and the task ids
        whose emissions it already holds, before the caches and pollers start."""
        if self.store is None:
            return
        now = int(self.clock())
        for runtime in self.regions.values():
            span = int(MAX_HISTORY_STEPS * wall_step_seconds(runtime.spec))
            samples = await load_recent_samples(self.store, runtime.name, now - span, now + 1)
            if samples:
                self._newest_stored[runtime.name] = max(sample.time for sample in samples)
                runtime.feed.preload([(sample.time, sample.intensity_g_per_kwh) for sample in samples])
                self._publish_carbon(runtime)
        try:
            records = await asyncio.to_thread(self.store.emissions, now - ACCOUNTED_LOOKBACK_SECONDS, now + 1)
        except StoreError as error:
            log.warning("store_emissions_read_failed", error=str(error))
            return
        if self.accountant is not None:
            self.accountant.skip(record.task_id for record in records)

    async def _wait_for_sync(self) -> None:
        waits = [runtime.cache.synced.wait() for runtime in self.regions.values()]
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_SECONDS):
                await asyncio.gather(*waits)
        except TimeoutError:
            down = [name for name, runtime in self.regions.items() if not runtime.cache.synced.is_set()]
            log.warning("regions_not_synced", regions=down, timeout_seconds=SYNC_TIMEOUT_SECONDS)

    async def _poll_carbon(self, runtime: RegionRuntime) -> None:
        source = self.sources[runtime.name]
        feed = runtime.feed
        delay = poll_interval_seconds(runtime.spec)
        failures = 0
        await self._load_history(runtime, source)
        while True:
            try:
                sample = await source.latest()
            except SourceError as error:
                failures += 1
                log.warning("carbon_poll_failed", region=runtime.name, attempt=failures, error=str(error))
                await self._check_staleness(runtime)
                await asyncio.sleep(min(delay * 2**failures, SOURCE_RETRY_MAX_SECONDS))
                continue
            failures = 0
            # A source repeats the value of the current step at every poll; the
            # store needs it again only when the provider revised it.
            written = (sample.time, sample.intensity_g_per_kwh)
            if self.writer is not None and self._written_samples.get(runtime.name) != written:
                self._written_samples[runtime.name] = written
                self.writer.add([sample])
            new_step = not feed.times or sample.time > feed.times[-1]
            if new_step and feed.use_provider_forecast:
                await self._fetch_provider_forecast(runtime, source)
            if feed.record(sample.time, sample.intensity_g_per_kwh):
                self._write_issuance(runtime)
                self._publish_carbon(runtime)
                await self._label_nodes(runtime)
                if self.scheduler is not None:
                    self.scheduler.on_carbon_step(runtime.name)
            await self._check_staleness(runtime)
            await asyncio.sleep(delay)

    async def _fetch_provider_forecast(self, runtime: RegionRuntime, source: CarbonSource) -> None:
        """Give the feed the source's current forecast. On failure the feed keeps
        the previous one, which it stops using once it is stale."""
        try:
            points = await source.forecast()
        except SourceError as error:
            log.warning("provider_forecast_failed", region=runtime.name, error=str(error))
            return
        runtime.feed.set_provider_forecast(points)

    def _write_issuance(self, runtime: RegionRuntime) -> None:
        """Store the forecast the feed now plans on, once per issuance."""
        issuance = runtime.feed.issuance
        if self.writer is None or issuance is None:
            return
        if self._written_issuances.get(runtime.name) == (issuance.forecaster, issuance.issued_at):
            return
        self._written_issuances[runtime.name] = (issuance.forecaster, issuance.issued_at)
        self.writer.add(
            ForecastPoint(runtime.name, issuance.issued_at, time, value, issuance.forecaster)
            for time, value in issuance.points
        )

    def _publish_carbon(self, runtime: RegionRuntime) -> None:
        intensity = runtime.feed.intensity
        latest = runtime.feed.latest
        if intensity is not None and latest is not None:
            self.metrics.set_intensity(runtime.name, latest.time, intensity)
        self.metrics.level.labels(runtime.name).set(int(runtime.feed.level))
        if runtime.feed.issuance is not None:
            publish_forecast(
                self.metrics,
                runtime.name,
                runtime.feed.issuance,
                source_step_seconds=runtime.feed.source_step_seconds,
                wall_step_seconds=max(1, round(runtime.feed.wall_step_seconds)),
            )

    def _count_watch_restart(self, region: str, resource: str) -> None:
        self.metrics.watch_restarts.labels(region, resource).inc()

    def _count_api_error(self, region: str, error: KubeError) -> None:
        count_api_error(self.metrics, region, error)

    async def _check_staleness(self, runtime: RegionRuntime) -> None:
        # Until its first poll ends, a region without data is starting, not stale.
        self._polled.add(runtime.name)
        if self.staleness.check(runtime):
            # A stale region's level moved with its forecast: relabel the nodes and
            # let deferred pods plan again.
            await self._label_nodes(runtime)
            if self.scheduler is not None:
                self.scheduler.on_carbon_step(runtime.name)

    async def _watch_staleness(self) -> None:
        while True:
            try:
                for runtime in self.regions.values():
                    if runtime.name in self._polled:
                        await self._check_staleness(runtime)
                scheduler = self.scheduler
                if scheduler is not None and self.leading:
                    await self.staleness.report_deferred(scheduler)
            except Exception as error:  # a bug here must not end the checks for good
                log.exception("staleness_check_failed", error=str(error))
            await asyncio.sleep(STALENESS_CHECK_SECONDS)

    async def _close_store(self) -> None:
        if self.store is None:
            return
        if self.writer is not None:
            await self.writer.flush(STORE_FLUSH_SECONDS)
        try:
            await asyncio.to_thread(self.store.close)
        except StoreError as error:
            log.warning("store_close_failed", error=str(error))
        self.store = None

    def _on_node_event(self, region: str, kind: str, event_type: str, obj: dict) -> None:
        """Label a node that appears, or changes, without the region's current level."""
        if kind.lower() != "node" or event_type not in ("ADDED", "MODIFIED", "SYNC"):
            return
        runtime = self.regions[region]
        if runtime.feed.latest is None or not self.leading:
            return
        labels = obj["metadata"].get("labels") or {}
        if labels.get(LEVEL_LABEL) != runtime.feed.level.label and region not in self._labelling:
            self._labelling.add(region)
            task = asyncio.get_running_loop().create_task(self._label_nodes(runtime))
            task.add_done_callback(lambda _: self._labelling.discard(region))

    async def _load_history(self, runtime: RegionRuntime, source: CarbonSource) -> None:
        """Fill the feed with the source's recent past, so relative levels and
        forecasts work from the first minute instead of after days."""
        span = int(MAX_HISTORY_STEPS * wall_step_seconds(runtime.spec))
        now = int(self.clock())
        try:
            samples = await source.history(now - span, now)
        except (SourceError, ValueError) as error:
            log.warning("carbon_history_failed", region=runtime.name, error=str(error))
            return
        # A synthetic source's history is made up, so only live providers' goes
        # to the store.
        if self.writer is not None and backfills_store(runtime.spec):
            self._store_backfill(runtime.name, samples, self.writer)
        # The first outlook is planned from this history, so it needs the
        # source's forecast now rather than at the next step.
        if runtime.feed.use_provider_forecast:
            await self._fetch_provider_forecast(runtime, source)
        # Samples already in the feed (from the store) win over the source's for the
        # same step, because the store is the daemon's own record of what it used.
        runtime.feed.preload([(sample.time, sample.intensity_g_per_kwh) for sample in samples])
        if runtime.feed.latest is not None:
            self._write_issuance(runtime)
            self._publish_carbon(runtime)

    def _store_backfill(self, region: str, samples: list[Sample], writer: HistoryWriter) -> None:
        """Queue the source's history for the store, except what the store holds.

        A source with short steps would overflow the writer's buffer, so each
        region gets an equal share of it and keeps its newest samples.
        """
        share = writer.capacity // max(1, len(self.regions))
        backfill = select_backfill(
            samples,
            newest_stored=self._newest_stored.get(region),
            limit=max(0, min(share, writer.capacity - writer.pending)),
        )
        writer.add(backfill.samples)
        if backfill.already_stored or backfill.over_limit:
            log.info(
                "carbon_history_backfill_skipped",
                region=region,
                queued=len(backfill.samples),
                already_stored=backfill.already_stored,
                over_buffer_share=backfill.over_limit,
            )

    async def _label_nodes(self, runtime: RegionRuntime) -> None:
        """Publish the region's level as a node label, so `kubectl get nodes -L` shows it.
        Only the leader writes labels, so two replicas never fight over them."""
        if not self.leading:
            return
        level = runtime.feed.level.label
        for name, node in list(runtime.cache.nodes.items()):
            labels = node["metadata"].get("labels") or {}
            if labels.get(LEVEL_LABEL) == level:
                continue
            try:
                await runtime.client.patch_node(name, {"metadata": {"labels": {LEVEL_LABEL: level}}})
            except KubeError as error:
                count_api_error(self.metrics, runtime.name, error)
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
        if not self.started:
            return False, "scheduler not started"
        if not self.loop_running and self.elector is None:
            return False, "scheduler loop not started"
        if not self.loop_running:
            # A standby is ready: it serves metrics and takes over when the leader stops.
            return True, "ready (standby: another replica holds the leader lease)"
        return True, "ready"


async def run_daemon(config: Config, *, metrics_port: int | None) -> int:
    daemon = Daemon(config, metrics_port=metrics_port)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop.set)
    return await daemon.run()
