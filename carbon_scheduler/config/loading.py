"""Loading and validation of `regions.toml`.

`tomllib` turns the text into dicts, and a schema reader then walks them, turning
each table into the immutable types of `config.types`. The reader does not stop at
the first problem: it records every problem with its key path and line and raises a
single ConfigError at the end, so one run lists everything a user has to fix. Lines
come from `source_map`, because `tomllib` reports none.

Schema (every table is optional, but at least one `[regions.NAME]` is required):

    [scheduler]               the fields of SchedulerSettings
    [regions.NAME]            max_pods, pue, kubeconfig, context, namespaces
    [regions.NAME.levels]     mode = "absolute" | "relative", and that mode's thresholds
    [regions.NAME.energy]     the fields of EnergyModel
    [[regions.NAME.nodes]]    name, cpu, memory, ephemeral_storage, pods, labels,
                              taints, ready, unschedulable, extended
    [regions.NAME.carbon]     source = "static" | "replay" | "scripted" |
                              "electricitymaps" | "watttime" | "ukcarbon", the
                              keys of that source (CARBON_SOURCE_KEYS) and the
                              keys every source takes (CARBON_COMMON_KEYS); any
                              other key is an error. Keys without a
                              CarbonSourceSpec field are validated and go to
                              CarbonSourceSpec.options
    [store]                   the fields of StoreSettings

Relative paths (`kubeconfig`, `scheduler.lease_kubeconfig`, `carbon.trace`, `carbon.schedule`, the credential
files and a `store.url` that is a file) are resolved against the directory of the configuration file, so a config
works from any working directory.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from carbon_scheduler.config.errors import ConfigError, ConfigIssue
from carbon_scheduler.config.names import (
    dns_label_problem,
    dns_subdomain_problem,
    extended_resource_problem,
    label_value_problem,
    qualified_name_problem,
)
from carbon_scheduler.config.reader import MISSING, REQUIRED, TableReader, in_range
from carbon_scheduler.config.redaction import redact_url
from carbon_scheduler.config.source_map import KeyPath, build_source_map, format_key_path
from carbon_scheduler.config.types import (
    AbsoluteLevels,
    CarbonSourceKind,
    CarbonSourceSpec,
    Config,
    EnergyModel,
    LevelThresholds,
    RegionSpec,
    RelativeLevels,
    SchedulerSettings,
    StoreSettings,
)
from carbon_scheduler.model import Node, Resources, Taint, TaintEffect

STRING_SOURCE = "<string>"

TOP_KEYS = ("scheduler", "regions", "store")
SCHEDULER_KEYS = tuple(field.name for field in fields(SchedulerSettings))
REGION_KEYS = (
    "max_pods",
    "pue",
    "kubeconfig",
    "context",
    "namespaces",
    "levels",
    "energy",
    "nodes",
    "carbon",
)
LEVEL_MODES = ("absolute", "relative")
ABSOLUTE_LEVEL_KEYS = ("mode", "low_below_g_per_kwh", "high_above_g_per_kwh")
RELATIVE_LEVEL_KEYS = ("mode", "low_below_percentile", "high_above_percentile", "history_hours")
ENERGY_KEYS = tuple(field.name for field in fields(EnergyModel))
NODE_KEYS = (
    "name",
    "cpu",
    "memory",
    "ephemeral_storage",
    "pods",
    "labels",
    "taints",
    "ready",
    "unschedulable",
    "extended",
)
TAINT_KEYS = ("key", "value", "effect")
# Settings of the HTTP client that every API source accepts (carbon.http.HttpSettings).
CARBON_HTTP_KEYS = (
    "base_url",
    "timeout_seconds",
    "max_attempts",
    "backoff_initial_seconds",
    "backoff_max_seconds",
    "retry_after_max_seconds",
    "cache_ttl_seconds",
)
# The keys of each carbon source, besides `source`.
CARBON_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    CarbonSourceKind.STATIC.value: ("intensity_g_per_kwh",),
    CarbonSourceKind.REPLAY.value: (
        "trace",
        "seconds_per_hour",
        "trace_region",
        "start_offset_hours",
        "start_time",
    ),
    CarbonSourceKind.SCRIPTED.value: ("schedule", "schedule_region"),
    CarbonSourceKind.ELECTRICITYMAPS.value: (
        "zone",
        "api_key_env",
        "api_key_file",
        "emission_factor_type",
        "disable_estimations",
        "history_endpoint",
        *CARBON_HTTP_KEYS,
    ),
    CarbonSourceKind.WATTTIME.value: (
        "region",
        "signal_type",
        "horizon_hours",
        "username",
        "username_env",
        "username_file",
        "password_env",
        "password_file",
        *CARBON_HTTP_KEYS,
    ),
    CarbonSourceKind.UKCARBON.value: ("region_id", *CARBON_HTTP_KEYS),
}
# Keys that every carbon source takes (CarbonSourceSpec fields).
CARBON_COMMON_KEYS = ("stale_after_seconds", "poll_interval_seconds")
STORE_KEYS = tuple(field.name for field in fields(StoreSettings))
# Keys of [store] that only an InfluxDB URL uses.
STORE_INFLUX_KEYS = ("database", "username", "password_env", "password_file", "token_env", "token_file")
STORE_URL_FORMS = (
    'a file path ("carbon-history.db"), ":memory:", sqlite:///relative/path, '
    "sqlite:////absolute/path or an InfluxDB URL (http://host:8086)"
)
EMISSION_FACTOR_TYPES = ("lifecycle", "direct")
HISTORY_ENDPOINTS = ("past-range", "history")
WATTTIME_SIGNAL_TYPES = ("co2_moer", "co2_aoer")
WATTTIME_MAX_HORIZON_HOURS = 72
UK_REGION_IDS = (1, 17)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# Without `seconds_per_hour` a replayed trace runs in real time: one hour per hour.
DEFAULT_SECONDS_PER_HOUR = 3600.0

_DEFAULT_SCHEDULER = SchedulerSettings()
_DEFAULT_STORE = StoreSettings()
_DEFAULT_LEVELS = RelativeLevels()
_DEFAULT_ENERGY = EnergyModel()
_DEFAULT_REGION = RegionSpec(name="default")
_DEFAULT_NODE_PODS = Node(name="default", allocatable=Resources()).allocatable_pods

# tomllib ends each message with "(at line L, column C)" or "(at end of document)".
_TOML_POSITION = re.compile(
    r"(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)",
    re.DOTALL,
)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a `regions.toml` file.

    Raises ConfigError for a file that cannot be read, is not UTF-8, is not valid
    TOML or does not match the schema.
    """
    file = os.fspath(path)
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        issue = ConfigIssue(file, None, "", f"cannot read the configuration file: {reason}")
        raise ConfigError([issue]) from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        message = f"invalid UTF-8 at byte {error.start}; save the file as UTF-8"
        raise ConfigError([ConfigIssue(file, line, "", message)]) from error
    return parse_config(text, file)


