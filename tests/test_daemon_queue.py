"""The scheduling queue, driven by a fake clock: states, exact ready times, wake
calls, order, and pop() waiting on the clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from carbon_scheduler.daemon.queue import KeyState, SchedulingQueue

T0 = 1_709_251_200.0


class FakeClock:
    """Unix seconds that move only when a test advances them."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> SchedulingQueue:
    return SchedulingQueue(clock=clock)


def popped(queue: SchedulingQueue, *keys: str) -> None:
    """Add keys and pop them, so they are in flight."""
    for key in keys:
        queue.add(key)
    assert queue.pop_ready() == list(keys)


async def settle() -> None:
    """Let other tasks on the event loop run until they block."""
    for _ in range(5):
        await asyncio.sleep(0)


# --- add and pop_ready ------------------------------------------------------------


def test_add_is_fifo_and_unique(queue: SchedulingQueue) -> None:
    assert queue.add("a") is True
    assert queue.add("b") is True
    assert queue.add("a") is False

    assert len(queue) == 2
    assert queue.pop_ready() == ["a", "b"]
    assert len(queue) == 0
    assert queue.in_flight_count == 2
    assert queue.pop_ready() == []


def test_add_of_key_in_flight_changes_nothing(queue: SchedulingQueue) -> None:
    popped(queue, "a")

    assert queue.add("a") is False
    assert queue.state_of("a") is KeyState.IN_FLIGHT
    assert queue.pop_ready() == []


def test_add_of_held_key_keeps_its_time(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "a")
    queue.defer("a", T0 + 100)

    assert queue.add("a") is False
    assert queue.state_of("a") is KeyState.DEFERRED
    assert queue.ready_at("a") == T0 + 100


# --- timed states: exactly when keys become ready ---------------------------------


@pytest.mark.parametrize(
    ("hold", "state"),
    [
        pytest.param(lambda q, key, until: q.defer(key, until), KeyState.DEFERRED, id="defer"),
        pytest.param(lambda q, key, until: q.wait(key, until), KeyState.WAITING, id="wait"),
    ],
)
def test_timed_key_ready_exactly_at_until(queue: SchedulingQueue, clock: FakeClock, hold, state: KeyState) -> None:
    popped(queue, "a")
    hold(queue, "a", T0 + 300)

    assert queue.state_of("a") is state
    assert queue.next_wake() == T0 + 300
    clock.advance(299.999)
    assert queue.pop_ready() == []
    clock.advance(0.001)
    assert queue.pop_ready() == ["a"]
    assert queue.state_of("a") is KeyState.IN_FLIGHT


def test_until_in_the_past_is_ready_now(queue: SchedulingQueue) -> None:
    popped(queue, "a")
    queue.defer("a", T0 - 5)

    assert queue.pop_ready() == ["a"]


def test_unschedulable_backoff_doubles_to_maximum(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "a")
    delays = []
    for _ in range(9):
        start = clock.now
        ready = queue.unschedulable("a")
        delays.append(ready - start)
        clock.advance(ready - start - 0.5)
        assert queue.pop_ready() == []
        clock.advance(0.5)
        assert queue.pop_ready() == ["a"]

    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert queue.backoff_attempts("a") == 9


def test_backoff_settings_are_used(clock: FakeClock) -> None:
    queue = SchedulingQueue(clock=clock, backoff_initial_seconds=0.5, backoff_max_seconds=3)
    popped(queue, "a")

    delays = []
    for _ in range(5):
        delays.append(queue.unschedulable("a") - clock.now)
        assert queue.pop_ready() == []
        queue.wake_unschedulable()
        assert queue.pop_ready() == ["a"]

    assert delays == [0.5, 1, 2, 3, 3]


def test_backoff_survives_many_attempts(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "a")
    for _ in range(200):
        queue.unschedulable("a")
        queue.wake_unschedulable()
        assert queue.pop_ready() == ["a"]

    assert queue.unschedulable("a") == clock.now + 60


def test_remove_resets_backoff(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "a")
    queue.unschedulable("a")
    queue.wake_unschedulable()
    queue.pop_ready()
    assert queue.unschedulable("a") == T0 + 2

    assert queue.remove("a") is True
    assert queue.state_of("a") is None
    assert queue.backoff_attempts("a") == 0
    popped(queue, "a")
    assert queue.unschedulable("a") == T0 + 1


def test_remove_of_unknown_key(queue: SchedulingQueue) -> None:
    assert queue.remove("nobody") is False


