"""Loading and validation of regions.toml, and the line locator behind its errors."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_scheduler.config import (
    AbsoluteLevels,
    CarbonSourceKind,
    ConfigError,
    EnergyModel,
    RelativeLevels,
    SchedulerSettings,
    load_config,
    parse_config,
)
from carbon_scheduler.config.source_map import Kind, build_source_map, format_key_path
from carbon_scheduler.model import TaintEffect

REPO = Path(__file__).resolve().parents[1]
GI = 2**30

REGION = "[regions.eu-west]\nmax_pods = 4\n"


def parse(text: str):
    return parse_config(textwrap.dedent(text), "regions.toml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value).split("\n")


# The repository's regions.toml.


def test_repo_config_regions_in_file_order():
    config = load_config(REPO / "regions.toml")
    assert config.region_names == ("eu-west", "us-east", "asia-east")
    assert config.path == str(REPO / "regions.toml")


def test_repo_config_scheduler_settings_are_defaults():
    config = load_config(REPO / "regions.toml")
    assert config.scheduler == SchedulerSettings()


@pytest.mark.parametrize("name", ["eu-west", "us-east", "asia-east"])
def test_repo_config_region(name):
    region = load_config(REPO / "regions.toml").region(name)
    assert region.max_pods == 4
    assert region.pue == 1.135
    assert region.levels == RelativeLevels(33.0, 67.0, 168)
    assert region.energy == EnergyModel()
    assert region.kubeconfig is None
    assert region.context is None
    assert region.namespaces == ()
    assert region.carbon is not None
    assert region.carbon.kind is CarbonSourceKind.REPLAY
    assert region.carbon.trace == str(REPO / "traces" / "demo.csv")
    assert region.carbon.seconds_per_hour == 10.0
    assert dict(region.carbon.options) == {}
    assert [node.name for node in region.nodes] == [f"{name}-node-1", f"{name}-node-2"]
    for node in region.nodes:
        assert node.allocatable.milli_cpu == 8000
        assert node.allocatable.memory == 32 * GI
        assert node.allocatable_pods == 110
        assert dict(node.labels) == {
            "topology.kubernetes.io/region": name,
            "kubernetes.io/hostname": node.name,
        }
        assert node.ready
        assert not node.unschedulable


# Valid files.


def test_minimal_region_gets_defaults():
    config = parse(REGION)
    region = config.region("eu-west")
    assert config.scheduler == SchedulerSettings()
    assert region.pue == 1.135
    assert region.levels == RelativeLevels()
    assert region.energy == EnergyModel()
    assert region.nodes == ()
    assert region.carbon is None


def test_leader_election_defaults():
    settings = parse(REGION).scheduler
    assert settings.leader_election is True
    assert settings.leader_election_region is None
    assert settings.lease_kubeconfig is None
    assert settings.lease_context is None
    assert settings.lease_name == "carbon-scheduler"
    assert settings.lease_namespace == "default"
    assert settings.lease_duration_seconds == 15
    assert settings.lease_renew_seconds == 5.0
    assert settings.lease_retry_seconds == 2.0


def test_leader_election_values():
    config = parse(
        """\
        [scheduler]
        leader_election = false
        leader_election_region = "us-east"
        lease_name = "carbon.scheduler-a"
        lease_namespace = "carbon-scheduler"
        lease_duration_seconds = 3
        lease_renew_seconds = 1
        lease_retry_seconds = 0.5
        [regions.eu-west]
        [regions.us-east]
        """
    )
    settings = config.scheduler
    assert settings.leader_election is False
    assert settings.leader_election_region == "us-east"
    assert settings.lease_name == "carbon.scheduler-a"
    assert settings.lease_namespace == "carbon-scheduler"
    assert settings.lease_duration_seconds == 3
    assert settings.lease_renew_seconds == 1.0
    assert settings.lease_retry_seconds == 0.5


def test_lease_cluster_values(tmp_path):
    directory = tmp_path / "conf"
    directory.mkdir()
    file = directory / "regions.toml"
    file.write_text(
        '[scheduler]\nlease_kubeconfig = "kube/management.yaml"\nlease_context = "minikube"\n[regions.eu-west]\n',
        encoding="utf-8",
    )
    settings = load_config(file).scheduler
    assert settings.lease_kubeconfig == str(directory / "kube" / "management.yaml")
    assert settings.lease_context == "minikube"
    assert settings.leader_election_region is None


def test_lease_context_alone_keeps_default_kubeconfig():
    settings = parse('[scheduler]\nlease_context = "minikube"\n' + REGION).scheduler
    assert settings.lease_kubeconfig is None
    assert settings.lease_context == "minikube"


def test_lease_kubeconfig_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = parse('[scheduler]\nlease_kubeconfig = "~/.kube/management"\n' + REGION).scheduler
    assert settings.lease_kubeconfig == str(tmp_path / ".kube" / "management")


def test_parse_config_string_source_has_no_path():
    config = parse_config(REGION)
    assert config.path is None


def test_max_pods_defaults_to_four():
    assert parse("[regions.eu-west]\npue = 1.2\n").region("eu-west").max_pods == 4


def test_full_region_values():
    config = parse(
        """\
        [scheduler]
        standard_max_wait_seconds = 60
        default_deadline_seconds = 7200
        default_expected_duration_seconds = 1800
        deadline_margin_seconds = 0
        planning_horizon_hours = 24
        forecaster = "persistence"

        [regions.eu-west]
        max_pods = 8
        pue = 1
        kubeconfig = "/etc/kube/eu.yaml"
        context = "eu"
        namespaces = ["batch", "ml"]

        [regions.eu-west.levels]
        mode = "absolute"
        low_below_g_per_kwh = 100
        high_above_g_per_kwh = 300.5

        [regions.eu-west.energy]
        watts_per_vcpu_idle = 1
        watts_per_vcpu_busy = 1
        cpu_utilization = 1
        watts_per_gb_memory = 0

        [regions.eu-west.carbon]
        source = "static"
        intensity_g_per_kwh = 0

        [[regions.eu-west.nodes]]
        name = "gpu-1.example.com"
        cpu = 3.5
        memory = "64Gi"
        ephemeral_storage = "100G"
        pods = 30
        ready = false
        unschedulable = true
        labels = { "nvidia.com/gpu.present" = "true", tier = "" }
        taints = [
          { key = "nvidia.com/gpu", value = "present", effect = "NoSchedule" },
          { key = "nvidia.com/gpu", effect = "NoExecute" },
        ]
        extended = { "nvidia.com/gpu" = 4, "hugepages-2Mi" = "1Gi" }
        """
    )
    assert config.scheduler == SchedulerSettings(60, 7200, 1800, 0, 24, "persistence")
    region = config.region("eu-west")
    assert region.max_pods == 8
    assert region.pue == 1.0
    assert region.kubeconfig == "/etc/kube/eu.yaml"
    assert region.context == "eu"
    assert region.namespaces == ("batch", "ml")
    assert region.levels == AbsoluteLevels(100.0, 300.5)
    assert region.energy == EnergyModel(1.0, 1.0, 1.0, 0.0)
    assert region.carbon is not None
    assert region.carbon.kind is CarbonSourceKind.STATIC
    assert region.carbon.intensity_g_per_kwh == 0.0
    assert dict(region.carbon.options) == {}
    (node,) = region.nodes
    assert node.name == "gpu-1.example.com"
    assert node.allocatable.milli_cpu == 3500
    assert node.allocatable.memory == 64 * GI
    assert node.allocatable.ephemeral_storage == 100 * 10**9
    assert dict(node.allocatable.scalar) == {"nvidia.com/gpu": 4, "hugepages-2Mi": GI}
    assert node.allocatable_pods == 30
    assert node.ready is False
    assert node.unschedulable is True
    assert dict(node.labels) == {"nvidia.com/gpu.present": "true", "tier": ""}
    assert [(t.key, t.value, t.effect) for t in node.taints] == [
        ("nvidia.com/gpu", "present", TaintEffect.NO_SCHEDULE),
        ("nvidia.com/gpu", "", TaintEffect.NO_EXECUTE),
    ]


def test_relative_levels_partial_keys_keep_defaults():
    config = parse(REGION + '[regions.eu-west.levels]\nmode = "relative"\nhistory_hours = 24\n')
    assert config.region("eu-west").levels == RelativeLevels(33.0, 67.0, 24)


def test_replay_seconds_per_hour_defaults_to_real_time():
    config = parse(REGION + '[regions.eu-west.carbon]\nsource = "replay"\ntrace = "/t.csv"\n')
    carbon = config.region("eu-west").carbon
    assert carbon is not None
    assert carbon.trace == "/t.csv"
    assert carbon.seconds_per_hour == 3600.0


def test_electricitymaps_options_kept():
    config = parse(
        REGION
        + """
        [regions.eu-west.carbon]
        source = "electricitymaps"
        zone = "DE"
        api_key_env = "ELECTRICITY_MAPS_KEY"
        emission_factor_type = "direct"
        disable_estimations = true
        history_endpoint = "history"
        base_url = "http://127.0.0.1:8080/prefix"
        timeout_seconds = 2.5
        max_attempts = 3
        backoff_initial_seconds = 0.5
        backoff_max_seconds = 8
        retry_after_max_seconds = 60
        cache_ttl_seconds = 0
        """
    )
    carbon = config.region("eu-west").carbon
    assert carbon is not None
    assert carbon.kind is CarbonSourceKind.ELECTRICITYMAPS
    assert dict(carbon.options) == {
        "zone": "DE",
        "api_key_env": "ELECTRICITY_MAPS_KEY",
        "emission_factor_type": "direct",
        "disable_estimations": True,
        "history_endpoint": "history",
        "base_url": "http://127.0.0.1:8080/prefix",
        "timeout_seconds": 2.5,
        "max_attempts": 3,
        "backoff_initial_seconds": 0.5,
        "backoff_max_seconds": 8.0,
        "retry_after_max_seconds": 60.0,
        "cache_ttl_seconds": 0.0,
    }


def test_carbon_files_resolve_against_config_dir(tmp_path):
    file = tmp_path / "regions.toml"
    file.write_text(
        "[regions.eu-west.carbon]\n"
        'source = "watttime"\nregion = "CAISO_NORTH"\n'
        'username_file = "secrets/user"\npassword_file = "secrets/password"\n'
        'signal_type = "co2_aoer"\nhorizon_hours = 0\n'
        "[regions.us-east.carbon]\n"
        'source = "scripted"\nschedule = "demo/schedule.toml"\nschedule_region = "eu-west"\n'
        "[regions.asia-east.carbon]\n"
        'source = "electricitymaps"\nzone = "KR"\napi_key_file = "/run/secrets/em"\n',
        encoding="utf-8",
    )
    config = load_config(file)

    watttime = config.region("eu-west").carbon
    assert watttime is not None
    assert watttime.kind is CarbonSourceKind.WATTTIME
    assert dict(watttime.options) == {
        "region": "CAISO_NORTH",
        "username_file": str(tmp_path / "secrets" / "user"),
        "password_file": str(tmp_path / "secrets" / "password"),
        "signal_type": "co2_aoer",
        "horizon_hours": 0,
    }

    scripted = config.region("us-east").carbon
    assert scripted is not None
    assert scripted.kind is CarbonSourceKind.SCRIPTED
    assert dict(scripted.options) == {
        "schedule": str(tmp_path / "demo" / "schedule.toml"),
        "schedule_region": "eu-west",
    }

    electricitymaps = config.region("asia-east").carbon
    assert electricitymaps is not None
    assert dict(electricitymaps.options) == {"zone": "KR", "api_key_file": "/run/secrets/em"}


@pytest.mark.parametrize(
    ("lines", "options"),
    [
        pytest.param("", {}, id="national"),
        pytest.param("region_id = 13\n", {"region_id": 13}, id="london"),
        pytest.param(
            "region_id = 1\nmax_attempts = 1\n", {"region_id": 1, "max_attempts": 1}, id="first"
        ),
    ],
)
def test_ukcarbon_options(lines, options):
    text = REGION + '[regions.eu-west.carbon]\nsource = "ukcarbon"\n' + lines
    carbon = parse(text).region("eu-west").carbon
    assert carbon is not None
    assert carbon.kind is CarbonSourceKind.UKCARBON
    assert dict(carbon.options) == options


@pytest.mark.parametrize(
    ("lines", "options"),
    [
        pytest.param("start_offset_hours = 36.5\n", {"start_offset_hours": 36.5}, id="offset"),
        pytest.param(
            "start_time = 2023-10-21T02:00:00+02:00\n", {"start_time": 1697846400}, id="start-time"
        ),
        pytest.param('trace_region = "GB"\n', {"trace_region": "GB"}, id="trace-region"),
    ],
)
def test_replay_options(lines, options):
    text = REGION + '[regions.eu-west.carbon]\nsource = "replay"\ntrace = "/t.csv"\n' + lines
    carbon = parse(text).region("eu-west").carbon
    assert carbon is not None
    assert carbon.trace == "/t.csv"
    assert dict(carbon.options) == options


def test_relative_paths_resolve_against_config_dir(tmp_path):
    directory = tmp_path / "conf"
    directory.mkdir()
    file = directory / "regions.toml"
    file.write_text(
        '[regions.eu-west]\nkubeconfig = "kube/eu.yaml"\n'
        '[regions.eu-west.carbon]\nsource = "replay"\ntrace = "../traces/demo.csv"\n',
        encoding="utf-8",
    )
    region = load_config(file).region("eu-west")
    assert region.kubeconfig == str(directory / "kube" / "eu.yaml")
    assert region.carbon is not None
    assert region.carbon.trace == str(tmp_path / "traces" / "demo.csv")


def test_relative_paths_stay_relative_for_strings():
    text = REGION + '[regions.eu-west.carbon]\nsource = "replay"\ntrace = "traces/demo.csv"\n'
    carbon = parse_config(text).region("eu-west").carbon
    assert carbon is not None
    assert carbon.trace == "traces/demo.csv"


def test_home_directory_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    region = parse(REGION + 'kubeconfig = "~/.kube/config"\n').region("eu-west")
    assert region.kubeconfig == str(tmp_path / ".kube" / "config")


def test_regions_keep_file_order():
    config = parse("[regions.b]\n[regions.c]\n[regions.a]\n")
    assert config.region_names == ("b", "c", "a")


# Broken files: each case gives the whole message, one line per issue.

BROKEN = [
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = -1
        """,
        ["regions.toml:2: regions.eu-west.max_pods: must be a positive integer, got -1"],
        id="max-pods-negative",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = 4.0
        """,
        ["regions.toml:2: regions.eu-west.max_pods: must be a positive integer, got 4.0"],
        id="max-pods-float",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = "4"
        """,
        ['regions.toml:2: regions.eu-west.max_pods: must be a positive integer, got "4"'],
        id="max-pods-string",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = true
        """,
        ["regions.toml:2: regions.eu-west.max_pods: must be a positive integer, got true"],
        id="max-pods-boolean",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        pue = 0.9
        """,
        ["regions.toml:2: regions.eu-west.pue: must be a number >= 1, got 0.9"],
        id="pue-below-one",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        pue = nan
        """,
        ["regions.toml:2: regions.eu-west.pue: must be a number >= 1, got nan"],
        id="pue-nan",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pod = 4
        """,
        [
            "regions.toml:2: regions.eu-west.max_pod: unknown key (did you mean max_pods?); "
            "allowed: carbon, context, energy, kubeconfig, levels, max_pods, namespaces, nodes, pue"
        ],
        id="region-key-typo",
    ),
    pytest.param(
        """\
        region = "eu-west"
        [regions.eu-west]
        """,
        [
            "regions.toml:1: region: unknown key (did you mean regions?); "
            "allowed: regions, scheduler, store"
        ],
        id="top-level-typo",
    ),
    pytest.param(
        """\
        [regions.EU_West]
        max_pods = 4
        """,
        [
            "regions.toml:1: regions.EU_West: invalid region name: must be a DNS-1123 label: "
            "lower-case letters, digits and '-', starting and ending with a letter or digit "
            '(for example eu-west), got "EU_West"'
        ],
        id="region-name-not-dns-label",
    ),
    pytest.param(
        """\
        [regions]
        eu-west = 3
        """,
        ["regions.toml:2: regions.eu-west: must be a table, got 3"],
        id="region-not-table",
    ),
    pytest.param(
        """\
        [scheduler]
        forecaster = "persistence"
        """,
        [
            "regions.toml:1: regions: at least one region is required; "
            "add a table such as [regions.eu-west] with max_pods = 4"
        ],
        id="no-regions",
    ),
    pytest.param(
        """\
        # nothing yet
        [regions]
        """,
        [
            "regions.toml:2: regions: at least one region is required; "
            "add a table such as [regions.eu-west] with max_pods = 4"
        ],
        id="empty-regions-table",
    ),
    pytest.param(
        """\
        [scheduler]
        standard_max_wait_secs = 60
        planning_horizon_hours = 0
        forecaster = ""
        [regions.eu-west]
        """,
        [
            "regions.toml:2: scheduler.standard_max_wait_secs: unknown key "
            "(did you mean standard_max_wait_seconds?); allowed: deadline_margin_seconds, "
            "default_deadline_seconds, default_expected_duration_seconds, defer_min_saving_percent, "
            "deferrable_headroom_pods, forecaster, leader_election, leader_election_region, "
            "lease_context, lease_duration_seconds, lease_kubeconfig, lease_name, lease_namespace, "
            "lease_renew_seconds, lease_retry_seconds, planning_horizon_hours, standard_max_wait_seconds",
            "regions.toml:3: scheduler.planning_horizon_hours: must be a positive integer, got 0",
            'regions.toml:4: scheduler.forecaster: must be a non-empty string, got ""',
        ],
        id="scheduler-keys",
    ),
    pytest.param(
        """\
        [scheduler]
        leader_election = "yes"
        lease_name = "Carbon_Lease"
        lease_namespace = "kube.system"
        lease_duration_seconds = 2.5
        lease_renew_seconds = 0
        lease_retry_seconds = -1
        [regions.eu-west]
        """,
        [
            'regions.toml:2: scheduler.leader_election: must be true or false, got "yes"',
            "regions.toml:3: scheduler.lease_name: must be a DNS-1123 subdomain: lower-case letters, "
            "digits, '-' and '.', starting and ending with a letter or digit "
            '(for example node-1.example.com), got "Carbon_Lease"',
            "regions.toml:4: scheduler.lease_namespace: must be a DNS-1123 label: lower-case letters, "
            "digits and '-', starting and ending with a letter or digit (for example eu-west), "
            'got "kube.system"',
            "regions.toml:5: scheduler.lease_duration_seconds: must be a positive integer, got 2.5",
            "regions.toml:6: scheduler.lease_renew_seconds: must be a number > 0, got 0",
            "regions.toml:7: scheduler.lease_retry_seconds: must be a number > 0, got -1",
        ],
        id="scheduler-lease-values",
    ),
    pytest.param(
        """\
        [scheduler]
        lease_duration_seconds = 4
        lease_renew_seconds = 3
        lease_retry_seconds = 1
        [regions.eu-west]
        """,
        [
            "regions.toml:3: scheduler.lease_renew_seconds: must be less than lease_duration_seconds - "
            "lease_retry_seconds = 3, or the leader would stop leading before its first renewal; "
            "renew more often or lengthen lease_duration_seconds, got 3",
        ],
        id="scheduler-lease-renew-too-slow",
    ),
    pytest.param(
        """\
        [scheduler]
        leader_election_region = "mars"
        [regions.eu-west]
        [regions.us-east]
        """,
        [
            "regions.toml:2: scheduler.leader_election_region: must name a region of this file, "
            'whose cluster holds the leader Lease, got "mars"; allowed: eu-west, us-east',
        ],
        id="scheduler-leader-region-unknown",
    ),
    pytest.param(
        """\
        [scheduler]
        lease_kubeconfig = ""
        lease_context = 3
        [regions.eu-west]
        """,
        [
            'regions.toml:2: scheduler.lease_kubeconfig: must be a non-empty path, got ""',
            "regions.toml:3: scheduler.lease_context: must be a non-empty string, got 3",
        ],
        id="scheduler-lease-kubeconfig-and-context",
    ),
    pytest.param(
        """\
        [scheduler]
        leader_election_region = "us-east"
        lease_kubeconfig = "/etc/kube/management.yaml"
        lease_context = "minikube"
        [regions.eu-west]
        [regions.us-east]
        """,
        [
            "regions.toml:2: scheduler.leader_election_region: cannot be combined with "
            "lease_kubeconfig and lease_context, because both say which cluster holds the leader "
            "Lease. Remove leader_election_region to keep the Lease in the cluster of "
            "lease_kubeconfig and lease_context, or remove lease_kubeconfig and lease_context to "
            "keep it in region 'us-east'",
        ],
        id="scheduler-leader-region-and-lease-kubeconfig",
    ),
    pytest.param(
        """\
        [scheduler]
        leader_election_region = "mars"
        lease_context = "minikube"
        [regions.eu-west]
        """,
        [
            "regions.toml:2: scheduler.leader_election_region: cannot be combined with "
            "lease_context, because both say which cluster holds the leader Lease. Remove "
            "leader_election_region to keep the Lease in the cluster of lease_context, or remove "
            "lease_context to keep it in region 'mars'",
            "regions.toml:2: scheduler.leader_election_region: must name a region of this file, "
            'whose cluster holds the leader Lease, got "mars"; allowed: eu-west',
        ],
        id="scheduler-leader-region-unknown-and-lease-context",
    ),
    pytest.param(
        """\
        [scheduler]
        default_deadline_seconds = 3000
        [regions.eu-west]
        """,
        [
            "regions.toml:2: scheduler.default_deadline_seconds: must be at least "
            "default_expected_duration_seconds + deadline_margin_seconds = 7200, or a "
            "deferrable task with the defaults could never finish in time, got 3000"
        ],
        id="scheduler-default-deadline-too-short",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        namespaces = ["batch", "Batch_Jobs", 7, "batch"]
        """,
        [
            "regions.toml:2: regions.eu-west.namespaces[1]: invalid namespace name: must be a "
            "DNS-1123 label: lower-case letters, digits and '-', starting and ending with a "
            'letter or digit (for example eu-west), got "Batch_Jobs"',
            "regions.toml:2: regions.eu-west.namespaces[2]: must be a string, got 7",
            'regions.toml:2: regions.eu-west.namespaces[3]: duplicate namespace, got "batch"',
        ],
        id="namespaces",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        namespaces = [
          "batch",
          "ml",
          "Bad",
        ]
        """,
        [
            "regions.toml:5: regions.eu-west.namespaces[2]: invalid namespace name: must be a "
            "DNS-1123 label: lower-case letters, digits and '-', starting and ending with a "
            'letter or digit (for example eu-west), got "Bad"',
        ],
        id="namespaces-multiline-array-element-line",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        kubeconfig = ""
        context = 3
        """,
        [
            'regions.toml:2: regions.eu-west.kubeconfig: must be a non-empty path, got ""',
            "regions.toml:3: regions.eu-west.context: must be a non-empty string, got 3",
        ],
        id="kubeconfig-and-context",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = 4

        [regions.eu-west.levels]
        history_hours = 24
        """,
        [
            "regions.toml:4: regions.eu-west.levels.mode: missing required key; add it to "
            '[regions.eu-west.levels] (line 4), for example mode = "relative"'
        ],
        id="levels-missing-mode",
    ),
    pytest.param(
        """\
        [regions.eu-west.levels]
        mode = "percentile"
        history_hour = 24
        """,
        [
            'regions.toml:2: regions.eu-west.levels.mode: unknown level mode, got "percentile"; '
            "allowed: absolute, relative",
            "regions.toml:3: regions.eu-west.levels.history_hour: unknown key (did you mean "
            "history_hours?); allowed: high_above_g_per_kwh, high_above_percentile, "
            "history_hours, low_below_g_per_kwh, low_below_percentile, mode",
        ],
        id="levels-unknown-mode",
    ),
    pytest.param(
        """\
        [regions.eu-west.levels]
        mode = "absolute"
        low_below_g_per_kwh = 100
        history_hours = 24
        """,
        [
            "regions.toml:1: regions.eu-west.levels.high_above_g_per_kwh: missing required key; "
            "add it to [regions.eu-west.levels] (line 1)",
            'regions.toml:4: regions.eu-west.levels.history_hours: unknown key (only with mode = '
            '"relative"); allowed: high_above_g_per_kwh, low_below_g_per_kwh, mode',
        ],
        id="levels-absolute-missing-and-foreign-key",
    ),
    pytest.param(
        """\
        [regions.eu-west.levels]
        mode = "absolute"
        low_below_g_per_kwh = 300
        high_above_g_per_kwh = 200
        """,
        [
            "regions.toml:3: regions.eu-west.levels.low_below_g_per_kwh: must be lower than "
            "high_above_g_per_kwh = 200, got 300"
        ],
        id="levels-absolute-low-above-high",
    ),
    pytest.param(
        """\
        [regions.eu-west.levels]
        mode = "absolute"
        low_below_g_per_kwh = -5
        high_above_g_per_kwh = inf
        """,
        [
            "regions.toml:3: regions.eu-west.levels.low_below_g_per_kwh: must be a number >= 0, "
            "got -5",
            "regions.toml:4: regions.eu-west.levels.high_above_g_per_kwh: must be a number >= 0, "
            "got inf",
        ],
        id="levels-absolute-out-of-range",
    ),
    pytest.param(
        """\
        [regions.eu-west.levels]
        mode = "relative"
        low_below_percentile = 120
        high_above_percentile = 50
        history_hours = 0
        """,
        [
            "regions.toml:3: regions.eu-west.levels.low_below_percentile: must be a number from "
            "0 to 100, got 120",
            "regions.toml:5: regions.eu-west.levels.history_hours: must be a positive integer, got 0",
        ],
        id="levels-relative-out-of-range",
    ),
    pytest.param(
        """\
        [regions.eu-west.levels]
        mode = "relative"
        low_below_percentile = 70
        """,
        [
            "regions.toml:3: regions.eu-west.levels.low_below_percentile: must be lower than "
            "high_above_percentile = 67, got 70"
        ],
        id="levels-relative-low-above-default-high",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = 4
        levels = { mode = "relative", high_above_percentile = 101 }
        """,
        [
            "regions.toml:3: regions.eu-west.levels.high_above_percentile: must be a number from "
            "0 to 100, got 101"
        ],
        id="levels-inline-table",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = 4
        levels.mode = "relative"
        levels.history_hours = -1
        """,
        [
            "regions.toml:4: regions.eu-west.levels.history_hours: must be a positive integer, "
            "got -1"
        ],
        id="levels-dotted-keys",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        levels = "relative"
        """,
        ['regions.toml:2: regions.eu-west.levels: must be a table, got "relative"'],
        id="levels-not-table",
    ),
    pytest.param(
        """\
        [regions.eu-west.energy]
        watts_per_vcpu_idle = 4
        watts_per_vcpu_busy = 3.5
        cpu_utilization = 1.5
        watts_per_gb_memory = -0.1
        watts_per_gpu = 300
        """,
        [
            "regions.toml:2: regions.eu-west.energy.watts_per_vcpu_idle: must not exceed "
            "watts_per_vcpu_busy = 3.5, got 4",
            "regions.toml:4: regions.eu-west.energy.cpu_utilization: must be a number from 0 to 1, "
            "got 1.5",
            "regions.toml:5: regions.eu-west.energy.watts_per_gb_memory: must be a number >= 0, "
            "got -0.1",
            "regions.toml:6: regions.eu-west.energy.watts_per_gpu: unknown key; allowed: "
            "cpu_utilization, watts_per_gb_memory, watts_per_vcpu_busy, watts_per_vcpu_idle",
        ],
        id="energy",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = 4

        [[regions.eu-west.nodes]]
        name = "node-1"
        pods = 110
        """,
        [
            "regions.toml:4: regions.eu-west.nodes[0].cpu: missing required key; add it to "
            "[[regions.eu-west.nodes]] number 1 (line 4)",
            "regions.toml:4: regions.eu-west.nodes[0].memory: missing required key; add it to "
            "[[regions.eu-west.nodes]] number 1 (line 4)",
        ],
        id="node-missing-cpu-and-memory",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"

        [[regions.eu-west.nodes]]
        cpu = "4"
        memory = "16Gi"
        """,
        [
            "regions.toml:6: regions.eu-west.nodes[1].name: missing required key; add it to "
            "[[regions.eu-west.nodes]] number 2 (line 6)",
        ],
        id="second-node-missing-name",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"
        ephemeral_storage = "-1Gi"
        """,
        [
            "regions.toml:5: regions.eu-west.nodes[0].ephemeral_storage: must not be negative, "
            'got "-1Gi"',
        ],
        id="node-negative-storage",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = 0
        memory = [16]
        """,
        [
            "regions.toml:3: regions.eu-west.nodes[0].cpu: must be a positive quantity, got 0",
            "regions.toml:4: regions.eu-west.nodes[0].memory: must be a Kubernetes quantity such "
            "as 16Gi, 512Mi or 1e9, got [16]",
        ],
        id="node-zero-cpu-and-array-memory",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"

        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"
        """,
        [
            "regions.toml:7: regions.eu-west.nodes[1].name: duplicate node name in this region "
            '(first defined at line 1), got "node-1"'
        ],
        id="node-duplicate-name",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "Node_1"
        cpu = "4"
        memory = "16Gi"
        pods = 0
        ready = "yes"
        """,
        [
            "regions.toml:2: regions.eu-west.nodes[0].name: must be a DNS-1123 subdomain: "
            "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit "
            '(for example node-1.example.com), got "Node_1"',
            "regions.toml:5: regions.eu-west.nodes[0].pods: must be a positive integer, got 0",
            'regions.toml:6: regions.eu-west.nodes[0].ready: must be true or false, got "yes"',
        ],
        id="node-name-pods-ready",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"
        [regions.eu-west.nodes.labels]
        "topology.kubernetes.io/zone" = "zone a"
        "bad key!" = "x"
        tier = 3
        """,
        [
            'regions.toml:6: regions.eu-west.nodes[0].labels."topology.kubernetes.io/zone": '
            "invalid value: must consist of letters, digits, '-', '_' and '.', starting and "
            'ending with a letter or digit, got "zone a"',
            'regions.toml:7: regions.eu-west.nodes[0].labels."bad key!": invalid key: name part '
            "must consist of letters, digits, '-', '_' and '.', starting and ending with a "
            "letter or digit",
            "regions.toml:8: regions.eu-west.nodes[0].labels.tier: must be a string, got 3",
        ],
        id="node-labels-subtable",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"
        taints = [
          { key = "dedicated", value = "batch", effect = "NoSchedule" },
          { key = "dedicated", effect = "NoSchedul" },
          { value = "x", effect = "NoExecute" },
          { key = "dedicated", effect = "NoSchedule" },
          { key = "spot" },
        ]
        """,
        [
            "regions.toml:7: regions.eu-west.nodes[0].taints[1].effect: unknown taint effect, "
            'got "NoSchedul"; allowed: NoSchedule, PreferNoSchedule, NoExecute',
            "regions.toml:8: regions.eu-west.nodes[0].taints[2].key: missing required key; add "
            "it to inline table regions.eu-west.nodes[0].taints[2] (line 8)",
            "regions.toml:9: regions.eu-west.nodes[0].taints[3]: duplicate taint: another taint "
            'has the same key and effect, got "dedicated:NoSchedule"',
            "regions.toml:10: regions.eu-west.nodes[0].taints[4].effect: missing required key; "
            "add it to inline table regions.eu-west.nodes[0].taints[4] (line 10), for example "
            'effect = "NoSchedule"',
        ],
        id="node-taints-inline",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"

        [[regions.eu-west.nodes.taints]]
        key = "a"
        effect = "NoSchedule"

        [[regions.eu-west.nodes.taints]]
        key = "b"
        effect = "Never"
        """,
        [
            "regions.toml:12: regions.eu-west.nodes[0].taints[1].effect: unknown taint effect, "
            'got "Never"; allowed: NoSchedule, PreferNoSchedule, NoExecute',
        ],
        id="node-taints-array-of-tables",
    ),
    pytest.param(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4"
        memory = "16Gi"
        extended = { "example.com/gpu" = "500m", cpu = 1, gpu = 2 }
        """,
        [
            'regions.toml:5: regions.eu-west.nodes[0].extended."example.com/gpu": must be a whole '
            'number for an extended resource, got "500m"',
            "regions.toml:5: regions.eu-west.nodes[0].extended.cpu: invalid extended resource "
            "name: is a standard resource; set it with the node key cpu instead",
            "regions.toml:5: regions.eu-west.nodes[0].extended.gpu: invalid extended resource "
            "name: must be fully qualified with a domain prefix (for example example.com/gpu)",
        ],
        id="node-extended",
    ),
    pytest.param(
        """\
        [regions.eu-west.nodes]
        name = "node-1"
        """,
        [
            "regions.toml:1: regions.eu-west.nodes: must be an array of tables, written as "
            "[[regions.eu-west.nodes]], got a table"
        ],
        id="nodes-single-table",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        nodes = ["node-1"]
        """,
        [
            "regions.toml:2: regions.eu-west.nodes[0]: must be a table with the keys of a node, "
            'got "node-1"'
        ],
        id="nodes-array-of-strings",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        intensity_g_per_kwh = 100
        """,
        [
            "regions.toml:1: regions.eu-west.carbon.source: missing required key; add it to "
            '[regions.eu-west.carbon] (line 1), for example source = "replay"'
        ],
        id="carbon-missing-source",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "electricity-maps"
        """,
        [
            "regions.toml:2: regions.eu-west.carbon.source: unknown carbon source, got "
            '"electricity-maps"; allowed: static, replay, scripted, electricitymaps, watttime, '
            "ukcarbon"
        ],
        id="carbon-unknown-source",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "static"
        intensity_g_per_kwh = -1
        seconds_per_hour = 10
        """,
        [
            "regions.toml:3: regions.eu-west.carbon.intensity_g_per_kwh: must be a number >= 0, "
            "got -1",
            'regions.toml:4: regions.eu-west.carbon.seconds_per_hour: unknown key (only with '
            'source = "replay"); allowed: source, intensity_g_per_kwh, stale_after_seconds, '
            "poll_interval_seconds",
        ],
        id="carbon-static",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "static"
        """,
        [
            "regions.toml:1: regions.eu-west.carbon.intensity_g_per_kwh: missing required key; "
            "add it to [regions.eu-west.carbon] (line 1)"
        ],
        id="carbon-static-missing-intensity",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        carbon = { source = "replay", seconds_per_hour = 0 }
        """,
        [
            "regions.toml:2: regions.eu-west.carbon.trace: missing required key; add it to "
            "inline table regions.eu-west.carbon (line 2)",
            "regions.toml:2: regions.eu-west.carbon.seconds_per_hour: must be a number > 0, got 0",
        ],
        id="carbon-replay-inline",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "electricitymaps"
        """,
        [
            "regions.toml:1: regions.eu-west.carbon.zone: missing required key; add it to "
            "[regions.eu-west.carbon] (line 1)",
            "regions.toml:1: regions.eu-west.carbon.api_key_env: missing api_key; add one of "
            "api_key_env, api_key_file to [regions.eu-west.carbon] (line 1), for example "
            'api_key_env = "API_KEY"',
        ],
        id="carbon-electricitymaps-missing-zone-and-key",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "electricitymaps"
        zone = "DE"
        api_key_env = "1BAD"
        api_key_file = "key.txt"
        emission_factor_type = "marginal"
        base_url = "ftp://x"
        timeout_seconds = 0
        backoff_initial_seconds = 10
        backoff_max_seconds = 5
        history_endpoint = "latest"
        disable_estimations = "yes"
        """,
        [
            "regions.toml:4: regions.eu-west.carbon.api_key_env: must be an environment variable "
            "name: letters, digits and '_', not starting with a digit, got \"1BAD\"",
            "regions.toml:5: regions.eu-west.carbon.api_key_file: conflicts with api_key_env; give "
            "only one of api_key_env, api_key_file",
            'regions.toml:6: regions.eu-west.carbon.emission_factor_type: unknown emission factor '
            'type, got "marginal"; allowed: lifecycle, direct',
            "regions.toml:7: regions.eu-west.carbon.base_url: must be an http:// or https:// URL "
            'with a host, such as https://api.example.com, got "ftp://x"',
            "regions.toml:8: regions.eu-west.carbon.timeout_seconds: must be a number > 0, got 0",
            "regions.toml:9: regions.eu-west.carbon.backoff_initial_seconds: must not exceed "
            "backoff_max_seconds = 5, got 10",
            'regions.toml:11: regions.eu-west.carbon.history_endpoint: unknown history endpoint, '
            'got "latest"; allowed: past-range, history',
            'regions.toml:12: regions.eu-west.carbon.disable_estimations: must be true or false, '
            'got "yes"',
        ],
        id="carbon-electricitymaps-bad-values",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "watttime"
        region = "PJM_DC"
        username = "demo"
        signal_type = "health_damage"
        horizon_hours = 80
        zone = "US"
        max_attempts = 0
        """,
        [
            "regions.toml:1: regions.eu-west.carbon.password_env: missing password; add one of "
            "password_env, password_file to [regions.eu-west.carbon] (line 1), for example "
            'password_env = "PASSWORD"',
            'regions.toml:5: regions.eu-west.carbon.signal_type: unsupported signal type, got '
            '"health_damage"; allowed: co2_moer, co2_aoer',
            "regions.toml:6: regions.eu-west.carbon.horizon_hours: must be at most 72, the longest "
            "WattTime forecast, got 80",
            'regions.toml:7: regions.eu-west.carbon.zone: unknown key (only with source = '
            '"electricitymaps"); allowed: source, region, signal_type, horizon_hours, username, username_env, username_file, password_env, password_file, base_url, timeout_seconds, max_attempts, backoff_initial_seconds, backoff_max_seconds, retry_after_max_seconds, cache_ttl_seconds, stale_after_seconds, poll_interval_seconds',
            "regions.toml:8: regions.eu-west.carbon.max_attempts: must be a positive integer, got 0",
        ],
        id="carbon-watttime-bad-values",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "watttime"
        region = "PJM_DC"
        username = "demo"
        username_env = "WT_USER"
        password_file = ""
        """,
        [
            "regions.toml:5: regions.eu-west.carbon.username_env: conflicts with username; give "
            "only one of username, username_env, username_file",
            'regions.toml:6: regions.eu-west.carbon.password_file: must be a non-empty path, got ""',
        ],
        id="carbon-watttime-credentials",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "ukcarbon"
        region_id = 18
        timeout_second = 5
        cache_ttl_seconds = -1
        """,
        [
            "regions.toml:3: regions.eu-west.carbon.region_id: must be a region id from 1 to 17 "
            "(13 is London); leave it out for all of Great Britain, got 18",
            "regions.toml:4: regions.eu-west.carbon.timeout_second: unknown key (did you mean "
            "timeout_seconds?); allowed: source, region_id, base_url, timeout_seconds, "
            "max_attempts, backoff_initial_seconds, backoff_max_seconds, "
            "retry_after_max_seconds, cache_ttl_seconds, stale_after_seconds, poll_interval_seconds",
            "regions.toml:5: regions.eu-west.carbon.cache_ttl_seconds: must be a number >= 0, "
            "got -1",
        ],
        id="carbon-ukcarbon-bad-values",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "ukcarbon"
        zone = "GB"
        """,
        [
            'regions.toml:3: regions.eu-west.carbon.zone: unknown key (only with source = '
            '"electricitymaps"); allowed: source, region_id, base_url, timeout_seconds, '
            "max_attempts, backoff_initial_seconds, backoff_max_seconds, "
            "retry_after_max_seconds, cache_ttl_seconds, stale_after_seconds, poll_interval_seconds",
        ],
        id="carbon-ukcarbon-foreign-key",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "static"
        intensity_g_per_kwh = 10
        timeout_seconds = 5
        """,
        [
            'regions.toml:4: regions.eu-west.carbon.timeout_seconds: unknown key (only with '
            'source = "electricitymaps", "watttime" or "ukcarbon"); allowed: source, '
            "intensity_g_per_kwh, stale_after_seconds, poll_interval_seconds",
        ],
        id="carbon-static-http-key",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "replay"
        trace = "/t.csv"
        start_offset_hours = -1
        start_time = 2023-10-21T00:00:00
        """,
        [
            "regions.toml:4: regions.eu-west.carbon.start_offset_hours: must be a number >= 0, "
            "got -1",
            "regions.toml:5: regions.eu-west.carbon.start_time: must carry a UTC offset; add Z "
            "for UTC, as in 2023-10-21T00:00:00Z, got 2023-10-21T00:00:00",
            "regions.toml:5: regions.eu-west.carbon.start_time: conflicts with "
            "start_offset_hours; give only one of them",
        ],
        id="carbon-replay-start",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "replay"
        trace = "/t.csv"
        start_time = "2023-10-21T00:00:00Z"
        """,
        [
            "regions.toml:4: regions.eu-west.carbon.start_time: must be a TOML date-time with "
            'offset, such as 2023-10-21T00:00:00Z (no quotes), got "2023-10-21T00:00:00Z"',
        ],
        id="carbon-replay-start-time-string",
    ),
    pytest.param(
        """\
        [regions.eu-west.carbon]
        source = "scripted"
        schedule_region = "EU"
        """,
        [
            "regions.toml:1: regions.eu-west.carbon.schedule: missing required key; add it to "
            "[regions.eu-west.carbon] (line 1)",
            "regions.toml:3: regions.eu-west.carbon.schedule_region: must be a DNS-1123 label: "
            "lower-case letters, digits and '-', starting and ending with a letter or digit (for "
            'example eu-west), got "EU"',
        ],
        id="carbon-scripted-missing-schedule",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        max_pods = 4

        [regions.us-east]
        max_pods = 2

        [[regions.us-east.nodes]]
        name = "a"
        cpu = "1"
        memory = "1Gi"

        [[regions.eu-west.nodes]]
        name = "b"
        cpu = "1"
        memory = "1Gi"

        [[regions.us-east.nodes]]
        name = "c"
        cpu = "1"
        memory = "1Gi"
        pods = -3
        """,
        ["regions.toml:21: regions.us-east.nodes[1].pods: must be a positive integer, got -3"],
        id="nodes-of-two-regions-interleaved",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        'max_pods' = 0
        "pue" = 0
        """,
        [
            "regions.toml:2: regions.eu-west.max_pods: must be a positive integer, got 0",
            "regions.toml:3: regions.eu-west.pue: must be a number >= 1, got 0",
        ],
        id="quoted-keys",
    ),
    pytest.param(
        """\
        [regions.eu-west]
        description = '''
        max_pods = 4
        '''
        max_pods = 0
        """,
        [
            "regions.toml:2: regions.eu-west.description: unknown key; allowed: carbon, context, "
            "energy, kubeconfig, levels, max_pods, namespaces, nodes, pue",
            "regions.toml:5: regions.eu-west.max_pods: must be a positive integer, got 0",
        ],
        id="multiline-string-is-skipped",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_config_message(text, expected):
    assert errors_of(text) == expected


def test_invalid_quantities_name_line_path_and_value():
    # The reason in the middle comes from the quantity parser; the frame around it is ours.
    lines = errors_of(
        """\
        [[regions.eu-west.nodes]]
        name = "node-1"
        cpu = "4 cores"
        memory = "16GB"
        """
    )
    assert len(lines) == 2
    assert lines[0].startswith("regions.toml:3: regions.eu-west.nodes[0].cpu: invalid quantity: ")
    assert "whitespace" in lines[0]
    assert lines[0].endswith('; write it like 4, 3500m or 0.5, got "4 cores"')
    assert lines[1].startswith("regions.toml:4: regions.eu-west.nodes[0].memory: invalid quantity: ")
    assert "'GB'" in lines[1]
    assert lines[1].endswith('; write it like 16Gi, 512Mi or 1e9, got "16GB"')


def test_every_error_is_collected():
    text = """\
        [scheduler]
        planning_horizon_hours = 0

        [regions.eu-west]
        max_pods = 0
        pue = 0.5

        [regions.us-east]
        max_pods = -2

        [[regions.us-east.nodes]]
        name = "n"
        cpu = "x"
        memory = "1Gi"
        """
    with pytest.raises(ConfigError) as caught:
        parse(text)
    issues = caught.value.issues
    assert [(issue.line, issue.path) for issue in issues] == [
        (2, "scheduler.planning_horizon_hours"),
        (5, "regions.eu-west.max_pods"),
        (6, "regions.eu-west.pue"),
        (9, "regions.us-east.max_pods"),
        (13, "regions.us-east.nodes[0].cpu"),
    ]
    assert all(issue.file == "regions.toml" for issue in issues)
    assert len(str(caught.value).split("\n")) == 5


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[regions.eu-west]\nmax_pods = \n",
            "regions.toml:2:12: invalid TOML: invalid value",
            id="missing-value",
        ),
        pytest.param(
            "[regions.eu-west]\nmax_pods = 4\nmax_pods = 5\n",
            "regions.toml:3:13: invalid TOML: cannot overwrite a value",
            id="duplicate-key",
        ),
        pytest.param(
            "[regions.eu-west\nmax_pods = 4\n",
            "regions.toml:1:17: invalid TOML: expected ']' at the end of a table declaration",
            id="unclosed-header",
        ),
        pytest.param(
            'name = "unterminated',
            "regions.toml:1:21: invalid TOML: unterminated string",
            id="unterminated-string",
        ),
    ],
)
def test_toml_syntax_error_has_line_and_column(text, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "regions.toml")
    assert str(caught.value) == expected
    assert caught.value.issues[0].column is not None


