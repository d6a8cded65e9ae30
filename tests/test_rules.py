"""Class rules: a table of named cases per class, run through `decide`."""

from dataclasses import dataclass, field

import pytest

from carbon_scheduler.config.types import SchedulerSettings
from carbon_scheduler.model import Taint, TaintEffect, TaskClass
from carbon_scheduler.policy.decisions import Bind, Defer, Unschedulable, Wait
from carbon_scheduler.policy.ledger import CapacityLedger, RegionCapacity
from carbon_scheduler.policy.placement import NOT_ALLOWED, REGION_DOWN
import numpy as np

from carbon_scheduler.policy.rules import decide, start_early_mask
from carbon_scheduler.model import Level

from tests.builders import HOUR, T0, node, outlook, task, view

SETTINGS = SchedulerSettings(standard_max_wait_seconds=900, deadline_margin_seconds=600)
REGIONS = ("eu-west", "us-east", "asia-east")


def ledger(max_pods: int = 4) -> CapacityLedger:
    return CapacityLedger({r: RegionCapacity(max_pods, 8000, 32 * 2**30) for r in REGIONS}, origin=T0 - 86_400)


@dataclass
class Case:
    name: str
    task: object
    regions: list
    expect: type
    region: str | None = None
    now: int = T0
    outlooks: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)


def three(eu=100.0, us=400.0, asia=450.0, full=()):
    """The demo regions at the given intensities; regions named in `full` are at
    their pod cap."""
    return [
        view("eu-west", eu, task_pods=4 if "eu-west" in full else 0),
        view("us-east", us, task_pods=4 if "us-east" in full else 0),
        view("asia-east", asia, task_pods=4 if "asia-east" in full else 0),
    ]


CRITICAL_CASES = [
    Case("greenest region wins", task("critical"), three(), Bind, "eu-west"),
    Case("greenest full goes to next", task("critical"), three(full=("eu-west",)), Bind, "us-east"),
    Case("pue-independent order by intensity", task("critical"), three(eu=500, us=100, asia=300), Bind, "us-east"),
    Case("all full is unschedulable", task("critical"), three(full=REGIONS), Unschedulable,
         reasons={"eu-west": ("region pod cap reached (4 of 4 task pods)",)}),
    Case("allow-list respected", task("critical", allowed=("asia-east",)), three(), Bind, "asia-east"),
    Case("allowed region full is unschedulable", task("critical", allowed=("asia-east",)), three(full=("asia-east",)),
         Unschedulable, reasons={"eu-west": (NOT_ALLOWED,)}),
    Case("region down skipped", task("critical"),
         [view("eu-west", 50.0, up=False), view("us-east", 400.0), view("asia-east", 450.0)], Bind, "us-east"),
    Case("unknown intensity ranks last", task("critical"),
         [view("eu-west", None), view("us-east", 400.0), view("asia-east", 450.0)], Bind, "us-east"),
    Case("unknown intensity still used", task("critical", allowed=("eu-west",)),
         [view("eu-west", None), view("us-east", 400.0), view("asia-east", 450.0)], Bind, "eu-west"),
    Case("too big for every node", task("critical", cpu=64), three(), Unschedulable,
         reasons={"eu-west": ("Insufficient cpu",)}),
]

STANDARD_CASES = [
    Case("greenest region wins", task("standard"), three(), Bind, "eu-west"),
    Case("greenest full waits there", task("standard"), three(full=("eu-west",)), Wait, "eu-west"),
    Case("after max wait takes next", task("standard"), three(full=("eu-west",)), Bind, "us-east", now=T0 + 900),
    Case("after max wait all full", task("standard"), three(full=REGIONS), Unschedulable, now=T0 + 901),
    Case("waits even when only allowed full", task("standard", allowed=("eu-west",)), three(full=("eu-west",)), Wait, "eu-west"),
    Case("region down not waited for", task("standard"),
         [view("eu-west", 50.0, up=False), view("us-east", 400.0), view("asia-east", 450.0)], Bind, "us-east"),
]

# eu-west is cheap now, us-east's forecast has a deep dip three hours ahead.
DIP = {"eu-west": outlook("eu-west", [200] * 30), "us-east": outlook("us-east", [400, 400, 400, 20] + [400] * 26),
       "asia-east": outlook("asia-east", [450] * 30)}
FLAT = {name: outlook(name, [value] * 30) for name, value in (("eu-west", 100), ("us-east", 400), ("asia-east", 450))}

DEFERRABLE_CASES = [
    Case("defers to forecast dip", task("deferrable", deadline=T0 + 12 * HOUR), three(eu=200), Defer,
         "us-east", outlooks=DIP),
    Case("starts now when now is cleanest", task("deferrable", deadline=T0 + 12 * HOUR), three(), Bind,
         "eu-west", outlooks=FLAT),
    Case("dip after latest start ignored", task("deferrable", deadline=T0 + 3 * HOUR), three(eu=200), Bind,
         "eu-west", outlooks=DIP),
    Case("past latest start binds like critical", task("deferrable", deadline=T0 + HOUR), three(eu=200), Bind,
         "eu-west", outlooks=DIP),
    Case("past latest start all full", task("deferrable", deadline=T0 + HOUR), three(full=REGIONS),
         Unschedulable, outlooks=DIP),
    Case("allow-list limits the plan", task("deferrable", deadline=T0 + 12 * HOUR, allowed=("eu-west",)),
         three(eu=200), Bind, "eu-west", outlooks=DIP),
    Case("no forecast falls back to now", task("deferrable", deadline=T0 + 12 * HOUR), three(), Bind,
         "eu-west", outlooks={}),
]


