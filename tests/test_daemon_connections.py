"""connect(): kubeconfig files, contexts, exec plugin tokens and in-cluster config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon.connections import USER_AGENT, ClusterConfigError, connect, kubeconfig_paths
from carbon_scheduler.daemon.kubeapi import Forbidden
from tests.kubefake import FakeRegions, kubeconfig_dict, write_kubeconfig
from tests.kubefake.fixtures import kube_regions, loopback_without_proxy  # noqa: F401  (fixtures)

# A self-signed CA certificate (no key in this file), so TLS settings can be loaded.
TEST_CA = """-----BEGIN CERTIFICATE-----
MIIBnjCCAUOgAwIBAgIUIzCSBFWvmpmOnLIvxaxs33yYY3swCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYY2FyYm9uLXNjaGVkdWxlciB0ZXN0IENBMCAXDTI2MTIwNDIx
MDcyOFoYDzIxMjYxMTEwMjEwNzI4WjAjMSEwHwYDVQQDDBhjYXJib24tc2NoZWR1
bGVyIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR7cP6S6qqTVkDm
WgBzTz1slkBIYR7esPkzQ7Nj5TIvHfS2ktMTU2z0Wm1L95bYG0HLKU3hb7N+6tiF
EKOmYhpNo1MwUTAdBgNVHQ4EFgQUK5jLxyAg8YKVQTE4vw2rAuXQikgwHwYDVR0j
BBgwFoAUK5jLxyAg8YKVQTE4vw2rAuXQikgwDwYDVR0TAQH/BAUwAwEB/zAKBggq
hkjOPQQDAgNJADBGAiEAz+JDsNzbwL9/vtU9VmnhaZj+HBFePAaX1sFqTQUbmIwC
IQCOzIuS1XwNH7gYReunUDAxkhSHI36cRG6sFt8FD/4ggA==
-----END CERTIFICATE-----
"""

# Prints an ExecCredential whose token is read from a file, and counts its runs.
EXEC_PLUGIN = """
import json, sys
from datetime import datetime, timedelta, timezone
token_file, runs_file, lifetime = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(runs_file, "a") as runs:
    runs.write("run\\n")