def test_load_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == (
        f"{missing}: cannot read the configuration file: No such file or directory"
    )


def test_load_invalid_utf8(tmp_path):
    file = tmp_path / "regions.toml"
    file.write_bytes(b"[regions.eu-west]\nmax_pods = 4 # \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert str(caught.value) == f"{file}:2: invalid UTF-8 at byte 33; save the file as UTF-8"


def test_load_error_names_given_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("regions.toml").write_text("[regions.eu-west]\nmax_pods = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config("regions.toml")
    assert str(caught.value) == (
        "regions.toml:2: regions.eu-west.max_pods: must be a positive integer, got -1"
    )


# The line locator.

LAYOUTS = """\
# comment with [brackets] and = signs
[scheduler]
forecaster = "a # not a comment"  # a comment

[regions.eu-west.levels]
mode = "relative"

[regions.eu-west]
max_pods = 4
energy.watts_per_vcpu_idle = 0.74
carbon = { source = "static", "intensity_g_per_kwh" = 100 }
namespaces = [
  "a",  # first
  "b",
]
note = \"\"\"
max_pods = 5
[regions.fake]
\"\"\"

[[regions.eu-west.nodes]]
name = "n1"
labels = { "topology.kubernetes.io/zone" = "z", 'literal.key' = "x" }
taints = [
  { key = "k", effect = "NoSchedule" },
  { key = "k2", effect = "NoExecute" },
]

[[regions.eu-west.nodes]]
name = "n2"
[regions.eu-west.nodes.labels]
"kubernetes.io/hostname" = "n2"
when = 1979-05-27 07:32:00Z

[ regions . "us-east" ]
max_pods = 2
"""


@pytest.mark.parametrize(
    ("path", "line", "kind"),
    [
        pytest.param(("scheduler",), 2, Kind.TABLE, id="table-header"),
        pytest.param(("scheduler", "forecaster"), 3, Kind.KEY, id="key-with-hash-in-string"),
        pytest.param(("regions",), 5, Kind.IMPLICIT, id="implicit-parent"),
        pytest.param(("regions", "eu-west"), 8, Kind.TABLE, id="header-after-subtable"),
        pytest.param(("regions", "eu-west", "levels"), 5, Kind.TABLE, id="subtable-first"),
        pytest.param(("regions", "eu-west", "levels", "mode"), 6, Kind.KEY, id="subtable-key"),
        pytest.param(("regions", "eu-west", "energy"), 10, Kind.IMPLICIT, id="dotted-parent"),
        pytest.param(
            ("regions", "eu-west", "energy", "watts_per_vcpu_idle"), 10, Kind.KEY, id="dotted-key"
        ),
        pytest.param(("regions", "eu-west", "carbon"), 11, Kind.KEY, id="inline-table"),
        pytest.param(
            ("regions", "eu-west", "carbon", "intensity_g_per_kwh"),
            11,
            Kind.KEY,
            id="quoted-key-in-inline-table",
        ),
        pytest.param(("regions", "eu-west", "namespaces", 0), 13, Kind.ELEMENT, id="element-0"),
        pytest.param(("regions", "eu-west", "namespaces", 1), 14, Kind.ELEMENT, id="element-1"),
        pytest.param(("regions", "eu-west", "note"), 16, Kind.KEY, id="multiline-string"),
        pytest.param(("regions", "eu-west", "nodes"), 21, Kind.ARRAY, id="array-of-tables"),
        pytest.param(("regions", "eu-west", "nodes", 0), 21, Kind.ARRAY_TABLE, id="first-element"),
        pytest.param(("regions", "eu-west", "nodes", 0, "name"), 22, Kind.KEY, id="element-key"),
        pytest.param(
            ("regions", "eu-west", "nodes", 0, "labels", "topology.kubernetes.io/zone"),
            23,
            Kind.KEY,
            id="quoted-label-key",
        ),
        pytest.param(
            ("regions", "eu-west", "nodes", 0, "labels", "literal.key"),
            23,
            Kind.KEY,
            id="literal-key",
        ),
        pytest.param(
            ("regions", "eu-west", "nodes", 0, "taints", 1, "effect"),
            26,
            Kind.KEY,
            id="inline-table-in-multiline-array",
        ),
        pytest.param(("regions", "eu-west", "nodes", 1), 29, Kind.ARRAY_TABLE, id="second-element"),
        pytest.param(
            ("regions", "eu-west", "nodes", 1, "labels"), 31, Kind.TABLE, id="table-in-element"
        ),
        pytest.param(
            ("regions", "eu-west", "nodes", 1, "labels", "kubernetes.io/hostname"),
            32,
            Kind.KEY,
            id="key-in-table-in-element",
        ),
        pytest.param(
            ("regions", "eu-west", "nodes", 1, "labels", "when"), 33, Kind.KEY, id="datetime-value"
        ),
        pytest.param(("regions", "us-east"), 35, Kind.TABLE, id="spaced-quoted-header"),
        pytest.param(("regions", "us-east", "max_pods"), 36, Kind.KEY, id="key-after-spaced-header"),
    ],
)
def test_source_map_lines(path, line, kind):
    source_map = build_source_map(LAYOUTS)
    definition = source_map.definition(path)
    assert definition is not None
    assert definition.line == line
    assert definition.kind is kind


def test_source_map_ignores_keys_inside_strings():
    source_map = build_source_map(LAYOUTS)
    assert source_map.definition(("regions", "fake")) is None
    assert source_map.line_of(("regions", "eu-west", "max_pods")) == 9


def test_source_map_falls_back_to_parent():
    source_map = build_source_map(LAYOUTS)
    assert source_map.line_of(("regions", "eu-west", "nodes", 1, "cpu")) == 29
    assert source_map.line_of(("nowhere",)) == 1


def test_source_map_handles_crlf():
    text = "[regions.a]\r\nmax_pods = 4\r\n[regions.b]\r\nmax_pods = 5\r\n"
    source_map = build_source_map(text)
    assert source_map.line_of(("regions", "b", "max_pods")) == 4


def test_source_map_keeps_lines_before_unexpected_input():
    source_map = build_source_map("[regions.a]\nmax_pods = 4\n@@@\n[regions.b]\n")
    assert source_map.line_of(("regions", "a", "max_pods")) == 2
    assert source_map.definition(("regions", "b")) is None


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param(("regions", "eu-west", "max_pods"), "regions.eu-west.max_pods", id="bare"),
        pytest.param(("regions", "a", "nodes", 2, "cpu"), "regions.a.nodes[2].cpu", id="index"),
        pytest.param(("labels", "kubernetes.io/hostname"), 'labels."kubernetes.io/hostname"', id="quoted"),
        pytest.param(("a", 'say "hi"\n'), 'a."say \\"hi\\"\\u000a"', id="escaped"),
        pytest.param((), "", id="empty"),
    ],
)
def test_format_key_path(path, text):
    assert format_key_path(path) == text


