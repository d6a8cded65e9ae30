"""Fault injection against the real `carbon-scheduler run`: SIGKILL in the middle of
moves, dropped and expired watches, 500s, a region's API server going away (also
the one that holds the leader Lease), a missing RBAC permission and a slow API
server. The Lease tests add a fourth fake API server as the management cluster.

The daemon runs as a child process against three fake API servers on loopback
(see tests/daemon_harness.py). Carbon intensity is static and eu-west is the
cleanest region, so critical pods submitted to us-east or asia-east move to
eu-west until its cap of 4 task pods is reached, and then go to us-east.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.daemon_faults_helpers import (
    MOVED_FROM_UID,
    TaskWatch,
    bound_counts,
    copies_of,
    delete_all_pods,
    is_bound,
    kill,
    metric_value,
    start_in,
    wait_settled,
)
from tests.daemon_harness import CAP, wait_until
from tests.kubefake.fixtures import FakeRegions, running_regions
from tests.kubefake.rbac import RbacPolicy
from tests.kubefake.resources import PODS

pytestmark = pytest.mark.asyncio

CRITICAL = {"carbon-scheduler.io/class": "critical"}
KILL_TRIALS = 50
PODS_PER_TRIAL = 5
# Homes of each trial's pods: four must move, one is already in the cleanest region.
HOMES = ("us-east", "asia-east", "us-east", "asia-east", "eu-west")
# One replica at a time, so a restarted daemon need not wait for the killed one's Lease to expire.
SINGLE_REPLICA = {"leader_election": "false"}


def classify(clusters: FakeRegions, name: str, uid: str) -> str:
    """Name the step a task's move had reached when the daemon died."""
    found = copies_of(clusters, name)
    original = [pod for pod in found.values() if pod["metadata"]["uid"] == uid]
    copies = [pod for pod in found.values() if (pod["metadata"].get("annotations") or {}).get(MOVED_FROM_UID) == uid]
    if original and copies:
        return "copy created, original not yet deleted"
    if copies:
        return "moved"
    if original and is_bound(original[0]):
        return "bound at home"
    return "not placed"


async def test_sigkill_mid_move_keeps_each_task_once(tmp_path: Path, clusters: FakeRegions):
    rng = random.Random(20261204)
    started = time.perf_counter()
    outcomes: Counter[str] = Counter()
    daemon = await start_in(tmp_path / "run-0", clusters, scheduler=SINGLE_REPLICA)
    with TaskWatch(clusters) as watch:
        try:
            for trial in range(KILL_TRIALS):
                # Slow the steps of a move so that the kill lands between them: the copy's
                # create, the Events sent between create and delete, and the delete.
                clusters["eu-west"].faults.delay(rng.uniform(0.0, 0.15), verb="create", resource="pods")
                clusters["eu-west"].faults.delay(rng.uniform(0.0, 0.1), verb="create", resource="events")
                clusters["eu-west"].faults.delay(rng.uniform(0.0, 0.1), verb="create", resource="pods/binding")
                for home in ("us-east", "asia-east"):
                    clusters[home].faults.delay(rng.uniform(0.0, 0.3), verb="delete", resource="pods")
                for index, home in enumerate(HOMES[:PODS_PER_TRIAL]):
                    name = f"t{trial}-p{index}"
                    pod = clusters[home].create_pod(name, labels=CRITICAL, requests={"cpu": "100m"})
                    watch.track(name, pod["metadata"]["uid"])

                await asyncio.sleep(rng.uniform(0.0, 0.6))
                status = await kill(daemon)
                assert status == -9, f"trial {trial}: the daemon exited with {status} before the kill"
                outcomes.update(classify(clusters, name, uid) for name, uid in watch.tasks.items())
                for server in clusters.values():
                    server.faults.clear()

                daemon = await start_in(tmp_path / f"run-{trial + 1}", clusters, scheduler=SINGLE_REPLICA)
                if trial % 4 == 3:
                    # Kill the replacement too, while it may be finishing the half-done moves.
                    await asyncio.sleep(rng.uniform(0.0, 0.2))
                    assert await kill(daemon) == -9, f"trial {trial}: the replacement exited before the kill"
                    daemon = await start_in(tmp_path / f"rerun-{trial + 1}", clusters, scheduler=SINGLE_REPLICA)
                await wait_settled(watch, timeout=20, hold=0.2)
                assert watch.violations == [], f"trial {trial}: {watch.violations[:5]}"

                watch.untrack_all()
                delete_all_pods(clusters)
        finally:
            assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]

    elapsed = time.perf_counter() - started
    print(f"\n{KILL_TRIALS} kills in {elapsed:.1f} s; {watch.checks} writes checked; states at kill: {dict(outcomes)}")
    assert watch.violations == []
    assert watch.checks > KILL_TRIALS * PODS_PER_TRIAL
    # The delays must have made kills land inside moves, not only before or after them.
    assert outcomes["copy created, original not yet deleted"] >= 5, outcomes
    assert outcomes["not placed"] >= 5, outcomes
    assert outcomes["moved"] >= 5, outcomes


