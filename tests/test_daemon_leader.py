"""Leader election through a Lease: the election logic against one fake API server
with a fake clock, and two real daemon processes against the three fake clusters,
of which only the leader binds pods."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from carbon_scheduler.config.loading import load_config
from carbon_scheduler.config.types import Config, RegionSpec, SchedulerSettings
from carbon_scheduler.daemon.app import (
    IN_CLUSTER_HOST_VARIABLE,
    LEASE_CONNECTION_NAME,
    Daemon as InProcessDaemon,
    LeaseCluster,
    choose_lease_cluster,
)
from carbon_scheduler.daemon.connections import ClusterConfigError, connect
from carbon_scheduler.daemon.kubeapi import KubeClient
from carbon_scheduler.daemon.leader import LeaderElector, format_micro_time, parse_micro_time
from tests.daemon_harness import INTENSITY, Daemon, free_port, wait_until, write_config
from tests.kubefake import FakeApiServer, write_kubeconfig
from tests.kubefake.fixtures import FakeRegions, kube_regions, loopback_without_proxy  # noqa: F401  (fixture)

REGION = "eu-west"
NAMESPACE = "default"
LEASE = "carbon-scheduler"
START = 1_800_000_000.0
DURATION = 3
RENEW = 1.0
RETRY = 0.5
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Advance fake time, and yield for a moment of real time so the test's
        # own waits and the server's handlers run between iterations.
        self.now += seconds
        await asyncio.sleep(0.005)


@pytest_asyncio.fixture
async def server(loopback_without_proxy: None) -> AsyncIterator[FakeApiServer]:  # noqa: F811
    async with FakeApiServer(REGION, seed=3) as fake:
        yield fake


@pytest_asyncio.fixture
async def clients(server: FakeApiServer, tmp_path: Path) -> AsyncIterator[list[KubeClient]]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
    spec = RegionSpec(name=REGION, kubeconfig=str(kubeconfig), context=REGION)
    opened = [await connect(spec, request_timeout_seconds=2.0) for _ in range(3)]
    yield opened
    for client in opened:
        await client.close()


def elector(client: KubeClient, identity: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(
        client,
        namespace=NAMESPACE,
        name=LEASE,
        identity=identity,
        lease_duration_seconds=DURATION,
        renew_seconds=RENEW,
        retry_seconds=RETRY,
        clock=clock,
        sleep=clock.sleep,
    )


def lease_spec(server: FakeApiServer) -> dict:
    return server.get("leases", LEASE, namespace=NAMESPACE)["spec"]



# Where the Lease lives ---------------------------------------------------------------

REGIONS = (RegionSpec(name="eu-west"), RegionSpec(name="us-east"))
IN_POD = {IN_CLUSTER_HOST_VARIABLE: "10.96.0.1"}
MANAGEMENT = "/etc/carbon-scheduler/management.yaml"


@pytest.mark.parametrize(
    ("settings", "environ", "expected"),
    [
        pytest.param(
            SchedulerSettings(leader_election_region="us-east", lease_kubeconfig=MANAGEMENT),
            IN_POD,
            LeaseCluster("leader_election_region", region="us-east"),
            id="region-setting-wins",
        ),
        pytest.param(
            SchedulerSettings(lease_kubeconfig=MANAGEMENT, lease_context="minikube"),
            IN_POD,
            LeaseCluster(
                "lease_kubeconfig/lease_context",
                connection=RegionSpec(name=LEASE_CONNECTION_NAME, kubeconfig=MANAGEMENT, context="minikube"),
            ),
            id="kubeconfig-and-context-before-in-cluster",
        ),
        pytest.param(
            SchedulerSettings(lease_context="minikube"),
            {},
            LeaseCluster(
                "lease_kubeconfig/lease_context",
                connection=RegionSpec(name=LEASE_CONNECTION_NAME, context="minikube"),
            ),
            id="context-alone-uses-default-kubeconfig",
        ),
        pytest.param(
            SchedulerSettings(),
            IN_POD,
            LeaseCluster("in-cluster", connection=RegionSpec(name=LEASE_CONNECTION_NAME)),
            id="in-a-pod",
        ),
        pytest.param(
            SchedulerSettings(),
            {IN_CLUSTER_HOST_VARIABLE: ""},
            LeaseCluster("first region", region="eu-west"),
            id="empty-service-host-is-not-a-pod",
        ),
        pytest.param(SchedulerSettings(), {}, LeaseCluster("first region", region="eu-west"), id="first-region"),
    ],
)
def test_choose_lease_cluster(settings, environ, expected):
    assert choose_lease_cluster(Config(scheduler=settings, regions=REGIONS), environ=environ) == expected


@pytest.mark.asyncio
async def test_missing_lease_kubeconfig_fails_before_sync(tmp_path: Path, kube_regions: FakeRegions):
    loaded = load_config(write_config(tmp_path / "regions.toml", kube_regions, INTENSITY))
    missing = tmp_path / "management.yaml"
    config = Config(
        scheduler=SchedulerSettings(lease_kubeconfig=str(missing)), regions=loaded.regions, path=loaded.path
    )
    with pytest.raises(ClusterConfigError) as caught:
        await asyncio.wait_for(InProcessDaemon(config, metrics_port=None).run(), 5.0)
    message = str(caught.value)
    assert message.startswith("the cluster of the leader Lease (chosen by lease_kubeconfig/lease_context)")
    assert f"kubeconfig file {missing} not found" in message
    assert caught.value.region == LEASE_CONNECTION_NAME
    assert all(server.find("leases", LEASE, namespace=NAMESPACE) is None for server in kube_regions.values())


# Time format -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.0, "1970-01-01T00:00:00.000000Z", id="epoch"),
        pytest.param(START + 0.25, "2027-01-15T08:00:00.250000Z", id="quarter-second"),
        pytest.param(START + 0.000001, "2027-01-15T08:00:00.000001Z", id="one-microsecond"),
    ],
)
def test_format_micro_time(seconds, text):
    assert format_micro_time(seconds) == text
    assert parse_micro_time(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("2027-01-15T08:00:00Z", START, id="no-fraction"),
        pytest.param("2027-01-15T09:00:00.5+01:00", START + 0.5, id="offset"),
        pytest.param("2027-01-15T08:00:00.123456", START + 0.123456, id="naive-is-utc"),
        pytest.param("", None, id="empty"),
        pytest.param("yesterday", None, id="words"),
        pytest.param(None, None, id="missing"),
        pytest.param(17, None, id="number"),
    ],
)
def test_parse_micro_time(text, seconds):
    parsed = parse_micro_time(text)
    if seconds is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(seconds, abs=1e-6)


@given(st.text())
def test_parse_micro_time_never_raises(text):
    parsed = parse_micro_time(text)
    assert parsed is None or isinstance(parsed, float)


def test_renew_must_fit_before_the_deadline():
    with pytest.raises(ValueError, match="renew_seconds"):
        LeaderElector(
            None,  # type: ignore[arg-type]
            namespace=NAMESPACE, name=LEASE, identity="a",
            lease_duration_seconds=3, renew_seconds=2.5, retry_seconds=0.5,
        )


# One attempt at a time ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_acquire_creates_missing_lease(server, clients):
    clock = FakeClock()
    a = elector(clients[0], "replica-a", clock)
    assert await a.try_acquire_or_renew() is True
    spec = lease_spec(server)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == DURATION
    assert spec["leaseTransitions"] == 0
    assert MICRO_TIME.fullmatch(spec["renewTime"])
    assert spec["acquireTime"] == spec["renewTime"] == format_micro_time(START)
    assert server.request_count(verb="create", resource="leases", status=201) == 1


@pytest.mark.asyncio
async def test_valid_lease_of_another_holder_is_left_alone(server, clients):
    clock = FakeClock()
    a, b = elector(clients[0], "replica-a", clock), elector(clients[1], "replica-b", clock)
    assert await a.try_acquire_or_renew()
    clock.now += DURATION  # renewTime + duration == now: not yet expired
    assert await b.try_acquire_or_renew() is False
    assert b.observed_holder == "replica-a"
    assert lease_spec(server)["holderIdentity"] == "replica-a"
    assert server.request_count(verb="update", resource="leases") == 0


@pytest.mark.asyncio
async def test_renew_moves_renew_time_and_keeps_acquire_time(server, clients):
    clock = FakeClock()
    a = elector(clients[0], "replica-a", clock)
    assert await a.try_acquire_or_renew()
    first = server.get("leases", LEASE, namespace=NAMESPACE)
    clock.now += RENEW
    assert await a.try_acquire_or_renew()
    renewed = server.get("leases", LEASE, namespace=NAMESPACE)
    assert renewed["spec"]["renewTime"] == format_micro_time(START + RENEW)
    assert renewed["spec"]["acquireTime"] == format_micro_time(START)
    assert renewed["spec"]["leaseTransitions"] == 0
    assert int(renewed["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


@pytest.mark.asyncio
async def test_expired_lease_is_taken_over(server, clients):
    clock = FakeClock()
    a, b = elector(clients[0], "replica-a", clock), elector(clients[1], "replica-b", clock)
    assert await a.try_acquire_or_renew()
    clock.now += DURATION + 0.001
    assert await b.try_acquire_or_renew() is True
    spec = lease_spec(server)
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"] == format_micro_time(clock.now)
    # The old holder, back from a pause, finds the Lease taken.
    assert await a.try_acquire_or_renew() is False
    assert a.observed_holder == "replica-b"


@pytest.mark.asyncio
async def test_simultaneous_create_has_one_winner(server, clients):
    clock = FakeClock()
    candidates = [elector(client, f"replica-{index}", clock) for index, client in enumerate(clients)]
    # Hold every create back, so that all candidates read "missing" before any writes.
    server.faults.delay(0.2, verb="create", resource="leases")
    results = await asyncio.gather(*(candidate.try_acquire_or_renew() for candidate in candidates))
    assert sorted(results) == [False, False, True]
    winner = candidates[results.index(True)].identity
    assert lease_spec(server)["holderIdentity"] == winner
    assert server.request_count(verb="create", resource="leases", status=409) == 2
    for candidate, won in zip(candidates, results):
        if not won:
            assert candidate.observed_holder == winner


@pytest.mark.asyncio
async def test_simultaneous_takeover_has_one_winner(server, clients):
    clock = FakeClock()
    old = elector(clients[0], "replica-old", clock)
    assert await old.try_acquire_or_renew()
    clock.now += DURATION + 1
    b, c = elector(clients[1], "replica-b", clock), elector(clients[2], "replica-c", clock)
    server.faults.delay(0.2, verb="update", resource="leases")
    results = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    assert server.request_count(verb="update", resource="leases", status=409) == 1
    spec = lease_spec(server)
    assert spec["holderIdentity"] == ("replica-b" if results[0] else "replica-c")
    assert spec["leaseTransitions"] == 1


@pytest.mark.asyncio
async def test_api_errors_count_as_a_failed_attempt(server, clients):
    clock = FakeClock()
    a = elector(clients[0], "replica-a", clock)
    server.faults.fail_next(status=503, resource="leases")
    assert await a.try_acquire_or_renew() is False
    assert server.find("leases", LEASE, namespace=NAMESPACE) is None
    assert await a.try_acquire_or_renew() is True


# The campaign ------------------------------------------------------------------------


async def wait_for_event(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), 20)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.mark.asyncio
async def test_leader_renews_every_renew_interval(server, clients):
    clock = FakeClock()
    a = elector(clients[0], "replica-a", clock)
    task = asyncio.create_task(a.run())
    try:
        await wait_for_event(a.elected, "election")
        await wait_until(lambda: clock.now >= START + 5 * RENEW, timeout=20, what="five renew intervals")
        assert a.is_leader
        spec = lease_spec(server)
        assert spec["holderIdentity"] == "replica-a"
        renewed = parse_micro_time(spec["renewTime"])
        assert clock.now - RENEW - 0.001 <= renewed <= clock.now
        assert server.request_count(verb="update", resource="leases", status=200) >= 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_leader_steps_down_when_renewal_keeps_failing(server, clients):
    clock = FakeClock()
    a = elector(clients[0], "replica-a", clock)
    task = asyncio.create_task(a.run())
    try:
        await wait_for_event(a.elected, "election")
        renewed_at = parse_micro_time(lease_spec(server)["renewTime"])
        with capture_logs() as logs:
            server.faults.fail_next(10_000, status=500, resource="leases")
            await wait_for_event(a.deposed, "step-down")
            lost = next(entry for entry in logs if entry["event"] == "leader_lost")
        assert lost["reason"] == "renewal failed"
        # It stops before the Lease expires for others, but not before the deadline.
        assert DURATION - RETRY <= lost["seconds_since_renewal"] < DURATION
        assert lease_spec(server)["renewTime"] == format_micro_time(renewed_at)
        assert not a.is_leader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.faults.clear()


@pytest.mark.asyncio
async def test_leader_steps_down_when_another_replica_holds_the_lease(server, clients):
    clock = FakeClock()
    a = elector(clients[0], "replica-a", clock)
    task = asyncio.create_task(a.run())
    try:
        await wait_for_event(a.elected, "election")
        # Another writer (an operator, or a replica with a skewed clock) takes the Lease.
        server.patch(
            "leases", LEASE,
            {"spec": {"holderIdentity": "intruder", "renewTime": format_micro_time(START + 3600)}},
            namespace=NAMESPACE,
        )
        with capture_logs() as logs:
            await wait_for_event(a.deposed, "step-down")
            lost = next(entry for entry in logs if entry["event"] == "leader_lost")
        assert lost["reason"] == "another replica holds the lease"
        assert lost["holder"] == "intruder"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_standby_takes_over_after_expiry(server, clients):
    clock = FakeClock()
    a, b = elector(clients[0], "replica-a", clock), elector(clients[1], "replica-b", clock)
    assert await a.try_acquire_or_renew()
    task = asyncio.create_task(b.run())
    try:
        await wait_for_event(b.elected, "takeover")
        # b retried every RETRY seconds and won at its first attempt after expiry.
        spec = lease_spec(server)
        assert spec["holderIdentity"] == "replica-b"
        assert START + DURATION < parse_micro_time(spec["acquireTime"]) <= START + DURATION + RETRY + 0.001
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# Release -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_release_lets_a_standby_take_over_at_once(server, clients):
    clock = FakeClock()
    a, b = elector(clients[0], "replica-a", clock), elector(clients[1], "replica-b", clock)
    assert await a.try_acquire_or_renew()
    await a.release()
    assert not a.is_leader
    spec = lease_spec(server)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    # No waiting for expiry: the released Lease is free at the same instant.
    assert await b.try_acquire_or_renew() is True
    spec = lease_spec(server)
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == DURATION


@pytest.mark.asyncio
async def test_release_without_leading_writes_nothing(server, clients):
    clock = FakeClock()
    a, b = elector(clients[0], "replica-a", clock), elector(clients[1], "replica-b", clock)
    assert await a.try_acquire_or_renew()
    assert await b.try_acquire_or_renew() is False
    await b.release()
    assert lease_spec(server)["holderIdentity"] == "replica-a"
    assert server.request_count(verb="update", resource="leases") == 0


@pytest.mark.asyncio
async def test_release_after_takeover_leaves_the_new_holder(server, clients):
    clock = FakeClock()
    a, b = elector(clients[0], "replica-a", clock), elector(clients[1], "replica-b", clock)
    assert await a.try_acquire_or_renew()
    clock.now += DURATION + 1
    assert await b.try_acquire_or_renew()
    await a.release()  # a paused past expiry; its stale resourceVersion gets 409
    assert lease_spec(server)["holderIdentity"] == "replica-b"
    assert server.request_count(verb="update", resource="leases", status=409) == 1


# Two real daemons --------------------------------------------------------------------

E2E_LEASE = {"lease_duration_seconds": 3, "lease_renew_seconds": 1.0, "lease_retry_seconds": 0.5}


async def start_replica(directory: Path, regions: FakeRegions, identity: str) -> Daemon:
    """Start `carbon-scheduler run` as replica `identity`, with short lease settings."""
    directory.mkdir()
    config = write_config(directory / "regions.toml", regions, {"eu-west": 100.0, "us-east": 400.0, "asia-east": 450.0})
    lease_lines = "\n".join(f"{key} = {value}" for key, value in E2E_LEASE.items())
    config.write_text(config.read_text().replace("[scheduler]\n", f"[scheduler]\n{lease_lines}\n", 1))
    port = free_port()
    log = directory / "daemon.log"
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", POD_NAME=identity)
    # Outside a pod, so the Lease falls back to the first region, eu-west, which `holder` reads.
    env.pop(IN_CLUSTER_HOST_VARIABLE, None)
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


def holder(regions: FakeRegions) -> str | None:
    lease = regions["eu-west"].find("leases", LEASE, namespace=NAMESPACE)
    return None if lease is None else lease["spec"].get("holderIdentity")


def scheduled_count(daemon: Daemon) -> int:
    return daemon.log.read_text().count("pod_scheduled")


async def leader_gauge(daemon: Daemon) -> float:
    status, text = await daemon.get("/metrics")
    assert status == 200
    match = re.search(r"^carbon_scheduler_leader (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def bound(regions: FakeRegions, name: str) -> bool:
    pod = regions["eu-west"].find("pods", name)
    return bool(pod and pod["spec"].get("nodeName"))


@pytest.mark.asyncio
async def test_two_daemons_one_leader_and_takeovers(tmp_path: Path, clusters: FakeRegions):
    daemons: list[Daemon] = []
    try:
        a = await start_replica(tmp_path / "a", clusters, "replica-a")
        daemons.append(a)
        await wait_until(lambda: holder(clusters) == "replica-a", timeout=20, what="replica-a leading")
        b = await start_replica(tmp_path / "b", clusters, "replica-b")
        daemons.append(b)
        assert (await b.get("/readyz"))[0] == 200  # a standby is ready: it serves metrics
        assert await leader_gauge(a) == 1.0
        assert await leader_gauge(b) == 0.0

        # Two pods now and one after each takeover stay within eu-west's cap of four.
        names = ["web-1", "web-2"]
        for name in names:
            clusters["eu-west"].create_pod(name, labels={"carbon-scheduler.io/class": "standard"}, requests={"cpu": "100m"})
        await wait_until(lambda: all(bound(clusters, name) for name in names), timeout=15, what="pods bound")
        await asyncio.sleep(1.0)  # room for a second scheduler to interfere
        # Only the leader binds, and no binding meets a pod that was already bound.
        assert scheduled_count(a) == 2
        assert scheduled_count(b) == 0
        bindings = [r for r in clusters["eu-west"].requests if r.resource == "pods/binding"]
        assert len(bindings) == scheduled_count(a)
        assert all(r.status == 201 for r in bindings), [r.status for r in bindings]
        assert holder(clusters) == "replica-a"

        # SIGKILL: no release, so the standby waits for the Lease to expire.
        killed = asyncio.get_running_loop().time()
        a.process.send_signal(signal.SIGKILL)
        await a.process.wait()
        await wait_until(lambda: holder(clusters) == "replica-b", timeout=E2E_LEASE["lease_duration_seconds"] + 4,
                         what="replica-b taking over after SIGKILL")
        kill_takeover = asyncio.get_running_loop().time() - killed
        clusters["eu-west"].create_pod("after-kill", labels={"carbon-scheduler.io/class": "critical"})
        await wait_until(lambda: bound(clusters, "after-kill"), timeout=10, what="after-kill bound by replica-b")
        assert scheduled_count(b) >= 1
        assert await leader_gauge(b) == 1.0

        # SIGTERM: the leader releases the Lease, and the standby takes it at once.
        c = await start_replica(tmp_path / "c", clusters, "replica-c")
        daemons.append(c)
        assert await leader_gauge(c) == 0.0
        stopped = asyncio.get_running_loop().time()
        b.process.send_signal(signal.SIGTERM)
        await wait_until(lambda: holder(clusters) == "replica-c", timeout=20, what="replica-c taking over after SIGTERM")
        term_takeover = asyncio.get_running_loop().time() - stopped
        assert await asyncio.wait_for(b.process.wait(), 15) == 0
        assert "leader_released" in b.log.read_text()
        clusters["eu-west"].create_pod("after-term", labels={"carbon-scheduler.io/class": "critical"})
        await wait_until(lambda: bound(clusters, "after-term"), timeout=10, what="after-term bound by replica-c")
        assert scheduled_count(c) >= 1

        bindings = [r for r in clusters["eu-west"].requests if r.resource == "pods/binding"]
        assert sum(1 for r in bindings if r.status == 409) == 0
        print(f"takeover after SIGKILL: {kill_takeover:.2f} s; after SIGTERM: {term_takeover:.2f} s")
        assert kill_takeover <= E2E_LEASE["lease_duration_seconds"] + 3
        assert term_takeover <= 2.0
    finally:
        for daemon in daemons:
            await daemon.stop()
