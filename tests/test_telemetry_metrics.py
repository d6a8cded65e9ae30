"""The shared metrics object: priming, scenarios and the forecast-for-now gauges."""

from __future__ import annotations

import pytest

from carbon_scheduler.telemetry.metrics import SchedulerMetrics

T0 = 1_700_000_000
HOUR = 3600


def value(metrics: SchedulerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_prime_creates_zero_series() -> None:
    metrics = SchedulerMetrics()
    metrics.prime(["eu-west"])

    assert value(metrics, "carbon_scheduler_region_up", region="eu-west") == 0.0
    assert value(
        metrics, "carbon_scheduler_emissions_grams_total", region="eu-west", task_class="critical", scenario="carbon_blind"
    ) == 0.0
    assert value(metrics, "carbon_scheduler_watch_restarts_total", region="eu-west", resource="pods") == 0.0


def test_emissions_count_joules_and_grams() -> None:
    metrics = SchedulerMetrics()
    metrics.add_task_emissions(region="us-east", task_class="standard", scenario="scheduled", energy_kwh=0.5, emissions_g=200.0)

    labels = {"region": "us-east", "task_class": "standard", "scenario": "scheduled"}
    assert value(metrics, "carbon_scheduler_energy_joules_total", **labels) == pytest.approx(1.8e6)
    assert value(metrics, "carbon_scheduler_emissions_grams_total", **labels) == 200.0


def test_unknown_scenario_rejected() -> None:
    with pytest.raises(ValueError, match="invalid scenario 'blind'"):
        SchedulerMetrics().add_task_emissions(
            region="us-east", task_class="standard", scenario="blind", energy_kwh=1.0, emissions_g=1.0
        )


def test_forecast_for_now_waits_for_target() -> None:
    metrics = SchedulerMetrics()
    metrics.set_intensity("eu-west", T0, 300.0)
    metrics.set_forecast("eu-west", {1: (T0 + HOUR, 310.0), 6: (T0 + 6 * HOUR, 360.0)})

    assert value(metrics, "carbon_scheduler_carbon_forecast_grams_per_kilowatt_hour", region="eu-west", horizon_hours="6") == 360.0
    # Nothing is due before the target time.
    metrics.set_intensity("eu-west", T0 + HOUR - 1, 305.0)
    assert value(metrics, "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour", region="eu-west", horizon_hours="1") is None

    metrics.set_intensity("eu-west", T0 + HOUR, 320.0)
    assert value(metrics, "carbon_scheduler_carbon_intensity_grams_per_kilowatt_hour", region="eu-west") == 320.0
    assert value(metrics, "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour", region="eu-west", horizon_hours="1") == 310.0
    assert value(metrics, "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour", region="eu-west", horizon_hours="6") is None


def test_forecast_for_now_takes_latest_due() -> None:
    """After a gap in the samples, the prediction for the latest passed target wins,
    and a repeated forecast replaces its values instead of adding to them."""
    metrics = SchedulerMetrics()
    metrics.set_forecast("asia-east", {1: (T0 + HOUR, 100.0)})
    metrics.set_forecast("asia-east", {1: (T0 + 2 * HOUR, 150.0)})
    metrics.set_forecast("asia-east", {1: (T0 + 2 * HOUR, 200.0)})

    metrics.set_intensity("asia-east", T0 + 3 * HOUR, 500.0)

    assert value(metrics, "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour", region="asia-east", horizon_hours="1") == 200.0
    metrics.set_intensity("asia-east", T0 + 4 * HOUR, 510.0)
    assert value(metrics, "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour", region="asia-east", horizon_hours="1") == 200.0