TAKEOVER_TRIALS = 12


async def wait_leader(daemon, *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        _, text = await daemon.get("/metrics")
        if metric_value(text, "carbon_scheduler_leader") == 1.0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the standby did not take the Lease within {timeout} s; log:\n{daemon.log.read_text()[-3000:]}")


async def test_leader_sigkill_standby_takes_over(tmp_path: Path, clusters: FakeRegions):
    """Two replicas with leader election, as deployed for high availability: the
    leader is SIGKILLed in the middle of moves while a standby runs, and the
    standby finishes the work once the Lease expires."""
    rng = random.Random(15)
    started = time.perf_counter()
    outcomes: Counter[str] = Counter()
    leader = await start_in(tmp_path / "replica-0", clusters, scheduler=SHORT_LEASE)
    standby = None
    with TaskWatch(clusters) as watch:
        try:
            for trial in range(TAKEOVER_TRIALS):
                standby = await start_in(tmp_path / f"replica-{trial + 1}", clusters, scheduler=SHORT_LEASE)
                _, text = await standby.get("/metrics")
                assert metric_value(text, "carbon_scheduler_leader") == 0.0, f"trial {trial}: two leaders"
                clusters["eu-west"].faults.delay(rng.uniform(0.0, 0.1), verb="create", resource="events")
                for home in ("us-east", "asia-east"):
                    clusters[home].faults.delay(rng.uniform(0.0, 0.3), verb="delete", resource="pods")
                for index, home in enumerate(HOMES):
                    name = f"ha{trial}-p{index}"
                    pod = clusters[home].create_pod(name, labels=CRITICAL, requests={"cpu": "100m"})
                    watch.track(name, pod["metadata"]["uid"])

                await asyncio.sleep(rng.uniform(0.0, 0.5))
                assert await kill(leader) == -9, f"trial {trial}: the leader exited before the kill"
                outcomes.update(classify(clusters, name, uid) for name, uid in watch.tasks.items())
                for server in clusters.values():
                    server.faults.clear()

                leader, standby = standby, None
                await wait_leader(leader, timeout=10)
                await wait_settled(watch, timeout=20, hold=0.2)
                assert watch.violations == [], f"trial {trial}: {watch.violations[:5]}"
                watch.untrack_all()
                delete_all_pods(clusters)
        finally:
            if standby is not None:
                await standby.stop()
            assert await leader.stop() == 0, leader.log.read_text()[-4000:]

    elapsed = time.perf_counter() - started
    print(f"\n{TAKEOVER_TRIALS} leader kills in {elapsed:.1f} s; states at kill: {dict(outcomes)}")
    assert watch.violations == []
    assert outcomes["copy created, original not yet deleted"] >= 2, outcomes



# Expired and dropped watches -----------------------------------------------------------


async def test_watch_churn_leaves_no_pod_pending(tmp_path: Path, clusters: FakeRegions):
    daemon = await start_in(tmp_path, clusters, max_pods=50)
    rng = random.Random(410)
    drops = 0
    try:
        with TaskWatch(clusters) as watch:

            async def churn_watches() -> None:
                nonlocal drops
                while True:
                    for server in clusters.values():
                        # Compacting first makes the resumed watch get 410, so the cache must relist.
                        if rng.random() < 0.5:
                            server.compact()
                        drops += server.drop_watches()
                    await asyncio.sleep(rng.uniform(0.02, 0.15))

            churn = asyncio.create_task(churn_watches())
            try:
                for index in range(30):
                    home = rng.choice(list(clusters))
                    task_class = rng.choice(["critical", "standard"])
                    name = f"churn-{index}"
                    pod = clusters[home].create_pod(
                        name, labels={"carbon-scheduler.io/class": task_class}, requests={"cpu": "100m"}
                    )
                    watch.track(name, pod["metadata"]["uid"])
                    await asyncio.sleep(rng.uniform(0.0, 0.1))
                await asyncio.sleep(1.0)
            finally:
                churn.cancel()
                await asyncio.gather(churn, return_exceptions=True)

            # The cache's watch backoff is at most 10 s, so every region lists again within that.
            await wait_settled(watch, timeout=30)
            assert watch.violations == []
        assert drops > 30
        log = daemon.log.read_text()
        assert log.count('"kube.cache.relist"') >= 3, "no watch got 410, so relisting went untested"
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


# 500s from the API server -----------------------------------------------------------------


async def test_500s_then_each_pod_bound_once(tmp_path: Path, clusters: FakeRegions):
    daemon = await start_in(tmp_path, clusters)
    try:
        eu = clusters["eu-west"]
        eu.faults.fail_next(count=3, status=500, verb="create", resource="pods/binding")
        eu.faults.fail_next(count=3, status=500, verb="create", resource="pods")
        # The move's second step too: the original stays, next to its copy, until a retry deletes it.
        clusters["us-east"].faults.fail_next(count=2, status=500, verb="delete", resource="pods")
        with TaskWatch(clusters) as watch:
            for name, home in (("home-1", "eu-west"), ("home-2", "eu-west"), ("moved-1", "us-east"), ("moved-2", "asia-east")):
                pod = clusters[home].create_pod(name, labels=CRITICAL, requests={"cpu": "100m"})
                watch.track(name, pod["metadata"]["uid"])
            await wait_settled(watch, timeout=30)
            assert watch.violations == []

        assert eu.request_count(verb="create", resource="pods/binding", status=500) == 3
        assert eu.request_count(verb="create", resource="pods", status=500) == 3
        # After the failures, one successful call per pod: no double binding, no second copy.
        assert eu.request_count(verb="create", resource="pods/binding", status=201) == 2
        assert eu.request_count(verb="create", resource="pods", status=201) == 2
        assert eu.request_count(verb="create", resource="pods/binding", status=409) == 0
        assert clusters["us-east"].request_count(verb="delete", resource="pods", status=500) == 2
        assert clusters["us-east"].find("pods", "moved-1") is None
        for name in ("home-1", "home-2", "moved-1", "moved-2"):
            assert eu.get("pods", name)["spec"]["nodeName"].startswith("eu-west-node-")
        _, metrics = await daemon.get("/metrics")
        # Three bindings, three creates and the move's first failed delete count, all under the
        # target region eu-west. The failed delete of the resumed move is not counted.
        assert metric_value(metrics, "carbon_scheduler_binding_errors_total", region="eu-west", reason="server_error") == 7
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


# A region's API server down -----------------------------------------------------------------


REPLICA_SET = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "uid": "rs-uid-1"}}


