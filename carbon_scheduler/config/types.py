"""Settings as plain, immutable data: what `regions.toml` turns into.

Every field carries its unit in its name or docstring, and every default says where
it comes from. The pure `policy` core reads these types and nothing else of the
config package, so it never touches a file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from carbon_scheduler.model import Node, Resources


# The `forecaster` value that plans on each carbon source's own forecast.
PROVIDER_FORECASTER = "provider"


@dataclass(frozen=True, slots=True)
class EnergyModel:
    """Power drawn by a task per requested resource, before PUE.

    Defaults are Cloud Carbon Footprint's published coefficients for AWS: 0.74 W per
    vCPU at idle, 3.5 W per vCPU at full load and 0.392 W per GB of memory
    (https://www.cloudcarbonfootprint.org/docs/methodology). Average CPU power is
    interpolated linearly between idle and busy at `cpu_utilization`, as that
    methodology does.
    """

    watts_per_vcpu_idle: float = 0.74
    watts_per_vcpu_busy: float = 3.5
    cpu_utilization: float = 0.5
    watts_per_gb_memory: float = 0.392

    def watts(self, request: Resources) -> float:
        """Average IT power in watts of a task that requests `request`."""
        per_vcpu = self.watts_per_vcpu_idle + self.cpu_utilization * (
            self.watts_per_vcpu_busy - self.watts_per_vcpu_idle
        )
        return request.vcpus * per_vcpu + request.memory_gb * self.watts_per_gb_memory


@dataclass(frozen=True, slots=True)
class AbsoluteLevels:
    """Levels from fixed intensities: `low` below `low_below_g_per_kwh`, `high` at or
    above `high_above_g_per_kwh`, `medium` between."""

    low_below_g_per_kwh: float
    high_above_g_per_kwh: float


@dataclass(frozen=True, slots=True)
class RelativeLevels:
    """Levels from the region's own trailing history: `low` below the
    `low_below_percentile` of the last `history_hours` hours, `high` at or above the
    `high_above_percentile`, `medium` between.

    Relative levels make a clean grid and a dirty grid both show green at their own
    best hours, which is what a per-region label should say.
    """

    low_below_percentile: float = 33.0
    high_above_percentile: float = 67.0
    history_hours: int = 168


LevelThresholds = AbsoluteLevels | RelativeLevels


class CarbonSourceKind(enum.StrEnum):
    STATIC = "static"
    REPLAY = "replay"
    SCRIPTED = "scripted"
    ELECTRICITYMAPS = "electricitymaps"
    WATTTIME = "watttime"
    UKCARBON = "ukcarbon"


@dataclass(frozen=True, slots=True)
class CarbonSourceSpec:
    """Where a region's live intensity comes from.

    `static` needs `intensity_g_per_kwh`; `replay` needs `trace` (path of a CSV trace)
    and `seconds_per_hour` (wall-clock seconds per hour of trace). Every other
    setting of a source, validated by the loader, is in `options` under its key
    in `regions.toml` (`zone`, `api_key_env`, `timeout_seconds`, ...); relative
    file paths there are already resolved.

    Every source also takes `stale_after_seconds`, the data age (now minus the
    latest sample's time) above which the region counts as stale, and
    `poll_interval_seconds`, the time between two polls of the source. None means
    the daemon's defaults: three source steps, and a quarter of a step but at
    most a minute (see `daemon.carbon_feed`).
    """

    kind: CarbonSourceKind
    intensity_g_per_kwh: float | None = None
    trace: str | None = None
    seconds_per_hour: float | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    stale_after_seconds: float | None = None
    poll_interval_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """One region: a cluster with its nodes, its pod cap and its carbon settings.

    `max_pods` caps how many of this scheduler's task pods may be bound there and
    not finished at once. `pue` is the data centre's power usage effectiveness; the
    default 1.135 is Cloud Carbon Footprint's AWS figure. `kubeconfig` and `context`
    name the API server; with both None the daemon uses in-cluster config.
    `nodes` are the region's nodes as `regions.toml` describes them, which replay
    uses; the daemon reads the live nodes from the API server instead.
    """

    name: str
    max_pods: int = 4
    pue: float = 1.135
    nodes: tuple[Node, ...] = ()
    levels: LevelThresholds = field(default_factory=RelativeLevels)
    energy: EnergyModel = field(default_factory=EnergyModel)
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    carbon: CarbonSourceSpec | None = None


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """Settings of the class rules, shared by the daemon and replay.

    - `standard_max_wait_seconds`: how long a `standard` task waits for room in the
      greenest region before it takes the greenest region that has room.
    - `default_deadline_seconds`: deadline of a `deferrable` task that gives none,
      counted from its arrival.
    - `default_expected_duration_seconds`: run time assumed for a task that gives none.
    - `deadline_margin_seconds`: a `deferrable` task plans to finish at least this
      long before its deadline, as slack for waiting on room that critical and
      standard tasks took meanwhile. An hour kept every deadline on the demo
      workload, where ten minutes missed some.
    - `planning_horizon_hours`: how far ahead the window planner looks.
    - `forecaster`: name of the forecaster that window planning uses. "provider"
      plans on each source's own forecast where it has one, and on the default
      model forecaster for a region whose provider forecast is missing, stale or
      shorter than the planning horizon.
    - `deferrable_headroom_pods`: pods a deferred window leaves free in every slot
      it books, for critical and standard tasks that arrive unannounced; windows
      without that headroom are used only when none with it exist.
    - `defer_min_saving_percent`: a deferrable task waits for a later window only
      when the forecast says it is at least this much cleaner than starting now,
      because smaller gains are within forecast error. 10 gave the largest saving
      on the demo workload among 0, 3, 5 and 10.
    - `leader_election`: whether daemon replicas elect a leader through a
      `coordination.k8s.io/v1` Lease, so only one of them schedules. Turn it off
      only when exactly one replica runs.
    - `leader_election_region`: region whose cluster holds the Lease. When None,
      the Lease lives in the cluster of `lease_kubeconfig` and `lease_context`
      (typically the management cluster the daemon runs in), else in the pod's own
      cluster through in-cluster config, else in the first region of
      `regions.toml`. A region that holds the Lease stops scheduling in every
      region while its API server is down, so a cluster outside the scheduled
      regions is the robust choice.
    - `lease_kubeconfig`, `lease_context`: kubeconfig file and context of the
      cluster that holds the Lease when `leader_election_region` is None; either
      may be None (the default kubeconfig, or its current-context).
    - `lease_name`, `lease_namespace`: the Lease object's name and namespace.
    - `lease_duration_seconds`: how long a Lease stays valid after its last
      renewal; a standby takes over once it has expired. client-go's default.
    - `lease_renew_seconds`: how often the leader renews the Lease.
    - `lease_retry_seconds`: how often a standby tries to acquire the Lease, and
      how soon the leader retries a failed renewal. The leader stops scheduling
      when it has not renewed for `lease_duration_seconds - lease_retry_seconds`,
      so it stops before a standby can take over.
    """

    standard_max_wait_seconds: int = 900
    default_deadline_seconds: int = 24 * 3600
    default_expected_duration_seconds: int = 3600
    deadline_margin_seconds: int = 3600
    planning_horizon_hours: int = 48
    forecaster: str = "profile-ar-blend"
    deferrable_headroom_pods: int = 0
    defer_min_saving_percent: float = 10.0
    leader_election: bool = True
    leader_election_region: str | None = None
    lease_kubeconfig: str | None = None
    lease_context: str | None = None
    lease_name: str = "carbon-scheduler"
    lease_namespace: str = "default"
    lease_duration_seconds: int = 15
    lease_renew_seconds: float = 5.0
    lease_retry_seconds: float = 2.0


DEFAULT_STORE_FILE = "carbon-history.db"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Location and credentials of the store that keeps the daemon's samples, forecasts and emissions.

    - `url`: anything `store.opening.open_store` accepts: a file path or
      `sqlite:` URL for the embedded SQLite store, `:memory:` for a store that
      is lost on exit, or an `http(s)://host:port` InfluxDB URL. The loader
      resolves a relative file path against the directory of the configuration
      file, and defaults to `carbon-history.db` there.
    - `database`: the InfluxDB database (a bucket mapped to a database on 2.x).
    - `username`, and the password from `password_env` (an environment variable)
      or `password_file` (a file, such as a mounted Secret): InfluxDB 1.x
      authentication.
    - `token_env` or `token_file`: an InfluxDB 2.x/3.x API token, sent as
      `Authorization: Token ...` instead of a username and password.

    The loader allows the credential fields only with an InfluxDB URL and at most
    one of each `_env`/`_file` pair. Secrets are read when the daemon starts,
    never stored in the file.
    """

    url: str = DEFAULT_STORE_FILE
    database: str = "carbon"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None

    @property
    def is_influx(self) -> bool:
        return self.url.lower().startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded `regions.toml`: scheduler settings, the regions in file order and
    the history store."""

    scheduler: SchedulerSettings
    regions: tuple[RegionSpec, ...]
    path: str | None = None
    store: StoreSettings = field(default_factory=StoreSettings)

    def region(self, name: str) -> RegionSpec:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(region.name for region in self.regions)
