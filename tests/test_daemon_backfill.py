"""The source history that the daemon stores at start: only a live provider's, only
samples the store lacks, and never more than the writer's buffer holds. Static,
replay and scripted sources store only what they report while the daemon runs."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from carbon_scheduler.daemon.history import select_backfill
from carbon_scheduler.store import Sample
from tests.daemon_harness import Daemon, daemon_environment, free_port, wait_until
from tests.kubefake.fixtures import FakeRegions

T0 = 1_700_000_000


def samples(*times: int) -> list[Sample]:
    return [Sample("eu-west", time, 100.0 + index, "scripted") for index, time in enumerate(times)]


SELECTIONS = {
    # name: (sample times, newest stored, limit, kept times, already stored, over limit)
    "empty store keeps all": ((T0, T0 + 40, T0 + 80), None, 10, (T0, T0 + 40, T0 + 80), 0, 0),
    "stored samples skipped": ((T0, T0 + 40, T0 + 80), T0 + 40, 10, (T0 + 80,), 2, 0),
    "newest stored equals last": ((T0, T0 + 40), T0 + 40, 10, (), 2, 0),
    "limit keeps newest": ((T0, T0 + 40, T0 + 80, T0 + 120), None, 2, (T0 + 80, T0 + 120), 0, 2),
    "unsorted input": ((T0 + 80, T0, T0 + 40), T0, 1, (T0 + 80,), 1, 1),
    "zero limit": ((T0, T0 + 40), None, 0, (), 0, 2),
}


@pytest.mark.parametrize("name", SELECTIONS)
def test_select_backfill(name: str) -> None:
    times, newest_stored, limit, kept, already_stored, over_limit = SELECTIONS[name]

    backfill = select_backfill(samples(*times), newest_stored=newest_stored, limit=limit)

    assert tuple(sample.time for sample in backfill.samples) == kept
    assert backfill.already_stored == already_stored
    assert backfill.over_limit == over_limit


def test_select_backfill_rejects_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit must be 0 or more, got -1"):
        select_backfill(samples(T0), newest_stored=None, limit=-1)


def write_config(folder: Path, clusters: FakeRegions) -> Path:
    (folder / "schedule.toml").write_text("[[steps]]\nseconds = 2\neu-west = 120\n[[steps]]\nseconds = 2\neu-west = 480\n")
    lines = ["[store]", 'url = "history.db"', ""]
    for name in clusters:
        carbon = (
            ['source = "scripted"', 'schedule = "schedule.toml"']
            if name == "eu-west"
            else ['source = "static"', "intensity_g_per_kwh = 300"]
        )
        lines += [
            f"[regions.{name}]",
            f'kubeconfig = "{clusters.kubeconfig}"',
            f'context = "{name}"',
            "max_pods = 4",
            f"[regions.{name}.carbon]",
            *carbon,
            "",
        ]
    path = folder / "regions.toml"
    path.write_text("\n".join(lines))
    return path


async def launch(folder: Path, config: Path, name: str) -> Daemon:
    port = free_port()
    log = folder / f"{name}.log"
    log_file = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "run", "--config", str(config), "--metrics-port", str(port),
        stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=daemon_environment(),
    )
    daemon = Daemon(process, port, log, log_file)
    try:
        await daemon.wait_ready(timeout=60)
    except BaseException:
        await daemon.stop()
        raise
    return daemon


def stored_times(database: Path, region: str) -> list[int]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT time FROM carbon_intensity WHERE region = ? ORDER BY time", (region,)
        ).fetchall()
    finally:
        connection.close()
    return [time for (time,) in rows]


@pytest.mark.asyncio
async def test_synthetic_history_not_stored(tmp_path: Path, clusters: FakeRegions) -> None:
    config = write_config(tmp_path, clusters)
    database = tmp_path / "history.db"

    first_start = int(time.time())
    first = await launch(tmp_path, config, "first")
    try:
        await wait_until(lambda: len(stored_times(database, "eu-west")) >= 3, timeout=30, what="polled samples stored")
    finally:
        assert await first.stop() == 0, first.log.read_text()[-3000:]
    first_log = first.log.read_text()
    after_first = stored_times(database, "eu-west")

    # The schedule has 2 s steps, so eight weeks of made-up history would be
    # millions of samples. The store gets only the steps polled while running.
    assert after_first[0] >= first_start
    assert len(after_first) <= int(time.time()) - first_start + 2
    assert "carbon_history_backfill_skipped" not in first_log
    assert "store_buffer_full" not in first_log
    # The scripted region plans on its own schedule from the first outlook on.
    assert '"provider_forecast_used"' in first_log
    assert "provider_forecast_fallback" not in first_log
    # A static source reports hourly steps, so the one polled is the current hour.
    for region in ("us-east", "asia-east"):
        static_times = stored_times(database, region)
        assert len(static_times) == 1
        assert first_start - 3600 < static_times[0] <= first_start

    second_start = int(time.time())
    second = await launch(tmp_path, config, "second")
    try:
        await wait_until(
            lambda: len(stored_times(database, "eu-west")) >= len(after_first) + 3, timeout=30, what="restart samples"
        )
    finally:
        assert await second.stop() == 0, second.log.read_text()[-3000:]
    second_log = second.log.read_text()
    after_second = stored_times(database, "eu-west")

    # The restart reloads what the first run stored and adds only its own polls.
    assert '"store_history_loaded"' in second_log
    assert "carbon_history_backfill_skipped" not in second_log
    assert after_second[: len(after_first)] == after_first
    assert all(moment >= second_start for moment in after_second[len(after_first) :])