async def region_up(daemon, region: str) -> float | None:
    _, text = await daemon.get("/metrics")
    return metric_value(text, "carbon_scheduler_region_up", region=region)


async def wait_metric(daemon, region: str, value: float, *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await region_up(daemon, region) == value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"carbon_scheduler_region_up{{region={region!r}}} is {await region_up(daemon, region)}, expected {value}")


async def test_region_down_then_back(tmp_path: Path, clusters: FakeRegions):
    daemon = await start_in(tmp_path, clusters)
    asia = clusters["asia-east"]
    try:
        await wait_metric(daemon, "asia-east", 1.0, timeout=20)
        await asia.stop()
        await wait_metric(daemon, "asia-east", 0.0, timeout=10)
        assert await region_up(daemon, "eu-west") == 1.0
        assert await region_up(daemon, "us-east") == 1.0

        with TaskWatch(clusters) as during:
            for name, home, owner in (
                ("outage-eu", "eu-west", None),
                ("outage-us", "us-east", None),
                ("outage-us-rs", "us-east", REPLICA_SET),
            ):
                pod = clusters[home].create_pod(name, labels=CRITICAL, requests={"cpu": "100m"}, owner=owner)
                during.track(name, pod["metadata"]["uid"])
            await wait_settled(during, timeout=15)
            assert during.violations == []
        assert clusters["us-east"].get("pods", "outage-us-rs")["spec"]["nodeName"].startswith("us-east-node-")

        # Pods stored in asia-east while its API server is unreachable, as if
        # submitted just before the outage.
        with TaskWatch(clusters) as after:
            for name, owner in (("asia-bare", None), ("asia-rs", REPLICA_SET)):
                pod = asia.create_pod(name, labels=CRITICAL, requests={"cpu": "100m"}, owner=owner)
                after.track(name, pod["metadata"]["uid"])
            await asyncio.sleep(1.5)
            assert await region_up(daemon, "asia-east") == 0.0
            assert bound_counts(clusters, ["asia-bare", "asia-rs"]) == {"asia-bare": 0, "asia-rs": 0}

            await asia.start()
            await wait_metric(daemon, "asia-east", 1.0, timeout=15)
            await wait_settled(after, timeout=15)
            assert after.violations == []
        assert asia.get("pods", "asia-rs")["spec"]["nodeName"].startswith("asia-east-node-")
        # The bare pod moves to the cleanest region once asia-east is readable again.
        assert clusters["eu-west"].get("pods", "asia-bare")["spec"]["nodeName"].startswith("eu-west-node-")
        assert daemon.process.returncode is None
    finally:
        if not asia.running:
            await asia.start()
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


