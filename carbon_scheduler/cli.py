"""Command line: `carbon-scheduler run|replay|trace|forecast ...`, and `replay` as
a command of its own."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from carbon_scheduler import __version__
from carbon_scheduler.logs import configure_logging

if TYPE_CHECKING:
    # The commands import their modules when they run, so `--help` stays fast.
    from carbon_scheduler.replay.metrics_server import MetricsServer
    from carbon_scheduler.replay.streaming import StreamedReplay
    from carbon_scheduler.store.base import Store

DEFAULT_OUT = Path("replay-out")
EXIT_INPUT_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
# Simulated seconds per real second of `replay --serve-metrics`: a day per minute.
DEFAULT_SPEED = 1440.0
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
INFLUX_USERNAME_VARIABLE = "CARBON_SCHEDULER_INFLUX_USERNAME"
INFLUX_PASSWORD_VARIABLE = "CARBON_SCHEDULER_INFLUX_PASSWORD"
INFLUX_TOKEN_VARIABLE = "CARBON_SCHEDULER_INFLUX_TOKEN"


def default_regions_path() -> Path:
    """`regions.toml` in the working directory, else the copy shipped in the package."""
    local = Path("regions.toml")
    if local.is_file():
        return local
    return Path(str(resources.files("carbon_scheduler").joinpath("data/regions.toml")))


def _add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "trace",
        type=Path,
        nargs="+",
        help="carbon-intensity trace (CSV: long, wide, or Electricity Maps export); several files are merged",
    )
    parser.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="ZONE=REGION",
        help="read the trace's region or zone ZONE as REGION, e.g. GB=eu-west for an Electricity Maps export (repeatable)",
    )
    parser.add_argument("--workload", type=Path, help="workload CSV or JSON lines; default: a generated one")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated workload (default 1)")
    parser.add_argument(
        "--days",
        default="28",
        help="days of trace the generated workload covers, after a week of history, or 'all' (default 28)",
    )
    parser.add_argument(
        "--tasks-per-hour", type=float, help="mean arrivals per hour of the generated workload (default: the generator's)"
    )
    parser.add_argument("--regions", "--config", dest="regions", type=Path, help="regions config (default: ./regions.toml, else the bundled demo)")
    parser.add_argument("--forecaster", help="forecaster for window planning (default: the config's)")
    parser.add_argument("--expected", type=Path, help="JSON of expected shares: {class: {region: share}}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default replay-out/)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--dashboard-png",
        metavar="PATH",
        help="also draw the Grafana dashboard panels from this replay into one PNG at PATH (ending in .png)",
    )
    parser.add_argument("--quiet", action="store_true", help="print no progress bar")
    parser.add_argument(
        "--jobs", type=_positive_int, help="worker processes for the three policies (default: one per policy and core)"
    )
    _add_live_arguments(parser)


def _add_live_arguments(parser: argparse.ArgumentParser) -> None:
    live = parser.add_argument_group(
        "live output",
        "Show the replay on the dashboards: Prometheus metrics as the simulated clock advances, "
        "and the history (intensity, forecasts, task emissions) in InfluxDB.",
    )
    live.add_argument(
        "--serve-metrics",
        type=_port,
        metavar="PORT",
        help="serve the daemon's Prometheus metrics at http://ADDRESS:PORT/metrics while the simulated clock "
        "advances at --speed; when the replay ends, the final values stay served until Ctrl-C or SIGTERM",
    )
    live.add_argument(
        "--metrics-address",
        metavar="ADDRESS",
        help=f"with --serve-metrics, the address to listen on (default {DEFAULT_METRICS_ADDRESS}; "
        "0.0.0.0 for every interface)",
    )
    live.add_argument(
        "--speed",
        type=_speed,
        metavar="S",
        help=f"with --serve-metrics, simulated seconds per real second, 1 or more (default {DEFAULT_SPEED:g}: "
        "one simulated day per real minute)",
    )
    live.add_argument(
        "--influx",
        metavar="URL",
        help="write trace samples, the forecasts planned on and per-task emissions to the InfluxDB server "
        "at URL, an http:// or https:// URL such as http://127.0.0.1:8086, without credentials",
    )
    live.add_argument(
        "--influx-database",
        metavar="NAME",
        help="InfluxDB database, created when missing (default carbon)",
    )
    live.add_argument(
        "--influx-username",
        metavar="NAME",
        help=f"InfluxDB 1.x user (default: ${INFLUX_USERNAME_VARIABLE})",
    )
    live.add_argument(
        "--influx-password",
        metavar="SECRET",
        help=f"InfluxDB 1.x password (default: ${INFLUX_PASSWORD_VARIABLE}, which other users cannot see in ps)",
    )
    live.add_argument(
        "--influx-token",
        metavar="SECRET",
        help=f"InfluxDB 2.x/3.x API token (default: ${INFLUX_TOKEN_VARIABLE}, which other users cannot see in ps)",
    )


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {number}")
    return number


def _port(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {text!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {number}")
    return number


def _speed(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    # Below 1 the replay runs slower than real time, so a 28-day replay would
    # take weeks, and a tiny value would never finish.
    if not 1 <= number < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected simulated seconds per real second, a finite number of 1 or more (1 is real time), got {text!r}"
        )
    return number


def _days(text: str) -> float | None:
    if text == "all":
        return None
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not 0 < days < float("inf"):
        raise ValueError(f"--days takes a positive number of days or 'all', got {text!r}")
    return days


def _zone_map(pairs: list[str]) -> dict[str, str] | None:
    mapping = {}
    for pair in pairs:
        zone, separator, region = pair.partition("=")
        if not separator or not zone or not region:
            raise ValueError(f"--zone takes ZONE=REGION, such as GB=eu-west, got {pair!r}")
        mapping[zone] = region
    return mapping or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carbon-scheduler", description="Carbon-aware multi-region scheduler for Kubernetes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="log level (default warning; `run` logs at info unless told otherwise)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="schedule pods across the clusters of a regions config (the daemon)")
    run.add_argument("--config", type=Path, default=Path("regions.toml"), help="regions config (default regions.toml)")
    run.add_argument("--metrics-port", type=int, help="port for /metrics, /healthz and /readyz (default: no HTTP)")

    replay = commands.add_parser("replay", help="simulate the scheduler, a carbon-blind baseline and an oracle on a trace")
    _add_replay_arguments(replay)

    trace = commands.add_parser("trace", help="make or inspect carbon traces")
    trace_commands = trace.add_subparsers(dest="trace_command", required=True)
    synth = trace_commands.add_parser("synth", help="write the synthetic demo trace")
    synth.add_argument("--out", type=Path, default=Path("traces/demo.csv"), help="output CSV (default traces/demo.csv)")
    forecast = commands.add_parser("forecast", help="forecasters of carbon intensity")
    forecast_commands = forecast.add_subparsers(dest="forecast_command", required=True)
    backtest = forecast_commands.add_parser(
        "backtest", help="rolling-origin backtest: MAE and MAPE per region, forecaster and horizon"
    )
    backtest.add_argument("trace", type=Path, help="carbon-intensity trace (CSV)")
    backtest.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    backtest.add_argument(
        "--forecaster", action="append", dest="forecasters", help="forecaster to include (repeatable; default all)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        configure_logging("info" if args.log_level == "warning" else args.log_level)
        return run_daemon_command(args)
    configure_logging(args.log_level)
    if args.command == "replay":
        return run_replay_command(args)
    if args.command == "trace" and args.trace_command == "synth":
        return run_synth_command(args)
    if args.command == "forecast" and args.forecast_command == "backtest":
        from carbon_scheduler.forecast_command import run_backtest_command

        return run_backtest_command(args.trace, args.json, args.forecasters)
    raise AssertionError(f"unhandled command {args.command}")


def replay_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `replay` command, the same as `carbon-scheduler replay`."""
    return main(["replay", *(sys.argv[1:] if argv is None else argv)])