def parse_config(text: str, path: str = STRING_SOURCE) -> Config:
    """Parse and validate the text of a `regions.toml`.

    `path` names the file in error messages, and relative paths inside the text are
    resolved against its directory. With the default "<string>", relative paths stay
    relative to the working directory. Raises ConfigError listing every problem.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_issue(error, text, path)]) from error
    except RecursionError as error:
        message = "invalid TOML: arrays or inline tables are nested too deeply"
        raise ConfigError([ConfigIssue(path, None, "", message)]) from error

    base_dir = None if path == STRING_SOURCE else Path(path).parent
    reader = _SchemaReader(path, build_source_map(text), base_dir)
    scheduler, regions = reader.read_document(document)
    store = reader.read_store_table(document)
    if reader.issues:
        raise ConfigError(reader.issues)
    return Config(
        scheduler=scheduler,
        regions=regions,
        path=None if path == STRING_SOURCE else path,
        store=store,
    )


def _syntax_issue(error: tomllib.TOMLDecodeError, text: str, path: str) -> ConfigIssue:
    """Move tomllib's "(at line L, column C)" suffix into the issue's position."""
    raw = str(error)
    match = _TOML_POSITION.fullmatch(raw)
    if match is None:
        return ConfigIssue(path, None, "", f"invalid TOML: {raw}")
    message = match.group("message")
    message = message[:1].lower() + message[1:]
    if match.group("line") is not None:
        line, column = int(match.group("line")), int(match.group("column"))
    else:
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    return ConfigIssue(path, line, "", f"invalid TOML: {message}", column)


class _SchemaReader(TableReader):
    """Reads the `regions.toml` schema with the typed getters of TableReader."""

    def read_document(
        self, document: dict[str, Any]
    ) -> tuple[SchedulerSettings, tuple[RegionSpec, ...]]:
        self.check_keys(document, (), TOP_KEYS)
        scheduler = _DEFAULT_SCHEDULER
        if "scheduler" in document:
            table = self.table(document["scheduler"], ("scheduler",))
            if table is not None:
                scheduler = self.read_scheduler(table)
        regions = self.read_regions(document)
        self.check_leader_election_region(scheduler, regions)
        return scheduler, regions

    def check_leader_election_region(self, scheduler: SchedulerSettings, regions: tuple[RegionSpec, ...]) -> None:
        name = scheduler.leader_election_region
        if not name:
            return
        # The daemon would ignore lease_kubeconfig and lease_context, so a config that
        # sets both ways of placing the Lease is rejected instead of guessed at.
        lease_keys = " and ".join(
            key for key in ("lease_kubeconfig", "lease_context") if getattr(scheduler, key) is not None
        )
        if lease_keys:
            self.report(
                ("scheduler", "leader_election_region"),
                f"cannot be combined with {lease_keys}, because both say which cluster holds the "
                f"leader Lease. Remove leader_election_region to keep the Lease in the cluster of "
                f"{lease_keys}, or remove {lease_keys} to keep it in region {name!r}",
            )
        if not regions:
            return
        names = [region.name for region in regions]
        if name not in names:
            self.report(
                ("scheduler", "leader_election_region"),
                "must name a region of this file, whose cluster holds the leader Lease",
                got=name,
                allowed=names,
            )

    def read_scheduler(self, table: dict[str, Any]) -> SchedulerSettings:
        path: KeyPath = ("scheduler",)
        defaults = _DEFAULT_SCHEDULER
        self.check_keys(table, path, SCHEDULER_KEYS)
        issues_before = len(self.issues)
        settings = SchedulerSettings(
            standard_max_wait_seconds=self.integer(
                table,
                path,
                "standard_max_wait_seconds",
                default=defaults.standard_max_wait_seconds,
                minimum=0,
            ),
            default_deadline_seconds=self.integer(
                table,
                path,
                "default_deadline_seconds",
                default=defaults.default_deadline_seconds,
                minimum=1,
            ),
            default_expected_duration_seconds=self.integer(
                table,
                path,
                "default_expected_duration_seconds",
                default=defaults.default_expected_duration_seconds,
                minimum=1,
            ),
            deadline_margin_seconds=self.integer(
                table,
                path,
                "deadline_margin_seconds",
                default=defaults.deadline_margin_seconds,
                minimum=0,
            ),
            planning_horizon_hours=self.integer(
                table,
                path,
                "planning_horizon_hours",
                default=defaults.planning_horizon_hours,
                minimum=1,
            ),
            forecaster=self.string(table, path, "forecaster", default=defaults.forecaster),
            deferrable_headroom_pods=self.integer(
                table,
                path,
                "deferrable_headroom_pods",
                default=defaults.deferrable_headroom_pods,
                minimum=0,
            ),
            defer_min_saving_percent=self.number(
                table,
                path,
                "defer_min_saving_percent",
                default=defaults.defer_min_saving_percent,
                minimum=0.0,
                maximum=100.0,
            ),
            leader_election=self.boolean(table, path, "leader_election", default=defaults.leader_election),
            leader_election_region=self.string(table, path, "leader_election_region", default=None),
            lease_kubeconfig=self.file_path(table, path, "lease_kubeconfig", required=False),
            lease_context=self.string(table, path, "lease_context", default=None) or None,
            lease_name=self.string(
                table, path, "lease_name", default=defaults.lease_name, check=dns_subdomain_problem
            ),
            lease_namespace=self.string(
                table, path, "lease_namespace", default=defaults.lease_namespace, check=dns_label_problem
            ),
            lease_duration_seconds=self.integer(
                table,
                path,
                "lease_duration_seconds",
                default=defaults.lease_duration_seconds,
                minimum=1,
            ),
            lease_renew_seconds=self.number(
                table, path, "lease_renew_seconds", default=defaults.lease_renew_seconds, above=0.0
            ),
            lease_retry_seconds=self.number(
                table, path, "lease_retry_seconds", default=defaults.lease_retry_seconds, above=0.0
            ),
        )

        # The leader renews every lease_renew_seconds and gives up after
        # lease_duration_seconds - lease_retry_seconds without a renewal, so a renewal
        # and one retry must fit before that.
        if len(self.issues) == issues_before:
            budget = settings.lease_duration_seconds - settings.lease_retry_seconds
            if settings.lease_renew_seconds >= budget:
                self.report(
                    path + ("lease_renew_seconds",),
                    "must be less than lease_duration_seconds - lease_retry_seconds = "
                    f"{budget:g}, or the leader would stop leading before its first renewal; "
                    "renew more often or lengthen lease_duration_seconds",
                    got=table.get("lease_renew_seconds", settings.lease_renew_seconds),
                )

        # A deferrable task that gives neither deadline nor duration gets all three
        # defaults, and it must still be able to finish in time.
        needed = settings.default_expected_duration_seconds + settings.deadline_margin_seconds
        if len(self.issues) == issues_before and settings.default_deadline_seconds < needed:
            self.report(
                path + ("default_deadline_seconds",),
                "must be at least default_expected_duration_seconds + "
                f"deadline_margin_seconds = {needed}, or a deferrable task with the "
                "defaults could never finish in time",
                got=settings.default_deadline_seconds,
            )
        return settings

    def read_regions(self, document: dict[str, Any]) -> tuple[RegionSpec, ...]:
        fix = "add a table such as [regions.eu-west] with max_pods = 4"
        if "regions" not in document:
            self.report(("regions",), f"at least one region is required; {fix}", line=1)
            return ()
        table = self.table(document["regions"], ("regions",))
        if table is None:
            return ()
        if not table:
            self.report(("regions",), f"at least one region is required; {fix}")
            return ()
        regions = []
        for name, item in table.items():
            path: KeyPath = ("regions", name)
            problem = dns_label_problem(name)
            if problem is not None:
                self.report(path, f"invalid region name: {problem}", got=name)
            region = self.table(item, path)
            if region is not None:
                regions.append(self.read_region(name, region, path))
        return tuple(regions)

    def read_region(self, name: str, table: dict[str, Any], path: KeyPath) -> RegionSpec:
        self.check_keys(table, path, REGION_KEYS)
        max_pods = self.integer(
            table, path, "max_pods", default=_DEFAULT_REGION.max_pods, minimum=1
        )
        pue = self.number(table, path, "pue", default=_DEFAULT_REGION.pue, minimum=1.0)
        kubeconfig = self.file_path(table, path, "kubeconfig", required=False)
        context = self.string(table, path, "context", default=None)
        namespaces = self.read_namespaces(table, path)

        levels: LevelThresholds = _DEFAULT_LEVELS
        levels_table = self.subtable(table, path, "levels")
        if levels_table is not None:
            levels = self.read_levels(levels_table, path + ("levels",))
        energy = _DEFAULT_ENERGY
        energy_table = self.subtable(table, path, "energy")
        if energy_table is not None:
            energy = self.read_energy(energy_table, path + ("energy",))
        nodes = self.read_nodes(table, path)
        carbon = None
        carbon_table = self.subtable(table, path, "carbon")
        if carbon_table is not None:
            carbon = self.read_carbon(carbon_table, path + ("carbon",))

        return RegionSpec(
            name=name,
            max_pods=max_pods,
            pue=pue,
            nodes=nodes,
            levels=levels,
            energy=energy,
            kubeconfig=kubeconfig,
            context=context or None,
            namespaces=namespaces,
            carbon=carbon,
        )

    def subtable(self, table: dict[str, Any], path: KeyPath, key: str) -> dict[str, Any] | None:
        if key not in table:
            return None
        return self.table(table[key], path + (key,))

    def read_namespaces(self, table: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
        found = table.get("namespaces", MISSING)
        path = path + ("namespaces",)
        if found is MISSING:
            return ()
        if not isinstance(found, list):
            self.report(path, "must be an array of namespace names", got=found)
            return ()
        names: list[str] = []
        for index, item in enumerate(found):
            if not isinstance(item, str):
                self.report(path + (index,), "must be a string", got=item)
                continue
            problem = dns_label_problem(item)
            if problem is not None:
                self.report(path + (index,), f"invalid namespace name: {problem}", got=item)
            elif item in names:
                self.report(path + (index,), "duplicate namespace", got=item)
            names.append(item)
        return tuple(names)

    def read_levels(self, table: dict[str, Any], path: KeyPath) -> LevelThresholds:
        mode = self.choice(
            table,
            path,
            "mode",
            LEVEL_MODES,
            example='mode = "relative"',
            problem="unknown level mode",
        )
        if mode is None:
            # Without a valid mode, only keys that belong to neither mode are typos.
            known = set(ABSOLUTE_LEVEL_KEYS) | set(RELATIVE_LEVEL_KEYS)
            self.check_keys(table, path, known)
            return _DEFAULT_LEVELS
        if mode == "absolute":
            return self.read_absolute_levels(table, path)
        return self.read_relative_levels(table, path)

    def read_absolute_levels(self, table: dict[str, Any], path: KeyPath) -> AbsoluteLevels:
        hint = 'only with mode = "relative"'
        hints = {key: hint for key in RELATIVE_LEVEL_KEYS if key != "mode"}
        self.check_keys(table, path, ABSOLUTE_LEVEL_KEYS, hints=hints)
        low_key, high_key = "low_below_g_per_kwh", "high_above_g_per_kwh"
        low = self.number(table, path, low_key, default=REQUIRED, minimum=0.0)
        high = self.number(table, path, high_key, default=REQUIRED, minimum=0.0)
        both_valid = in_range(table.get(low_key), 0.0) and in_range(table.get(high_key), 0.0)
        if both_valid and low >= high:
            self.report(
                path + (low_key,),
                f"must be lower than {high_key} = {high:g}",
                got=table[low_key],
            )
        return AbsoluteLevels(low_below_g_per_kwh=low, high_above_g_per_kwh=high)

    def read_relative_levels(self, table: dict[str, Any], path: KeyPath) -> RelativeLevels:
        hint = 'only with mode = "absolute"'
        hints = {key: hint for key in ABSOLUTE_LEVEL_KEYS if key != "mode"}
        self.check_keys(table, path, RELATIVE_LEVEL_KEYS, hints=hints)
        defaults = _DEFAULT_LEVELS
        low_key, high_key = "low_below_percentile", "high_above_percentile"
        low = self.number(
            table, path, low_key, default=defaults.low_below_percentile, minimum=0.0, maximum=100.0
        )
        high = self.number(
            table, path, high_key, default=defaults.high_above_percentile, minimum=0.0, maximum=100.0
        )
        history = self.integer(
            table, path, "history_hours", default=defaults.history_hours, minimum=1
        )
        low_valid = low_key not in table or in_range(table[low_key], 0.0, 100.0)
        high_valid = high_key not in table or in_range(table[high_key], 0.0, 100.0)
        if low_valid and high_valid and low >= high:
            self.report(
                path + (low_key,),
                f"must be lower than {high_key} = {high:g}",
                got=table.get(low_key, low),
            )
        return RelativeLevels(
            low_below_percentile=low, high_above_percentile=high, history_hours=history
        )

    def read_energy(self, table: dict[str, Any], path: KeyPath) -> EnergyModel:
        self.check_keys(table, path, ENERGY_KEYS)
        defaults = _DEFAULT_ENERGY
        idle_key, busy_key = "watts_per_vcpu_idle", "watts_per_vcpu_busy"
        idle = self.number(table, path, idle_key, default=defaults.watts_per_vcpu_idle, minimum=0.0)
        busy = self.number(table, path, busy_key, default=defaults.watts_per_vcpu_busy, minimum=0.0)
        utilization = self.number(
            table,
            path,
            "cpu_utilization",
            default=defaults.cpu_utilization,
            minimum=0.0,
            maximum=1.0,
        )
        memory = self.number(
            table, path, "watts_per_gb_memory", default=defaults.watts_per_gb_memory, minimum=0.0
        )
        idle_valid = idle_key not in table or in_range(table[idle_key], 0.0)
        busy_valid = busy_key not in table or in_range(table[busy_key], 0.0)
        if idle_valid and busy_valid and idle > busy:
            self.report(
                path + (idle_key,),
                f"must not exceed {busy_key} = {busy:g}",
                got=table.get(idle_key, idle),
            )
        return EnergyModel(
            watts_per_vcpu_idle=idle,
            watts_per_vcpu_busy=busy,
            cpu_utilization=utilization,
            watts_per_gb_memory=memory,
        )

    def read_nodes(self, table: dict[str, Any], path: KeyPath) -> tuple[Node, ...]:
        found = table.get("nodes", MISSING)
        path = path + ("nodes",)
        if found is MISSING:
            return ()
        if not isinstance(found, list):
            requirement = f"must be an array of tables, written as [[{format_key_path(path)}]]"
            self.report(path, requirement, got=found)
            return ()
        nodes: list[Node] = []
        first_index: dict[str, int] = {}
        for index, item in enumerate(found):
            node_table = self.table(item, path + (index,), "a table with the keys of a node")
            if node_table is None:
                continue
            node = self.read_node(node_table, path + (index,))
            if node.name in first_index:
                first_line = self.source_map.line_of(path + (first_index[node.name],))
                self.report(
                    path + (index, "name"),
                    f"duplicate node name in this region (first defined at line {first_line})",
                    got=node.name,
                )
            elif node.name:
                first_index[node.name] = index
            nodes.append(node)
        return tuple(nodes)

    def read_node(self, table: dict[str, Any], path: KeyPath) -> Node:
        self.check_keys(table, path, NODE_KEYS)
        name = self.string(table, path, "name", default=REQUIRED, check=dns_subdomain_problem)
        allocatable = Resources(
            milli_cpu=self.quantity(table, path, "cpu", unit="cpu", required=True, positive=True),
            memory=self.quantity(
                table, path, "memory", unit="bytes", required=True, positive=True
            ),
            # A node that reports no ephemeral storage fits only pods that request none.
            ephemeral_storage=self.quantity(
                table, path, "ephemeral_storage", unit="bytes", required=False, positive=False
            ),
            scalar=self.read_extended(table, path),
        )
        labels: dict[str, str] = {}
        if "labels" in table:
            labels = self.string_table(
                table["labels"],
                path + ("labels",),
                key_check=qualified_name_problem,
                value_check=label_value_problem,
            )
        return Node(
            name=name,
            allocatable=allocatable,
            allocatable_pods=self.integer(
                table, path, "pods", default=_DEFAULT_NODE_PODS, minimum=1
            ),
            labels=MappingProxyType(labels),
            taints=self.read_taints(table, path),
            ready=self.boolean(table, path, "ready", default=True),
            unschedulable=self.boolean(table, path, "unschedulable", default=False),
        )

    def read_extended(self, table: dict[str, Any], path: KeyPath) -> MappingProxyType[str, int]:
        found = self.subtable(table, path, "extended")
        path = path + ("extended",)
        if found is None:
            return MappingProxyType({})
        amounts: dict[str, int] = {}
        for name, amount in found.items():
            problem = extended_resource_problem(name)
            if problem is not None:
                self.report(path + (name,), f"invalid extended resource name: {problem}")
            amounts[name] = self.quantity_value(
                amount, path + (name,), unit="count", positive=False
            )
        return MappingProxyType(amounts)

    def read_taints(self, table: dict[str, Any], path: KeyPath) -> tuple[Taint, ...]:
        if "taints" not in table:
            return ()
        path = path + ("taints",)
        found = table["taints"]
        if not isinstance(found, list):
            self.report(path, "must be an array of tables with key, value and effect", got=found)
            return ()
        taints: list[Taint] = []
        seen: set[tuple[str, str]] = set()
        for index, item in enumerate(found):
            taint_path = path + (index,)
            taint_table = self.table(item, taint_path, "a table with key, value and effect")
            if taint_table is None:
                continue
            taint = self.read_taint(taint_table, taint_path)
            if taint is None:
                continue
            if (taint.key, taint.effect.value) in seen:
                self.report(
                    taint_path,
                    "duplicate taint: another taint has the same key and effect",
                    got=f"{taint.key}:{taint.effect.value}",
                )
            seen.add((taint.key, taint.effect.value))
            taints.append(taint)
        return tuple(taints)

    def read_taint(self, table: dict[str, Any], path: KeyPath) -> Taint | None:
        self.check_keys(table, path, TAINT_KEYS)
        key = self.string(table, path, "key", default=REQUIRED, check=qualified_name_problem)
        taint_value = table.get("value", "")
        if not isinstance(taint_value, str):
            self.report(path + ("value",), "must be a string", got=taint_value)
            taint_value = ""
        problem = label_value_problem(taint_value)
        if problem is not None:
            self.report(path + ("value",), f"invalid taint value: {problem}", got=taint_value)
        effect = self.choice(
            table,
            path,
            "effect",
            tuple(effect.value for effect in TaintEffect),
            example='effect = "NoSchedule"',
            problem="unknown taint effect",
        )
        if effect is None:
            return None
        return Taint(key=key, effect=TaintEffect(effect), value=taint_value)

    def read_carbon(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec | None:
        source = self.choice(
            table,
            path,
            "source",
            tuple(kind.value for kind in CarbonSourceKind),
            example='source = "replay"',
            problem="unknown carbon source",
        )
        if source is None:
            return None
        own_keys = CARBON_SOURCE_KEYS[source]
        self.check_carbon_keys(table, path, source, own_keys)

        kind = CarbonSourceKind(source)
        spec = self.read_source_keys(kind, table, path)
        return replace(spec, **self.read_common_carbon_keys(table, path))

    def read_common_carbon_keys(self, table: dict[str, Any], path: KeyPath) -> dict[str, float | None]:
        """Read the staleness limit and poll interval that every source takes."""
        stale = poll = None
        if "stale_after_seconds" in table:
            stale = self.number(table, path, "stale_after_seconds", default=REQUIRED, above=0.0)
        if "poll_interval_seconds" in table:
            poll = self.number(table, path, "poll_interval_seconds", default=REQUIRED, above=0.0)
        # A limit at or below the poll interval would mark the region stale between
        # two successful polls. Invalid values were reported above and read as 0.
        if stale is not None and poll is not None and stale > 0 and poll > 0 and stale <= poll:
            self.report(
                path + ("stale_after_seconds",),
                f"must be greater than poll_interval_seconds = {poll:g}, or the region "
                "would count as stale between two successful polls",
                got=table["stale_after_seconds"],
            )
        return {"stale_after_seconds": stale, "poll_interval_seconds": poll}

    def read_source_keys(self, kind: CarbonSourceKind, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        readers = {
            CarbonSourceKind.STATIC: self.read_static_source,
            CarbonSourceKind.REPLAY: self.read_replay_source,
            CarbonSourceKind.SCRIPTED: self.read_scripted_source,
            CarbonSourceKind.ELECTRICITYMAPS: self.read_electricitymaps_source,
            CarbonSourceKind.WATTTIME: self.read_watttime_source,
            CarbonSourceKind.UKCARBON: self.read_ukcarbon_source,
        }
        return readers[kind](table, path)

    def check_carbon_keys(
        self, table: dict[str, Any], path: KeyPath, source: str, own_keys: tuple[str, ...]
    ) -> None:
        """Report every key that `source` does not read; a key of another source
        says which sources take it."""
        allowed = ("source", *own_keys, *CARBON_COMMON_KEYS)
        owners: dict[str, list[str]] = {}
        for kind, keys in CARBON_SOURCE_KEYS.items():
            for key in keys:
                owners.setdefault(key, []).append(kind)
        for key in table:
            if key in allowed:
                continue
            if key in owners:
                names = [json.dumps(kind) for kind in owners[key]]
                sources = names[0]
                if len(names) > 1:
                    sources = ", ".join(names[:-1]) + " or " + names[-1]
                message = f"unknown key (only with source = {sources})"
            else:
                message = "unknown key"
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.8)
                if close:
                    message += f" (did you mean {close[0]}?)"
            self.report(path + (key,), message, allowed=allowed)

    def read_static_source(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        intensity = self.number(table, path, "intensity_g_per_kwh", default=REQUIRED, minimum=0.0)
        return CarbonSourceSpec(kind=CarbonSourceKind.STATIC, intensity_g_per_kwh=intensity)

    def read_replay_source(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        trace = self.file_path(table, path, "trace", required=True)
        seconds_per_hour = self.number(
            table, path, "seconds_per_hour", default=DEFAULT_SECONDS_PER_HOUR, above=0.0
        )
        options: dict[str, object] = {}
        trace_region = self.string(table, path, "trace_region", default=None)
        if trace_region:
            options["trace_region"] = trace_region
        if "start_offset_hours" in table:
            options["start_offset_hours"] = self.number(
                table, path, "start_offset_hours", default=0.0, minimum=0.0
            )
        if "start_time" in table:
            start_time = self.offset_datetime(table, path, "start_time")
            if start_time is not None:
                options["start_time"] = start_time
            if "start_offset_hours" in table:
                self.report(
                    path + ("start_time",),
                    "conflicts with start_offset_hours; give only one of them",
                )
        return CarbonSourceSpec(
            kind=CarbonSourceKind.REPLAY,
            trace=trace,
            seconds_per_hour=seconds_per_hour,
            options=options,
        )

    def read_scripted_source(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        options: dict[str, object] = {}
        schedule = self.file_path(table, path, "schedule", required=True)
        if schedule is not None:
            options["schedule"] = schedule
        schedule_region = self.string(
            table, path, "schedule_region", default=None, check=dns_label_problem
        )
        if schedule_region:
            options["schedule_region"] = schedule_region
        return CarbonSourceSpec(kind=CarbonSourceKind.SCRIPTED, options=options)

    def read_electricitymaps_source(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        options: dict[str, object] = {"zone": self.string(table, path, "zone", default=REQUIRED)}
        self.read_secret(table, path, "api_key", options, plain=False)
        emission = self.optional_choice(
            table,
            path,
            "emission_factor_type",
            EMISSION_FACTOR_TYPES,
            problem="unknown emission factor type",
        )
        if emission is not None:
            options["emission_factor_type"] = emission
        if "disable_estimations" in table:
            options["disable_estimations"] = self.boolean(
                table, path, "disable_estimations", default=False
            )
        endpoint = self.optional_choice(
            table, path, "history_endpoint", HISTORY_ENDPOINTS, problem="unknown history endpoint"
        )
        if endpoint is not None:
            options["history_endpoint"] = endpoint
        self.read_http_options(table, path, options)
        return CarbonSourceSpec(kind=CarbonSourceKind.ELECTRICITYMAPS, options=options)

    def read_watttime_source(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        options: dict[str, object] = {
            "region": self.string(table, path, "region", default=REQUIRED)
        }
        signal = self.optional_choice(
            table, path, "signal_type", WATTTIME_SIGNAL_TYPES, problem="unsupported signal type"
        )
        if signal is not None:
            options["signal_type"] = signal
        if "horizon_hours" in table:
            horizon = self.integer(table, path, "horizon_hours", default=24, minimum=0)
            if horizon > WATTTIME_MAX_HORIZON_HOURS:
                self.report(
                    path + ("horizon_hours",),
                    f"must be at most {WATTTIME_MAX_HORIZON_HOURS}, the longest WattTime forecast",
                    got=horizon,
                )
            options["horizon_hours"] = horizon
        self.read_secret(table, path, "username", options, plain=True)
        self.read_secret(table, path, "password", options, plain=False)
        self.read_http_options(table, path, options)
        return CarbonSourceSpec(kind=CarbonSourceKind.WATTTIME, options=options)

    def read_ukcarbon_source(self, table: dict[str, Any], path: KeyPath) -> CarbonSourceSpec:
        options: dict[str, object] = {}
        if "region_id" in table:
            region_id = self.integer(
                table, path, "region_id", default=None, minimum=UK_REGION_IDS[0]
            )
            if isinstance(region_id, int) and region_id > UK_REGION_IDS[1]:
                self.report(
                    path + ("region_id",),
                    f"must be a region id from {UK_REGION_IDS[0]} to {UK_REGION_IDS[1]} "
                    "(13 is London); leave it out for all of Great Britain",
                    got=region_id,
                )
            if region_id is not None:
                options["region_id"] = region_id
        self.read_http_options(table, path, options)
        return CarbonSourceSpec(kind=CarbonSourceKind.UKCARBON, options=options)

    def read_secret(
        self,
        table: dict[str, Any],
        path: KeyPath,
        name: str,
        options: dict[str, object],
        *,
        plain: bool,
    ) -> None:
        """Read a credential given by exactly one of `NAME_env` (an environment
        variable) and `NAME_file` (a file, such as a mounted Secret), or with
        `plain` also `NAME` itself."""
        keys = ((name,) if plain else ()) + (f"{name}_env", f"{name}_file")
        given = [key for key in keys if key in table]
        if not given:
            line = self.source_map.line_of(path)
            where = self.describe_table(path)
            self.report(
                path + (keys[-2],),
                f"missing {name}; add one of {', '.join(keys)} to {where} (line {line}), "
                f'for example {name}_env = "{name.upper()}"',
                line=line,
            )
            return
        for key in given[1:]:
            self.report(
                path + (key,), f"conflicts with {given[0]}; give only one of {', '.join(keys)}"
            )
        key = given[0]
        if key == f"{name}_file":
            file = self.file_path(table, path, key, required=True)
            if file is not None:
                options[key] = file
        elif key == f"{name}_env":
            options[key] = self.string(table, path, key, default=REQUIRED, check=_env_name_problem)
        else:
            options[key] = self.string(table, path, key, default=REQUIRED)

    def read_http_options(
        self, table: dict[str, Any], path: KeyPath, options: dict[str, object]
    ) -> None:
        if "base_url" in table:
            base_url = self.string(table, path, "base_url", default=REQUIRED)
            problem = _url_problem(base_url) if base_url else None
            if problem is not None:
                self.report(path + ("base_url",), problem, got=_masked(base_url))
            options["base_url"] = base_url
        for key in ("timeout_seconds", "backoff_initial_seconds", "backoff_max_seconds"):
            if key in table:
                options[key] = self.number(table, path, key, default=REQUIRED, above=0.0)
        for key in ("retry_after_max_seconds", "cache_ttl_seconds"):
            if key in table:
                options[key] = self.number(table, path, key, default=REQUIRED, minimum=0.0)
        if "max_attempts" in table:
            options["max_attempts"] = self.integer(
                table, path, "max_attempts", default=REQUIRED, minimum=1
            )
        initial, maximum = "backoff_initial_seconds", "backoff_max_seconds"
        if (
            in_range(table.get(initial), 0.0)
            and in_range(table.get(maximum), 0.0)
            and table[initial] > table[maximum]
        ):
            self.report(
                path + (initial,),
                f"must not exceed {maximum} = {table[maximum]:g}",
                got=table[initial],
            )

    def optional_choice(
        self,
        table: dict[str, Any],
        path: KeyPath,
        key: str,
        allowed: tuple[str, ...],
        *,
        problem: str,
    ) -> str | None:
        if key not in table:
            return None
        found = table[key]
        if isinstance(found, str) and found in allowed:
            return found
        self.report(path + (key,), problem, got=found, allowed=allowed)
        return None

    def offset_datetime(self, table: dict[str, Any], path: KeyPath, key: str) -> int | None:
        """Read a TOML offset date-time (such as 2023-10-21T00:00:00Z) as Unix seconds."""
        found = table[key]
        if isinstance(found, datetime) and found.utcoffset() is not None:
            if found.microsecond:
                self.report(path + (key,), "must be a whole second", got=found)
                return None
            return int(found.timestamp())
        if isinstance(found, datetime):
            requirement = "must carry a UTC offset; add Z for UTC, as in 2023-10-21T00:00:00Z"
        else:
            requirement = (
                "must be a TOML date-time with offset, such as 2023-10-21T00:00:00Z (no quotes)"
            )
        self.report(path + (key,), requirement, got=found)
        return None

    # The [store] table.

    def read_store_table(self, document: dict[str, Any]) -> StoreSettings:
        if "store" not in document:
            return replace(_DEFAULT_STORE, url=self.resolve_store_file(_DEFAULT_STORE.url))
        table = self.table(document["store"], ("store",))
        if table is None:
            return _DEFAULT_STORE
        return self.read_store(table)

    def read_store(self, table: dict[str, Any]) -> StoreSettings:
        path: KeyPath = ("store",)
        self.check_keys(table, path, STORE_KEYS)
        url = self.store_url(table, path)
        if url is None:
            return _DEFAULT_STORE
        if not StoreSettings(url=url).is_influx:
            for key in STORE_INFLUX_KEYS:
                if key in table:
                    self.report(
                        path + (key,),
                        f"applies to an InfluxDB url (http:// or https://) only, not to the SQLite "
                        f"store {url}; remove it, or set url to an InfluxDB URL",
                    )
            return StoreSettings(url=url)

        database = self.string(table, path, "database", default=_DEFAULT_STORE.database)
        username = self.string(table, path, "username", default=None)
        secrets = {name: self.store_secret(table, path, name) for name in ("password", "token")}
        password_given = any(secrets["password"])
        token_given = any(secrets["token"])
        if token_given and (username is not None or password_given):
            self.report(
                path + ("token_env" if "token_env" in table else "token_file",),
                "conflicts with username and password; authenticate with either a token "
                "(InfluxDB 2.x and 3.x) or a username and password (InfluxDB 1.x)",
            )
        elif password_given and username is None:
            line = self.source_map.line_of(path)
            self.report(
                path + ("username",),
                f"missing username; add it to [store] (line {line}) for the password to be used",
                line=line,
            )
        elif username is not None and not password_given:
            self.report(
                path + ("username",),
                "needs a password: add password_env (an environment variable name) or "
                "password_file (a file such as a mounted Secret)",
            )
        return StoreSettings(
            url=url,
            database=database or _DEFAULT_STORE.database,
            username=username or None,
            password_env=secrets["password"][0],
            password_file=secrets["password"][1],
            token_env=secrets["token"][0],
            token_file=secrets["token"][1],
        )

    def store_secret(self, table: dict[str, Any], path: KeyPath, name: str) -> tuple[str | None, str | None]:
        """Read the optional `NAME_env` / `NAME_file` pair of [store]; at most one may be given."""
        env_key, file_key = f"{name}_env", f"{name}_file"
        if env_key in table and file_key in table:
            self.report(path + (file_key,), f"conflicts with {env_key}; give only one of them")
        env = None
        if env_key in table:
            env = self.string(table, path, env_key, default=REQUIRED, check=_env_name_problem) or None
        file = self.file_path(table, path, file_key, required=False)
        return env, file

    def store_url(self, table: dict[str, Any], path: KeyPath) -> str | None:
        """Read `url` and return it in a form `open_store` accepts, a relative file
        resolved against the configuration's directory; None when it is invalid."""
        if "url" not in table:
            return self.resolve_store_file(_DEFAULT_STORE.url)
        found = table["url"]
        if not isinstance(found, str) or not found.strip():
            self.report(path + ("url",), f"must be {STORE_URL_FORMS}", got=_masked(found))
            return None
        text = found.strip()
        if text == ":memory:":
            return text
        scheme, separator, rest = text.partition("://")
        if not separator:
            return self.resolve_store_file(text)
        scheme = scheme.lower()
        if scheme == "sqlite":
            return self.sqlite_store_path(rest, path, found)
        if scheme in ("http", "https"):
            problem = _influx_url_problem(text)
            if problem is not None:
                self.report(path + ("url",), problem, got=_masked(found))
                return None
            return text
        self.report(path + ("url",), f"unknown scheme {scheme!r}; use {STORE_URL_FORMS}", got=_masked(found))
        return None

    def sqlite_store_path(self, rest: str, path: KeyPath, found: str) -> str | None:
        if "?" in rest or "#" in rest:
            self.report(path + ("url",), "a sqlite: URL must not have a query string or fragment", got=_masked(found))
            return None
        if not rest:
            return ":memory:"
        if not rest.startswith("/"):
            self.report(
                path + ("url",),
                "a sqlite: URL must not name a host; use sqlite:///relative/path or sqlite:////absolute/path",
                got=_masked(found),
            )
            return None
        file = unquote(rest[1:])
        return self.resolve_store_file(file) if file else ":memory:"

    def resolve_store_file(self, file: str) -> str:
        expanded = os.path.expanduser(file)
        if self.base_dir is not None and not os.path.isabs(expanded):
            expanded = os.path.normpath(self.base_dir / expanded)
        return expanded


def _masked(found: object) -> object:
    """Return a URL value with its password masked, so an error never prints a secret."""
    return redact_url(found) if isinstance(found, str) else found


def _influx_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        return "has an invalid port; write it as http://host:8086"
    if not parts.hostname:
        return "must name a host, as in http://influxdb:8086"
    if parts.username is not None or parts.password is not None:
        return (
            "must not contain credentials; set username and password_env or password_file "
            "in [store], so that no secret is written in this file"
        )
    if parts.query or parts.fragment:
        return "must not have a query string or fragment; set the database with the database key"
    return None


def _env_name_problem(name: str) -> str | None:
    if _ENV_NAME.fullmatch(name):
        return None
    return (
        "must be an environment variable name: letters, digits and '_', "
        "not starting with a digit"
    )


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host, such as https://api.example.com"
    if parts.query or parts.fragment:
        return "must not contain a query or fragment"
    return None