# Properties.


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_config_error(text):
    try:
        parse_config(text, "regions.toml")
    except ConfigError as error:
        assert error.issues
        assert all(str(issue).startswith("regions.toml") for issue in error.issues)


FRAGMENTS = [
    "[scheduler]",
    "[regions.eu-west]",
    "[regions.us-east]",
    "[regions.eu-west.levels]",
    "[regions.eu-west.energy]",
    "[regions.eu-west.carbon]",
    "[[regions.eu-west.nodes]]",
    "[[regions.eu-west.nodes.taints]]",
    "[regions.eu-west.nodes.labels]",
    "[regions.eu-west.nodes.extended]",
]
KEYS = [
    "max_pods", "pue", "kubeconfig", "context", "namespaces", "levels", "energy", "nodes",
    "carbon", "mode", "low_below_g_per_kwh", "high_above_g_per_kwh", "low_below_percentile",
    "high_above_percentile", "history_hours", "watts_per_vcpu_idle", "watts_per_vcpu_busy",
    "cpu_utilization", "name", "cpu", "memory", "ephemeral_storage", "pods", "labels",
    "taints", "ready", "unschedulable", "extended", "source", "trace", "seconds_per_hour",
    "intensity_g_per_kwh", "key", "value", "effect", '"nvidia.com/gpu"', "forecaster",
    "zone", "api_key_env", "api_key_file", "region_id", "base_url", "timeout_seconds",
    "max_attempts", "schedule", "start_time", "start_offset_hours", "password_env", "username",
]
TOML_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True).map(lambda x: "nan" if math.isnan(x) else repr(x).replace("inf", "inf")),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.sampled_from(
        ['"4"', '"16Gi"', '"500m"', '"x"', '""', '"NoSchedule"', '"relative"', '"absolute"',
         '"static"', '"replay"', '"electricitymaps"', '"watttime"', '"ukcarbon"',
         '"scripted"', '"KEY_ENV"', '"http://127.0.0.1:1"', "2023-01-01T00:00:00Z",
         '"1e3"', '"-1"', "[]", '["a", 1]', "{}", '{ key = "k" }',
         '[{ key = "k", effect = "NoSchedule" }]', '{ "example.com/gpu" = 1 }']
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(FRAGMENTS),
            st.tuples(st.sampled_from(KEYS), TOML_VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
        ),
        max_size=25,
    )
)
def test_config_like_text_raises_only_config_error(lines):
    text = "\n".join(lines)
    try:
        config = parse_config(text, "regions.toml")
    except ConfigError as error:
        assert error.issues
        lines_count = text.count("\n") + 1
        for issue in error.issues:
            assert issue.line is None or 1 <= issue.line <= lines_count
    else:
        assert config.regions


