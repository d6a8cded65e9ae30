"""The daemon's scheduling loop: one decision at a time, API calls in the background.

Cache events feed the per-region placement state and put pending pods of this
scheduler into the queue. The loop pops a pod, turns it into a `Task`, asks
`policy.rules.decide` (the same function replay uses) and carries the decision
out:

- `Bind` in the pod's own cluster: the placement is assumed in the region state
  and the ledger first, then the Binding call runs in the background, so the next
  decision already sees the node as used. A 409 means another scheduler bound
  the pod: the assumption is dropped and the pod is left alone. Other failures
  drop the assumption and retry the pod with backoff.
- `Bind` in another cluster: a move (see `daemon.moves`).
- `Defer`: the window is booked in the ledger and the pod sleeps until it opens,
  or until a new carbon sample makes the queue plan it again.
- `Wait`: a standard pod waits for room in its greenest region.
- `Unschedulable`: a FailedScheduling Event with the reasons per region, then
  retry with backoff, earlier when a pod finishes or a node changes.

Pods owned by a ReplicaSet, StatefulSet, DaemonSet or any other controller are
placed only in their own cluster, because their controller would replace a pod
moved away. A pod of a Job moves with its Job (see `daemon.moves`), unless another
controller owns the Job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import structlog

from carbon_scheduler.carbon.traces import format_time
from carbon_scheduler.config.types import Config
from carbon_scheduler.daemon import explain
from carbon_scheduler.daemon.carbon_feed import wall_step_seconds
from carbon_scheduler.daemon.kubeapi import Conflict, KubeError, NotFound
from carbon_scheduler.daemon.metrics_export import count_api_error, count_binding_error
from carbon_scheduler.telemetry.metrics import SchedulerMetrics
from carbon_scheduler.daemon.moves import (
    controller_kind,
    copy_for_target,
    job_copy_for_target,
    job_owner,
    origin_of,
)
from carbon_scheduler.daemon.podinfo import (
    is_finished,
    is_ours,
    is_unbound_pending,
    parse_rfc3339,
    pod_key,
    task_from_pod,
)
from carbon_scheduler.daemon.queue import SchedulingQueue
from carbon_scheduler.daemon.runtime import RegionRuntime
from carbon_scheduler.model import Task
from carbon_scheduler.policy.decisions import Bind, Defer, Unschedulable, Wait
from carbon_scheduler.policy.energy import facility_power_kw
from carbon_scheduler.policy.ledger import DEFAULT_SLOT_SECONDS, CapacityLedger, region_capacity
from carbon_scheduler.policy.rules import decide

log = structlog.get_logger(__name__)

MAX_INFLIGHT_CALLS = 64


class Scheduler:
    def __init__(
        self,
        config: Config,
        regions: dict[str, RegionRuntime],
        queue: SchedulingQueue,
        *,
        metrics: SchedulerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.scheduler
        self.regions = regions
        self.queue = queue
        self.metrics = metrics
        self.clock = clock
        capacity = {name: region_capacity(rt.spec.max_pods, rt.spec.nodes) for name, rt in regions.items()}
        # A replayed trace plays an hour in seconds, so windows are seconds long and
        # the ledger's slots must be too: a twelfth of the shortest step, at most the
        # usual five minutes.
        shortest_step = min((wall_step_seconds(rt.spec) for rt in regions.values()), default=3600.0)
        slot_seconds = max(1, min(DEFAULT_SLOT_SECONDS, int(shortest_step // 12)))
        self.ledger = CapacityLedger(capacity, origin=int(clock()) - 3600, slot_seconds=slot_seconds)
        self.bookings: dict[str, tuple[str, int, int, Task]] = {}
        self.reported: dict[str, str] = {}
        self.problems_reported: set[str] = set()
        self.moving: set[str] = set()
        # Regions a pod cannot move to because a different object there has its name.
        self.blocked: dict[str, set[str]] = {}
        self.started_at = clock()
        self._waiting_logged: set[str] = set()
        self.copies: dict[str, tuple[str, dict]] = {}
        self.inflight: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(MAX_INFLIGHT_CALLS)
        self.accepting = True

    # Cache events ------------------------------------------------------------------

    def on_cache_event(self, region: str, kind: str, event_type: str, obj: dict) -> None:
        """Update placement state and the queue from one cache event."""
        runtime = self.regions[region]
        if event_type == "RELISTED":
            runtime.state.rebuild(runtime.cache.nodes.values(), runtime.cache.pods.values())
            self._refresh_capacity(runtime)
            self.queue.wake_unschedulable()
            return
        if kind.lower() == "node":
            if event_type == "DELETED":
                runtime.state.remove_node(obj["metadata"]["name"])
            else:
                runtime.state.set_node(obj)
            self._refresh_capacity(runtime)
            self.queue.wake_unschedulable()
            self.queue.wake_waiting()
            return

        uid = obj["metadata"]["uid"]
        key = pod_key(region, obj)
        if event_type == "DELETED":
            runtime.state.drop_pod(uid)
            self.queue.remove(key)
            self._release(uid)
            origin = origin_of(obj)
            if origin is not None:
                self.copies.pop(origin[1], None)
            self.queue.wake_unschedulable()
            self.queue.wake_waiting()
            return

        was_counted = runtime.state.counted(uid)
        runtime.state.observe_pod(obj)
        origin = origin_of(obj)
        if origin is not None:
            self.copies[origin[1]] = (region, obj)
        if not is_ours(obj):
            if was_counted and not runtime.state.counted(uid):
                self.queue.wake_unschedulable()
            return
        if is_unbound_pending(obj) and uid not in self.moving:
            self.queue.add(key)
        elif is_finished(obj):
            self._release(uid)
            if was_counted:
                self.queue.wake_unschedulable()
                self.queue.wake_waiting()

    def _refresh_capacity(self, runtime: RegionRuntime) -> None:
        nodes = list(runtime.state.nodes.values()) or list(runtime.spec.nodes)
        self.ledger.set_capacity(runtime.name, region_capacity(runtime.spec.max_pods, nodes))

    def on_carbon_step(self, region: str) -> None:
        """Wake every deferred pod to plan again, because a region's feed started a new step."""
        self.queue.wake_deferred()

    # The loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Decide for queued pods until cancelled."""
        log.info("scheduler_started", regions=list(self.regions))
        try:
            while self.accepting:
                key = await self.queue.pop()
                try:
                    await self.schedule(key)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # one pod's failure must not stop the loop
                    log.exception("schedule_failed", pod=key, error=str(error))
                    self.queue.unschedulable(key)
        finally:
            log.info("scheduler_stopped")

    async def drain(self) -> None:
        """Stop taking new work and wait for in-flight API calls to finish."""
        self.accepting = False
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)

    async def schedule(self, key: str) -> None:
        region_name, _, _, uid = key.split("/", 3)
        home = self.regions.get(region_name)
        pod = home.cache.pods.get(uid) if home else None
        if home is None or pod is None or not is_ours(pod) or not is_unbound_pending(pod):
            self.queue.remove(key)
            return
        if uid in self.moving:
            self.queue.remove(key)
            return
        if uid in self.copies:
            self.queue.remove(key)
            await self._finish_move(home, pod)
            return

        if not self._all_listed() and _created(pod) < self.started_at:
            # A copy of this pod, moved by an earlier daemon, may sit in a region not
            # yet listed; placing the pod now could run it twice, so it waits.
            if uid not in self._waiting_logged:
                self._waiting_logged.add(uid)
                log.info("waiting_for_regions", pod=key, regions=self._unlisted())
            self.queue.unschedulable(key)
            return

        started = time.perf_counter()
        task, problems = task_from_pod(
            pod, region=region_name, settings=self.settings, region_names=tuple(self.regions), now=self.clock()
        )
        await self._report_problems(home, pod, problems)
        job = job_owner(pod)
        if job is not None:
            if await self._finish_job_move_if_copied(home, pod, job):
                self.queue.remove(key)
                return
            if not await self._job_may_move(home, pod, job):
                task = dataclasses.replace(task, allowed_regions=(region_name,))
        elif controller_kind(pod) is not None:
            task = dataclasses.replace(task, allowed_regions=(region_name,))
        blocked = self.blocked.get(uid)
        if blocked:
            allowed = task.allowed_regions or tuple(self.regions)
            task = dataclasses.replace(task, allowed_regions=tuple(r for r in allowed if r not in blocked))

        self._release(uid)
        now = int(self.clock())
        views = [runtime.view() for runtime in self.regions.values()]
        outlooks = {name: rt.feed.outlook for name, rt in self.regions.items() if rt.feed.outlook is not None}
        decision = decide(task, now, views, self.settings, outlooks=outlooks, ledger=self.ledger)
        log.debug(
            "pod_decided",
            pod=key,
            decision=type(decision).__name__,
            regions={v.name: [v.up, v.task_pods, v.intensity_g_per_kwh] for v in views},
        )
        self.metrics.decision_seconds.observe(time.perf_counter() - started)

        if isinstance(decision, Bind):
            outcome = "bind" if decision.region == region_name else "move"
            self.metrics.decisions.labels(task.task_class.value, outcome).inc()
            # The queue drops the pod now, and a failed call puts it back with backoff.
            self.queue.remove(key)
            self._assume(home, pod, task, decision, now)
            target = self.regions[decision.region]
            self._start_call(
                self._place(home, pod, task, decision, now),
                on_error=lambda: (self._undo(home, target, pod, target is not home), self.queue.unschedulable(key)),
            )
        elif isinstance(decision, Defer):
            self.metrics.decisions.labels(task.task_class.value, "defer").inc()
            window = decision.window
            self.ledger.book(window.region, window.start, window.end, task.requirements.request)
            self.bookings[uid] = (window.region, window.start, window.end, task)
            self.queue.defer(key, decision.until)
            message = (
                f"waiting for a cleaner window in {window.region} from {format_time(window.start)} "
                f"(estimated {window.estimated_g:.2f} g against {_grams(decision.start_now_g)} g now): {decision.reason}"
            )
            await self._event_once(home, pod, "Deferred", message)
        elif isinstance(decision, Wait):
            self.metrics.decisions.labels(task.task_class.value, "wait").inc()
            self.queue.wait(key, decision.until)
        elif isinstance(decision, Unschedulable):
            self.metrics.decisions.labels(task.task_class.value, "unschedulable").inc()
            self.queue.unschedulable(key)
            await self._event_once(home, pod, "FailedScheduling", decision.message, event_type="Warning")
        self._update_gauges()

    # Carrying decisions out ----------------------------------------------------------

    def _start_call(self, coroutine, *, on_error: Callable[[], object]) -> None:
        task = asyncio.get_running_loop().create_task(self._limited(coroutine, on_error))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _limited(self, coroutine, on_error: Callable[[], object]) -> None:
        async with self.slots:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug in one placement must not lose the pod
                log.exception("placement_failed", error=str(error))
                on_error()

    def _assume(self, home: RegionRuntime, pod: dict, task: Task, decision: Bind, now: int) -> None:
        """Count the placement before any API call, so the next decision sees it."""
        target = self.regions[decision.region]
        uid = pod["metadata"]["uid"]
        self.ledger.book(target.name, now, now + task.duration, task.requirements.request)
        self.bookings[uid] = (target.name, now, now + task.duration, task)
        if target is home:
            home.state.assume(pod, decision.node)
        else:
            self.moving.add(uid)
            target.state.assume(_placeholder(pod), decision.node)

    async def _place(self, home: RegionRuntime, pod: dict, task: Task, decision: Bind, now: int) -> None:
        target = self.regions[decision.region]
        uid = pod["metadata"]["uid"]
        key = pod_key(home.name, pod)
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        started = time.perf_counter()
        moving = target is not home
        try:
            if moving and job_owner(pod) is not None:
                await self._move_job(home, target, pod, decision)
            elif moving:
                await self._move(home, target, pod, decision.node, decision)
            else:
                await home.client.bind_pod(namespace, name, decision.node, uid=uid)
        except Conflict as error:
            self._undo(home, target, pod, moving)
            self.metrics.binding_errors.labels(target.name, "conflict").inc()
            if not moving:
                # Another scheduler bound the pod: it is placed, so leave it alone.
                log.info("bind_conflict", region=target.name, pod=key, node=decision.node, error=error.message)
                return
            # The target already has a different pod (or Job) of this name: place the
            # pod anywhere else instead.
            self.blocked.setdefault(uid, set()).add(target.name)
            log.warning("move_name_taken", region=target.name, pod=key, error=error.message)
            message = f"cannot move to {target.name}: {error.message}; trying the other regions"
            await self._event(home, pod, "FailedScheduling", message, event_type="Warning")
            self.queue.unschedulable(key)
            return
        except NotFound as error:
            self._undo(home, target, pod, moving)
            self.metrics.binding_errors.labels(target.name, "not_found").inc()
            log.info("bind_target_gone", region=target.name, pod=key, node=decision.node, error=error.message)
            return
        except KubeError as error:
            self._undo(home, target, pod, moving)
            count_binding_error(self.metrics, target.name, error)
            log.warning("bind_failed", region=target.name, pod=key, node=decision.node, error=str(error))
            self.queue.unschedulable(key)
            return
        finally:
            self.moving.discard(uid)
            self.metrics.binding_seconds.observe(time.perf_counter() - started)

        self.metrics.scheduled.labels(task.task_class.value, target.name, "move" if moving else "bind").inc()
        created = _created(pod)
        if created > 0:
            self.metrics.wait_seconds.labels(task.task_class.value).observe(max(0.0, self.clock() - created))
        log.info("pod_scheduled", pod=key, region=target.name, node=decision.node, moved=moving, reason=decision.reason)
        if not moving:
            await self._explain_binding(home, pod, task, decision, now)

    def _undo(self, home: RegionRuntime, target: RegionRuntime, pod: dict, moving: bool) -> None:
        uid = pod["metadata"]["uid"]
        self._release(uid)
        if moving:
            target.state.forget(_placeholder(pod)["metadata"]["uid"])
        else:
            home.state.forget(uid)
            cached = home.cache.pods.get(uid)
            if cached is not None:
                home.state.observe_pod(cached)

    async def _move(self, home: RegionRuntime, target: RegionRuntime, pod: dict, node: str, decision: Bind) -> None:
        namespace = pod["metadata"]["namespace"]
        body = copy_for_target(pod, origin_region=home.name, node=node)
        body["metadata"].setdefault("annotations", {}).update(self._annotation(pod, decision, home))
        try:
            created = await target.client.create_pod(namespace, body)
        except Conflict:
            existing = await target.client.get_pod(namespace, pod["metadata"]["name"])
            if origin_of(existing) != (home.name, pod["metadata"]["uid"]):
                raise
            created = existing
        # From here the copy counts under its own uid, which its watch events use.
        target.state.forget(_placeholder(pod)["metadata"]["uid"])
        if not target.state.counted(created["metadata"]["uid"]):
            target.state.assume(created, node)
        message = f"moved to {target.name}, node {node}: {decision.reason} ({decision.intensity_g_per_kwh:.1f} g/kWh)"
        await self._event(home, pod, "Moved", message)
        await self._event(target, created, "Scheduled", f"placed on {node} after a move from {home.name}")
        await self._delete_original(home, pod)

    async def _move_job(self, home: RegionRuntime, target: RegionRuntime, pod: dict, decision: Bind) -> None:
        namespace = pod["metadata"]["namespace"]
        job_name, job_uid = job_owner(pod) or ("", "")
        job = await home.client.get_job(namespace, job_name)
        if job["metadata"].get("uid") != job_uid:
            raise NotFound(
                f"job {namespace}/{job_name} was replaced", region=home.name, verb="get", path=job_name, status=404
            )
        body = job_copy_for_target(job, origin_region=home.name, target_region=target.name)
        try:
            await target.client.create_job(namespace, body)
        except Conflict:
            existing = await target.client.get_job(namespace, job_name)
            if origin_of(existing) != (home.name, job_uid):
                raise
        # The copy's own pod is scheduled in the target when its Job controller makes it.
        target.state.forget(_placeholder(pod)["metadata"]["uid"])
        message = f"moved with its Job {job_name} to {target.name}: {decision.reason}"
        await self._event(home, pod, "Moved", message)
        await self._delete_original_job(home, namespace, job_name, job_uid)

    async def _delete_original_job(self, home: RegionRuntime, namespace: str, name: str, uid: str) -> None:
        try:
            await home.client.delete_job(namespace, name, uid=uid)
        except NotFound:
            pass  # already gone: the move is complete
        log.info("job_move_finished", region=home.name, job=f"{namespace}/{name}", uid=uid)

    async def _finish_job_move_if_copied(self, home: RegionRuntime, pod: dict, job: tuple[str, str]) -> bool:
        """Finish a Job move that a crash cut short: True when a copy of the pod's
        Job exists in another region and the original was deleted."""
        namespace = pod["metadata"]["namespace"]
        name, uid = job
        for runtime in self.regions.values():
            if runtime is home or not runtime.ready:
                continue
            try:
                existing = await runtime.client.get_job(namespace, name)
            except NotFound:
                continue
            except KubeError as error:
                count_api_error(self.metrics, runtime.name, error)
                log.warning("job_copy_check_failed", region=runtime.name, job=f"{namespace}/{name}", error=str(error))
                continue
            if origin_of(existing) == (home.name, uid):
                log.info("job_move_resumed", region=home.name, target=runtime.name, job=f"{namespace}/{name}")
                await self._delete_original_job(home, namespace, name, uid)
                return True
        return False

    async def _job_may_move(self, home: RegionRuntime, pod: dict, job: tuple[str, str]) -> bool:
        """Return whether the pod's Job may move: not when a controller (a CronJob, say)
        owns the Job, because that controller would not know the copy."""
        try:
            body = await home.client.get_job(pod["metadata"]["namespace"], job[0])
        except KubeError as error:
            count_api_error(self.metrics, home.name, error)
            log.warning("job_read_failed", region=home.name, job=job[0], error=str(error))
            return False
        return controller_kind(body) is None

    async def _delete_original(self, home: RegionRuntime, pod: dict) -> None:
        namespace, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
        try:
            await home.client.delete_pod(namespace, name, uid=uid)
        except NotFound:
            pass  # already gone: the move is complete
        log.info("move_finished", region=home.name, pod=f"{namespace}/{name}", uid=uid)

    async def _finish_move(self, home: RegionRuntime, pod: dict) -> None:
        """Delete an original whose copy already exists in another region."""
        uid = pod["metadata"]["uid"]
        target_region, _ = self.copies[uid]
        log.info("move_resumed", region=home.name, target=target_region, uid=uid)
        try:
            await self._delete_original(home, pod)
        except KubeError as error:
            count_binding_error(self.metrics, home.name, error)
            log.warning("move_resume_failed", region=home.name, uid=uid, error=str(error))
            self.queue.unschedulable(pod_key(home.name, pod))

    # Explaining ----------------------------------------------------------------------

    def _counterfactual(self, home: RegionRuntime, task: Task, now: int) -> float | None:
        power = facility_power_kw(task.requirements.request, home.spec)
        outlook = home.feed.outlook
        if outlook is not None:
            return power * outlook.integral(now, now + task.duration)
        if home.feed.intensity is None:
            return None
        return power * home.feed.intensity * task.duration / 3600

    def _annotation(self, pod: dict, decision: Bind, home: RegionRuntime) -> dict[str, str]:
        task, _ = task_from_pod(pod, region=home.name, settings=self.settings, region_names=tuple(self.regions))
        now = int(self.clock())
        window = decision.window
        return explain.decision_annotation(
            region=decision.region,
            node=decision.node,
            intensity_g_per_kwh=decision.intensity_g_per_kwh,
            level=self.regions[decision.region].feed.level.label,
            reason=decision.reason,
            window=window,
            counterfactual_region=home.name,
            counterfactual_g=self._counterfactual(home, task, now),
            decided_at=now,
        )

    async def _explain_binding(self, home: RegionRuntime, pod: dict, task: Task, decision: Bind, now: int) -> None:
        message = (
            f"placed on {decision.node} in {decision.region}: {decision.reason} "
            f"({decision.intensity_g_per_kwh:.1f} g/kWh)"
        )
        await self._event(home, pod, "Scheduled", message)
        try:
            await home.client.patch_pod(
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                {"metadata": {"annotations": self._annotation(pod, decision, home)}},
            )
        except KubeError as error:
            count_api_error(self.metrics, home.name, error)
            log.warning("annotate_failed", region=home.name, pod=pod_key(home.name, pod), error=str(error))

    async def _report_problems(self, runtime: RegionRuntime, pod: dict, problems) -> None:
        for problem in problems:
            marker = f"{pod['metadata']['uid']}/{problem.key}/{problem.value}"
            if marker in self.problems_reported:
                continue
            self.problems_reported.add(marker)
            await self._event(runtime, pod, "InvalidAnnotation", problem_message(problem), event_type="Warning")

    async def _event_once(self, runtime: RegionRuntime, pod: dict, reason: str, message: str, **kwargs) -> None:
        """Send an Event unless the same reason and message were last sent for this pod."""
        uid = pod["metadata"]["uid"]
        if self.reported.get(uid) == f"{reason}:{message}":
            return
        self.reported[uid] = f"{reason}:{message}"
        await self._event(runtime, pod, reason, message, **kwargs)

    async def _event(self, runtime: RegionRuntime, pod: dict, reason: str, message: str, *, event_type="Normal") -> None:
        body = explain.event_body(pod, reason=reason, message=message, event_type=event_type, now=self.clock())
        try:
            await runtime.client.create_event(pod["metadata"]["namespace"], body)
        except KubeError as error:
            count_api_error(self.metrics, runtime.name, error)
            log.warning("event_failed", region=runtime.name, pod=pod_key(runtime.name, pod), reason=reason, error=str(error))

    # Bookkeeping ----------------------------------------------------------------------

    def _all_listed(self) -> bool:
        return all(runtime.cache.synced.is_set() for runtime in self.regions.values())

    def _unlisted(self) -> list[str]:
        return [name for name, runtime in self.regions.items() if not runtime.cache.synced.is_set()]

    def _release(self, uid: str) -> None:
        booking = self.bookings.pop(uid, None)
        if booking is None:
            return
        region, start, end, task = booking
        if end > int(self.clock()):
            self.ledger.release(region, start, end, task.requirements.request)

    def _update_gauges(self) -> None:
        self.metrics.deferred.set(self.queue.deferred_count)
        self.metrics.pending.set(len(self.queue))


def _placeholder(pod: dict) -> dict:
    """Return the pod under a stand-in uid, counted in the target region while its
    copy is being created there."""
    return {**pod, "metadata": {**pod["metadata"], "uid": f"moving-{pod['metadata']['uid']}"}}


def _created(pod: dict) -> float:
    """Creation time of `pod` in Unix seconds; 0 when missing or unreadable."""
    try:
        return parse_rfc3339(pod["metadata"].get("creationTimestamp") or "")
    except ValueError:
        return 0.0


def _grams(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


QUOTED_VALUE_MAX_CHARS = 80
"""Longest annotation value quoted whole in an Event, so that a long value never
pushes the reason and the applied default out of the 1024-byte message."""


def problem_message(problem) -> str:
    """Return the InvalidAnnotation Event message of `problem`, with a long value
    shortened wherever it is quoted."""
    value = problem.value
    reason = problem.reason
    if len(value) > QUOTED_VALUE_MAX_CHARS:
        short = f"{value[:QUOTED_VALUE_MAX_CHARS - 20]}... ({len(value)} characters)"
        reason = reason.replace(repr(value), repr(short)).replace(value, short)
        value = short
    return f"invalid {problem.key} {value!r}: {reason}"