def test_remove_of_held_key_drops_it(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "a", "b")
    queue.defer("a", T0 + 10)
    queue.defer("b", T0 + 20)

    assert queue.remove("a") is True
    assert queue.next_wake() == T0 + 20
    assert queue.deferred_count == 1
    clock.advance(20)
    assert queue.pop_ready() == ["b"]


# --- wake calls ------------------------------------------------------------------


def held_in_every_state(queue: SchedulingQueue) -> None:
    popped(queue, "d1", "d2", "w", "u")
    queue.defer("d2", T0 + 200)
    queue.defer("d1", T0 + 100)
    queue.wait("w", T0 + 100)
    queue.unschedulable("u")


WAKE_CASES = [
    pytest.param("wake_deferred", ["d1", "d2"], id="deferred"),
    pytest.param("wake_waiting", ["w"], id="waiting"),
    pytest.param("wake_unschedulable", ["u"], id="unschedulable"),
]


@pytest.mark.parametrize(("call", "woken"), WAKE_CASES)
def test_wake_call_wakes_only_its_state(queue: SchedulingQueue, call: str, woken: list[str]) -> None:
    held_in_every_state(queue)

    assert getattr(queue, call)() == len(woken)
    assert queue.pop_ready() == woken
    assert len(queue) == 4 - len(woken)
    assert getattr(queue, call)() == 0


def test_wake_unschedulable_keeps_backoff(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "u")
    queue.unschedulable("u")
    queue.wake_unschedulable()
    assert queue.pop_ready() == ["u"]

    assert queue.unschedulable("u") == T0 + 2


def test_wake_call_keeps_due_key_ahead(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "late", "due")
    queue.defer("late", T0 + 100)
    queue.defer("due", T0 + 10)
    clock.advance(50)
    queue.add("new")

    queue.wake_deferred()

    assert queue.pop_ready() == ["due", "new", "late"]


# --- order ------------------------------------------------------------------------


def test_earliest_ready_time_first(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "deferred", "waiting")
    queue.defer("deferred", T0 + 10)
    queue.wait("waiting", T0 + 11)
    clock.advance(12)
    queue.add("added")
    clock.advance(3)

    assert queue.pop_ready() == ["deferred", "waiting", "added"]


def test_equal_ready_times_are_fifo(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "x", "y", "z")
    queue.defer("y", T0 + 5)
    queue.wait("z", T0 + 5)
    queue.defer("x", T0 + 5)
    clock.advance(5)

    assert queue.pop_ready() == ["y", "z", "x"]


# --- wake calls during a flight ----------------------------------------------------

FLIGHT_CASES = [
    pytest.param("wake_deferred", lambda q: q.defer("a", T0 + 900), id="deferred"),
    pytest.param("wake_waiting", lambda q: q.wait("a", T0 + 900), id="waiting"),
    pytest.param("wake_unschedulable", lambda q: q.unschedulable("a"), id="unschedulable"),
]


@pytest.mark.parametrize(("call", "outcome"), FLIGHT_CASES)
def test_wake_during_flight_makes_outcome_ready(queue: SchedulingQueue, call: str, outcome) -> None:
    popped(queue, "a")
    getattr(queue, call)()

    outcome(queue)

    assert queue.ready_at("a") == T0
    assert queue.pop_ready() == ["a"]


def test_other_wake_during_flight_keeps_the_time(queue: SchedulingQueue) -> None:
    popped(queue, "a")
    queue.wake_waiting()
    queue.wake_unschedulable()

    queue.defer("a", T0 + 900)

    assert queue.ready_at("a") == T0 + 900
    assert queue.pop_ready() == []


def test_wake_before_flight_does_not_carry_over(queue: SchedulingQueue) -> None:
    queue.wake_deferred()
    popped(queue, "a")

    queue.defer("a", T0 + 900)

    assert queue.pop_ready() == []


def test_remove_during_flight_ends_it(queue: SchedulingQueue) -> None:
    popped(queue, "a")

    assert queue.remove("a") is True
    assert "a" not in queue
    assert queue.in_flight_count == 0
    assert queue.add("a") is True


# --- inspection ----------------------------------------------------------------------


