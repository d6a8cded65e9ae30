"""Speed and memory of `carbon-scheduler run` against fake API servers.

    python3 benchmarks/daemon_bench.py                 # all three measurements
    python3 benchmarks/daemon_bench.py throughput      # or latency, memory
    CARBON_BENCH_PROFILE=/tmp/prof python3 benchmarks/daemon_bench.py throughput

Layout: the machine has 2 cores, and the fake API servers (tests/kubefake) are
pure Python on one event loop, so running them in the daemon's process, or in
this script's, would make the daemon share a core with them. Each measurement
therefore starts two child processes: one that runs the three regions' fake
API servers (this file with `--fakes`, driven by JSON lines on stdin/stdout) and
the real daemon (`python -m carbon_scheduler.cli run --config ...`, static
carbon intensities, eu-west cleanest). This script only orchestrates.

Times come from the fakes' store: a listener stamps each pod when its ADDED
change commits and when a change first gives it a `spec.nodeName`, so creation
and binding are timed on one clock in one process. The CPU seconds of both
children are reported, to show which side was busy.

1. throughput: 3 regions x 100 nodes, and N pending pods in eu-west created
   before the daemon starts. Because eu-west is the cleanest region, every
   decision is a bind in the pod's own cluster. The figure is pods per second
   from the first binding to the last.
2. latency: the daemon idle, `critical` pods created one at a time at a steady
   rate in eu-west; p50 and p99 from creation to binding.
3. memory: pods already bound to nodes, spread over the regions, created before
   the daemon starts so its caches list them; VmRSS and VmHWM once ready.

With CARBON_BENCH_PROFILE=PREFIX set, the daemon runs under cProfile and each
measurement writes PREFIX-<measurement>.prof (read it with `python3 -m pstats`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INTENSITY = {"eu-west": 100.0, "us-east": 400.0, "asia-east": 450.0}
HOME = "eu-west"
CLASS_LABEL = "carbon-scheduler.io/class"
POD_REQUESTS = {"cpu": "100m", "memory": "128Mi"}


# The fake API servers' child process -------------------------------------------------


class BindingClock:
    """Stamps pod creation and first binding from the store's committed changes."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        # Wall time of the first binding, to compare with the daemon's log timestamps.
        self.first_bound_wall: float | None = None

    def listener(self, change: Any) -> None:
        if change.resource.plural != "pods":
            return
        uid = change.object["metadata"]["uid"]
        now = time.perf_counter()
        if change.type == "ADDED":
            self.created[uid] = now
            if (change.object.get("spec") or {}).get("nodeName"):
                self.bound.setdefault(uid, now)
        elif change.type == "MODIFIED" and (change.object.get("spec") or {}).get("nodeName"):
            self.bound.setdefault(uid, now)
            if self.first_bound_wall is None:
                self.first_bound_wall = time.time()