# A missing RBAC permission ------------------------------------------------------------------


RBAC = Path(__file__).resolve().parents[1] / "deploy" / "rbac.yaml"


def policy_without(permission: str) -> RbacPolicy:
    """The ClusterRole of deploy/rbac.yaml with every rule naming `permission` removed."""
    documents = [doc for doc in yaml.safe_load_all(RBAC.read_text()) if isinstance(doc, dict)]
    for document in documents:
        if document.get("kind") == "ClusterRole":
            document["rules"] = [rule for rule in document["rules"] if permission not in rule.get("resources", ())]
    return RbacPolicy.from_manifests(documents)


async def test_forbidden_binding_leaves_pod_pending(tmp_path: Path, clusters: FakeRegions):
    for name, server in clusters.items():
        server.rbac = RbacPolicy.from_yaml(RBAC) if name != "eu-west" else policy_without("pods/binding")
    daemon = await start_in(tmp_path, clusters)
    eu = clusters["eu-west"]
    try:
        eu.create_pod("needs-binding", labels={"carbon-scheduler.io/class": "standard"}, requests={"cpu": "100m"})
        with TaskWatch(clusters) as watch:
            for name, home, owner in (("moved-in", "us-east", None), ("stays-home", "us-east", REPLICA_SET)):
                pod = clusters[home].create_pod(name, labels=CRITICAL, requests={"cpu": "100m"}, owner=owner)
                watch.track(name, pod["metadata"]["uid"])
            # A move into eu-west needs only pods create, which the policy still grants.
            await wait_settled(watch, timeout=15)
        assert eu.get("pods", "moved-in")["spec"]["nodeName"].startswith("eu-west-node-")
        assert clusters["us-east"].get("pods", "stays-home")["spec"]["nodeName"].startswith("us-east-node-")

        # The binding is retried with backoff (1 s, then 2 s) and refused each time.
        await wait_until(
            lambda: eu.request_count(verb="create", resource="pods/binding", status=403) >= 2,
            timeout=10,
            what="a retried binding in eu-west",
        )
        assert daemon.process.returncode is None
        assert (await daemon.get("/healthz"))[0] == 200
        pod = eu.get("pods", "needs-binding")
        assert not pod["spec"].get("nodeName")
        assert pod.get("status", {}).get("phase") == "Pending"
        _, metrics = await daemon.get("/metrics")
        assert metric_value(metrics, "carbon_scheduler_binding_errors_total", region="eu-west", reason="forbidden") >= 2
        log = daemon.log.read_text()
        failures = [line for line in log.splitlines() if '"bind_failed"' in line and "needs-binding" in line]
        assert failures, "the refused binding was not logged"
        assert '"region": "eu-west"' in failures[0]
        assert "403" in failures[0]
        reasons = [e["reason"] for e in eu.list("events", namespace=None) if e["involvedObject"]["name"] == "needs-binding"]
        assert "Scheduled" not in reasons
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


# A slow API server --------------------------------------------------------------------------


async def test_slow_api_servers_still_schedule_every_pod(tmp_path: Path, clusters: FakeRegions):
    for server in clusters.values():
        server.faults.delay(0.25)
    daemon = await start_in(tmp_path, clusters)
    try:
        with TaskWatch(clusters) as watch:
            for index, home in enumerate(("eu-west", "us-east", "asia-east", "eu-west", "us-east", "asia-east")):
                name = f"slow-{index}"
                pod = clusters[home].create_pod(name, labels=CRITICAL, requests={"cpu": "100m"})
                watch.track(name, pod["metadata"]["uid"])
            await wait_settled(watch, timeout=30)
            assert watch.violations == []
        _, metrics = await daemon.get("/metrics")
        # Every binding or move went through delayed calls, so none took under 0.1 s.
        assert metric_value(metrics, "carbon_scheduler_binding_duration_seconds_count") == 6
        assert metric_value(metrics, "carbon_scheduler_binding_duration_seconds_bucket", le="0.1") == 0
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