expiry = datetime.now(timezone.utc) + timedelta(seconds=lifetime)
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {"token": open(token_file).read().strip(), "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
}))
"""


async def _names_of_namespaces(region: RegionSpec) -> list[str]:
    client = await connect(region)
    try:
        items, _ = await client.list("/api/v1/namespaces")
    finally:
        await client.close()
    return sorted(item["metadata"]["name"] for item in items)


def _https_kubeconfig(path: Path, ca: Path, **cluster: object) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "remote",
        "clusters": [{"name": "remote", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}],
        "users": [{"name": "remote", "user": {"token": "abc"}}],
        "contexts": [{"name": "remote", "context": {"cluster": "remote", "user": "remote"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


# Kubeconfig files ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_context_selects_its_cluster(kube_regions: FakeRegions) -> None:
    region = RegionSpec(name="us-east", kubeconfig=str(kube_regions.kubeconfig), context="us-east")
    kube_regions["us-east"].create("namespaces", {"metadata": {"name": "only-in-us-east"}})
    assert "only-in-us-east" in await _names_of_namespaces(region)
    assert kube_regions["us-east"].request_count(verb="list", resource="namespaces") == 1
    assert kube_regions["eu-west"].request_count(verb="list") == 0


@pytest.mark.asyncio
async def test_no_context_uses_current_context(kube_regions: FakeRegions, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "current", kube_regions.values(), current_context="asia-east")
    await _names_of_namespaces(RegionSpec(name="asia-east", kubeconfig=str(kubeconfig)))
    assert kube_regions["asia-east"].request_count(verb="list") == 1
    assert kube_regions["eu-west"].request_count(verb="list") == 0


@pytest.mark.asyncio
async def test_no_kubeconfig_reads_env_files(kube_regions: FakeRegions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{kube_regions.kubeconfig}")
    await _names_of_namespaces(RegionSpec(name="us-east", context="us-east"))
    assert kube_regions["us-east"].request_count(verb="list") == 1


@pytest.mark.asyncio
async def test_client_sends_user_agent(kube_regions: FakeRegions) -> None:
    client = await connect(RegionSpec(name="eu-west", kubeconfig=str(kube_regions.kubeconfig), context="eu-west"))
    try:
        assert client.region == "eu-west"
        assert client.api_client.user_agent == USER_AGENT
        assert client.api_client.configuration.host == kube_regions["eu-west"].url
    finally:
        await client.close()


def test_kubeconfig_paths_order(tmp_path: Path) -> None:
    home = str(Path("~").expanduser())
    assert kubeconfig_paths("~/a.yaml", environ={"KUBECONFIG": "/x"}) == [f"{home}/a.yaml"]
    assert kubeconfig_paths(None, environ={"KUBECONFIG": "/x::/y"}) == ["/x", "/y"]
    assert kubeconfig_paths(None, environ={}) == [f"{home}/.kube/config"]


@pytest.mark.asyncio
async def test_missing_kubeconfig_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ClusterConfigError) as caught:
        await connect(RegionSpec(name="eu-west", kubeconfig=str(missing), context="eu-west"))
    message = str(caught.value)
    assert message.startswith(f"region eu-west: kubeconfig file {missing} not found")
    assert caught.value.region == "eu-west"


@pytest.mark.asyncio
async def test_missing_context_lists_known_ones(kube_regions: FakeRegions) -> None:
    with pytest.raises(ClusterConfigError) as caught:
        await connect(RegionSpec(name="eu-west", kubeconfig=str(kube_regions.kubeconfig), context="eu-central"))
    assert str(caught.value) == (
        f"region eu-west: context 'eu-central' not found in kubeconfig {kube_regions.kubeconfig}; "
        "it has asia-east, eu-west, us-east."
    )


@pytest.mark.asyncio
async def test_no_current_context_asks_for_one(kube_regions: FakeRegions, tmp_path: Path) -> None:
    config = kubeconfig_dict(kube_regions.values())
    del config["current-context"]
    path = tmp_path / "no-current"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterConfigError, match="has no current-context; set context to one of: "):
        await connect(RegionSpec(name="eu-west", kubeconfig=str(path)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("clusters: [unclosed", "cannot be read: ParserError", id="bad-yaml"),
        pytest.param("", "cannot be read: expected a YAML mapping", id="empty"),
        pytest.param("just a string\n", "cannot be read: expected a YAML mapping", id="not-a-mapping"),
        pytest.param("contexts: {a: b}\n", "cannot be read: contexts must be a list", id="contexts-not-a-list"),
    ],
)
@pytest.mark.asyncio
async def test_unreadable_kubeconfig(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "broken"
    path.write_text(text)
    with pytest.raises(ClusterConfigError) as caught:
        await connect(RegionSpec(name="eu-west", kubeconfig=str(path), context="eu-west"))
    assert str(caught.value).startswith(f"region eu-west: kubeconfig {path} ")
    assert expected in str(caught.value)


@pytest.mark.asyncio
async def test_context_with_unknown_cluster(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "current-context": "lost",
        "clusters": [],
        "users": [],
        "contexts": [{"name": "lost", "context": {"cluster": "gone", "user": "nobody"}}],
    }
    path = tmp_path / "lost"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterConfigError, match=r"context 'lost' of kubeconfig .* cannot be loaded: ConfigException"):
        await connect(RegionSpec(name="eu-west", kubeconfig=str(path), context="lost"))


# TLS -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "verify"),
    [
        pytest.param({}, True, id="verified-by-default"),
        pytest.param({"insecure-skip-tls-verify": False}, True, id="explicitly-verified"),
        pytest.param({"insecure-skip-tls-verify": True}, False, id="skip-verify"),
    ],
)
@pytest.mark.asyncio
async def test_tls_verification_follows_kubeconfig(tmp_path: Path, cluster: dict, verify: bool) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(TEST_CA)
    path = _https_kubeconfig(tmp_path / "kubeconfig", ca, **{"certificate-authority": str(ca)}, **cluster)
    client = await connect(RegionSpec(name="eu-west", kubeconfig=str(path)))
    try:
        configuration = client.api_client.configuration
        assert configuration.verify_ssl is verify
        assert configuration.ssl_ca_cert == str(ca)
        assert configuration.host == "https://127.0.0.1:6443"
    finally:
        await client.close()


# Exec plugin tokens -------------------------------------------------------------------


def _exec_kubeconfig(kube_regions: FakeRegions, tmp_path: Path, *, lifetime_seconds: int) -> tuple[Path, Path, Path]:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    token_file = tmp_path / "token"
    token_file.write_text(kube_regions["eu-west"].token)
    runs = tmp_path / "runs"
    config = kubeconfig_dict(kube_regions.values())
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin), str(token_file), str(runs), str(lifetime_seconds)],
        }
    }
    config["users"] = [{"name": "eu-west-scheduler", "user": exec_user}]
    path = tmp_path / "exec-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path, token_file, runs


def _runs(runs: Path) -> int:
    return len(runs.read_text().splitlines())


@pytest.mark.asyncio
async def test_expiring_exec_token_is_refreshed(kube_regions: FakeRegions, tmp_path: Path) -> None:
    # kubernetes-asyncio counts a token as expired five minutes before its expiry.
    path, token_file, runs = _exec_kubeconfig(kube_regions, tmp_path, lifetime_seconds=60)
    client = await connect(RegionSpec(name="eu-west", kubeconfig=str(path), context="eu-west"))
    try:
        assert _runs(runs) == 1
        await client.list("/api/v1/namespaces")
        assert _runs(runs) == 2
        kube_regions["eu-west"].token = "rotated-token"
        token_file.write_text("rotated-token")
        await client.list("/api/v1/namespaces")
        assert _runs(runs) == 3
    finally:
        await client.close()
    assert kube_regions["eu-west"].request_count(verb="list", status=200) == 2


@pytest.mark.asyncio
async def test_valid_exec_token_is_reused(kube_regions: FakeRegions, tmp_path: Path) -> None:
    path, token_file, runs = _exec_kubeconfig(kube_regions, tmp_path, lifetime_seconds=3600)
    client = await connect(RegionSpec(name="eu-west", kubeconfig=str(path), context="eu-west"))
    try:
        await client.list("/api/v1/namespaces")
        await client.list("/api/v1/namespaces")
        assert _runs(runs) == 1
        kube_regions["eu-west"].token = "rotated-token"
        token_file.write_text("rotated-token")
        with pytest.raises(Forbidden):
            await client.list("/api/v1/namespaces")
    finally:
        await client.close()


# In-cluster config --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_in_cluster_uses_service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("service-account-token")
    ca = tmp_path / "ca.crt"
    ca.write_text(TEST_CA)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    client = await connect(RegionSpec(name="eu-west"), token_file=str(token), ca_file=str(ca))
    try:
        configuration = client.api_client.configuration
        assert configuration.host == "https://10.96.0.1:443"
        assert configuration.ssl_ca_cert == str(ca)
        assert configuration.verify_ssl is True
        assert await configuration.get_api_key_with_prefix("BearerToken") == "Bearer service-account-token"
        # kubernetes-asyncio's hook re-reads the rotated token file once a minute.
        assert configuration.refresh_api_key_hook is not None
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_in_cluster_outside_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(ClusterConfigError) as caught:
        await connect(RegionSpec(name="eu-west"), token_file=str(tmp_path / "token"), ca_file=str(tmp_path / "ca"))
    message = str(caught.value)
    assert message.startswith("region eu-west: in-cluster config failed: Service host/port is not set.")
    assert "outside a cluster, set kubeconfig and context for it in the config file." in message
    assert ".." not in message
    assert "regions.toml" not in message


@pytest.mark.asyncio
async def test_in_cluster_without_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ClusterConfigError, match="Service token file does not exist"):
        await connect(RegionSpec(name="eu-west"), token_file=str(tmp_path / "token"), ca_file=str(tmp_path / "ca"))
