"""Errors that `carbon-scheduler run` finds after loading the config: each names the
file, the line and the key, states the fix, and exits with code 2."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from carbon_scheduler.config.types import StoreSettings
from carbon_scheduler.daemon.history import StoreOpenError, open_history_store
from tests.daemon_harness import daemon_environment
from tests.kubefake.fixtures import FakeRegions


@dataclass(frozen=True)
class StoreCase:
    name: str
    store: tuple[str, ...]
    key: str
    expected: str


def store_cases(tmp_path: Path) -> list[StoreCase]:
    empty = tmp_path / "empty-password"
    empty.write_text("\n")
    return [
        StoreCase(
            "unset password variable",
            ('url = "http://127.0.0.1:9"', 'username = "carbon"', 'password_env = "NOPE_NOT_SET"'),
            "password_env",
            "the environment variable NOPE_NOT_SET is not set or empty; set it to the InfluxDB password "
            "before starting the daemon, or use password_file",
        ),
        StoreCase(
            "missing password file",
            ('url = "http://127.0.0.1:9"', 'username = "carbon"', 'password_file = "/nonexistent/pw"'),
            "password_file",
            "cannot read /nonexistent/pw: No such file or directory; put the InfluxDB password in that file",
        ),
        StoreCase(
            "empty password file",
            ('url = "http://127.0.0.1:9"', 'username = "carbon"', f'password_file = "{empty}"'),
            "password_file",
            f"{empty} is empty; put the InfluxDB password in it",
        ),
        StoreCase(
            "missing sqlite folder",
            ('url = "/nonexistent/dir/x.db"',),
            "url",
            "cannot create the SQLite store /nonexistent/dir/x.db, because /nonexistent/dir does not exist; "
            "create the folder, or set url to a file in an existing folder",
        ),
    ]


def write_config(path: Path, clusters: FakeRegions, *, store: tuple[str, ...], kubeconfig: bool = True) -> Path:
    lines = ["[store]", *store, ""]
    for name in clusters:
        lines += [f"[regions.{name}]"]
        if kubeconfig:
            lines += [f'kubeconfig = "{clusters.kubeconfig}"', f'context = "{name}"']
        lines += ["max_pods = 4", f"[regions.{name}.carbon]", 'source = "static"', "intensity_g_per_kwh = 100", ""]
    path.write_text("\n".join(lines))
    return path


async def run_daemon(config: Path) -> tuple[int, str, str]:
    env = daemon_environment()
    env.pop("NOPE_NOT_SET", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "run", "--config", config.name,
        cwd=config.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.asyncio
@pytest.mark.parametrize("index", range(4), ids=["unset-variable", "missing-file", "empty-file", "missing-folder"])
async def test_store_error_names_file_line_key(index: int, tmp_path: Path, clusters: FakeRegions) -> None:
    case = store_cases(tmp_path)[index]
    config = write_config(tmp_path / "cluster-a.toml", clusters, store=case.store)
    line = 2 + next(number for number, text in enumerate(case.store) if text.startswith(f"{case.key} ="))

    code, _, stderr = await run_daemon(config)

    assert code == 2, stderr
    assert f"error: cluster-a.toml:{line}: store.{case.key}: {case.expected}" in stderr, stderr
    assert "Traceback" not in stderr


def test_store_open_error_has_key_and_fix(tmp_path: Path) -> None:
    for case in store_cases(tmp_path):
        settings_options: dict[str, str] = {}
        for line in case.store:
            key, _, value = line.partition(" = ")
            settings_options[key] = value.strip('"')
        with pytest.raises(StoreOpenError) as raised:
            open_history_store(StoreSettings(**settings_options))
        assert raised.value.key == case.key, case.name
        assert case.expected in raised.value.problem, case.name
        assert str(raised.value).startswith(f"[store] {case.key}: "), case.name


@pytest.mark.asyncio
async def test_no_kubeconfig_names_file_and_region(tmp_path: Path, clusters: FakeRegions) -> None:
    config = write_config(tmp_path / "plain.toml", clusters, store=(), kubeconfig=False)

    code, _, stderr = await run_daemon(config)

    first = next(iter(clusters))
    assert code == 2, stderr
    assert f"error: plain.toml:3: regions.{first}: region {first}: in-cluster config failed: " in stderr
    assert "outside a cluster, set kubeconfig and context for it in the config file." in stderr
    assert ".." not in stderr
    assert "regions.toml" not in stderr
    # The store opens only after the clusters are checked, so no SQLite file is left behind.
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("carbon-history")) == []


@pytest.mark.asyncio
async def test_missing_lease_kubeconfig_names_key(tmp_path: Path, clusters: FakeRegions) -> None:
    config = write_config(tmp_path / "cluster-b.toml", clusters, store=())
    missing = tmp_path / "management.yaml"
    config.write_text(f'[scheduler]\nlease_kubeconfig = "{missing}"\n' + config.read_text())

    code, _, stderr = await run_daemon(config)

    assert code == 2, stderr
    assert (
        "error: cluster-b.toml:2: scheduler.lease_kubeconfig: the cluster of the leader Lease "
        "(chosen by lease_kubeconfig/lease_context) cannot be used: "
    ) in stderr
    assert f"kubeconfig file {missing} not found; set kubeconfig to an existing file" in stderr
    assert not (tmp_path / "carbon-history.db").exists()
