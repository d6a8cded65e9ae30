"""Run a replay event by event, for `replay --serve-metrics` and `replay --influx`.

The plain replay runs the three policies as fast as it can, maybe in worker
processes. This path first runs the carbon-blind baseline and the oracle, because
every finished task needs the baseline's numbers as its counterfactual. Then it
runs the scheduler simulation here, one event at a time, with observers that fill
the Prometheus metrics and write the InfluxDB history. All three runs use the
same accounting code as the plain replay, so the summary and plots come out
byte-identical.

With a `speed`, the simulated clock advances at `speed` simulated seconds per real
second: before each event, and before each trace step boundary, the loop sleeps
until the wall clock reaches it. Meanwhile the `simulated_time` gauge follows the
clock, but never reaches an event that has not been processed, so a scrape always
returns intensity, counters and simulated time that belong together. Without a
speed, events run back to back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import structlog

from carbon_scheduler.forecasting import make_forecaster
from carbon_scheduler.replay.baseline import run_baseline
from carbon_scheduler.replay.context import ReplayContext, step_index
from carbon_scheduler.replay.influx_writer import InfluxWriter
from carbon_scheduler.replay.metrics_observer import MetricsObserver, publish_queues, publish_static, publish_step
from carbon_scheduler.replay.observer import Observers, SimulationObserver
from carbon_scheduler.replay.oracle import run_oracle
from carbon_scheduler.replay.results import PolicyRun
from carbon_scheduler.replay.simulator import SchedulerSimulation
from carbon_scheduler.store.base import Store
from carbon_scheduler.telemetry.metrics import SchedulerMetrics

log = structlog.get_logger(__name__)

Progress = Callable[[str, int], None]

# Maximum real sleep between updates of the simulated_time gauge, so that a panel
# of it moves smoothly even when events are hours of simulated time apart.
MAX_SLEEP_SECONDS = 0.25
# While paced, buffered InfluxDB records are written at least this often, so
# long-range panels fill in as the replay advances.
INFLUX_FLUSH_SECONDS = 1.0


class Pacer:
    """Maps simulated time onto the wall clock at `speed` simulated seconds per real second."""

    def __init__(
        self,
        speed: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < speed < float("inf"):
            raise ValueError(f"speed must be a positive finite number of simulated seconds per second, got {speed}")
        self.speed = speed
        self.clock = clock
        self.sleep = sleep
        self._origin_simulated = 0.0
        self._origin_real = 0.0

    def start(self, simulated: float) -> None:
        """Anchor simulated time `simulated` to the wall clock's now."""
        self._origin_simulated = simulated
        self._origin_real = self.clock()

    def simulated_now(self) -> float:
        return self._origin_simulated + (self.clock() - self._origin_real) * self.speed

    def seconds_until(self, simulated: float) -> float:
        """Real seconds until the simulated clock reaches `simulated`; 0 or less when it has."""
        return (simulated - self.simulated_now()) / self.speed


