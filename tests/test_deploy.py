"""Offline checks of deploy/: manifests, scripts, RBAC, config and their wiring.

No cluster runs here, so the checks are what can be proven without one. Every
manifest validates against the Kubernetes OpenAPI schemas that the
kubernetes-validate package ships, in strict mode, so unknown fields fail. The
scripts pass shellcheck. The host-cluster RBAC grants only what the daemon's
leader election uses, which a run of the elector against a fake API server that
enforces it proves. The ConfigMap's regions.toml loads with the project's
loader. The names that tie the parts together (ports, paths, Secrets,
Services, the `run` command's flags) agree across the files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from carbon_scheduler.cli import build_parser
from carbon_scheduler.config import load_config
from carbon_scheduler.daemon.app import IN_CLUSTER_HOST_VARIABLE, choose_lease_cluster
from carbon_scheduler.daemon.podinfo import SCHEDULER_NAME, task_from_pod
from carbon_scheduler.daemon.server import make_app
from carbon_scheduler.model import TaskClass
from carbon_scheduler.quantity import milli_value, parse_quantity, value

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
GRAFANA = ROOT / "grafana"
# Kubernetes minor version whose schemas the manifests must satisfy: what
# minikube 1.34 starts by default.
KUBERNETES_VERSION = "1.31"
# Helm values and kustomize files are not Kubernetes objects.
NOT_MANIFESTS = {"vcluster"}
SHELLCHECK_HINT = "shellcheck was not found on PATH; install Debian's `shellcheck` package (CI installs it in .ci/run)"


def manifest_paths() -> list[Path]:
    return sorted(
        path
        for path in DEPLOY.rglob("*.yaml")
        if path.name != "kustomization.yaml" and not NOT_MANIFESTS & set(path.relative_to(DEPLOY).parts)
    )


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def find(path: Path, kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        document
        for document in documents(path)
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''} in {path}, found {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def mount_path(deployment: dict[str, Any], volume_name: str) -> str:
    (mount,) = [mount for mount in container(deployment)["volumeMounts"] if mount["name"] == volume_name]
    return mount["mountPath"]


def volume(deployment: dict[str, Any], volume_name: str) -> dict[str, Any]:
    (found,) = [entry for entry in deployment["spec"]["template"]["spec"]["volumes"] if entry["name"] == volume_name]
    return found


def port(deployment: dict[str, Any], name: str) -> int:
    (found,) = [entry["containerPort"] for entry in container(deployment)["ports"] if entry["name"] == name]
    return found


def script(name: str) -> str:
    return (DEPLOY / name).read_text(encoding="utf-8")


def dockerfile_instruction(instruction: str) -> list[str]:
    """Return the arguments of each Dockerfile line that starts with `instruction`."""
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    return [line[len(instruction) + 1 :].strip() for line in lines if line.startswith(instruction + " ")]


SCHEDULER = find(DEPLOY / "scheduler" / "deployment.yaml", "Deployment", "carbon-scheduler")
REGIONS = tuple(region.name for region in load_config(ROOT / "regions.toml").regions)


# Schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_paths(), ids=lambda path: str(path.relative_to(DEPLOY)))
def test_manifest_validates_against_schema(path):
    import kubernetes_validate

    found = documents(path)
    assert found, f"{path} holds no Kubernetes object"
    for document in found:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.relative_to(ROOT)}: {document['kind']} {document['metadata'].get('name')}: {error}")


def test_schema_validation_rejects_unknown_field():
    import kubernetes_validate

    broken = json.loads(json.dumps(SCHEDULER))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomizations_list_existing_files():
    kustomizations = sorted(DEPLOY.rglob("kustomization.yaml"))
    assert {path.parent.name for path in kustomizations} == {
        "deploy", "scheduler", "influxdb", "prometheus", "grafana", "clusters",
    }
    for path in kustomizations:
        kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
        for resource in kustomization.get("resources", []):
            target = (path.parent / resource).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{path}: {resource} not found"
            # kustomize rejects files outside the kustomization's folder.
            if target.is_file():
                assert path.parent in target.parents, f"{path}: {resource} is outside {path.parent}"
        for generator in kustomization.get("configMapGenerator", []):
            for file_name in generator["files"]:
                assert (path.parent / file_name).is_file(), f"{path}: {file_name} not found"
                assert "/" not in file_name, f"{path}: {file_name} is outside {path.parent}"


@pytest.mark.parametrize("part", ["scheduler", "influxdb", "prometheus", "grafana"])
def test_kustomization_includes_every_manifest(part):
    folder = DEPLOY / part
    listed = set(yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"])
    # The provider-keys Secret is a template the user fills in and applies.
    present = {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml", "provider-keys.example.yaml"}
    assert listed == present


# Scripts ---------------------------------------------------------------------


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail(SHELLCHECK_HINT, pytrace=False)
    scripts = sorted(str(path.relative_to(ROOT)) for path in DEPLOY.glob("*.sh"))
    assert scripts == ["deploy/down.sh", "deploy/lib.sh", "deploy/submit-workloads.sh", "deploy/up.sh"]
    result = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style", *scripts],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", ["up.sh", "down.sh", "submit-workloads.sh"])
def test_script_is_strict_and_executable(name):
    path = DEPLOY / name
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in path.read_text()
    assert path.stat().st_mode & 0o111, f"{path} is not executable"


@pytest.mark.parametrize("name", ["up.sh", "submit-workloads.sh"])
def test_script_checks_tools(name):
    assert re.search(r"^require_tools .*kubectl", script(name), re.MULTILINE)


def test_missing_tool_message_names_tool(tmp_path):
    # Run require_tools from lib.sh with an empty PATH except for bash itself.
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, "-c", f". {shlex.quote(str(DEPLOY / 'lib.sh'))}; require_tools kubectl no-such-tool-xyz"],
        capture_output=True, text=True, timeout=30, env={"PATH": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "missing required tools: kubectl no-such-tool-xyz" in result.stderr


# RBAC ------------------------------------------------------------------------


def host_rbac_documents() -> list[dict[str, Any]]:
    """Every Role, ClusterRole and binding applied to the host cluster (deploy/rbac.yaml goes to the regions)."""
    found = []
    for path in manifest_paths():
        if path == DEPLOY / "rbac.yaml":
            continue
        found += [document for document in documents(path) if document["kind"].endswith(("Role", "RoleBinding"))]
    return found


def permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_host_rbac_is_one_namespaced_role():
    rbac = host_rbac_documents()
    assert sorted(document["kind"] for document in rbac) == ["Role", "RoleBinding"]
    role = next(document for document in rbac if document["kind"] == "Role")
    binding = next(document for document in rbac if document["kind"] == "RoleBinding")
    assert role["metadata"]["namespace"] == "carbon-scheduler"
    assert permissions(role["rules"]) == {
        ("get", "coordination.k8s.io", "leases"),
        ("create", "coordination.k8s.io", "leases"),
        ("update", "coordination.k8s.io", "leases"),
    }
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SCHEDULER["spec"]["template"]["spec"]["serviceAccountName"],
         "namespace": "carbon-scheduler"}
    ]


def test_host_lease_rule_is_region_lease_rule():
    """The host Role repeats exactly the Lease rule that deploy/rbac.yaml grants in the regions."""
    region_role = find(DEPLOY / "rbac.yaml", "ClusterRole")
    region_leases = {grant for grant in permissions(region_role["rules"]) if grant[2] == "leases"}
    host_role = find(DEPLOY / "scheduler" / "leader-election-rbac.yaml", "Role")
    assert permissions(host_role["rules"]) == region_leases


def test_other_pods_get_no_api_token():
    for part in ("influxdb", "prometheus", "grafana"):
        deployment = find(DEPLOY / part / "deployment.yaml", "Deployment")
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, part


def test_up_applies_region_rbac_in_each_vcluster():
    text = script("up.sh")
    assert 'apply -f "$here/rbac.yaml"' in text
    service_account = find(DEPLOY / "rbac.yaml", "ServiceAccount")
    assert service_account["metadata"]["namespace"] == "carbon-scheduler"
    assert f'create token {service_account["metadata"]["name"]}' in text
    assert re.search(r'create namespace "\$NAMESPACE"', text)
    assert "\nNAMESPACE=carbon-scheduler\n" in text


@pytest.mark.asyncio
async def test_leader_election_runs_with_host_role(tmp_path, loopback_without_proxy):
    from carbon_scheduler.config.types import RegionSpec
    from carbon_scheduler.daemon.connections import connect
    from carbon_scheduler.daemon.leader import LeaderElector
    from tests.kubefake import FakeApiServer, write_kubeconfig
    from tests.kubefake.rbac import RbacPolicy

    config = load_config(DEPLOY / "scheduler" / "regions.toml")
    settings = config.scheduler
    async with FakeApiServer("host", seed=5) as server:
        server.rbac = RbacPolicy.from_yaml(DEPLOY / "scheduler" / "leader-election-rbac.yaml")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
        client = await connect(RegionSpec(name="host", kubeconfig=str(kubeconfig), context="host"))
        try:
            clock = [1_800_000_000.0]

            async def sleep(seconds: float) -> None:
                clock[0] += seconds

            def elector(namespace: str, identity: str) -> LeaderElector:
                return LeaderElector(
                    client, namespace=namespace, name=settings.lease_name, identity=identity,
                    lease_duration_seconds=settings.lease_duration_seconds,
                    renew_seconds=settings.lease_renew_seconds, retry_seconds=settings.lease_retry_seconds,
                    clock=lambda: clock[0], sleep=sleep,
                )

            leader = elector(settings.lease_namespace, "carbon-scheduler-a")
            standby = elector(settings.lease_namespace, "carbon-scheduler-b")
            assert await leader.try_acquire_or_renew() is True
            assert await standby.try_acquire_or_renew() is False
            clock[0] += settings.lease_renew_seconds
            assert await leader.try_acquire_or_renew() is True
            await leader.release()
            assert await standby.try_acquire_or_renew() is True
            assert server.request_count(status=403) == 0
            assert server.used_permissions() == permissions(
                find(DEPLOY / "scheduler" / "leader-election-rbac.yaml", "Role")["rules"]
            )

            # The Role is namespaced: the same Lease elsewhere is forbidden.
            outsider = elector("default", "carbon-scheduler-c")
            assert await outsider.try_acquire_or_renew() is False
            assert server.request_count(status=403) >= 1
        finally:
            await client.close()


# Config ----------------------------------------------------------------------


def test_demo_config_loads_and_matches_wiring():
    config = load_config(DEPLOY / "scheduler" / "regions.toml")
    assert tuple(region.name for region in config.regions) == REGIONS

    kubeconfig_dir = mount_path(SCHEDULER, "kubeconfigs")
    assert volume(SCHEDULER, "kubeconfigs")["secret"]["secretName"] == "carbon-scheduler-kubeconfigs"
    for region in config.regions:
        # up.sh writes one file per region, named REGION.kubeconfig, with context REGION.
        assert region.kubeconfig == f"{kubeconfig_dir}/{region.name}.kubeconfig"
        assert region.context == region.name
        assert region.nodes == ()
        assert region.carbon is not None
        (trace_copy,) = [line.split()[-1] for line in dockerfile_instruction("COPY") if "traces/demo.csv" in line]
        assert region.carbon.trace == trace_copy
    text = script("up.sh")
    assert '"$workdir/kubeconfigs/$region.kubeconfig"' in text
    assert "create secret generic carbon-scheduler-kubeconfigs" in text
    assert "current-context: $region" in text

    assert config.scheduler.leader_election is True
    assert config.scheduler.lease_namespace == SCHEDULER["metadata"]["namespace"]
    lease = choose_lease_cluster(config, environ={IN_CLUSTER_HOST_VARIABLE: "10.96.0.1"})
    assert lease.connection is not None and lease.connection.kubeconfig is None, lease

    influx = find(DEPLOY / "influxdb" / "service.yaml", "Service")
    assert config.store.url == f"http://{influx['metadata']['name']}:{influx['spec']['ports'][0]['port']}"
    assert config.store.database == "carbon"


def test_real_cluster_config_loads():
    config = load_config(DEPLOY / "clusters" / "regions.toml")
    assert len(config.regions) == 3
    kubeconfig_dir = mount_path(SCHEDULER, "kubeconfigs")
    in_cluster = [region.name for region in config.regions if region.kubeconfig is None]
    assert in_cluster == ["eu-west"]
    for region in config.regions:
        if region.kubeconfig is not None:
            assert region.kubeconfig.startswith(kubeconfig_dir + "/"), region.name
        assert region.carbon is not None and region.carbon.kind.value == "electricitymaps"
    assert config.scheduler.lease_namespace == "carbon-scheduler"
    kustomization = yaml.safe_load((DEPLOY / "clusters" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == volume(SCHEDULER, "config")["configMap"]["name"]
    assert generator["behavior"] == "replace"


def test_provider_keys_match_real_cluster_config():
    secret = find(DEPLOY / "scheduler" / "provider-keys.example.yaml", "Secret")
    (source,) = [entry["secretRef"] for entry in container(SCHEDULER)["envFrom"]]
    assert source["name"] == secret["metadata"]["name"]
    config = load_config(DEPLOY / "clusters" / "regions.toml")
    for region in config.regions:
        assert region.carbon is not None
        assert region.carbon.options["api_key_env"] in secret["stringData"], region.name


# The scheduler's Deployment against the `run` command ------------------------


def test_deployment_args_are_run_command():
    arguments = build_parser().parse_args(container(SCHEDULER)["args"])
    assert arguments.command == "run"
    assert arguments.config == Path(mount_path(SCHEDULER, "config")) / "regions.toml"
    # The configMapGenerator's key is the file name, regions.toml.
    kustomization = yaml.safe_load((DEPLOY / "scheduler" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator == {"name": volume(SCHEDULER, "config")["configMap"]["name"], "files": ["regions.toml"]}
    assert arguments.metrics_port == port(SCHEDULER, "metrics")


def test_image_default_command_is_deployment_args():
    (entrypoint,) = dockerfile_instruction("ENTRYPOINT")
    (command,) = dockerfile_instruction("CMD")
    assert json.loads(entrypoint) == ["carbon-scheduler"]
    assert json.loads(command) == container(SCHEDULER)["args"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "carbon-scheduler" in scripts
    assert dockerfile_instruction("EXPOSE") == [str(port(SCHEDULER, "metrics"))]


def test_image_runs_as_deployment_user():
    assert dockerfile_instruction("FROM") == ["python:3.11-slim AS build", "python:3.11-slim"]
    (user,) = dockerfile_instruction("USER")
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0
    security = SCHEDULER["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert security["runAsNonRoot"] is True


def test_probes_use_daemon_endpoints():
    routes = {route.resource.canonical for route in make_app(None, lambda: (True, "")).router.routes()}  # type: ignore[arg-type]
    probes = container(SCHEDULER)
    assert probes["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert probes["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {"/healthz", "/readyz", "/metrics"} <= routes


def test_deployment_runs_two_hardened_replicas():
    assert SCHEDULER["spec"]["replicas"] == 2
    env = {entry["name"]: entry for entry in container(SCHEDULER)["env"]}
    # The leader elector's holder identity.
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    resources = container(SCHEDULER)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    security = container(SCHEDULER)["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert SCHEDULER["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_metrics_services_select_scheduler_pods():
    labels = SCHEDULER["spec"]["template"]["metadata"]["labels"]
    services = documents(DEPLOY / "scheduler" / "service.yaml")
    assert {service["metadata"]["name"] for service in services} == {"carbon-scheduler-metrics", "carbon-scheduler-pods"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        (service_port,) = service["spec"]["ports"]
        assert service_port["targetPort"] == "metrics"
        assert service_port["port"] == port(SCHEDULER, "metrics")
    headless = find(DEPLOY / "scheduler" / "service.yaml", "Service", "carbon-scheduler-pods")
    assert headless["spec"]["clusterIP"] == "None"


# Prometheus and Grafana -------------------------------------------------------


def test_prometheus_config_is_valid_and_scrapes_each_replica(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool was not found on PATH; install Debian's `prometheus` package (CI installs it in .ci/run)",
                    pytrace=False)
    config_path = DEPLOY / "prometheus" / "prometheus.yml"
    result = subprocess.run([promtool, "check", "config", str(config_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    headless = find(DEPLOY / "scheduler" / "service.yaml", "Service", "carbon-scheduler-pods")
    name = headless["metadata"]["name"]
    namespace = headless["metadata"]["namespace"]
    assert discovery["names"] == [f"{name}.{namespace}.svc.cluster.local"]
    assert discovery["port"] == port(SCHEDULER, "metrics")
    prometheus = find(DEPLOY / "prometheus" / "deployment.yaml", "Deployment")
    assert f"--config.file={mount_path(prometheus, 'config')}/prometheus.yml" in container(prometheus)["args"]


def test_grafana_datasources_reach_services():
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text())["datasources"]
    urls = {source["uid"]: source["url"] for source in sources}
    for uid, part in (("prometheus", "prometheus"), ("influxdb", "influxdb")):
        service = find(DEPLOY / part / "service.yaml", "Service")
        assert service["metadata"]["namespace"] == "carbon-scheduler"
        assert urls[uid] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    prometheus_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    prometheus_source = next(source for source in sources if source["uid"] == "prometheus")
    assert prometheus_source["jsonData"]["timeInterval"] == prometheus_config["global"]["scrape_interval"]


def test_grafana_mounts_provisioning_and_dashboards():
    grafana = find(DEPLOY / "grafana" / "deployment.yaml", "Deployment")
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text())["providers"]
    assert mount_path(grafana, "dashboards") == providers[0]["options"]["path"]
    assert mount_path(grafana, "datasources") == "/etc/grafana/provisioning/datasources"
    assert mount_path(grafana, "dashboard-providers") == "/etc/grafana/provisioning/dashboards"
    env = {entry["name"]: entry.get("value") for entry in container(grafana)["env"]}
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(mount_path(grafana, "dashboards"))
    assert (GRAFANA / "dashboards" / home.name).is_file()
    # up.sh creates each ConfigMap that a volume names, from the matching grafana/ folder.
    text = script("up.sh")
    for volume_name, folder in (
        ("datasources", "grafana/provisioning/datasources"),
        ("dashboard-providers", "grafana/provisioning/dashboards"),
        ("dashboards", "grafana/dashboards"),
    ):
        config_map = volume(grafana, volume_name)["configMap"]["name"]
        assert re.search(rf'create configmap {config_map} \\\n\s+--from-file="\$root/{folder}"', text), config_map
    secret = next(entry for entry in container(grafana)["env"] if entry["name"] == "GF_SECURITY_ADMIN_PASSWORD")
    assert secret["valueFrom"]["secretKeyRef"]["name"] == "grafana-admin"
    assert "create secret generic grafana-admin" in text


# vclusters and workloads --------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_vcluster_syncs_only_its_region_nodes(region):
    values = yaml.safe_load((DEPLOY / "vcluster" / f"{region}.yaml").read_text())
    nodes = values["sync"]["fromHost"]["nodes"]
    assert nodes["enabled"] is True
    # vcluster ignores the labels when `all` is true.
    assert nodes["selector"] == {"all": False, "labels": {"topology.kubernetes.io/region": region}}
    assert values["controlPlane"]["advanced"]["virtualScheduler"]["enabled"] is True
    # The server that up.sh writes into the region's kubeconfig must be a name in the certificate.
    assert f"{region}.vcluster-{region}.svc" in values["controlPlane"]["proxy"]["extraSANs"]


def test_up_wires_vcluster_names():
    text = script("up.sh")
    assert 'server="https://$region.vcluster-$region.svc:443"' in text
    assert '--namespace "vcluster-$region"' in text
    assert '--values "$here/vcluster/$region.yaml"' in text
    assert 'topology.kubernetes.io/region=${REGIONS[i % ${#REGIONS[@]}]}' in text
    lib = script("lib.sh")
    assert f"REGIONS=({' '.join(REGIONS)})" in lib


def workload_pods() -> list[tuple[str, dict[str, Any]]]:
    """Return each workload manifest's pod (a bare Pod, or a Job's template as a pod)."""
    pods = []
    for path in sorted((DEPLOY / "workloads").glob("*.yaml")):
        for document in documents(path):
            if document["kind"] == "Pod":
                pods.append((path.name, document))
            elif document["kind"] == "Job":
                template = document["spec"]["template"]
                pods.append((path.name, {"metadata": dict(template["metadata"], namespace="default"),
                                         "spec": template["spec"]}))
    return pods


def test_workloads_cover_every_class():
    classes = {pod["metadata"]["labels"]["carbon-scheduler.io/class"] for _, pod in workload_pods()}
    assert classes == {task_class.value for task_class in TaskClass}


@pytest.mark.parametrize(("name", "pod"), workload_pods(), ids=[name for name, _ in workload_pods()])
def test_workload_is_read_without_problems(name, pod):
    assert pod["spec"]["schedulerName"] == SCHEDULER_NAME
    settings = load_config(DEPLOY / "scheduler" / "regions.toml").scheduler
    stamped = dict(pod, metadata=dict(pod["metadata"], name="demo", uid="uid-1",
                                       creationTimestamp="2026-01-01T00:00:00Z"))
    task, problems = task_from_pod(stamped, region="eu-west", settings=settings, region_names=REGIONS, now=0.0)
    assert problems == [], name
    assert task.task_class.value == pod["metadata"]["labels"]["carbon-scheduler.io/class"]
    (work,) = pod["spec"]["containers"]
    requests = work["resources"]["requests"]
    assert task.requirements.request.milli_cpu == milli_value(parse_quantity(requests["cpu"]))
    assert task.requirements.request.memory == value(parse_quantity(requests["memory"]))


# Requests of host pods that no manifest in deploy/ sets, as (milli-CPU, MiB):
# minikube's kindnet DaemonSet and kubeadm's CoreDNS, and an allowance for the
# CoreDNS that each vcluster runs on its own region node.
ADDON_REQUESTS = {"kindnet": (100, 50), "coredns": (100, 70), "vcluster-coredns": (100, 70)}
# The kubelet's default hard eviction threshold, which allocatable memory leaves out.
EVICTION_RESERVE_MIB = 100
# Share of a region node that must stay free in the worst case.
MIN_FREE_SHARE = 0.25


def requests_of(spec: dict[str, Any]) -> tuple[int, int]:
    """Return the (milli-CPU, MiB) requests of a pod spec's containers."""
    cpu = sum(milli_value(parse_quantity(entry["resources"]["requests"]["cpu"])) for entry in spec["containers"])
    memory = sum(value(parse_quantity(entry["resources"]["requests"]["memory"])) for entry in spec["containers"])
    return cpu, memory // 2**20


