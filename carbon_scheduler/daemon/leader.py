"""Leader election through a `coordination.k8s.io/v1` Lease, so that only one
daemon replica schedules at a time.

The protocol follows client-go's `leaderelection` package. The Lease records
`holderIdentity`, `acquireTime`, `renewTime` (MicroTime), `leaseDurationSeconds`
and `leaseTransitions`. A candidate takes the Lease in three cases:

- it does not exist: create it, and a 409 means another candidate created it first;
- its holder is empty (released) or its `renewTime + leaseDurationSeconds` lies
  in the past: replace it with the read resourceVersion as precondition, and a
  409 means another candidate won;
- it already names this replica.

The leader renews every `renew_seconds`. Because every write is a
compare-and-swap on the resourceVersion, only one of two candidates that read the
same expired Lease succeeds.

Expiry is judged from the Lease's `renewTime` against the local clock, so the
replicas' clocks must agree to well within `lease_duration - retry_seconds`
(NTP-synchronised nodes do).

A leader whose renewals keep failing stops leading once `lease_duration -
retry_seconds` has passed since its last successful renewal. That is before any
other replica can see the Lease as expired, so two replicas never lead at once
while the clocks agree. A leader that finds another holder in the Lease stops at
once. `release()` empties `holderIdentity` on shutdown, so a standby takes over
at its next attempt instead of after the Lease expires.

The elector takes any `KubeClient`, and `daemon.app.choose_lease_cluster` picks
the cluster. While the Lease's API server is down no replica can lead, so no
region is scheduled. A Lease in the management cluster, outside the scheduled
regions, therefore keeps scheduling going while any one region is down.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from carbon_scheduler.daemon.kubeapi import Conflict, KubeClient, KubeError, NotFound

log = structlog.get_logger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"


def default_identity() -> str:
    """Return this replica's holder identity: `POD_NAME` when set (the downward API
    gives each pod a unique one), else the host name with a random suffix, so two
    processes on one host still differ."""
    pod = os.environ.get("POD_NAME", "").strip()
    if pod:
        return pod
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


def format_micro_time(seconds: float) -> str:
    """Format Unix seconds as a Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: object) -> float | None:
    """Parse a MicroTime or RFC 3339 time into Unix seconds, or return None when
    `text` is missing or unreadable (such a Lease counts as expired)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class LeaderElector:
    """Acquires and renews one Lease for this replica.

    `run()` campaigns until cancelled: it sets `elected` while this replica
    leads and `deposed` while it does not, so the daemon can wait for either.
    `clock` returns Unix seconds and `sleep` waits, both injectable for tests.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_seconds: int,
        renew_seconds: float,
        retry_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not renew_seconds < lease_duration_seconds - retry_seconds:
            raise ValueError(
                f"renew_seconds ({renew_seconds}) must be less than lease_duration_seconds - retry_seconds "
                f"({lease_duration_seconds} - {retry_seconds})"
            )
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration_seconds = int(lease_duration_seconds)
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.sleep = sleep
        self.elected = asyncio.Event()
        self.deposed = asyncio.Event()
        self.deposed.set()
        # The holder seen in the last read Lease; "" when released or never read.
        self.observed_holder = ""
        # The Lease as this replica last wrote it, for renewals and release.
        self._lease: dict | None = None
        self._last_renewed: float | None = None

    @property
    def is_leader(self) -> bool:
        return self.elected.is_set()

    @property
    def renew_deadline_seconds(self) -> float:
        """Time without a successful renewal after which the leader stops leading."""
        return self.lease_duration_seconds - self.retry_seconds

    # One attempt ---------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """Make one attempt to acquire or renew the Lease, and return True when this
        replica holds it afterwards. API errors are logged and return False."""
        now = self.clock()
        try:
            return await self._attempt(now)
        except KubeError as error:
            log.warning(
                "leader_lease_request_failed",
                region=error.region,
                lease=self._lease_ref(),
                status=error.status,
                error=str(error),
            )
            return False

    async def _attempt(self, now: float) -> bool:
        try:
            current = await self.client.get_lease(self.namespace, self.name)
        except NotFound:
            return await self._create(now)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self.observed_holder = holder
        if holder and holder != self.identity and not self._expired(spec, now):
            return False
        ours = holder == self.identity
        record = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else format_micro_time(now),
            "renewTime": format_micro_time(now),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
        }
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            # The resourceVersion of the read makes the write fail (409) when another
            # replica wrote in between.
            "metadata": dict(current.get("metadata") or {}),
            "spec": {**spec, **record},
        }
        try:
            written = await self.client.replace_lease(self.namespace, self.name, body)
        except Conflict:
            log.info("leader_lease_race_lost", lease=self._lease_ref(), holder=holder or None)
            return False
        if not ours:
            log.info(
                "leader_lease_taken",
                lease=self._lease_ref(),
                identity=self.identity,
                previous_holder=holder or None,
                transitions=record["leaseTransitions"],
            )
        self._written(written, now)
        return True

    async def _create(self, now: float) -> bool:
        stamp = format_micro_time(now)
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            written = await self.client.create_lease(self.namespace, body)
        except Conflict:
            # Another candidate created it first: read who holds it now.
            try:
                current = await self.client.get_lease(self.namespace, self.name)
            except NotFound:
                self.observed_holder = ""
            else:
                self.observed_holder = (current.get("spec") or {}).get("holderIdentity") or ""
            log.info("leader_lease_race_lost", lease=self._lease_ref(), holder=self.observed_holder or None)
            return False
        log.info("leader_lease_created", lease=self._lease_ref(), identity=self.identity)
        self._written(written, now)
        return True

    def _written(self, lease: dict, now: float) -> None:
        self._lease = lease
        self._last_renewed = now
        self.observed_holder = self.identity

    def _expired(self, spec: dict, now: float) -> bool:
        renewed = parse_micro_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds")
        if renewed is None or not isinstance(duration, int) or isinstance(duration, bool):
            return True
        return renewed + duration < now

    # The campaign --------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire the Lease, renew it while leading, and campaign again after losing
        it, until cancelled."""
        log.info("leader_election_started", lease=self._lease_ref(), identity=self.identity)
        while True:
            while not await self.try_acquire_or_renew():
                await self.sleep(self.retry_seconds)
            self._set_leading(True)
            await self._renew_while_leading()
            self._set_leading(False)
            await self.sleep(self.retry_seconds)

    async def _renew_while_leading(self) -> None:
        """Renew every `renew_seconds`; return when leadership is lost."""
        while True:
            await self.sleep(self.renew_seconds)
            while True:
                assert self._last_renewed is not None
                remaining = self._last_renewed + self.renew_deadline_seconds - self.clock()
                if remaining <= 0:
                    log.error(
                        "leader_lost",
                        lease=self._lease_ref(),
                        identity=self.identity,
                        reason="renewal failed",
                        seconds_since_renewal=round(self.clock() - self._last_renewed, 3),
                    )
                    return
                try:
                    # A hanging request must not keep this replica leading past the deadline.
                    # On Python 3.11, wait_for can swallow a cancellation that arrives as
                    # the request completes (CPython issue 86296), and asyncio.timeout does not.
                    async with asyncio.timeout(remaining):
                        renewed = await self.try_acquire_or_renew()
                except TimeoutError:
                    renewed = False
                if renewed:
                    break
                if self.observed_holder and self.observed_holder != self.identity:
                    log.error(
                        "leader_lost",
                        lease=self._lease_ref(),
                        identity=self.identity,
                        reason="another replica holds the lease",
                        holder=self.observed_holder,
                    )
                    return
                await self.sleep(min(self.retry_seconds, max(0.0, self._last_renewed + self.renew_deadline_seconds - self.clock())))

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self.deposed.clear()
            self.elected.set()
            log.info("leader_elected", lease=self._lease_ref(), identity=self.identity)
        else:
            self.elected.clear()
            self.deposed.set()

    # Shutdown ------------------------------------------------------------------------

    async def release(self) -> None:
        """Give the Lease up, if this replica's write is the latest one, so a standby
        can take it at once.

        Call after scheduling has stopped and `run()` was cancelled. The holder is
        emptied and the duration set to one second, as client-go does. The write
        carries the resourceVersion of this replica's last write, so a Conflict means
        another replica wrote since and keeps the Lease; any other error leaves the
        Lease to expire.
        """
        if self.is_leader:
            self._set_leading(False)
        lease = self._lease
        self._lease = None
        if lease is None:
            return
        now = self.clock()
        spec = dict(lease.get("spec") or {})
        spec.update(
            holderIdentity="",
            leaseDurationSeconds=1,
            acquireTime=format_micro_time(now),
            renewTime=format_micro_time(now),
        )
        body = {**lease, "apiVersion": LEASE_API_VERSION, "kind": "Lease", "spec": spec}
        try:
            await self.client.replace_lease(self.namespace, self.name, body)
        except Conflict:
            log.info("leader_release_skipped", lease=self._lease_ref(), reason="the lease changed since the last renewal")
            return
        except KubeError as error:
            log.warning("leader_release_failed", lease=self._lease_ref(), status=error.status, error=str(error))
            return
        log.info("leader_released", lease=self._lease_ref(), identity=self.identity)

    def _lease_ref(self) -> str:
        return f"{self.client.region}/{self.namespace}/{self.name}"

