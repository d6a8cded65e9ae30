"""The terminal report of a replay, rendered from the JSON summary with rich.

It reads only the summary dict (see `summary.summarize`), so what the terminal
shows and what the JSON file stores cannot drift apart. Rich drops colour and
cursor codes when the console is not a terminal, so the same report reads cleanly
in a CI log. Text that comes from the workload (class and region names) is wrapped
in `Text` so that square brackets in it are never read as rich markup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console, Group
from rich import box
from rich.table import Table
from rich.text import Text

from carbon_scheduler.replay.results import POLICIES

NOT_AVAILABLE = "-"
POLICY_LABELS = {
    "scheduler": "scheduler",
    "baseline": "baseline (carbon-blind)",
    "oracle": "oracle (knows the trace)",
}


def format_duration(seconds: float | None) -> str:
    """Format a duration in short human units: `45s`, `2m05s`, `1h05m`, `2d03h`.

    Values are rounded to the unit shown last, so `3599.6` reads `1h00m`. None reads
    `-` (no started task to measure).
    """
    if seconds is None:
        return NOT_AVAILABLE
    if seconds < 0:
        return "-" + format_duration(-seconds)

    whole = math.floor(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s"

    total_minutes = math.floor(seconds / 60 + 0.5)
    if total_minutes < 24 * 60:
        hours, minutes = divmod(total_minutes, 60)
        return f"{hours}h{minutes:02d}m"

    total_hours = math.floor(seconds / 3600 + 0.5)
    days, hours = divmod(total_hours, 24)
    return f"{days}d{hours:02d}h"


def format_kg(value: float | None, decimals: int) -> str:
    return NOT_AVAILABLE if value is None else f"{value:,.{decimals}f}"


def format_percent(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.1f}%"


def kg_decimals(values: Iterable[float | None]) -> int:
    """Return how many decimals show about four significant digits of the largest
    value, between 3 and 6, so one column shares one precision."""
    largest = max((abs(value) for value in values if value is not None), default=0.0)
    if largest == 0:
        return 3
    return min(6, max(3, 3 - math.floor(math.log10(largest))))


def render_table(summary: Mapping[str, Any]) -> Table:
    """Build the per-class table of the scheduler: tasks, waits, deadline misses and
    kg CO2e beside the carbon-blind baseline."""
    per_class = summary["per_class"]
    decimals = kg_decimals(
        value for row in per_class.values() for value in (row["emissions_kg"], row["baseline_emissions_kg"])
    )

    table = Table(
        title="Per class (scheduler): waits, deadline misses, kg CO2e", title_justify="left", box=box.SIMPLE_HEAD
    )
    table.add_column("class", no_wrap=True)
    # "not started" only appears when some task never started, to keep the table
    # within an 80-column terminal in the usual case.
    show_unstarted = any(row["unstarted"] for row in per_class.values())
    headings = ["tasks", "mean wait", "max wait", "misses", "kg", "baseline", "saved"]
    if show_unstarted:
        headings.insert(1, "not started")
    for heading in headings:
        # Headings wrap at spaces in a narrow terminal instead of being cut short.
        table.add_column(heading, justify="right", min_width=max(len(word) for word in heading.split()))

    for class_name, row in per_class.items():
        baseline_kg = row["baseline_emissions_kg"]
        saved = 100.0 * (baseline_kg - row["emissions_kg"]) / baseline_kg if baseline_kg > 0 else None
        cells = [
            Text(class_name),
            str(row["tasks"]),
            format_duration(row["mean_wait_seconds"]),
            format_duration(row["max_wait_seconds"]),
            str(row["deadline_misses"]),
            format_kg(row["emissions_kg"], decimals),
            format_kg(baseline_kg, decimals),
            format_percent(saved),
        ]
        if show_unstarted:
            cells.insert(2, str(row["unstarted"]))
        table.add_row(*cells)
    return table


def render_totals(summary: Mapping[str, Any]) -> Table:
    """Build the totals table: kg CO2e, saving against the baseline and deadline
    misses of every policy."""
    emissions = summary["emissions_kg"]
    policies = summary["policies"]
    decimals = kg_decimals(emissions.values())
    savings = {
        "scheduler": summary["saving_percent"],
        "baseline": None,
        "oracle": summary["oracle_saving_percent"],
    }

    table = Table(title="Totals", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("policy", no_wrap=True)
    for heading in ("kg CO2e", "saved vs baseline", "deadline misses", "not started"):
        table.add_column(heading, justify="right", min_width=max(len(word) for word in heading.split()))
    for policy in POLICIES:
        table.add_row(
            POLICY_LABELS[policy],
            format_kg(emissions[policy], decimals),
            format_percent(savings[policy]),
            str(policies[policy]["deadline_misses"]),
            str(policies[policy]["unstarted"]),
        )
    return table


def render_regions(summary: Mapping[str, Any]) -> Table:
    """Build the table of where the scheduler started each class, with the actual
    and expected shares beside the counts when an expected distribution was given."""
    per_region = summary["per_region"]
    expected = summary.get("expected_distribution") or {}
    class_names = list(next(iter(per_region.values()), {}))

    table = Table(title="Tasks started per region (scheduler)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("region", no_wrap=True)
    for class_name in class_names:
        heading = f"{class_name} (actual/expected)" if class_name in expected else class_name
        table.add_column(Text(heading), justify="right")

    for region, counts in per_region.items():
        cells: list[str | Text] = [Text(region)]
        for class_name in class_names:
            cell = str(counts[class_name])
            shares = expected.get(class_name, {}).get(region)
            if shares is not None:
                cell += f" ({_share(shares['actual'])}/{_share(shares['expected'])})"
            cells.append(cell)
        table.add_row(*cells)
    return table


def render_headline(summary: Mapping[str, Any]) -> Text:
    """Build the verdict: kg saved, percent saved, the share of the oracle's saving
    that the scheduler reached, and its deadline misses, one sentence per line."""
    emissions = summary["emissions_kg"]
    saved_kg = emissions["baseline"] - emissions["scheduler"]
    decimals = kg_decimals(emissions.values())
    verb = "saved" if saved_kg >= 0 else "added"

    lines = [
        f"The scheduler {verb} {format_kg(abs(saved_kg), decimals)} kg CO2e "
        f"({format_percent(summary['saving_percent'])}) against the carbon-blind baseline."
    ]
    fraction = summary["oracle_fraction"]
    if fraction is None:
        lines.append("The oracle could not beat the baseline, so there is no headroom to compare with.")
    else:
        lines.append(f"It reached {100.0 * fraction:.1f}% of the oracle's saving.")
    lines.append(f"Deadline misses: {summary['deadline_misses']}, tasks not started: {summary['unstarted']}.")
    return Text("\n".join(lines))


def render_header(summary: Mapping[str, Any]) -> Text:
    trace = summary["trace"]
    seed = summary["seed"]
    return Text(
        f"Replay of {summary['tasks']} tasks ({summary['workload']} workload, "
        f"seed {NOT_AVAILABLE if seed is None else seed}, forecaster {summary['forecaster']})\n"
        f"Trace: {', '.join(trace['regions'])}, {trace['start']} to {trace['end']}, "
        f"{format_duration(trace['step_seconds'])} steps"
    )


def print_report(summary: Mapping[str, Any], console: Console) -> None:
    """Print the whole terminal report: header, per-class table, region table,
    totals and the verdict."""
    console.print(
        Group(
            render_header(summary),
            Text(""),
            render_table(summary),
            Text(""),
            render_regions(summary),
            Text(""),
            render_totals(summary),
            Text(""),
            render_headline(summary),
        )
    )


def _share(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{100.0 * value:.0f}%"
