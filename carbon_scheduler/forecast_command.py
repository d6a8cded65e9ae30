"""`carbon-scheduler forecast backtest TRACE`: read a trace, backtest forecasters on
it, print the error tables and optionally write them as JSON.

This sits at the command level, beside `cli`, because it joins the trace reader
(`carbon`) and the forecasters (`forecasting`), two layers that may not import
each other.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from carbon_scheduler.carbon.traces import TraceError, read_trace
from carbon_scheduler.forecasting import FORECASTERS, make_forecaster
from carbon_scheduler.forecasting.backtest import backtest, format_table, result_to_json

EXIT_INPUT_ERROR = 2
"""Exit status for an unreadable trace, an unknown forecaster or a trace too short
to backtest, the same as the other commands use for bad input."""

EXIT_OUTPUT_ERROR = 1
"""Exit status when the JSON file cannot be written."""


def run_backtest_command(
    trace_path: str | os.PathLike[str],
    json_path: str | os.PathLike[str] | None = None,
    forecasters: Sequence[str] | None = None,
    console: Console | None = None,
    *,
    horizon: int = 24,
    issue_every_steps: int = 1,
) -> int:
    """Backtest the named forecasters (default: every registered one) on the trace
    at `trace_path`, print the tables to `console` and write `result_to_json` to
    `json_path` if given. Returns the process exit status.

    Errors go to stderr as one `error: ...` line.
    """
    console = console or Console()
    errors = Console(stderr=True)
    names = list(FORECASTERS) if forecasters is None else list(forecasters)
    try:
        models = [make_forecaster(name) for name in names]
        trace = read_trace(trace_path)
        began = time.perf_counter()
        with console.status("backtest") as status:

            def report(region: str, forecaster: str) -> None:
                status.update(f"backtest: {region}, {forecaster} done")

            result = backtest(
                trace, models, horizon=horizon, issue_every_steps=issue_every_steps, progress=report
            )
        elapsed = time.perf_counter() - began
    except (TraceError, ValueError, OSError) as error:
        errors.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_INPUT_ERROR

    console.print(f"Backtest of {trace_path}", markup=False, highlight=False, soft_wrap=True)
    console.print(format_table(result), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wall time {elapsed:.1f} s", markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        text = json.dumps(result_to_json(result), indent=2, sort_keys=True) + "\n"
        try:
            Path(json_path).write_text(text, encoding="utf-8")
        except OSError as error:
            errors.print(f"error: cannot write {json_path}: {error}", markup=False, highlight=False, soft_wrap=True)
            return EXIT_OUTPUT_ERROR
        console.print(f"wrote {json_path}", markup=False, highlight=False, soft_wrap=True)
    return 0