@given(
    bad=st.one_of(st.integers(max_value=0), st.just('"four"'), st.just("1.5")).map(str),
    layout=st.sampled_from(["header", "dotted", "inline"]),
    padding=st.integers(min_value=0, max_value=5),
    before=st.booleans(),
)
def test_error_line_points_at_key(bad, layout, padding, before):
    filler = "\n" * padding
    other = '[regions.us-east]\npue = 1.2\n'
    if layout == "header":
        region = f"[regions.eu-west]\npue = 1.1\n{filler}max_pods = {bad}\n"
    elif layout == "dotted":
        region = f"[regions]\n{filler}eu-west.max_pods = {bad}\n"
    else:
        region = f"[regions]\n{filler}eu-west = {{ pue = 1.1, max_pods = {bad} }}\n"
    text = other + region if before and layout == "header" else region
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "regions.toml")
    (issue,) = caught.value.issues
    assert issue.path == "regions.eu-west.max_pods"
    assert "max_pods" in text.split("\n")[issue.line - 1]


def test_bundled_regions_match_repository() -> None:
    """The copy shipped in the package is the repository's regions.toml."""
    repo = Path(__file__).resolve().parents[1]
    bundled = repo / "carbon_scheduler" / "data" / "regions.toml"
    assert bundled.read_bytes() == (repo / "regions.toml").read_bytes()