# Where the leader Lease lives ----------------------------------------------------------------


# Lease timings the config loader accepts, short enough that a lost Lease shows within seconds.
SHORT_LEASE = {"lease_duration_seconds": "2", "lease_renew_seconds": "0.5", "lease_retry_seconds": "0.3"}


async def test_lease_in_management_cluster_region_down_others_schedule(tmp_path: Path, clusters: FakeRegions):
    """With the Lease in a fourth cluster outside the regions, an outage of the first
    region's API server leaves the leader leading, and the other regions schedule."""
    (tmp_path / "management").mkdir()
    async with running_regions(tmp_path / "management", regions=("management",)) as management:
        lease_cluster = {
            "lease_kubeconfig": f'"{management.kubeconfig}"',
            "lease_context": '"management"',
            **SHORT_LEASE,
        }
        daemon = await start_in(tmp_path / "daemon", clusters, scheduler=lease_cluster)
        eu = clusters["eu-west"]
        try:
            await wait_until(
                lambda: management["management"].find("leases", "carbon-scheduler") is not None,
                timeout=10,
                what="the Lease created in the management cluster",
            )
            assert all(server.find("leases", "carbon-scheduler") is None for server in clusters.values())
            await eu.stop()
            await wait_metric(daemon, "eu-west", 0.0, timeout=10)
            await asyncio.sleep(3.0)  # longer than the Lease, so a leader that could not renew would have given up
            us = clusters["us-east"]
            us.create_pod("lease-outage-rs", labels=CRITICAL, requests={"cpu": "100m"}, owner=REPLICA_SET)
            await wait_until(
                lambda: bool(us.get("pods", "lease-outage-rs")["spec"].get("nodeName")),
                timeout=10,
                what="a us-east pod bound while eu-west is down and the Lease lives in the management cluster",
            )
            assert "leader_lost" not in daemon.log.read_text()
        finally:
            if not eu.running:
                await eu.start()
            assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]
        # A clean stop releases the Lease in the management cluster.
        assert management["management"].get("leases", "carbon-scheduler")["spec"]["holderIdentity"] in ("", None)


async def test_lease_in_first_region_down_stops_all_scheduling(
    tmp_path: Path, clusters: FakeRegions, monkeypatch: pytest.MonkeyPatch
):
    """Document the fallback: without leader_election_region, lease_kubeconfig,
    lease_context or a pod, the Lease lives in the first region, and while that
    region's API server is down no region schedules. The daemon warns about it at
    start-up."""
    # The daemon inherits the environment, and in a pod it would put the Lease in its own cluster.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    daemon = await start_in(tmp_path, clusters, scheduler=SHORT_LEASE)
    eu = clusters["eu-west"]
    us = clusters["us-east"]
    try:
        # Readiness does not wait for the election, so give it its own moment.
        await wait_until(
            lambda: eu.find("leases", "carbon-scheduler") is not None,
            timeout=10,
            what="the Lease created in eu-west, the first region",
        )
        assert "leader_lease_in_first_region" in daemon.log.read_text()
        await eu.stop()
        await wait_metric(daemon, "eu-west", 0.0, timeout=10)
        await wait_until(
            lambda: "leader_lost" in daemon.log.read_text(),
            timeout=10,
            what="the leader giving up the Lease it cannot renew in eu-west",
        )
        us.create_pod("lease-outage-rs", labels=CRITICAL, requests={"cpu": "100m"}, owner=REPLICA_SET)
        await asyncio.sleep(2.0)
        assert not us.get("pods", "lease-outage-rs")["spec"].get("nodeName")
        await eu.start()
        await wait_until(
            lambda: bool(us.get("pods", "lease-outage-rs")["spec"].get("nodeName")),
            timeout=15,
            what="the us-east pod bound once eu-west, which holds the Lease, is back",
        )
    finally:
        if not eu.running:
            await eu.start()
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