def run_replay_command(args: argparse.Namespace) -> int:
    from carbon_scheduler.carbon.traces import TraceError
    from carbon_scheduler.config import ConfigError, load_config
    from carbon_scheduler.replay.context import ReplayInputError
    from carbon_scheduler.replay.plots import write_plots
    from carbon_scheduler.replay.run import ReplayOptions, replay
    from carbon_scheduler.replay.summary import summarize, write_summary
    from carbon_scheduler.replay.table import print_report
    from carbon_scheduler.replay.taskcsv import write_tasks_csv
    from carbon_scheduler.replay.workload import WorkloadError
    from carbon_scheduler.store.errors import StoreError

    console = Console()
    errors = Console(stderr=True)
    try:
        days = _days(args.days)
        zone_map = _zone_map(args.zone)
        _check_live_arguments(args)
        dashboard_png = None if args.dashboard_png is None else dashboard_png_path(args.dashboard_png)
        args.out.mkdir(parents=True, exist_ok=True)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except OSError as error:
        print(f"error: cannot create the output folder {args.out}: {error.strerror or error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    options = ReplayOptions(
        trace=tuple(args.trace) if len(args.trace) > 1 else args.trace[0],
        zone_map=zone_map,
        seed=args.seed,
        days=days,
        workload=args.workload,
        tasks_per_hour=args.tasks_per_hour,
        forecaster=args.forecaster,
        expected=args.expected,
    )
    try:
        config = load_config(args.regions or default_regions_path())
    except (ConfigError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    try:
        live = LiveOutput.open(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    try:
        if args.quiet:
            result = replay(options, config, jobs=args.jobs, stream=live.stream)
        else:
            with _progress_bar(errors) as bar:
                bars: dict[str, int] = {}

                def advance(policy: str, count: int) -> None:
                    if policy not in bars:
                        bars[policy] = bar.add_task(f"replay: {policy}", total=None)
                    bar.advance(bars[policy], count)

                result = replay(options, config, jobs=args.jobs, progress=advance, stream=live.stream)
    except (ConfigError, TraceError, WorkloadError, ReplayInputError, ValueError, OSError) as error:
        # Plain print: an error must stay on one line whatever the terminal width.
        live.close()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except StoreError as error:
        live.close()
        print(f"error: writing the replay's history to InfluxDB failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        live.close()
        print("replay interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    summary = summarize(result)
    try:
        write_summary(summary, args.out / "summary.json")
        write_tasks_csv(result, args.out / "tasks.csv")
        written = [args.out / "summary.json", args.out / "tasks.csv"]
        if not args.no_plots:
            written += write_plots(result, args.out)
    except OSError as error:
        live.close()
        print(f"error: cannot write the results to {args.out}: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if dashboard_png is not None:
        from carbon_scheduler.replay.dashboard_preview import write_dashboard_preview

        try:
            written.append(write_dashboard_preview(result, dashboard_png))
        except OSError as error:
            live.close()
            print(f"error: writing the dashboard PNG {dashboard_png} failed: {error}", file=sys.stderr)
            return EXIT_INPUT_ERROR
    print_report(summary, console)
    console.print("wrote " + ", ".join(str(path) for path in written), markup=False, highlight=False)
    if live.server is not None:
        live.serve_until_stopped()
    live.close()
    return 0


def _check_live_arguments(args: argparse.Namespace) -> None:
    if args.speed is not None and args.serve_metrics is None:
        raise ValueError("--speed paces --serve-metrics; add --serve-metrics PORT or drop --speed")
    if args.metrics_address is not None and args.serve_metrics is None:
        raise ValueError(
            "--metrics-address sets the address of --serve-metrics; add --serve-metrics PORT or drop --metrics-address"
        )
    if args.influx is not None:
        check_influx_url(args.influx)
    influx_options = [
        name
        for name, value in (
            ("--influx-database", args.influx_database),
            ("--influx-username", args.influx_username),
            ("--influx-password", args.influx_password),
            ("--influx-token", args.influx_token),
        )
        if value is not None
    ]
    if influx_options and args.influx is None:
        if len(influx_options) == 1:
            raise ValueError(f"{influx_options[0]} applies to --influx URL; add --influx URL or drop it")
        raise ValueError(f"{', '.join(influx_options)} apply to --influx URL; add --influx URL or drop them")


def check_influx_url(url: str) -> None:
    """Raise ValueError unless `url` is an http:// or https:// URL without credentials.

    A bare `host:port` would otherwise name a SQLite file, and a password in the
    URL is visible to other users in ps, so both are rejected with the fix.
    """
    from urllib.parse import parse_qs, urlsplit

    from carbon_scheduler.config.redaction import has_credentials, redact_url

    masked_url = redact_url(url)
    scheme, separator, _ = url.strip().partition("://")
    if not separator:
        raise ValueError(
            f"--influx takes the http:// or https:// URL of an InfluxDB server, got {masked_url!r}; "
            f"add the scheme, as in http://{url.strip()}"
        )
    if scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"--influx takes the http:// or https:// URL of an InfluxDB server, got {masked_url!r} with the scheme "
            f"{scheme!r}; use http://HOST:PORT or https://HOST:PORT"
        )
    query_names = {name.lower() for name in parse_qs(urlsplit(url).query, keep_blank_values=True)}
    if has_credentials(url) or query_names & {"u", "p"}:
        raise ValueError(
            f"--influx URL {masked_url!r} must not contain credentials, because other users can see them in ps; "
            f"remove them from the URL and set ${INFLUX_USERNAME_VARIABLE} and ${INFLUX_PASSWORD_VARIABLE} "
            f"(or ${INFLUX_TOKEN_VARIABLE}), or pass --influx-username with ${INFLUX_PASSWORD_VARIABLE}"
        )


def dashboard_png_path(text: str) -> Path:
    """Return the `--dashboard-png` path, or raise ValueError when no PNG can be written there."""
    if not text.strip():
        raise ValueError("--dashboard-png needs a file name ending in .png, such as replay-out/dashboard.png, got ''")
    path = Path(text)
    if path.suffix.lower() != ".png":
        suggestion = path.with_suffix(".png") if path.name not in ("", ".", "..") else path / "dashboard.png"
        raise ValueError(
            f"--dashboard-png writes a PNG image, so the file name must end in .png, got {text!r}; "
            f"use a name such as {suggestion}"
        )
    if path.is_dir():
        raise ValueError(f"--dashboard-png {text} is a folder; give a file name in it, such as {path / 'dashboard.png'}")
    # The first existing ancestor must be a folder, or the missing folders cannot be created.
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"--dashboard-png {text} cannot be written, because {parent} is a file, not a folder; "
                    "choose a path in a folder"
                )
            break
    return path


def influx_credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Return username, password and token for `--influx`: each option, else its
    environment variable, else None. An empty variable counts as unset."""
    return {
        "username": args.influx_username or environ.get(INFLUX_USERNAME_VARIABLE) or None,
        "password": args.influx_password or environ.get(INFLUX_PASSWORD_VARIABLE) or None,
        "token": args.influx_token or environ.get(INFLUX_TOKEN_VARIABLE) or None,
    }


class LiveOutput:
    """The metrics server and the InfluxDB store of one replay, and the stream that feeds them."""

    def __init__(self) -> None:
        self.stream: StreamedReplay | None = None
        self.server: MetricsServer | None = None
        self.store: Store | None = None
        self._previous_sigterm: Callable[[int, FrameType | None], Any] | int | None = None

    @classmethod
    def open(cls, args: argparse.Namespace) -> LiveOutput:
        """Bind the metrics port and open the store that the arguments ask for."""
        live = cls()
        if args.serve_metrics is None and args.influx is None:
            return live

        import threading

        from carbon_scheduler.replay.streaming import StreamedReplay

        metrics = None
        lock = threading.Lock()
        try:
            if args.influx is not None:
                from carbon_scheduler.store.opening import open_store

                credentials = influx_credentials(args, os.environ)
                live.store = open_store(args.influx, database=args.influx_database, **credentials)
            if args.serve_metrics is not None:
                from carbon_scheduler.replay.metrics_server import MetricsServer
                from carbon_scheduler.telemetry.metrics import SchedulerMetrics

                metrics = SchedulerMetrics()
                address = args.metrics_address or DEFAULT_METRICS_ADDRESS
                try:
                    live.server = MetricsServer(metrics.registry, lock, address=address, port=args.serve_metrics)
                except OSError as error:
                    raise OSError(
                        f"cannot serve metrics on {address}:{args.serve_metrics}: "
                        f"{error.strerror or error}; choose another --serve-metrics port or --metrics-address"
                    ) from error
                live.server.start()
                # SIGTERM ends the run as Ctrl-C does, so `kill` stops a demo cleanly.
                live._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
                print(f"serving metrics at {live.server.url}", flush=True)
        except BaseException:
            live.close()
            raise
        speed = None if args.serve_metrics is None else (args.speed or DEFAULT_SPEED)
        live.stream = StreamedReplay(speed=speed, metrics=metrics, lock=lock, store=live.store)
        return live

    def serve_until_stopped(self) -> None:
        """Keep serving the final metrics until Ctrl-C or SIGTERM."""
        assert self.server is not None
        try:
            print(f"replay finished; serving the final metrics at {self.server.url} until Ctrl-C or SIGTERM", flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass

    def close(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.store is not None:
            self.store.close()
            self.store = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def run_daemon_command(args: argparse.Namespace) -> int:
    import asyncio

    from carbon_scheduler.config import ConfigError, load_config
    from carbon_scheduler.daemon.app import run_daemon

    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    from carbon_scheduler.daemon.connections import ClusterConfigError
    from carbon_scheduler.daemon.history import StoreOpenError

    try:
        return asyncio.run(run_daemon(config, metrics_port=args.metrics_port))
    except ClusterConfigError as error:
        if error.region in config.region_names:
            key_path: tuple[str, ...] = ("regions", error.region)
        else:
            key_path = ("scheduler", "lease_kubeconfig")
        print(f"error: {config_issue(config.path, key_path, str(error))}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except StoreOpenError as error:
        print(f"error: {config_issue(config.path, ('store', error.key), error.problem)}", file=sys.stderr)
        return EXIT_INPUT_ERROR


def config_issue(config_path: str | None, key_path: tuple[str, ...], problem: str) -> str:
    """Format a problem found after the config loaded as `FILE:LINE: KEY: problem`,
    the form of the loader's own errors."""
    from carbon_scheduler.config.errors import ConfigIssue
    from carbon_scheduler.config.source_map import build_source_map, format_key_path

    key = format_key_path(key_path)
    if config_path is None:
        return f"{key}: {problem}"
    try:
        text = Path(config_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        # The file changed or vanished since it loaded; the message still names it.
        line = None
    else:
        line = build_source_map(text).line_of(key_path)
    return str(ConfigIssue(config_path, line, key, problem))


def run_synth_command(args: argparse.Namespace) -> int:
    from carbon_scheduler.carbon.synthetic import make_demo_trace
    from carbon_scheduler.carbon.traces import write_trace

    trace = make_demo_trace()
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_trace(trace, args.out)
    except OSError as error:
        print(f"error: cannot write {args.out}: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(f"wrote {args.out}: {trace.steps} steps of {', '.join(trace.regions)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
