"""Outlook integrals and window planning."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_scheduler.model import Resources, Task, TaskClass, PodRequirements
from carbon_scheduler.policy.ledger import CapacityLedger, RegionCapacity
from carbon_scheduler.policy.windows import Outlook, latest_start, plan_window

HOUR = 3600
ORIGIN = 1_700_000_000 - 1_700_000_000 % HOUR
REQUEST = Resources(milli_cpu=1000, memory=2**30)


def outlook(values, region="eu"):
    values = np.asarray(values, dtype=float)
    return Outlook.build(region, ORIGIN, HOUR, values[0], values[1:])


def task(duration=HOUR, deadline_hours=10, arrival=ORIGIN):
    return Task(
        "t1", TaskClass.DEFERRABLE, arrival, duration, "eu",
        PodRequirements(request=REQUEST), deadline=arrival + deadline_hours * HOUR,
    )


def ledger(regions=("eu",), max_pods=4):
    return CapacityLedger({r: RegionCapacity(max_pods, 10**6, 10**13) for r in regions}, origin=ORIGIN)


def test_integral_whole_steps():
    view = outlook([100, 200, 300])
    assert view.integral(ORIGIN, ORIGIN + 2 * HOUR) == 300.0


def test_integral_fractional_steps():
    view = outlook([100, 200])
    assert view.integral(ORIGIN + 1800, ORIGIN + 5400) == 50.0 + 100.0


def test_integral_holds_last_value_past_end():
    view = outlook([100, 200])
    assert view.integral(ORIGIN + HOUR, ORIGIN + 4 * HOUR) == 600.0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0, 1000), min_size=2, max_size=30),
    st.integers(0, 40 * HOUR),
    st.integers(0, 10 * HOUR),
)
def test_integrals_match_scalar_and_brute_force(values, offset, length):
    view = outlook(values)
    start, end = ORIGIN + offset, ORIGIN + offset + length
    vector = view.integrals(np.array([start]), length)[0]
    scalar = view.integral(start, end)
    # Brute force: walk the interval piece by piece, splitting at step boundaries.
    brute, t = 0.0, start
    while t < end:
        step = (t - ORIGIN) // HOUR
        piece_end = min(end, ORIGIN + (step + 1) * HOUR)
        brute += values[min(step, len(values) - 1)] * (piece_end - t) / HOUR
        t = piece_end
    assert abs(vector - scalar) < 1e-6 * max(1.0, abs(scalar))
    assert abs(scalar - brute) < 1e-6 * max(1.0, abs(brute))


def test_latest_start_subtracts_duration_and_margin():
    assert latest_start(task(duration=HOUR, deadline_hours=10), 600) == ORIGIN + 9 * HOUR - 600


def test_latest_start_never_before_arrival():
    assert latest_start(task(duration=HOUR, deadline_hours=1), 600) == ORIGIN


def test_plan_picks_cleanest_hour():
    values = [300, 300, 100, 300, 300, 300]
    window, now_g = plan_window(
        task(), ORIGIN, last_start=ORIGIN + 4 * HOUR,
        outlooks={"eu": outlook(values)}, power_kw={"eu": 1.0}, ledger=ledger(),
    )
    assert window is not None
    assert window.start == ORIGIN + 2 * HOUR
    assert window.estimated_g == 100.0
    assert now_g.estimated_g == 300.0
    assert now_g.start == ORIGIN


def test_plan_prefers_other_region_when_cleaner():
    window, _ = plan_window(
        task(), ORIGIN, last_start=ORIGIN + 3 * HOUR,
        outlooks={"eu": outlook([300] * 6, "eu"), "us": outlook([50] * 6, "us")},
        power_kw={"eu": 1.0, "us": 1.0}, ledger=ledger(("eu", "us")),
    )
    assert window.region == "us"
    assert window.start == ORIGIN


def test_plan_ties_go_to_earliest_start():
    window, _ = plan_window(
        task(), ORIGIN, last_start=ORIGIN + 3 * HOUR,
        outlooks={"eu": outlook([100] * 6)}, power_kw={"eu": 1.0}, ledger=ledger(),
    )
    assert window.start == ORIGIN


def test_plan_skips_booked_window():
    book = ledger(max_pods=1)
    book.book("eu", ORIGIN + 2 * HOUR, ORIGIN + 3 * HOUR, REQUEST)
    values = [300, 250, 100, 300, 300, 300]
    window, _ = plan_window(
        task(), ORIGIN, last_start=ORIGIN + 4 * HOUR,
        outlooks={"eu": outlook(values)}, power_kw={"eu": 1.0}, ledger=book,
    )
    assert window.start == ORIGIN + HOUR
    assert window.estimated_g == 250.0


def test_plan_none_when_everything_booked():
    book = ledger(max_pods=1)
    book.book("eu", ORIGIN, ORIGIN + 10 * HOUR, REQUEST)
    window, now_g = plan_window(
        task(), ORIGIN, last_start=ORIGIN + 4 * HOUR,
        outlooks={"eu": outlook([100] * 6)}, power_kw={"eu": 1.0}, ledger=book,
    )
    assert window is None
    assert now_g is None


def test_plan_never_starts_after_last_start():
    values = [300] * 5 + [10] * 10
    window, _ = plan_window(
        task(), ORIGIN, last_start=ORIGIN + 2 * HOUR,
        outlooks={"eu": outlook(values)}, power_kw={"eu": 1.0}, ledger=ledger(),
    )
    assert window.start <= ORIGIN + 2 * HOUR