class StreamedReplay:
    """Runs a replay's three policies with the scheduler observed, optionally paced.

    `metrics` receives the daemon's series, under `lock`, which the metrics
    server also takes. `store` receives samples, forecasts and emissions. `speed`
    paces the scheduler simulation, and None runs it as fast as possible.
    """

    def __init__(
        self,
        *,
        speed: float | None = None,
        metrics: SchedulerMetrics | None = None,
        lock: threading.Lock | None = None,
        store: Store | None = None,
        influx_batch_size: int = 5000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.pacer = None if speed is None else Pacer(speed, clock=clock, sleep=sleep)
        self.metrics = metrics
        self.lock = lock if lock is not None else threading.Lock()
        self.store = store
        self.influx_batch_size = influx_batch_size
        self.clock = clock
        self.writer: InfluxWriter | None = None

    def run(
        self,
        context: ReplayContext,
        forecaster: str,
        levels: np.ndarray,
        *,
        expected: Mapping[str, Mapping[str, float]],
        progress: Progress | None = None,
    ) -> dict[str, PolicyRun]:
        """Run baseline, oracle and the observed scheduler; return the runs by policy name."""
        baseline = run_baseline(context, progress=_advance(progress, "baseline"))
        oracle = run_oracle(context, progress=_advance(progress, "oracle"))

        observers: list[SimulationObserver] = []
        if self.metrics is not None:
            with self.lock:
                publish_static(self.metrics, context.config, expected)
            observers.append(MetricsObserver(self.metrics, baseline=baseline))
        if self.store is not None:
            self.writer = InfluxWriter(
                self.store,
                trace=context.trace,
                config=context.config,
                baseline=baseline,
                forecaster=forecaster,
                batch_size=self.influx_batch_size,
            )
            observers.append(self.writer)

        simulation = SchedulerSimulation(
            context,
            make_forecaster(forecaster),
            levels=levels,
            progress=_advance(progress, "scheduler"),
            observer=Observers(observers),
        )
        simulation.begin()
        log.info("replay_stream_started", speed=None if self.pacer is None else self.pacer.speed)
        if self.pacer is None:
            while simulation.next_time() is not None:
                simulation.step()
        else:
            self._run_paced(simulation, context, levels, self.pacer)
        if self.writer is not None:
            self.writer.close()
            log.info("replay_influx_written", **self.writer.written)
        return {"scheduler": simulation.result(), "baseline": baseline, "oracle": oracle}

    def _run_paced(self, simulation: SchedulerSimulation, context: ReplayContext, levels: np.ndarray, pacer: Pacer) -> None:
        trace = context.trace
        first = simulation.next_time()
        if first is None:
            return
        pacer.start(first)
        step = step_index(trace, first)
        self._publish(lambda metrics: publish_step(metrics, trace, levels, context.config, step), first)
        reached = float(first)
        last_flush = self.clock()

        while (next_event := simulation.next_time()) is not None:
            # Intensity and level follow the simulated clock from step to step, even
            # between the scheduler's own ticks, as the daemon's carbon poller does.
            while step + 1 < trace.steps and trace.time_at(step + 1) <= next_event:
                boundary = trace.time_at(step + 1)
                last_flush = self._wait(pacer, boundary, reached, last_flush)
                step += 1
                self._publish(lambda metrics: publish_step(metrics, trace, levels, context.config, step), boundary)
                reached = float(boundary)
            last_flush = self._wait(pacer, next_event, reached, last_flush)
            with self.lock:
                simulation.step()
                if self.metrics is not None:
                    publish_queues(
                        self.metrics, deferred=simulation.deferred_count, queued=simulation.queued_count
                    )
                    self.metrics.simulated_time.set(next_event)
            reached = float(next_event)

    def _publish(self, update: Callable[[SchedulerMetrics], None], simulated: int) -> None:
        if self.metrics is None:
            return
        with self.lock:
            update(self.metrics)
            self.metrics.simulated_time.set(simulated)

    def _wait(self, pacer: Pacer, target: int, reached: float, last_flush: float) -> float:
        """Sleep until the simulated clock reaches `target`, and return the wall-clock
        time of the last InfluxDB flush. On the way the simulated_time gauge moves
        along and buffered InfluxDB records are flushed."""
        while (remaining := pacer.seconds_until(target)) > 0:
            if self.writer is not None and self.clock() - last_flush >= INFLUX_FLUSH_SECONDS:
                self.writer.flush()
                last_flush = self.clock()
            pacer.sleep(min(remaining, MAX_SLEEP_SECONDS))
            if self.metrics is not None:
                # One simulated second short of the target at most, because nothing
                # of the event at `target` has happened yet.
                self.metrics.simulated_time.set(max(reached, min(pacer.simulated_now(), target - 1)))
        return last_flush


def _advance(progress: Progress | None, policy: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda count: progress(policy, count)