def up_default(variable: str) -> str:
    match = re.search(rf'^{variable}="\$\{{{variable}:-([^}}]+)\}}"$', script("up.sh"), re.MULTILINE)
    assert match, f"up.sh sets no default for {variable}"
    return match.group(1)


def demo_patch(kind: str, name: str) -> list[dict[str, Any]]:
    """Return the JSON patch operations that deploy/kustomization.yaml applies to one object."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    (patch,) = [
        entry for entry in kustomization.get("patches", [])
        if entry["target"] == {"kind": kind, "name": name}
    ]
    return yaml.safe_load(patch["patch"])


def test_demo_pins_influxdb_to_control_plane():
    """minikube's hostPath provisioner creates a writable volume folder only on
    the control-plane node, and up.sh gives that node no region."""
    operations = {operation["path"]: operation for operation in demo_patch("Deployment", "influxdb")}
    assert operations["/spec/template/spec/nodeSelector"]["value"] == {"node-role.kubernetes.io/control-plane": ""}
    (toleration,) = operations["/spec/template/spec/tolerations"]["value"]
    assert toleration == {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    assert "get nodes -l '!node-role.kubernetes.io/control-plane'" in script("up.sh")


def test_demo_node_fits_max_pods_beside_host_pods():
    """Every host pod that may land on one region node, plus max_pods of the
    largest demo workload, leaves MIN_FREE_SHARE of the node free."""
    host_pods = {
        "scheduler": (SCHEDULER["spec"]["replicas"], requests_of(pod_spec(SCHEDULER))),
        **{
            part: (1, requests_of(pod_spec(find(DEPLOY / part / "deployment.yaml", "Deployment"))))
            for part in ("prometheus", "grafana")
        },
        **{name: (1, addon) for name, addon in ADDON_REQUESTS.items()},
    }
    for region in REGIONS:
        values = yaml.safe_load((DEPLOY / "vcluster" / f"{region}.yaml").read_text())
        requests = values["controlPlane"]["statefulSet"]["resources"]["requests"]
        host_pods[f"vcluster-{region}"] = (
            1, (milli_value(parse_quantity(requests["cpu"])), value(parse_quantity(requests["memory"])) // 2**20)
        )
    host_cpu = sum(count * cpu for count, (cpu, _) in host_pods.values())
    host_memory = sum(count * memory for count, (_, memory) in host_pods.values())

    workloads = [requests_of(pod["spec"]) for _, pod in workload_pods()]
    max_pods = max(region.max_pods for region in load_config(DEPLOY / "scheduler" / "regions.toml").regions)
    task_cpu = max_pods * max(cpu for cpu, _ in workloads)
    task_memory = max_pods * max(memory for _, memory in workloads)

    node_cpu = int(up_default("MINIKUBE_CPUS")) * 1000
    node_memory = int(up_default("MINIKUBE_MEMORY").removesuffix("mb")) - EVICTION_RESERVE_MIB
    assert (host_cpu, task_cpu) == (1000, 1000), "update the arithmetic in deploy/up.sh"
    assert (host_memory, task_memory) == (1598, 512), "update the arithmetic in deploy/up.sh"
    assert host_cpu + task_cpu <= (1 - MIN_FREE_SHARE) * node_cpu
    assert host_memory + task_memory <= (1 - MIN_FREE_SHARE) * node_memory


def test_submit_script_sends_each_manifest():
    text = script("submit-workloads.sh")
    submitted = set(re.findall(r"^submit [a-z-]+ ([a-z]+\.yaml)$", text, re.MULTILINE))
    assert submitted == {path.name for path in (DEPLOY / "workloads").glob("*.yaml")}
    for region in re.findall(r"^submit ([a-z-]+) ", text, re.MULTILINE):
        assert region in REGIONS


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    """Return the pod spec of a Pod, or of the pod template of a Deployment or Job."""
    if document["kind"] == "Pod":
        return document["spec"]
    return document["spec"]["template"]["spec"]


def test_images_have_pinned_tags():
    images = [
        entry["image"]
        for path in manifest_paths()
        for document in documents(path)
        if document["kind"] in {"Deployment", "Job", "Pod"}
        for entry in pod_spec(document)["containers"]
    ]
    # The scheduler, InfluxDB, Prometheus, Grafana and the three workloads.
    assert len(images) == 7
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name, f"image {image!r} has no tag"
        assert tag != "latest", f"image {image!r} is not pinned to a version"


# The scripts against fake tools ----------------------------------------------------


class FakeTools:
    """A bin folder where kubectl, helm and minikube are tests/deploy_fake_tools.py."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.capture = root / "capture"
        self.log = root / "calls.jsonl"
        self.bin.mkdir()
        self.capture.mkdir()
        source = (Path(__file__).parent / "deploy_fake_tools.py").read_text()
        for tool in ("kubectl", "helm", "minikube"):
            path = self.bin / tool
            path.write_text(f"#!{shutil.which('python3')}\n" + source)
            path.chmod(0o755)

    def run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.capture),
            "FAKE_TOOLS_LOG": str(self.log),
            "FAKE_TOOLS_CAPTURE": str(self.capture),
        }
        return subprocess.run(
            command, cwd=self.capture, capture_output=True, text=True, timeout=120, env=environment,
        )

    def calls(self, tool: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        entries = [json.loads(line) for line in lines]
        return [entry["arguments"] for entry in entries if entry["tool"] == tool]

    def port_forward_pids(self) -> list[int]:
        folder = self.capture / "port-forwards"
        return sorted(int(path.name) for path in folder.iterdir()) if folder.exists() else []


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def fake_tools(tmp_path):
    tools = FakeTools(tmp_path)
    yield tools
    for pid in tools.port_forward_pids():
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_up_runs_every_step_against_fake_tools(fake_tools):
    result = fake_tools.run([str(DEPLOY / "up.sh")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "http://192.168.49.2:31000"

    minikube = fake_tools.calls("minikube")
    assert ["start", "-p", "carbon-demo", "--nodes", "4", "--cpus", "3", "--memory", "3000mb"] in minikube
    (build,) = [call for call in minikube if "build" in call]
    assert build == ["-p", "carbon-demo", "image", "build", "--all", "-t", "carbon-scheduler:dev",
                     "-f", "deploy/Dockerfile", "."]
    builds = [json.loads(line) for line in fake_tools.log.read_text().splitlines() if '"build"' in line]
    assert builds[0]["cwd"] == str(ROOT)

    kubectl = fake_tools.calls("kubectl")
    labels = [call[-1] for call in kubectl if "label" in call]
    assert labels == [f"topology.kubernetes.io/region={region}" for region in REGIONS]

    installs = [call for call in fake_tools.calls("helm") if call[:2] == ["upgrade", "--install"]]
    assert [call[2] for call in installs] == list(REGIONS)
    for call in installs:
        values = Path(call[call.index("--values") + 1])
        assert values == DEPLOY / "vcluster" / f"{call[2]}.yaml"
        assert call[call.index("--namespace") + 1] == f"vcluster-{call[2]}"

    region_rbac = [call for call in kubectl if call[-2:] == ["-f", str(DEPLOY / "rbac.yaml")]]
    assert len(region_rbac) == len(REGIONS)
    config_maps = {call[call.index("configmap") + 1] for call in kubectl if "configmap" in call}
    assert config_maps == {"grafana-datasources", "grafana-dashboard-providers", "grafana-dashboards"}
    assert ["--context", "carbon-demo", "apply", "-k", str(DEPLOY)] in kubectl
    created = [Path(call[call.index("-f") + 1]).name for call in kubectl if call[-2:-1] == ["-f"] and "create" in call]
    assert sorted(created) == ["critical.yaml", "deferrable.yaml", "standard.yaml"]


def test_up_writes_one_kubeconfig_per_region(fake_tools):
    result = fake_tools.run([str(DEPLOY / "up.sh")])
    assert result.returncode == 0, result.stderr[-3000:]
    written = fake_tools.capture / "kubeconfigs"
    config = load_config(DEPLOY / "scheduler" / "regions.toml")
    assert sorted(path.name for path in written.iterdir()) == sorted(
        Path(region.kubeconfig).name for region in config.regions if region.kubeconfig
    )
    for region in config.regions:
        kubeconfig = yaml.safe_load((written / f"{region.name}.kubeconfig").read_text())
        assert kubeconfig["current-context"] == region.context
        (cluster,) = kubeconfig["clusters"]
        assert cluster["cluster"]["server"] == f"https://{region.name}.vcluster-{region.name}.svc:443"
        assert cluster["cluster"]["certificate-authority-data"] == "RkFLRS1DQQ=="
        (user,) = kubeconfig["users"]
        # The service-account token that up.sh requested through the region's
        # admin kubeconfig, and none of that kubeconfig's client certificate.
        assert user["user"] == {"token": f"token-from-{region.name}-admin.kubeconfig"}


def test_scripts_stop_their_port_forwards(fake_tools):
    result = fake_tools.run([str(DEPLOY / "up.sh")])
    assert result.returncode == 0, result.stderr[-3000:]
    pids = fake_tools.port_forward_pids()
    # Three for the kubeconfigs, three more for the workloads.
    assert len(pids) == 2 * len(REGIONS)
    # kill is asynchronous: give the processes a moment to end.
    for _ in range(50):
        if not any(process_alive(pid) for pid in pids):
            break
        time.sleep(0.1)
    assert [pid for pid in pids if process_alive(pid)] == []


def test_submit_workloads_rejects_bad_count(fake_tools):
    result = fake_tools.run([str(DEPLOY / "submit-workloads.sh"), "zero"])
    assert result.returncode == 1
    assert "BATCHES must be a whole number of 1 or more, got 'zero'" in result.stderr
    assert fake_tools.calls("kubectl") == []


def test_submit_workloads_creates_batches(fake_tools):
    result = fake_tools.run([str(DEPLOY / "submit-workloads.sh"), "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    created = [call for call in fake_tools.calls("kubectl") if "create" in call and "-f" in call]
    assert len(created) == 6


@pytest.mark.parametrize(
    ("arguments", "tool_calls"),
    [
        pytest.param([], {"minikube": [["delete", "-p", "carbon-demo"]]}, id="delete-profile"),
        pytest.param(["--keep-cluster"], {"helm": 6}, id="keep-cluster"),
    ],
)
def test_down_removes_demo(fake_tools, arguments, tool_calls):
    result = fake_tools.run([str(DEPLOY / "down.sh"), *arguments])
    assert result.returncode == 0, result.stderr[-3000:]
    for tool, expected in tool_calls.items():
        calls = fake_tools.calls(tool)
        assert (len(calls) if isinstance(expected, int) else calls) == expected


def test_down_rejects_unknown_argument(fake_tools):
    result = fake_tools.run([str(DEPLOY / "down.sh"), "--everything"])
    assert result.returncode == 1
    assert "unknown argument '--everything'; usage: deploy/down.sh [--keep-cluster]" in result.stderr
