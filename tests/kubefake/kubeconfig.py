"""Kubeconfig files that point kubernetes-asyncio at fake API servers.

`write_kubeconfig` writes one cluster, user and context per server, each context
named after the server's region, with the server's plain-HTTP URL on 127.0.0.1
and its bearer token. `load_client_configuration` loads one context into a fresh
`Configuration`, so tests never touch the client's process-wide default.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import config
from kubernetes_asyncio.client import Configuration

from .server import FakeApiServer


def kubeconfig_dict(servers: Iterable[FakeApiServer], *, current_context: str | None = None) -> dict[str, Any]:
    servers = list(servers)
    if not servers:
        raise ValueError("a kubeconfig needs at least one fake API server")
    regions = [server.region for server in servers]
    if len(set(regions)) != len(regions):
        raise ValueError(f"region names must be unique in one kubeconfig, got {regions}")
    current = current_context or regions[0]
    if current not in regions:
        raise ValueError(f"current context {current!r} is not one of the regions {regions}")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": current,
        "clusters": [{"name": s.region, "cluster": {"server": s.url}} for s in servers],
        "users": [{"name": f"{s.region}-scheduler", "user": {"token": s.token}} for s in servers],
        "contexts": [
            {"name": s.region, "context": {"cluster": s.region, "user": f"{s.region}-scheduler", "namespace": "default"}}
            for s in servers
        ],
    }


def write_kubeconfig(path: Path, servers: Iterable[FakeApiServer], *, current_context: str | None = None) -> Path:
    """Write a kubeconfig for the running `servers` to `path`; returns `path`."""
    path.write_text(yaml.safe_dump(kubeconfig_dict(servers, current_context=current_context), sort_keys=False))
    # A kubeconfig contains credentials, so keep it private as kubectl does.
    path.chmod(0o600)
    return path


async def load_client_configuration(kubeconfig: Path, context: str) -> Configuration:
    """Load `context` from `kubeconfig` into a new client Configuration."""
    configuration = Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=configuration)
    return configuration