def test_counts_and_next_wake(queue: SchedulingQueue, clock: FakeClock) -> None:
    assert queue.next_wake() is None
    held_in_every_state(queue)
    popped(queue, "f")
    clock.advance(0.25)
    queue.add("r")

    assert queue.counts() == {
        KeyState.READY: 1,
        KeyState.DEFERRED: 2,
        KeyState.WAITING: 1,
        KeyState.UNSCHEDULABLE: 1,
        KeyState.IN_FLIGHT: 1,
    }
    assert queue.state_of("r") is KeyState.READY
    assert queue.state_of("f") is KeyState.IN_FLIGHT
    assert len(queue) == 5
    assert queue.deferred_count == 2
    assert queue.next_wake() == T0 + 0.25
    assert queue.pop_ready() == ["r"]
    assert queue.next_wake() == T0 + 1
    assert "d1" in queue
    assert "f" in queue
    assert "nobody" not in queue


def test_next_wake_of_ready_key(queue: SchedulingQueue, clock: FakeClock) -> None:
    queue.add("a")
    clock.advance(30)

    assert queue.next_wake() == T0


def test_heap_stays_compact(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, *[f"k{index}" for index in range(10)])
    for index in range(10):
        queue.defer(f"k{index}", T0 + 1000)
    for round_number in range(1000):
        queue.wake_deferred()
        for key in queue.pop_ready():
            queue.defer(key, T0 + 1000 + round_number)
        queue.remove("gone")

    assert len(queue) == 10
    assert len(queue._heap) <= 2 * len(queue) + 64


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"backoff_initial_seconds": 0}, "backoff_initial_seconds must be positive", id="zero-initial"),
        pytest.param({"backoff_max_seconds": 0.5}, "must be at least backoff_initial_seconds", id="max-below-initial"),
        pytest.param({"max_sleep_seconds": -1}, "max_sleep_seconds must be positive", id="negative-sleep"),
    ],
)
def test_invalid_settings(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SchedulingQueue(**options)


# --- pop() waiting --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pop_returns_ready_key_at_once(queue: SchedulingQueue) -> None:
    queue.add("a")

    assert await asyncio.wait_for(queue.pop(), 1) == "a"
    assert queue.state_of("a") is KeyState.IN_FLIGHT


@pytest.mark.asyncio
async def test_pop_waits_for_add(queue: SchedulingQueue) -> None:
    task = asyncio.create_task(queue.pop())
    await settle()
    assert not task.done()

    queue.add("a")

    assert await asyncio.wait_for(task, 1) == "a"


@pytest.mark.asyncio
async def test_pop_waits_for_fake_clock(queue: SchedulingQueue, clock: FakeClock) -> None:
    popped(queue, "a")
    queue.defer("a", T0 + 3600)
    task = asyncio.create_task(queue.pop())
    await settle()
    assert not task.done()

    clock.advance(3599)
    queue.poke()
    await settle()
    assert not task.done()

    clock.advance(1)
    queue.poke()
    assert await asyncio.wait_for(task, 1) == "a"


@pytest.mark.asyncio
async def test_pop_wakes_on_wake_call(queue: SchedulingQueue) -> None:
    popped(queue, "a")
    queue.unschedulable("a")
    task = asyncio.create_task(queue.pop())
    await settle()
    assert not task.done()

    queue.wake_unschedulable()

    assert await asyncio.wait_for(task, 1) == "a"


@pytest.mark.asyncio
async def test_pop_timer_fires_without_poke() -> None:
    queue = SchedulingQueue(clock=time.time)
    popped(queue, "a")
    start = time.monotonic()
    queue.defer("a", time.time() + 0.02)

    assert await asyncio.wait_for(queue.pop(), 2) == "a"
    assert time.monotonic() - start >= 0.015


@pytest.mark.asyncio
async def test_pop_rereads_clock_after_max_sleep(clock: FakeClock) -> None:
    queue = SchedulingQueue(clock=clock, max_sleep_seconds=0.005)
    popped(queue, "a")
    queue.defer("a", T0 + 3600)
    task = asyncio.create_task(queue.pop())
    await settle()

    # A wall-clock step without any call on the queue.
    clock.advance(3600)

    assert await asyncio.wait_for(task, 2) == "a"


@pytest.mark.asyncio
async def test_concurrent_pops_get_distinct_keys(queue: SchedulingQueue) -> None:
    first = asyncio.create_task(queue.pop())
    second = asyncio.create_task(queue.pop())
    await settle()

    queue.add("a")
    queue.add("b")

    assert sorted(await asyncio.wait_for(asyncio.gather(first, second), 1)) == ["a", "b"]


@pytest.mark.asyncio
async def test_cancelled_pop_takes_nothing(queue: SchedulingQueue) -> None:
    task = asyncio.create_task(queue.pop())
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    queue.add("a")

    assert queue.pop_ready() == ["a"]
