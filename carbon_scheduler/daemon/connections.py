"""Opening a `KubeClient` for a region from its kubeconfig or in-cluster credentials.

A region with a `kubeconfig` or a `context` (either may be None) loads that
kubeconfig file, or the default one ($KUBECONFIG, else ~/.kube/config), with
kubernetes-asyncio's loader, so exec plugins, client certificates, token files
and `insecure-skip-tls-verify` behave as in kubectl. TLS verification stays on
unless the kubeconfig's cluster entry turns it off. A region with neither uses the
pod's service account: kubernetes-asyncio installs a hook that re-reads the
projected token file once a minute, because the kubelet rotates that token.

Token lifetimes. An exec plugin that reports an `expirationTimestamp` (EKS, GKE's
gke-gcloud-auth-plugin and others) is run again on the first request after the
token expires, through the configuration's refresh hook.

NOTE: kubernetes-asyncio reads a kubeconfig `tokenFile` only once, so a token file
rotated under a running daemon is not picked up until it restarts.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import yaml
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config
from kubernetes_asyncio.config.incluster_config import SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME
from kubernetes_asyncio.config.kube_config import KubeConfigLoader

from carbon_scheduler import __version__
from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon.kubeapi import DEFAULT_REQUEST_TIMEOUT_SECONDS, KubeClient

USER_AGENT = f"carbon-scheduler/{__version__}"
_DEFAULT_KUBECONFIG = "~/.kube/config"


class ClusterConfigError(Exception):
    """A region's cluster credentials could not be loaded. The message names the
    region, the kubeconfig file and context (or in-cluster config) and the fix."""

    def __init__(self, message: str, *, region: str) -> None:
        super().__init__(message)
        self.region = region


async def connect(
    region: RegionSpec,
    *,
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
) -> KubeClient:
    """Return a client for `region`'s API server.

    `token_file` and `ca_file` locate the service account credentials for
    in-cluster config, and tests point them elsewhere. Raises `ClusterConfigError`.
    """
    if region.kubeconfig is None and region.context is None:
        configuration = _in_cluster_configuration(region, token_file=token_file, ca_file=ca_file)
    else:
        configuration = await _kubeconfig_configuration(region)
    api_client = ApiClient(configuration=configuration)
    api_client.user_agent = USER_AGENT
    return KubeClient(region.name, api_client, request_timeout_seconds=request_timeout_seconds)


def kubeconfig_paths(kubeconfig: str | None, *, environ: dict[str, str] | None = None) -> list[str]:
    """Return the kubeconfig files to read: the one given, or those in $KUBECONFIG
    (separated by os.pathsep), or ~/.kube/config. User names (~) are expanded."""
    if kubeconfig is not None:
        return [os.path.expanduser(kubeconfig)]
    environ = os.environ if environ is None else environ
    listed = [path for path in environ.get("KUBECONFIG", "").split(os.pathsep) if path]
    return [os.path.expanduser(path) for path in listed or [_DEFAULT_KUBECONFIG]]


def _in_cluster_configuration(region: RegionSpec, *, token_file: str, ca_file: str) -> Configuration:
    configuration = Configuration()
    try:
        load_incluster_config(
            client_configuration=configuration,
            token_filename=token_file,
            cert_filename=ca_file,
        )
    except ConfigException as error:
        raise ClusterConfigError(
            f"region {region.name}: in-cluster config failed: {str(error).rstrip('.')}. A region without "
            "kubeconfig and context uses the pod's service account (KUBERNETES_SERVICE_HOST, "
            f"KUBERNETES_SERVICE_PORT, {token_file}); outside a cluster, set kubeconfig "
            "and context for it in the config file.",
            region=region.name,
        ) from error
    return configuration


async def _kubeconfig_configuration(region: RegionSpec) -> Configuration:
    paths = kubeconfig_paths(region.kubeconfig)
    present = [path for path in paths if os.path.isfile(path)]
    # Like kubectl, read those files of $KUBECONFIG that exist. At least one must.
    if not present:
        raise ClusterConfigError(
            f"region {region.name}: kubeconfig file {_describe(paths)} not found; set "
            "kubeconfig to an existing file, or remove kubeconfig and "
            "context to use in-cluster config.",
            region=region.name,
        )

    joined = os.pathsep.join(present)
    where = _describe(present)
    names, current = _contexts(region, present)
    if region.context is not None and region.context not in names:
        raise ClusterConfigError(
            f"region {region.name}: context {region.context!r} not found in kubeconfig {where}; "
            f"it has {', '.join(sorted(names)) or 'no contexts'}.",
            region=region.name,
        )
    if region.context is None and not current:
        raise ClusterConfigError(
            f"region {region.name}: kubeconfig {where} has no current-context; set context "
            f"to one of: {', '.join(sorted(names)) or '(none defined)'}.",
            region=region.name,
        )

    context_name = region.context or current
    configuration = Configuration()
    try:
        loader = await load_kube_config(
            config_file=joined,
            context=region.context,
            client_configuration=configuration,
            # The daemon never writes back to a kubeconfig, which is often a
            # read-only mounted Secret.
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ClusterConfigError(
            f"region {region.name}: context {context_name!r} of kubeconfig {where} cannot be "
            f"loaded: {type(error).__name__}: {error}",
            region=region.name,
        ) from error
    _refresh_expiring_exec_tokens(loader, configuration)
    return configuration


def _contexts(region: RegionSpec, paths: list[str]) -> tuple[set[str], str | None]:
    """Return the context names in `paths` and the current-context that
    kubernetes-asyncio picks (the last file that sets one)."""
    names: set[str] = set()
    current: str | None = None
    for path in paths:
        try:
            with open(path, encoding="utf-8") as file:
                document = yaml.safe_load(file)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ClusterConfigError(
                f"region {region.name}: kubeconfig {path} cannot be read: {type(error).__name__}: {error}",
                region=region.name,
            ) from error
        if not isinstance(document, dict):
            raise ClusterConfigError(
                f"region {region.name}: kubeconfig {path} cannot be read: expected a YAML mapping "
                f"with clusters, users and contexts, got {type(document).__name__}",
                region=region.name,
            )
        contexts = document.get("contexts") or []
        if not isinstance(contexts, list):
            raise ClusterConfigError(
                f"region {region.name}: kubeconfig {path} cannot be read: contexts must be a list",
                region=region.name,
            )
        names.update(str(entry["name"]) for entry in contexts if isinstance(entry, dict) and "name" in entry)
        if document.get("current-context"):
            current = str(document["current-context"])
    return names, current


def _refresh_expiring_exec_tokens(loader: KubeConfigLoader, configuration: Configuration) -> None:
    """Run the exec plugin again once its token has expired, before the next request."""
    if getattr(loader, "exec_plugin_expiry", None) is None:
        return
    lock = asyncio.Lock()

    async def refresh(config: Configuration) -> None:
        # One plugin run at a time, so requests that find the token expired together
        # wait for that run instead of starting their own.
        async with lock:
            # Returns at once while the token is more than five minutes from expiry.
            await loader.load_from_exec_plugin()
            config.api_key["BearerToken"] = loader.token

    configuration.refresh_api_key_hook = refresh


def _describe(paths: list[str]) -> str:
    return ", ".join(str(Path(path)) for path in paths)
