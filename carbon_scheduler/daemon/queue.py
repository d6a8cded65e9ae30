"""The scheduling queue: which pod to decide next, and when a held pod comes back.

The queue contains keys (`podinfo.pod_key`), each at most once and in one state:

                   add(key)              pop() / pop_ready()
    (not tracked) ──────────► READY ─────────────────────────► IN FLIGHT
                                ▲                                  │
                                │                                  │ defer(key, until)
                                │                                  │ wait(key, until)
                                │                                  │ unschedulable(key)
                                │                                  ▼
                                │  its time comes,        DEFERRED      until `until`
                                └───────────────────────  WAITING       until `until`
                                   or its wake call       UNSCHEDULABLE until now + backoff

    remove(key) forgets the key in any state, and its backoff with it.

A held key becomes ready at its time: `until` for deferred and waiting keys,
now + backoff for unschedulable ones. The backoff starts at
`backoff_initial_seconds` (1 s) and doubles with every `unschedulable()` call for
the key, up to `backoff_max_seconds` (60 s); only `remove()` resets it.

Wake calls make every key held for one reason ready now:

- `wake_deferred()`: DEFERRED keys, e.g. on a new carbon sample, so a deferred
  task plans again when starting now became cleaner.
- `wake_waiting()`: WAITING keys, e.g. when a pod finishes and frees room.
- `wake_unschedulable()`: UNSCHEDULABLE keys, e.g. when a pod finishes or a node
  changes. A finished pod frees room for both kinds, so the caller then calls
  both `wake_waiting()` and `wake_unschedulable()`.

A wake call also reaches keys IN FLIGHT: if the worker then reports the outcome
that the wake call names (say `unschedulable()` after a `wake_unschedulable()`
during the decision), the key is ready at once. Otherwise a pod that finished
while the decision was being made would leave its room unused until the backoff
ends.

Contract for workers: every key that `pop()` returns must end its flight with
exactly one of `defer()`, `wait()`, `unschedulable()` or `remove()`. `add()` of a
key that is tracked (held or in flight) changes nothing, so watch events can call
it freely. A worker should check that the popped pod still exists and is pending:
a `remove()` during the flight ends it, and a later outcome call tracks the key
again.

Order: `pop()` returns the key with the earliest ready time, first in first out
among equal times. The ready time of an added key is the time of `add()`, of a
woken key the time of the wake call, and of a timed key its time. So a key whose
deferral ended before another key was added is returned first.

Time: `clock` returns Unix seconds. `pop()` waits on an asyncio.Event, which
every change sets, with a timer for the next ready time. The timer sleeps at most
`max_sleep_seconds` of event-loop time before it reads `clock` again, so a
wall-clock step is noticed within that bound. Tests that drive a fake clock
advance it and call `poke()`, which makes waiting `pop()` calls read the clock
again at once.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import time
from collections.abc import Callable

__all__ = ["KeyState", "SchedulingQueue"]


class KeyState(enum.StrEnum):
    """Reason the queue tracks a key."""

    READY = "ready"
    IN_FLIGHT = "in_flight"
    DEFERRED = "deferred"
    WAITING = "waiting"
    UNSCHEDULABLE = "unschedulable"


_HELD_STATES = (KeyState.READY, KeyState.DEFERRED, KeyState.WAITING, KeyState.UNSCHEDULABLE)

# 2**64 times any positive initial backoff is beyond every sensible maximum, and a
# larger exponent would overflow the float conversion.
_MAX_DOUBLINGS = 64


class SchedulingQueue:
    """Keys waiting to be decided, with deferral, waiting and backoff. See the module
    docstring for the states and the effect of each call."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        max_sleep_seconds: float = 10.0,
    ) -> None:
        if not backoff_initial_seconds > 0:
            raise ValueError(f"backoff_initial_seconds must be positive, got {backoff_initial_seconds!r}")
        if not backoff_max_seconds >= backoff_initial_seconds:
            raise ValueError(
                f"backoff_max_seconds ({backoff_max_seconds!r}) must be at least "
                f"backoff_initial_seconds ({backoff_initial_seconds!r})"
            )
        if not max_sleep_seconds > 0:
            raise ValueError(f"max_sleep_seconds must be positive, got {max_sleep_seconds!r}")
        self._clock = clock
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._max_sleep = max_sleep_seconds

        # Held keys: key -> (state, ready time, sequence number). The heap orders
        # (ready time, sequence, key) tuples. A heap entry whose sequence number
        # differs from the key's current one is stale and skipped at the top.
        self._held: dict[str, tuple[KeyState, float, int]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._sequence = 0
        # Keys per held state, in insertion order, so wake calls and counts need
        # not scan every key.
        self._by_state: dict[KeyState, dict[str, None]] = {state: {} for state in _HELD_STATES}
        # Keys in flight -> the states whose wake call came during the flight.
        self._in_flight: dict[str, set[KeyState]] = {}
        self._attempts: dict[str, int] = {}
        self._changed = asyncio.Event()

    # --- adding and outcomes ------------------------------------------------------

    def add(self, key: str) -> bool:
        """Make an untracked key ready now. Return False, changing nothing, when the
        key is already held or in flight."""
        if key in self._held or key in self._in_flight:
            return False
        self._hold(key, KeyState.READY, self._clock())
        self._notify()
        return True

    def defer(self, key: str, until: float) -> None:
        """Hold the key until `until` (Unix seconds), or until `wake_deferred()`."""
        self._finish(key, KeyState.DEFERRED, until)

    def wait(self, key: str, until: float) -> None:
        """Hold the key until `until` (Unix seconds), or until `wake_waiting()`."""
        self._finish(key, KeyState.WAITING, until)

    def unschedulable(self, key: str) -> float:
        """Hold the key for its next backoff, or until `wake_unschedulable()`.

        Return the time it becomes ready unless woken first.
        """
        attempts = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempts
        doublings = min(attempts - 1, _MAX_DOUBLINGS)
        delay = min(self._backoff_initial * 2.0**doublings, self._backoff_max)
        until = self._clock() + delay
        return self._finish(key, KeyState.UNSCHEDULABLE, until)

    def remove(self, key: str) -> bool:
        """Forget the key, its flight and its backoff. Return whether it was tracked."""
        self._attempts.pop(key, None)
        tracked = self._in_flight.pop(key, None) is not None
        entry = self._held.pop(key, None)
        if entry is not None:
            del self._by_state[entry[0]][key]
            tracked = True
            self._compact_if_stale()
        return tracked

    def _finish(self, key: str, state: KeyState, until: float) -> float:
        """End the key's flight, if any, and hold it in `state` until `until`."""
        now = self._clock()
        woken = self._in_flight.pop(key, None)
        if woken is not None and state in woken:
            until = min(until, now)
        self._hold(key, state, until)
        self._notify()
        return until

    # --- wake calls ---------------------------------------------------------------

    def wake_deferred(self) -> int:
        """Make every deferred key ready now. Return how many keys it woke."""
        return self._wake(KeyState.DEFERRED)

    def wake_waiting(self) -> int:
        """Make every waiting key ready now. Return how many keys it woke."""
        return self._wake(KeyState.WAITING)

    def wake_unschedulable(self) -> int:
        """Make every unschedulable key ready now. Their backoff keeps counting,
        so the next `unschedulable()` waits twice as long. Return how many keys it
        woke."""
        return self._wake(KeyState.UNSCHEDULABLE)

    def _wake(self, state: KeyState) -> int:
        for woken in self._in_flight.values():
            woken.add(state)
        keys = self._by_state[state]
        if not keys:
            return 0
        now = self._clock()
        # Wake keys in their current order, so a key due earlier stays ahead.
        ordered = sorted(keys, key=lambda key: self._held[key][1:])
        for key in ordered:
            self._hold(key, KeyState.READY, min(self._held[key][1], now))
        self._notify()
        return len(ordered)

    def poke(self) -> None:
        """Make waiting `pop()` calls read the clock again now, e.g. after a test
        advanced its fake clock."""
        self._notify()

    # --- taking keys ----------------------------------------------------------------

    async def pop(self) -> str:
        """Wait until a key is ready, mark it in flight and return it."""
        while True:
            now = self._clock()
            key = self._take(now)
            if key is not None:
                return key
            changed = self._changed
            next_time = self.next_wake()
            delay = None if next_time is None else min(max(next_time - now, 0.0), self._max_sleep)
            try:
                async with asyncio.timeout(delay):
                    await changed.wait()
            except TimeoutError:
                pass

    def pop_ready(self) -> list[str]:
        """Mark every key that is ready now in flight and return them in order,
        without waiting."""
        now = self._clock()
        keys = []
        while (key := self._take(now)) is not None:
            keys.append(key)
        return keys

    def _take(self, now: float) -> str | None:
        heap = self._heap
        while heap:
            ready_at, sequence, key = heap[0]
            entry = self._held.get(key)
            if entry is None or entry[2] != sequence:
                heapq.heappop(heap)
                continue
            if ready_at > now:
                return None
            heapq.heappop(heap)
            del self._held[key]
            del self._by_state[entry[0]][key]
            self._in_flight[key] = set()
            return key
        return None

    # --- inspection -----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of held keys: ready, deferred, waiting or unschedulable, but not in
        flight."""
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held or key in self._in_flight

    @property
    def deferred_count(self) -> int:
        """Number of deferred keys, including any whose time has come but that no
        pop() has taken yet."""
        return len(self._by_state[KeyState.DEFERRED])

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    def counts(self) -> dict[KeyState, int]:
        """Number of tracked keys per state, for metrics."""
        counts = {state: len(keys) for state, keys in self._by_state.items()}
        counts[KeyState.IN_FLIGHT] = len(self._in_flight)
        return counts

    def state_of(self, key: str) -> KeyState | None:
        """Return why the key is tracked, or None when it is not. A held key keeps its
        state after its time comes, until it is popped."""
        if key in self._in_flight:
            return KeyState.IN_FLIGHT
        entry = self._held.get(key)
        return None if entry is None else entry[0]

    def ready_at(self, key: str) -> float | None:
        """Return the time a held key becomes (or became) ready, or None for a key
        that is not held."""
        entry = self._held.get(key)
        return None if entry is None else entry[1]

    def backoff_attempts(self, key: str) -> int:
        """Return how many times the key was reported unschedulable since it was
        last removed."""
        return self._attempts.get(key, 0)

    def next_wake(self) -> float | None:
        """Return the earliest ready time of a held key, or None when none is held.
        A time at or before now means a key is ready."""
        heap = self._heap
        while heap:
            ready_at, sequence, key = heap[0]
            entry = self._held.get(key)
            if entry is not None and entry[2] == sequence:
                return ready_at
            heapq.heappop(heap)
        return None

    # --- internals ------------------------------------------------------------------

    def _hold(self, key: str, state: KeyState, ready_at: float) -> None:
        old = self._held.get(key)
        if old is not None:
            del self._by_state[old[0]][key]
        self._sequence += 1
        self._held[key] = (state, ready_at, self._sequence)
        self._by_state[state][key] = None
        heapq.heappush(self._heap, (ready_at, self._sequence, key))
        self._compact_if_stale()

    def _notify(self) -> None:
        # A fresh Event per change: every pop() waiting on the old one wakes, and
        # none can miss a change between its check and its wait.
        self._changed.set()
        self._changed = asyncio.Event()

    def _compact_if_stale(self) -> None:
        # Entries of removed or re-held keys are skipped when they reach the top of
        # the heap. Rebuild it when they dominate, so keys removed or re-held far
        # in the future do not pile them up.
        if len(self._heap) <= 2 * len(self._held) + 64:
            return
        self._heap = [(ready_at, sequence, key) for key, (_, ready_at, sequence) in self._held.items()]
        heapq.heapify(self._heap)
