"""Backtest every registered forecaster on the recorded traces and write the
tables, the wall time and the machine to benchmarks/forecast-backtest.md.

    python3 benchmarks/forecast_backtest.py                  # two years, hourly origins
    python3 benchmarks/forecast_backtest.py --trace FILE --out FILE.md

With `--statsforecast`, the script also scores a few models of the statsforecast
package (AutoETS, MSTL, AutoTheta) through the same backtest, on every 97th
origin because they take milliseconds per call. statsforecast is not a
dependency of the project: install it in a separate virtual environment
(`python3 -m venv /tmp/fc-venv && /tmp/fc-venv/bin/pip install statsforecast`)
and run the script with that interpreter from the repository root.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from carbon_scheduler.carbon.traces import read_trace  # noqa: E402
from carbon_scheduler.forecasting import FORECASTERS, Persistence, SeasonalNaive, make_forecaster  # noqa: E402
from carbon_scheduler.forecasting.backtest import BacktestResult, backtest, format_table  # noqa: E402

DEFAULT_TRACE = REPOSITORY.parent / "shared" / "traces" / "demo.csv"
DEFAULT_OUT = REPOSITORY / "benchmarks" / "forecast-backtest.md"
NAIVE = (Persistence.name, SeasonalNaive.name)
STATSFORECAST_EVERY = 97  # a prime, so the origins cycle through every hour of the day
STATSFORECAST_WINDOW_DAYS = 28


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


def load_average() -> str:
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def choice_section(result: BacktestResult) -> list[str]:
    """Rank the non-naive forecasters by MAPE over hours 1..horizon averaged over
    regions, and compare the best with the best naive baseline per region."""
    candidates = [name for name in result.forecasters if name not in NAIVE]
    naive = [name for name in result.forecasters if name in NAIVE]
    if not candidates or not naive:
        return []

    def overall(name: str) -> float:
        return float(np.mean([result.mean_mape(region, name) for region in result.regions]))

    ranked = sorted(candidates, key=overall)
    best = ranked[0]
    last = result.horizon
    lines = [
        "## Choice of the default",
        "",
        f"Ranked by MAPE over hours 1-{last}, averaged over regions: "
        + ", ".join(f"{name} {overall(name):.2f} %" for name in ranked)
        + f". The best is **{best}**.",
        "",
        f"| region | best naive (mean 1-{last}) | {best} | change | best naive at h{last} | {best} | change |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    f = result.forecasters.index(best)
    for r, region in enumerate(result.regions):
        mean_naive = min(naive, key=lambda name: result.mean_mape(region, name))
        mean_naive_value = result.mean_mape(region, mean_naive)
        mean_best = result.mean_mape(region, best)
        last_naive = min(naive, key=lambda name: result.mape[r, result.forecasters.index(name), last - 1])
        last_naive_value = float(result.mape[r, result.forecasters.index(last_naive), last - 1])
        last_best = float(result.mape[r, f, last - 1])
        lines.append(
            f"| {region} | {mean_naive} {mean_naive_value:.2f} % | {mean_best:.2f} % | "
            f"{(mean_best / mean_naive_value - 1) * 100:+.0f} % | {last_naive} {last_naive_value:.2f} % | "
            f"{last_best:.2f} % | {(last_best / last_naive_value - 1) * 100:+.0f} % |"
        )
    return lines + [""]


def statsforecast_models() -> list:
    """Adapters that make statsforecast models callable as forecasters."""
    from statsforecast.models import MSTL, AutoETS, AutoTheta

    class Adapter:
        def __init__(self, name: str, model, window_days: int) -> None:
            self.name = name
            self.model = model
            self.window_days = window_days

        def forecast(self, history, last_time, step_seconds, horizon):
            window = self.window_days * 86_400 // step_seconds
            values = np.asarray(history[-window:], dtype=float)
            return np.asarray(self.model.forecast(y=values, h=horizon)["mean"], dtype=float)

    return [
        Adapter("sf-AutoETS-24", AutoETS(season_length=24), STATSFORECAST_WINDOW_DAYS),
        Adapter("sf-AutoTheta-24", AutoTheta(season_length=24), STATSFORECAST_WINDOW_DAYS),
        Adapter(
            "sf-MSTL-24-168-ETS",
            MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZZN")),
            2 * STATSFORECAST_WINDOW_DAYS,
        ),
    ]


def autoarima_seconds(trace) -> float:
    """Time one AutoARIMA fit and forecast on the last 28 days of the first region."""
    from statsforecast.models import AutoARIMA

    window = STATSFORECAST_WINDOW_DAYS * 86_400 // trace.step_seconds
    values = np.asarray(trace.values[0, -window - 24 : -24], dtype=float)
    began = time.perf_counter()
    AutoARIMA(season_length=24).forecast(y=values, h=24)
    return time.perf_counter() - began


def statsforecast_section(trace) -> list[str]:
    import statsforecast

    models = statsforecast_models()
    baselines = [make_forecaster(name) for name in FORECASTERS]
    began = time.perf_counter()
    compared = backtest(trace, baselines + models, issue_every_steps=STATSFORECAST_EVERY)
    elapsed = time.perf_counter() - began
    arima = autoarima_seconds(trace)
    return [
        "## statsforecast models, for comparison",
        "",
        f"statsforecast {statsforecast.__version__}, each model fitted at every origin on the "
        f"last {STATSFORECAST_WINDOW_DAYS} days (MSTL on {2 * STATSFORECAST_WINDOW_DAYS}), on "
        f"every {STATSFORECAST_EVERY}th origin only. Wall time {elapsed:.0f} s. "
        f"AutoARIMA(season_length=24) is left out: one fit and forecast took {arima:.1f} s.",
        "",
        format_table(compared),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help=f"trace CSV (default {DEFAULT_TRACE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"Markdown report (default {DEFAULT_OUT})")
    parser.add_argument("--every", type=int, default=1, help="issue a forecast every N steps (default 1)")
    parser.add_argument(
        "--statsforecast", action="store_true", help="also score statsforecast models (must be installed)"
    )
    args = parser.parse_args(argv)
    command = " ".join(["python3 benchmarks/forecast_backtest.py", *(sys.argv[1:] if argv is None else argv)])

    trace = read_trace(args.trace)
    forecasters = [make_forecaster(name) for name in FORECASTERS]
    load_before = load_average()
    began = time.perf_counter()
    result = backtest(trace, forecasters, issue_every_steps=args.every)
    elapsed = time.perf_counter() - began
    load_after = load_average()

    try:
        relative = args.trace.resolve().relative_to(REPOSITORY.parent)
        trace_name = f"../{relative}"
    except ValueError:
        trace_name = str(args.trace)
    lines = [
        "# Forecast backtest",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        f"- trace: `{trace_name}`, {len(trace.regions)} regions ({', '.join(trace.regions)}), "
        f"{trace.values.shape[1]} steps of {trace.step_seconds} s",
        f"- rolling origins: every {args.every} step(s) after a week of history, each forecaster "
        f"predicting the next {result.horizon} steps from the values up to the origin",
        f"- wall time: {elapsed:.1f} s for {result.origins} origins x {len(trace.regions)} regions x "
        f"{len(forecasters)} forecasters ({result.origins * len(trace.regions) * len(forecasters)} calls), "
        "including the error computation",
        f"- machine: {machine_description()}",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}. The machine is "
        "shared, so times per call vary by up to about 2x between runs.",
        "",
        "MAPE is in percent, MAE in g/kWh; hN is the step N hours after the origin.",
        "",
        format_table(result),
    ]
    lines += choice_section(result)

    if args.statsforecast:
        lines += statsforecast_section(trace)

    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out} ({elapsed:.1f} s backtest)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