async def test_move_name_clash_places_pod(tmp_path: Path, clusters: FakeRegions):
    daemon = await start_in(tmp_path, clusters)
    try:
        # Not ours and not a copy: a pod of another scheduler that happens to share the name.
        clusters["eu-west"].create_pod("clash", scheduler_name="default-scheduler", node_name="eu-west-node-1")
        us = clusters["us-east"]
        us.create_pod("clash", labels=CRITICAL, requests={"cpu": "100m"})
        await wait_until(
            lambda: clusters["eu-west"].request_count(verb="create", resource="pods", status=409) >= 1,
            timeout=10,
            what="the move's create refused with 409",
        )
        # The pod must end up somewhere (its home has room), or at least be retried
        # and explained with a FailedScheduling Event.
        def placed_or_explained() -> bool:
            reasons = {e["reason"] for e in us.list("events", namespace=None) if e["involvedObject"]["name"] == "clash"}
            return bool(us.get("pods", "clash")["spec"].get("nodeName")) or "FailedScheduling" in reasons

        await wait_until(placed_or_explained, timeout=8, what="the clashing pod placed or explained")
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


async def test_pod_cap_holds_under_watch_churn(tmp_path: Path, clusters: FakeRegions):
    """Check the cap after every write while relists rebuild the placement state
    with bindings and moves in flight."""
    daemon = await start_in(tmp_path, clusters)
    rng = random.Random(4)
    over_cap: list[str] = []

    def check_cap(change) -> None:
        for region, server in clusters.items():
            bound = [
                pod for pod in server.store.list(PODS, None)
                if is_bound(pod)
                and pod["spec"].get("schedulerName") == "carbon-scheduler"
                and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
            if len(bound) > CAP:
                over_cap.append(f"{region} has {len(bound)} bound task pods at rv {change.resource_version}")

    for server in clusters.values():
        server.store.subscribe(check_cap)
    try:

        async def churn_watches() -> None:
            while True:
                for server in clusters.values():
                    server.compact()
                    server.drop_watches()
                await asyncio.sleep(rng.uniform(0.02, 0.1))

        churn = asyncio.create_task(churn_watches())
        try:
            for index in range(24):
                home = list(clusters)[index % 3]
                clusters[home].create_pod(f"capped-{index}", labels=CRITICAL, requests={"cpu": "100m"})
                await asyncio.sleep(rng.uniform(0.0, 0.05))
            # Finish some pods while the churn goes on, so freed room is refilled during relists.
            await asyncio.sleep(1.5)
            for region, server in clusters.items():
                for pod in [p for p in server.list("pods", namespace=None) if is_bound(p)][:2]:
                    server.set_pod_phase(pod["metadata"]["name"], "Succeeded")
            await asyncio.sleep(1.5)
        finally:
            churn.cancel()
            await asyncio.gather(churn, return_exceptions=True)

        def regions_full() -> bool:
            return all(
                sum(
                    1 for pod in server.list("pods", namespace=None)
                    if is_bound(pod) and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                ) == CAP
                for server in clusters.values()
            )

        await wait_until(regions_full, timeout=30, what="every region refilled to its cap")
        await asyncio.sleep(0.5)
        assert over_cap == []
    finally:
        for server in clusters.values():
            server.store.unsubscribe(check_cap)
        assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]


async def test_restart_with_copy_region_down_keeps_task_once(tmp_path: Path, clusters: FakeRegions):
    """The state a crash between the two steps of a move leaves (the copy bound in
    us-east, the original pending in asia-east), met by a daemon that starts while
    us-east is down."""
    asia, us = clusters["asia-east"], clusters["us-east"]
    original = asia.create_pod("half-moved", labels=CRITICAL, requests={"cpu": "100m"})
    annotations = {"carbon-scheduler.io/moved-from-region": "asia-east", MOVED_FROM_UID: original["metadata"]["uid"]}
    us.create_pod("half-moved", labels=CRITICAL, annotations=annotations, node_name="us-east-node-1", requests={"cpu": "100m"})
    await us.stop()
    with TaskWatch(clusters) as watch:
        watch.track("half-moved", original["metadata"]["uid"])
        daemon = await start_in(tmp_path, clusters, wait_ready=False)
        try:
            # Past app.SYNC_TIMEOUT_SECONDS (30 s), when the scheduler loop starts without us-east.
            await asyncio.sleep(33)
            await us.start()
            await wait_until(lambda: asia.find("pods", "half-moved") is None, timeout=15, what="the original deleted")
            await asyncio.sleep(1.0)
            assert watch.violations == []
            assert bound_counts(clusters, ["half-moved"]) == {"half-moved": 1}
        finally:
            if not us.running:
                await us.start()
            assert await daemon.stop() == 0, daemon.log.read_text()[-4000:]
