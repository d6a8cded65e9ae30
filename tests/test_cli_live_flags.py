"""Checks of the replay's live-output flags, which run before any replay work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from carbon_scheduler.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "demo-14d.csv"

# In-process `main()` calls configure structlog for this test's captured stderr.
pytestmark = pytest.mark.usefixtures("restore_logging")


@dataclass(frozen=True)
class Rejected:
    name: str
    argv: tuple[str, ...]
    expected: str
    absent: str = "hunter2"


REJECTED = [
    Rejected(
        "influx without scheme",
        ("--influx", "127.0.0.1:18086"),
        "--influx takes the http:// or https:// URL of an InfluxDB server, got '127.0.0.1:18086'; "
        "add the scheme, as in http://127.0.0.1:18086",
    ),
    Rejected(
        "influx sqlite url",
        ("--influx", "sqlite:///history.db"),
        "got 'sqlite:///history.db' with the scheme 'sqlite'; use http://HOST:PORT or https://HOST:PORT",
    ),
    Rejected(
        "influx ftp url",
        ("--influx", "ftp://admin:hunter2@host/"),
        "got 'ftp://admin:***@host/' with the scheme 'ftp'",
    ),
    Rejected(
        "influx credentials",
        ("--influx", "http://admin:hunter2@127.0.0.1:18086"),
        "--influx URL 'http://admin:***@127.0.0.1:18086' must not contain credentials",
    ),
    Rejected(
        "influx credentials fix",
        ("--influx", "https://admin:hunter2@127.0.0.1:18086"),
        "set $CARBON_SCHEDULER_INFLUX_USERNAME and $CARBON_SCHEDULER_INFLUX_PASSWORD",
    ),
    Rejected(
        "influx credentials in query",
        ("--influx", "http://127.0.0.1:18086/?u=admin&p=hunter2"),
        "--influx URL 'http://127.0.0.1:18086/?u=admin&p=***' must not contain credentials",
    ),
    Rejected(
        "metrics address alone",
        ("--metrics-address", "0.0.0.0"),
        "--metrics-address sets the address of --serve-metrics; add --serve-metrics PORT or drop --metrics-address",
    ),
    Rejected(
        "one influx option alone",
        ("--influx-database", "foo"),
        "--influx-database applies to --influx URL; add --influx URL or drop it",
    ),
    Rejected(
        "two influx options alone",
        ("--influx-database", "foo", "--influx-token", "t"),
        "--influx-database, --influx-token apply to --influx URL; add --influx URL or drop them",
    ),
    Rejected(
        "dashboard svg",
        ("--dashboard-png", "d.svg"),
        "--dashboard-png writes a PNG image, so the file name must end in .png, got 'd.svg'; use a name such as d.png",
    ),
    Rejected("dashboard jpg", ("--dashboard-png", "d.jpg"), "must end in .png, got 'd.jpg'"),
    Rejected("dashboard no suffix", ("--dashboard-png", "dash"), "must end in .png, got 'dash'; use a name such as dash.png"),
    Rejected("dashboard empty", ("--dashboard-png", ""), "--dashboard-png needs a file name ending in .png"),
    Rejected(
        "dashboard current folder", ("--dashboard-png", "."), "must end in .png, got '.'; use a name such as dashboard.png"
    ),
]


@pytest.mark.parametrize("case", REJECTED, ids=lambda case: case.name)
def test_live_flag_rejected(
    case: Rejected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    code = main(["replay", str(TRACE), "--days", "0.25", "--quiet", "--no-plots", "--out", "out", *case.argv])

    error = capsys.readouterr().err
    assert code == 2
    assert case.expected in error
    assert case.absent not in error
    # Nothing is written: no output folder and no SQLite file named after the URL.
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_dashboard_parent_is_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "dash.png"
    blocker.write_bytes(b"not a folder")
    target = blocker / "inner" / "d.png"

    code = main(["replay", str(TRACE), "--quiet", "--out", str(tmp_path / "out"), "--dashboard-png", str(target)])

    error = capsys.readouterr().err
    assert code == 2
    assert f"--dashboard-png {target} cannot be written, because {blocker} is a file, not a folder" in error
    assert "Errno" not in error


def test_dashboard_path_is_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "shots.png"
    folder.mkdir()

    code = main(["replay", str(TRACE), "--quiet", "--out", str(tmp_path / "out"), "--dashboard-png", str(folder)])

    assert code == 2
    assert f"--dashboard-png {folder} is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("speed", ["0.999", "1e-9", "0", "-5", "nan", "inf", "fast"])
def test_speed_below_real_time_rejected(speed: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(TRACE), "--serve-metrics", "9", "--speed", speed])

    assert exit_info.value.code == 2
    assert f"a finite number of 1 or more (1 is real time), got {speed!r}" in capsys.readouterr().err
