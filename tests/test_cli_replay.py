"""End-to-end runs of `carbon-scheduler replay` and the `replay` command in a
subprocess, as a newcomer runs them: outputs, their promised shape, and the
errors for bad input.

Every run sets COLUMNS=80, the width rich assumes when stderr is a pipe, so
wrapped output is the same on every machine.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_COMMAND = [sys.executable, "-m", "carbon_scheduler.cli", "replay"]
REPLAY_SCRIPT = Path(sys.executable).parent / "replay"
REGIONS = ("eu-west", "us-east", "asia-east")
CLASSES = ("critical", "standard", "deferrable")
PLOTS = ("intensity.png", "cumulative_emissions.png", "distribution.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS_HEADER = "policy,task_id,class,home_region,region,node,arrival,start,end,deadline,energy_kwh,emissions_g"


def run_replay(*args: str | Path, command: list[str] = MODULE_COMMAND) -> subprocess.CompletedProcess[str]:
    """Run a replay command from the repository root and return its result."""
    env = dict(os.environ, COLUMNS="80")
    return subprocess.run(
        [*command, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`replay traces/demo.csv --days 7 --out OUT`, with progress bar and plots."""
    out = tmp_path_factory.mktemp("demo") / "out"
    return run_replay("traces/demo.csv", "--days", "7", "--out", out), out


# The demo run ------------------------------------------------------------------


def test_demo_run_succeeds(demo_run) -> None:
    result, out = demo_run

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "saved" in result.stdout
    assert "summary.json" in result.stdout


def test_demo_run_writes_outputs(demo_run) -> None:
    _, out = demo_run

    assert (out / "summary.json").is_file()
    assert (out / "tasks.csv").is_file()
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_summary_has_promised_keys(demo_run) -> None:
    _, out = demo_run
    summary = read_summary(out)

    for policy in ("scheduler", "baseline", "oracle"):
        assert isinstance(summary["emissions_kg"][policy], float), policy
    assert isinstance(summary["saving_percent"], float)
    assert isinstance(summary["oracle_fraction"], float)
    assert isinstance(summary["deadline_misses"], int)
    assert set(summary["per_class"]) == set(CLASSES)
    for name, figures in summary["per_class"].items():
        for key in ("tasks", "mean_wait_seconds", "max_wait_seconds", "deadline_misses", "emissions_kg"):
            assert key in figures, f"per_class.{name}.{key}"
    assert set(summary["per_region"]) == set(REGIONS)
    for region, counts in summary["per_region"].items():
        assert set(counts) == set(CLASSES), region


def test_summary_figures_agree(demo_run) -> None:
    """Totals in the summary agree with each other, within their rounding."""
    _, out = demo_run
    summary = read_summary(out)
    emissions = summary["emissions_kg"]
    per_class = summary["per_class"]
    started = sum(sum(counts.values()) for counts in summary["per_region"].values())

    assert sum(figures["tasks"] for figures in per_class.values()) == summary["tasks"]
    assert started == summary["tasks"] - summary["unstarted"]
    assert sum(figures["emissions_kg"] for figures in per_class.values()) == pytest.approx(
        emissions["scheduler"], abs=1e-5
    )
    saving = 100 * (emissions["baseline"] - emissions["scheduler"]) / emissions["baseline"]
    assert summary["saving_percent"] == pytest.approx(saving, abs=1e-3)
    assert summary["deadline_misses"] == sum(figures["deadline_misses"] for figures in per_class.values())


def test_tasks_csv_matches_summary(demo_run) -> None:
    _, out = demo_run
    summary = read_summary(out)
    text = (out / "tasks.csv").read_text(encoding="utf-8")

    assert text.splitlines()[0] == TASKS_HEADER
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 3 * summary["tasks"]
    assert [row["policy"] for row in rows[:: summary["tasks"]]] == ["scheduler", "baseline", "oracle"]
    for policy in ("scheduler", "baseline", "oracle"):
        grams = sum(float(row["emissions_g"]) for row in rows if row["policy"] == policy)
        assert grams / 1000 == pytest.approx(summary["emissions_kg"][policy], abs=1e-5), policy


def test_console_script_matches_module(demo_run, tmp_path) -> None:
    """The `replay` command installed next to the interpreter gives the same summary
    as `python -m carbon_scheduler.cli replay`."""
    assert REPLAY_SCRIPT.is_file(), (
        f"no `replay` console script at {REPLAY_SCRIPT}; install the package with `pip install -e .`"
    )
    _, demo_out = demo_run
    out = tmp_path / "out"

    result = run_replay("traces/demo.csv", "--days", "7", "--out", out, "--quiet", command=[str(REPLAY_SCRIPT)])

    assert result.returncode == 0, result.stderr
    assert "saved" in result.stdout
    assert (out / "summary.json").read_bytes() == (demo_out / "summary.json").read_bytes()


# Bad input -------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    name: str
    args: Callable[[Path], list[str]]
    """Command-line arguments, given a scratch folder for input files."""
    value: str
    """Text the error must name."""


def _trace_with_unknown_region(folder: Path) -> Path:
    path = folder / "mars.csv"
    path.write_text(
        "timestamp,region,intensity_g_per_kwh\n"
        "2023-01-01T00:00:00Z,mars,100\n"
        "2023-01-01T01:00:00Z,mars,120\n",
        encoding="utf-8",
    )
    return path


def _broken_regions(folder: Path) -> Path:
    path = folder / "broken.toml"
    path.write_text("[scheduler\nstandard_max_wait_seconds = 900\n", encoding="utf-8")
    return path


