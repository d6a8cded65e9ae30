"""Replays of the demo regions on real recorded traces and on the synthetic demo trace.

The recorded traces are hourly Electricity Maps data for Great Britain, PJM and
South Korea, read from the shared folder next to the repository. Each replay uses
the demo's regions.toml and a generated workload of at most ten days after a week
of history, which takes about a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from carbon_scheduler.config import load_config
from carbon_scheduler.replay.run import ReplayOptions, replay
from carbon_scheduler.replay.summary import summarize

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"

TRACES = {
    "recorded 14 days": SHARED_TRACES / "demo-14d.csv",
    "recorded 2 years": SHARED_TRACES / "demo.csv",
    "synthetic year": REPO / "traces" / "demo.csv",
}


@pytest.fixture(scope="module", params=list(TRACES), ids=list(TRACES))
def summary(request) -> dict:
    config = load_config(REPO / "regions.toml")
    result = replay(ReplayOptions(trace=TRACES[request.param], seed=1, days=10), config)
    return summarize(result)


def test_workload_covers_every_class(summary: dict) -> None:
    assert summary["tasks"] > 500
    for name, figures in summary["per_class"].items():
        assert figures["tasks"] > 0, name
    assert sum(figures["tasks"] for figures in summary["per_class"].values()) == summary["tasks"]


def test_no_deadline_missed(summary: dict) -> None:
    assert summary["deadline_misses"] == 0
    assert summary["per_class"]["deferrable"]["deadline_misses"] == 0
    assert summary["unstarted"] == 0


def test_scheduler_saves_carbon(summary: dict) -> None:
    emissions = summary["emissions_kg"]

    assert emissions["scheduler"] < emissions["baseline"]
    assert summary["saving_percent"] > 0


def test_oracle_below_baseline(summary: dict) -> None:
    emissions = summary["emissions_kg"]

    assert emissions["oracle"] < emissions["baseline"]
    assert summary["policies"]["oracle"]["deadline_misses"] == 0


def test_oracle_fraction_plausible(summary: dict) -> None:
    """The scheduler reaches at least half of the oracle's saving. The oracle plans
    greedily, so the scheduler may beat it a little, but not by a fifth."""
    assert 0.5 <= summary["oracle_fraction"] <= 1.2