async def _serve_fakes(options: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.kubefake.fixtures import running_regions

    directory = Path(options["directory"])
    clock = BindingClock()
    started_cpu = time.process_time()
    async with running_regions(directory, job_controller=False) as regions:
        for name, server in regions.items():
            for index in range(options["nodes"]):
                server.add_node(f"{name}-node-{index:03d}", cpu="16", memory="64Gi", pods=110)
        names = list(regions)
        for index in range(options["cached"]):
            region = names[index % len(names)]
            node = f"{region}-node-{(index // len(names)) % options['nodes']:03d}"
            regions[region].create_pod(f"cached-{index:05d}", requests=POD_REQUESTS, node_name=node)
        for index in range(options["pending"]):
            regions[HOME].create_pod(f"pending-{index:05d}", requests=POD_REQUESTS)
        for server in regions.values():
            server.store.subscribe(clock.listener)
            server.clear_requests()
        setup_cpu = time.process_time() - started_cpu
        _reply({"kubeconfig": str(regions.kubeconfig), "setup_cpu_seconds": setup_cpu})

        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            kind = command.pop("cmd")
            if kind == "quit":
                _reply({"ok": True})
                return
            cpu_before = time.process_time()
            if kind == "wait_bound":
                result = await _wait_bound(clock, **command)
            elif kind == "trickle":
                result = await _trickle(regions[HOME], clock, **command)
            elif kind == "requests":
                result = {}
            else:
                raise ValueError(f"unknown command {kind!r}")
            result["fakes_cpu_seconds"] = time.process_time() - cpu_before
            result["requests"] = {
                name: _request_counts(server.requests) for name, server in regions.items()
            }
            _reply(result)


def _request_counts(records: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        key = f"{record.verb} {record.resource or record.path}"
        counts[key] = counts.get(key, 0) + 1
    return counts


async def _wait_bound(clock: BindingClock, *, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while len(clock.bound) < count and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    times = sorted(clock.bound.values())
    first, last = (times[0], times[-1]) if times else (None, None)
    last_wall = clock.first_bound_wall + (last - first) if times and clock.first_bound_wall is not None else None
    return {"bound": len(times), "first": first, "last": last, "last_wall": last_wall}


async def _trickle(server: Any, clock: BindingClock, *, rate: float, seconds: float, task_class: str, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    start = loop.time()
    uids = []
    for index in range(total):
        # Paced from the start time, so a slow step does not shift the later ones.
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pod = server.create_pod(f"steady-{index:05d}", requests=POD_REQUESTS, labels={CLASS_LABEL: task_class})
        uids.append(pod["metadata"]["uid"])
    deadline = time.perf_counter() + timeout
    while any(uid not in clock.bound for uid in uids) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    latencies = [clock.bound[uid] - clock.created[uid] for uid in uids if uid in clock.bound]
    return {"created": total, "latencies": latencies, "pacing_seconds": loop.time() - start}


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


# The orchestrator ------------------------------------------------------------------


class Fakes:
    """The child process that runs the fake API servers."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, directory: Path, *, nodes: int, pending: int, cached: int) -> tuple[Fakes, dict[str, Any]]:
        options = {"directory": str(directory), "nodes": nodes, "pending": pending, "cached": cached}
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--fakes", json.dumps(options),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_env(), cwd=ROOT,
            limit=2**26,
        )
        fakes = cls(process)
        return fakes, await fakes._read()

    async def ask(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **arguments}) + "\n").encode())
        await self.process.stdin.drain()
        return await self._read()

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fakes' process ended (exit code {await self.process.wait()})")
        return json.loads(line)

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.ask("quit"), 10)
                await asyncio.wait_for(self.process.wait(), 10)
            except (TimeoutError, RuntimeError, BrokenPipeError, ConnectionResetError):
                self.process.kill()
                await self.process.wait()


class Daemon:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @classmethod
    async def start(cls, directory: Path, kubeconfig: str, *, profile: str | None) -> Daemon:
        config = _write_config(directory / "regions.toml", kubeconfig)
        port = _free_port()
        log = directory / "daemon.log"
        command = [sys.executable]
        if profile:
            command += ["-m", "cProfile", "-o", profile]
        command += ["-m", "carbon_scheduler.cli", "run", "--config", str(config), "--metrics-port", str(port)]
        with log.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=_env(), cwd=ROOT
            )
        return cls(process, port, log)

    async def get(self, path: str) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.decode().partition("\r\n\r\n")
        return int(head.split()[1]), body

    async def wait_ready(self, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.returncode is not None:
                break
            try:
                status, _ = await self.get("/readyz")
                if status == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"daemon not ready after {timeout} s, see the end of its log:\n{self.log.read_text()[-3000:]}")

    async def metrics(self) -> dict[str, float]:
        _, body = await self.get("/metrics")
        values: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = values.get(name, 0.0) + float(value)
        return values

    def memory(self) -> dict[str, float]:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return {key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}

    def cpu_seconds(self) -> float:
        return _process_cpu(self.process.pid)

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 60)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sample_cpu(samples: list[tuple[float, dict[str, float]]], pids: dict[str, int], interval: float = 0.02) -> None:
    """Append (perf_counter, CPU seconds per process) to `samples` until cancelled.

    On Linux perf_counter reads CLOCK_MONOTONIC, the clock that the fakes' process
    stamps bindings with, so the two can be compared."""
    while True:
        samples.append((time.perf_counter(), {name: _process_cpu(pid) for name, pid in pids.items()}))
        await asyncio.sleep(interval)


def _cpu_between(samples: list[tuple[float, dict[str, float]]], name: str, start: float, end: float) -> float:
    def at(moment: float) -> float:
        before = [cpu[name] for stamp, cpu in samples if stamp <= moment]
        return before[-1] if before else samples[0][1][name]

    return at(end) - at(start)


def _log_time(log: Path, event: str) -> float | None:
    """Wall time of the first daemon log line with `event`."""
    for line in log.read_text().splitlines():
        if f'"event": "{event}"' in line:
            stamp = json.loads(line)["timestamp"]
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_config(path: Path, kubeconfig: str) -> Path:
    # A pod cap far above the pod counts, so only node room could limit placement.
    lines = ["[scheduler]", ""]
    for name, intensity in INTENSITY.items():
        lines += [
            f"[regions.{name}]",
            f'kubeconfig = "{kubeconfig}"',
            f'context = "{name}"',
            "max_pods = 1000000",
            f"[regions.{name}.levels]",
            'mode = "absolute"',
            "low_below_g_per_kwh = 150",
            "high_above_g_per_kwh = 420",
            f"[regions.{name}.carbon]",
            'source = "static"',
            f"intensity_g_per_kwh = {intensity}",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def _profile_path(name: str) -> str | None:
    prefix = os.environ.get("CARBON_BENCH_PROFILE")
    return f"{prefix}-{name}.prof" if prefix else None


async def _session(name: str, *, nodes: int, pending: int = 0, cached: int = 0):
    directory = Path(tempfile.mkdtemp(prefix=f"daemon-bench-{name}-"))
    fakes, setup = await Fakes.start(directory, nodes=nodes, pending=pending, cached=cached)
    try:
        daemon = await Daemon.start(directory, setup["kubeconfig"], profile=_profile_path(name))
    except BaseException:
        await fakes.stop()
        raise
    return directory, fakes, setup, daemon


async def _close(directory: Path, fakes: Fakes, daemon: Daemon) -> None:
    """Stop both children; keep the directory with the daemon's log only if it failed."""
    code = await daemon.stop()
    await fakes.stop()
    if code != 0:
        print(f"warning: daemon exited with code {code}, see its log {daemon.log}", file=sys.stderr)
    else:
        shutil.rmtree(directory, ignore_errors=True)


async def measure_throughput(*, nodes: int, pending: int) -> dict[str, Any]:
    directory, fakes, _, daemon = await _session("throughput", nodes=nodes, pending=pending)
    try:
        ready_seconds = await daemon.wait_ready()
        samples: list[tuple[float, dict[str, float]]] = []
        sampler = asyncio.create_task(_sample_cpu(samples, {"daemon": daemon.process.pid, "fakes": fakes.process.pid}))
        cpu_before = daemon.cpu_seconds()
        result = await fakes.ask("wait_bound", count=pending, timeout=300.0)
        daemon_cpu = daemon.cpu_seconds() - cpu_before
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        # Let the annotation patches and Events that follow each binding finish.
        await asyncio.sleep(2.0)
        requests = (await fakes.ask("requests"))["requests"]
        metrics = await daemon.metrics()
        memory = daemon.memory()
        # Read before _close, which removes the directory with the log.
        loop_started = _log_time(daemon.log, "scheduler_started")
    finally:
        await _close(directory, fakes, daemon)
    span = (result["last"] - result["first"]) if result["bound"] > 1 else float("nan")
    busy = {
        name: _cpu_between(samples, name, result["first"], result["last"]) / span
        for name in ("daemon", "fakes")
    } if span == span and span > 0 else {}
    from_loop = result["last_wall"] - loop_started if loop_started and result["last_wall"] else float("nan")
    decisions = sum(v for k, v in metrics.items() if k.startswith("carbon_scheduler_decisions_total"))
    decide_sum = metrics.get("carbon_scheduler_decision_duration_seconds_sum", 0.0)
    decide_count = metrics.get("carbon_scheduler_decision_duration_seconds_count", 0.0) or 1.0
    return {
        "pending": pending,
        "bound": result["bound"],
        "span_seconds": span,
        "pods_per_second": (result["bound"] - 1) / span if span == span and span > 0 else float("nan"),
        "loop_start_to_last_binding_seconds": from_loop,
        "pods_per_second_from_loop_start": result["bound"] / from_loop if from_loop == from_loop else float("nan"),
        "cores_busy_during_span": busy,
        "decisions_total": decisions,
        "mean_decide_ms": 1000 * decide_sum / decide_count,
        "ready_seconds": ready_seconds,
        "daemon_cpu_seconds": daemon_cpu,
        "fakes_cpu_seconds": result["fakes_cpu_seconds"],
        "requests_home": requests[HOME],
        "rss_mb": memory["VmRSS"],
    }


async def measure_latency(*, nodes: int, rate: float, seconds: float) -> dict[str, Any]:
    directory, fakes, _, daemon = await _session("latency", nodes=nodes)
    try:
        await daemon.wait_ready()
        await asyncio.sleep(1.0)  # let the start-up node labelling settle
        cpu_before = daemon.cpu_seconds()
        result = await fakes.ask("trickle", rate=rate, seconds=seconds, task_class="critical", timeout=30.0)
        daemon_cpu = daemon.cpu_seconds() - cpu_before
    finally:
        await _close(directory, fakes, daemon)
    latencies = sorted(result["latencies"])
    if not latencies:
        raise RuntimeError("no critical pod was bound")
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "created": result["created"],
        "bound": len(latencies),
        "rate": rate,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * quantiles[98],
        "max_ms": 1000 * latencies[-1],
        "daemon_cpu_seconds": daemon_cpu,
        "fakes_cpu_seconds": result["fakes_cpu_seconds"],
    }


async def measure_memory(*, nodes: int, cached: int) -> dict[str, Any]:
    directory, fakes, setup, daemon = await _session(f"memory-{cached}", nodes=nodes, cached=cached)
    try:
        ready_seconds = await daemon.wait_ready()
        await asyncio.sleep(3.0)  # node labelling and the first watch events settle
        memory = daemon.memory()
    finally:
        await _close(directory, fakes, daemon)
    return {"cached": cached, "ready_seconds": ready_seconds, "rss_mb": memory["VmRSS"], "hwm_mb": memory["VmHWM"], "fakes_setup_cpu_seconds": setup["setup_cpu_seconds"]}


def _machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


async def main_async(args: argparse.Namespace) -> int:
    selected = args.measurements or ["throughput", "latency", "memory"]
    print(_machine(), flush=True)
    results: dict[str, Any] = {}
    if "throughput" in selected:
        results["throughput"] = await measure_throughput(nodes=args.nodes, pending=args.pending)
        print("throughput:", json.dumps(results["throughput"]), flush=True)
    if "latency" in selected:
        results["latency"] = await measure_latency(nodes=args.nodes, rate=args.rate, seconds=args.seconds)
        print("latency:", json.dumps(results["latency"]), flush=True)
    if "memory" in selected:
        results["memory"] = [await measure_memory(nodes=args.nodes, cached=count) for count in args.cached]
        for row in results["memory"]:
            print("memory:", json.dumps(row), flush=True)
    print(_machine(), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurements", nargs="*", help="throughput, latency and/or memory (default: all three)")
    parser.add_argument("--fakes", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=100, help="nodes per region (default 100)")
    parser.add_argument("--pending", type=int, default=1000, help="pending pods for the throughput run (default 1000)")
    parser.add_argument("--rate", type=float, default=20.0, help="critical pods per second for the latency run (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run (default 10)")
    parser.add_argument("--cached", type=int, nargs="+", default=[0, 10000], help="bound pods for the memory runs (default 0 10000)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.measurements) - {"throughput", "latency", "memory"})
    if unknown:
        parser.error(f"unknown measurement {unknown[0]!r}: use throughput, latency or memory")
    if args.fakes:
        asyncio.run(_serve_fakes(json.loads(args.fakes)))
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