BAD_INPUTS = [
    BadInput("missing trace file", lambda folder: ["no-such-trace.csv"], "no-such-trace.csv"),
    BadInput("trace with unknown region", lambda folder: [str(_trace_with_unknown_region(folder))], "mars"),
    BadInput(
        "broken regions.toml",
        lambda folder: ["traces/demo.csv", "--regions", str(_broken_regions(folder))],
        "broken.toml",
    ),
    BadInput("negative days", lambda folder: ["traces/demo.csv", "--days", "-1"], "-1"),
    BadInput("days not a number", lambda folder: ["traces/demo.csv", "--days", "abc"], "abc"),
    BadInput("unknown forecaster", lambda folder: ["traces/demo.csv", "--forecaster", "crystal-ball"], "crystal-ball"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.name)
def test_bad_input_rejected(case: BadInput, tmp_path) -> None:
    """Exit code 2 and one `error:` line naming the value, even when it is longer
    than the console's 80 columns, with no traceback and no output files."""
    out = tmp_path / "out"

    result = run_replay(*case.args(tmp_path), "--out", out, "--quiet")
    lines = result.stderr.strip().splitlines()

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert case.value in lines[0]
    assert result.stdout == ""
    assert not out.exists() or list(out.iterdir()) == []


# Options ---------------------------------------------------------------------

WORKLOAD_CSV = """\
task_id,arrival,class,cpu,memory,duration,deadline,home_region,allowed_regions
w1,2023-01-10T09:00:00Z,critical,500m,512Mi,30m,,eu-west,
w2,2023-01-10T09:10:00Z,standard,1,1Gi,45m,,us-east,
w3,2023-01-10T09:20:00Z,deferrable,250m,256Mi,1h,12h,asia-east,asia-east;us-east
w4,2023-01-10T10:00:00Z,deferrable,2,2Gi,2h,2023-01-11T10:00:00Z,eu-west,
"""


def test_workload_file(tmp_path) -> None:
    workload = tmp_path / "four.csv"
    workload.write_text(WORKLOAD_CSV, encoding="utf-8")
    out = tmp_path / "out"

    result = run_replay("traces/demo.csv", "--workload", workload, "--out", out, "--quiet", "--no-plots")

    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    assert summary["tasks"] == 4
    assert summary["workload"] == "four.csv"
    assert summary["seed"] is None
    assert {name: figures["tasks"] for name, figures in summary["per_class"].items()} == {
        "critical": 1,
        "standard": 1,
        "deferrable": 2,
    }
    assert summary["deadline_misses"] == 0
    assert not list(out.glob("*.png"))

    rows = list(csv.DictReader((out / "tasks.csv").read_text(encoding="utf-8").splitlines()))
    by_key = {(row["policy"], row["task_id"]): row for row in rows}
    assert len(rows) == 12
    assert by_key[("baseline", "w1")]["region"] == "eu-west"
    assert by_key[("baseline", "w1")]["start"] == "2023-01-10T09:00:00Z"
    assert by_key[("baseline", "w3")]["deadline"] == "2023-01-10T21:20:00Z"
    for policy in ("scheduler", "baseline", "oracle"):
        assert by_key[(policy, "w3")]["region"] in {"asia-east", "us-east"}, policy


def test_expected_distribution_in_summary(tmp_path) -> None:
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"critical": {"eu-west": 0.5, "us-east": 0.5}}), encoding="utf-8")
    out = tmp_path / "out"

    result = run_replay("traces/demo.csv", "--days", "2", "--expected", expected, "--out", out, "--quiet", "--no-plots")

    assert result.returncode == 0, result.stderr
    summary = read_summary(out)
    table = summary["expected_distribution"]
    assert set(table) == {"critical"}
    assert {region: shares["expected"] for region, shares in table["critical"].items()} == {
        "eu-west": 0.5,
        "us-east": 0.5,
        "asia-east": 0.0,
    }
    started = sum(summary["per_region"][region]["critical"] for region in REGIONS)
    for region in REGIONS:
        actual = summary["per_region"][region]["critical"] / started
        assert table["critical"][region]["actual"] == pytest.approx(actual, abs=1e-4), region


def test_seed_changes_workload(tmp_path) -> None:
    """The same seed gives a byte-identical summary; another seed another workload."""
    outputs = {}
    for label, seed in (("first", "2"), ("again", "2"), ("other", "3")):
        out = tmp_path / label
        result = run_replay("traces/demo.csv", "--days", "2", "--seed", seed, "--out", out, "--quiet", "--no-plots")
        assert result.returncode == 0, result.stderr
        outputs[label] = out

    summaries = {label: (out / "summary.json").read_bytes() for label, out in outputs.items()}
    tasks = {label: (out / "tasks.csv").read_bytes() for label, out in outputs.items()}
    assert summaries["again"] == summaries["first"]
    assert tasks["again"] == tasks["first"]
    assert json.loads(summaries["first"])["seed"] == 2
    assert json.loads(summaries["other"])["seed"] == 3
    assert tasks["other"] != tasks["first"]


def test_provider_forecaster_falls_back(tmp_path) -> None:
    """A config that plans on provider forecasts replays on the daemon's fallback
    model, because a recorded trace carries no provider forecast."""
    config = tmp_path / "regions.toml"
    text = (REPO / "regions.toml").read_text(encoding="utf-8")
    assert 'forecaster = "profile-ar-blend"' in text
    config.write_text(text.replace('forecaster = "profile-ar-blend"', 'forecaster = "provider"'), encoding="utf-8")
    out = tmp_path / "out"

    result = run_replay(
        REPO / "traces/demo.csv", "--config", config, "--days", "2", "--out", out, "--quiet", "--no-plots"
    )

    assert result.returncode == 0, result.stderr
    assert read_summary(out)["forecaster"] == "profile-ar-blend"
    assert "replay_provider_forecast_unavailable" in result.stdout + result.stderr
