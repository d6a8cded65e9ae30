"""The daemon works with exactly the permissions in deploy/rbac.yaml.

The fake API servers enforce the ClusterRole of deploy/rbac.yaml (403 for
anything else) while the real daemon places, moves and explains pods and labels
nodes; afterwards every request must have been allowed and every granted rule
used, except reading a single pod, which only a move that finds its copy
already created needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kubefake.rbac import RbacPolicy
from tests.daemon_harness import start_daemon, wait_until
from tests.test_daemon_e2e import job_body

pytestmark = pytest.mark.asyncio

RBAC = Path(__file__).resolve().parents[1] / "deploy" / "rbac.yaml"
RARELY_USED = {("get", "", "pods")}


def granted_permissions() -> set[tuple[str, str, str]]:
    import yaml

    granted = set()
    for document in yaml.safe_load_all(RBAC.read_text()):
        if document["kind"] != "ClusterRole":
            continue
        for rule in document["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((verb, group, resource))
    return granted


async def test_daemon_runs_with_deploy_rbac(tmp_path, clusters):
    for server in clusters.values():
        server.rbac = RbacPolicy.from_yaml(RBAC)
    daemon = await start_daemon(tmp_path, clusters)
    try:
        clusters["us-east"].create_pod("moved", labels={"carbon-scheduler.io/class": "critical"})
        clusters["eu-west"].create_pod("home", labels={"carbon-scheduler.io/class": "standard"})
        clusters["us-east"].create("jobs", job_body("batch-rbac"), namespace="default")
        await wait_until(lambda: clusters["us-east"].find("jobs", "batch-rbac") is None, what="Job moved")
        await wait_until(lambda: (clusters["eu-west"].find("pods", "moved") or {}).get("spec", {}).get("nodeName"),
                         what="moved pod bound")
        await wait_until(lambda: clusters["us-east"].find("pods", "moved") is None, what="original deleted")
        await wait_until(lambda: clusters["eu-west"].get("pods", "home")["spec"].get("nodeName"), what="home pod bound")
        await wait_until(
            lambda: all(
                "carbon-scheduler.io/carbon-level" in (node["metadata"].get("labels") or {})
                for server in clusters.values()
                for node in server.list("nodes", namespace=None)
            ),
            what="level labels on every node",
        )
        await wait_until(
            lambda: "carbon-scheduler.io/decision"
            in (clusters["eu-west"].get("pods", "home")["metadata"].get("annotations") or {}),
            what="decision annotation",
        )
    finally:
        assert await daemon.stop() == 0

    used = set().union(*(server.used_permissions() for server in clusters.values()))
    granted = granted_permissions()
    forbidden = sum(server.request_count(status=403) for server in clusters.values())
    assert forbidden == 0
    assert used <= granted, used - granted
    assert granted - used <= RARELY_USED, granted - used