def run_case(case: Case, book: CapacityLedger | None = None):
    return decide(case.task, case.now, case.regions, SETTINGS, outlooks=case.outlooks, ledger=book or ledger())


@pytest.mark.parametrize("case", CRITICAL_CASES + STANDARD_CASES + DEFERRABLE_CASES,
                         ids=lambda c: f"{c.task.task_class}: {c.name}")
def test_class_rule(case):
    decision = run_case(case)
    assert isinstance(decision, case.expect), decision
    if case.region is not None:
        region = decision.window.region if isinstance(decision, Defer) else decision.region
        assert region == case.region
    for region, reasons in case.reasons.items():
        assert decision.reasons[region] == reasons


def test_critical_reports_every_region():
    decision = run_case(Case("", task("critical"), three(full=REGIONS), Unschedulable))
    assert sorted(decision.reasons) == sorted(REGIONS)
    assert "region pod cap reached" in decision.message


def test_down_region_reason():
    regions = [view("eu-west", 50.0, up=False, task_pods=0), view("us-east", 400.0, task_pods=4),
               view("asia-east", 450.0, task_pods=4)]
    decision = run_case(Case("", task("critical"), regions, Unschedulable))
    assert decision.reasons["eu-west"] == (REGION_DOWN,)


def test_standard_skips_region_it_can_never_fit():
    tainted = view("eu-west", 50.0)
    tainted.nodes = tuple(node(f"eu-{i}", taints=(Taint("gpu", TaintEffect.NO_SCHEDULE),)) for i in range(2))
    decision = run_case(Case("", task("standard"), [tainted, view("us-east", 400.0), view("asia-east", 450.0)], Bind))
    assert isinstance(decision, Bind)
    assert decision.region == "us-east"


def test_defer_window_starts_in_future_and_before_deadline():
    case = DEFERRABLE_CASES[0]
    decision = run_case(case)
    assert decision.until == T0 + 3 * HOUR
    assert decision.window.end <= case.task.deadline - SETTINGS.deadline_margin_seconds
    assert decision.window.estimated_g < decision.start_now_g


def test_defer_skips_fully_booked_window():
    book = ledger(max_pods=1)
    book.book("us-east", T0 + 3 * HOUR, T0 + 4 * HOUR, task().requirements.request)
    decision = run_case(DEFERRABLE_CASES[0], book)
    assert not (isinstance(decision, Defer) and decision.window.region == "us-east"
                and decision.window.start == T0 + 3 * HOUR)


def test_bind_records_intensity_and_reason():
    decision = run_case(CRITICAL_CASES[0])
    assert decision.intensity_g_per_kwh == 100.0
    assert decision.reason == "greenest region with room"


def test_deferrable_without_ledger_rejected():
    with pytest.raises(ValueError, match="ledger"):
        decide(task("deferrable", deadline=T0 + 9 * HOUR), T0, three(), SETTINGS)


def early(task_, window, regions, outlooks):
    """Run start_early_mask for one task."""
    from carbon_scheduler.policy.energy import power_matrix

    power = power_matrix([task_], [region.spec for region in regions])
    allowed = np.array([[task_.allows(region.name) for region in regions]])
    mask = start_early_mask(T0, np.array([task_.duration]), [window], power, allowed, regions, outlooks)
    return bool(mask[0])


def test_early_start_when_low_region_cleaner():
    deferred = run_case(DEFERRABLE_CASES[0])
    regions = three(eu=10)
    regions[0].level = Level.LOW
    now_outlooks = dict(DIP, **{"eu-west": outlook("eu-west", [10] * 30)})
    assert early(DEFERRABLE_CASES[0].task, deferred.window, regions, now_outlooks)


def test_no_early_start_without_low_region():
    deferred = run_case(DEFERRABLE_CASES[0])
    assert not early(DEFERRABLE_CASES[0].task, deferred.window, three(eu=10), DIP)


def test_no_early_start_when_plan_cleaner():
    deferred = run_case(DEFERRABLE_CASES[0])
    regions = three(eu=150)
    regions[0].level = Level.LOW
    assert not early(DEFERRABLE_CASES[0].task, deferred.window, regions, DIP)


def test_no_early_start_in_full_low_region():
    deferred = run_case(DEFERRABLE_CASES[0])
    regions = three(eu=10, full=("eu-west",))
    regions[0].level = Level.LOW
    now_outlooks = dict(DIP, **{"eu-west": outlook("eu-west", [10] * 30)})
    assert not early(DEFERRABLE_CASES[0].task, deferred.window, regions, now_outlooks)


def test_no_early_start_in_disallowed_low_region():
    task_ = task("deferrable", deadline=T0 + 12 * HOUR, allowed=("us-east", "asia-east"))
    deferred = run_case(Case("", task_, three(eu=200), Defer, outlooks=DIP))
    regions = three(eu=10)
    regions[0].level = Level.LOW
    now_outlooks = dict(DIP, **{"eu-west": outlook("eu-west", [10] * 30)})
    assert not early(task_, deferred.window, regions, now_outlooks)


def test_task_class_values():
    assert [c.value for c in TaskClass] == ["critical", "standard", "deferrable"]
