"""Write a replay's history to a time-series store (`replay --influx URL`).

`InfluxWriter` is a `SimulationObserver` that turns the scheduler simulation into
the store's three record types (see `store.influx` for the InfluxDB layout):

- `Sample` for every trace value of every config region, with source `trace`.
  Each trace step is written once the simulation reaches it, the steps before the
  first tick at that first tick, and the steps after the last tick by `close()`.
- `ForecastPoint` for every forecast the scheduler planned on: at each trace step
  it reaches, every future step of each region's outlook, with `issued_at` the
  tick's time and `forecaster` the replay's forecaster.
- `EmissionRecord` for every task that finished, with the carbon-blind baseline's
  region and emissions for the same task as the counterfactual. A task never
  started by the baseline has its home region and 0 g as the counterfactual.

Records are buffered and written in batches of `batch_size` (and on `flush()`),
so a replay sends a few large requests instead of one per event.
"""

from __future__ import annotations

from collections.abc import Mapping

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import Config
from carbon_scheduler.model import Task
from carbon_scheduler.policy.decisions import Decision
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.replay.results import PolicyRun, TaskOutcome
from carbon_scheduler.store.base import EmissionRecord, ForecastPoint, Sample, Store

TRACE_SOURCE = "trace"
DEFAULT_BATCH_SIZE = 5000


class InfluxWriter:
    """Buffers a replay's samples, forecasts and emissions and writes them to `store`."""

    def __init__(
        self,
        store: Store,
        *,
        trace: Trace,
        config: Config,
        baseline: PolicyRun,
        forecaster: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store = store
        self.trace = trace
        self.regions = config.region_names
        self.baseline = baseline.outcomes
        self.forecaster = forecaster
        self.batch_size = batch_size
        self.samples: list[Sample] = []
        self.forecasts: list[ForecastPoint] = []
        self.emissions: list[EmissionRecord] = []
        # Trace steps before this index are buffered or written.
        self.next_sample_step = 0
        self.written = {"samples": 0, "forecasts": 0, "emissions": 0}

    @property
    def buffered(self) -> int:
        return len(self.samples) + len(self.forecasts) + len(self.emissions)

    def on_tick(self, now: int, step: int, outlooks: Mapping[str, Outlook]) -> None:
        self._add_samples(step + 1)
        for region, outlook in outlooks.items():
            step_seconds = outlook.step_seconds
            for offset in range(1, outlook.values.size):
                self.forecasts.append(
                    ForecastPoint(
                        region=region,
                        issued_at=now,
                        time=now + offset * step_seconds,
                        intensity_g_per_kwh=float(outlook.values[offset]),
                        forecaster=self.forecaster,
                    )
                )
        self._flush_full()

    def on_decision(self, task: Task, now: int, decision: Decision, seconds: float) -> None:
        return None

    def on_start(self, index: int, outcome: TaskOutcome) -> None:
        return None

    def on_finish(self, index: int, outcome: TaskOutcome) -> None:
        task = outcome.task
        # A finished task has a region, a start and an end.
        assert outcome.region is not None
        assert outcome.start is not None
        assert outcome.end is not None
        blind = self.baseline[index]
        self.emissions.append(
            EmissionRecord(
                task_id=task.id,
                region=outcome.region,
                task_class=task.task_class.value,
                # The simulated scheduler starts a task in the same instant it decides to.
                decision_time=outcome.start,
                start=outcome.start,
                end=outcome.end,
                energy_kwh=outcome.energy_kwh,
                emissions_g=outcome.emissions_g,
                counterfactual_region=blind.region if blind.region is not None else task.home_region,
                counterfactual_emissions_g=blind.emissions_g,
            )
        )
        self._flush_full()

    def flush(self) -> None:
        """Write everything buffered."""
        if self.samples:
            self.store.write_samples(self.samples)
            self.written["samples"] += len(self.samples)
            self.samples = []
        if self.forecasts:
            self.store.write_forecasts(self.forecasts)
            self.written["forecasts"] += len(self.forecasts)
            self.forecasts = []
        if self.emissions:
            self.store.write_emissions(self.emissions)
            self.written["emissions"] += len(self.emissions)
            self.emissions = []

    def close(self) -> None:
        """Buffer the trace steps that the simulation never reached, and write everything."""
        self._add_samples(self.trace.steps)
        self.flush()

    def _add_samples(self, end_step: int) -> None:
        trace = self.trace
        for step in range(self.next_sample_step, end_step):
            time = trace.time_at(step)
            for region in self.regions:
                value = float(trace.values[trace.region_index(region), step])
                self.samples.append(Sample(region, time, value, TRACE_SOURCE))
        self.next_sample_step = max(self.next_sample_step, end_step)

    def _flush_full(self) -> None:
        if self.buffered >= self.batch_size:
            self.flush()
