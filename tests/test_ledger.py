"""Capacity ledger: bookings, room checks and slot arithmetic."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_scheduler.model import Resources
from carbon_scheduler.policy.ledger import CapacityLedger, RegionCapacity, region_capacity
from carbon_scheduler.model import Node

SMALL = Resources(milli_cpu=500, memory=2**30)
ORIGIN = 1_700_000_000 - 1_700_000_000 % 3600


def ledger(max_pods=2, cpu=4000, memory=16 * 2**30):
    return CapacityLedger({"eu": RegionCapacity(max_pods, cpu, memory)}, origin=ORIGIN, slot_seconds=300)


def test_ledger_empty_has_room():
    starts = np.array([ORIGIN, ORIGIN + 3600])
    assert ledger().has_room("eu", starts, 1800, SMALL).tolist() == [True, True]


def test_ledger_pod_cap_blocks_overlap():
    book = ledger(max_pods=1)
    book.book("eu", ORIGIN, ORIGIN + 3600, SMALL)
    starts = np.array([ORIGIN, ORIGIN + 1800, ORIGIN + 3300, ORIGIN + 3600])
    assert book.has_room("eu", starts, 600, SMALL).tolist() == [False, False, False, True]


def test_ledger_release_restores_room():
    book = ledger(max_pods=1)
    book.book("eu", ORIGIN + 100, ORIGIN + 700, SMALL)
    book.release("eu", ORIGIN + 100, ORIGIN + 700, SMALL)
    assert book.has_room("eu", np.array([ORIGIN]), 3600, SMALL).tolist() == [True]


def test_ledger_cpu_limit():
    book = ledger(max_pods=10, cpu=1000)
    book.book("eu", ORIGIN, ORIGIN + 600, SMALL)
    assert book.has_room("eu", np.array([ORIGIN]), 300, SMALL).tolist() == [True]
    book.book("eu", ORIGIN, ORIGIN + 600, SMALL)
    assert book.has_room("eu", np.array([ORIGIN]), 300, SMALL).tolist() == [False]


def test_ledger_request_larger_than_region():
    huge = Resources(milli_cpu=100_000)
    assert ledger().has_room("eu", np.array([ORIGIN]), 300, huge).tolist() == [False]


def test_ledger_rejects_time_before_origin():
    with pytest.raises(ValueError, match="before the ledger origin"):
        ledger().book("eu", ORIGIN - 1, ORIGIN + 10, SMALL)


def test_ledger_grows_past_initial_size():
    book = CapacityLedger({"eu": RegionCapacity(1, 4000, 2**34)}, origin=ORIGIN, slot_seconds=300, slots=4)
    far = ORIGIN + 10 * 86_400
    book.book("eu", far, far + 600, SMALL)
    assert book.booked_pods("eu", far) == 1
    assert book.has_room("eu", np.array([far, far + 600]), 300, SMALL).tolist() == [False, True]


def test_slot_starts_excludes_after_includes_until():
    book = ledger()
    starts = book.slot_starts(ORIGIN + 10, ORIGIN + 900)
    assert starts.tolist() == [ORIGIN + 300, ORIGIN + 600, ORIGIN + 900]


def test_region_capacity_skips_unusable_nodes():
    nodes = [
        Node("a", Resources(milli_cpu=2000, memory=100)),
        Node("b", Resources(milli_cpu=3000, memory=50), ready=False),
        Node("c", Resources(milli_cpu=4000, memory=10), unschedulable=True),
    ]
    assert region_capacity(4, nodes) == RegionCapacity(4, 2000, 100)


intervals = st.lists(
    st.tuples(st.integers(0, 48 * 3600), st.integers(1, 6 * 3600)), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(intervals)
def test_ledger_bookings_never_exceed_cap(requests):
    """Booking only where has_room says yes keeps concurrency within the pod cap
    at every instant."""
    cap = 3
    book = ledger(max_pods=cap, cpu=10**9, memory=10**15)
    accepted = []
    for offset, duration in requests:
        start = ORIGIN + offset
        if book.has_room("eu", np.array([start]), duration, SMALL)[0]:
            book.book("eu", start, start + duration, SMALL)
            accepted.append((start, start + duration))
    edges = sorted({t for interval in accepted for t in interval})
    for t in edges:
        running = sum(1 for start, end in accepted if start <= t < end)
        assert running <= cap


def test_slot_starts_include_after_first():
    book = ledger()
    starts = book.slot_starts(ORIGIN + 10, ORIGIN + 600, include_after=True)
    assert starts.tolist() == [ORIGIN + 10, ORIGIN + 300, ORIGIN + 600]


def test_slot_starts_include_after_alone():
    book = ledger()
    starts = book.slot_starts(ORIGIN + 10, ORIGIN + 20, include_after=True)
    assert starts.tolist() == [ORIGIN + 10]
