"""An in-process fake Kubernetes API server for tests that use kubernetes-asyncio.

Start one with `async with FakeApiServer("eu-west") as server:` or use the
`kube_regions` fixture from `tests.kubefake.fixtures` for the three demo regions.
"""

from .errors import ApiError
from .fixtures import REGIONS, FakeRegions, running_regions
from .kubeconfig import kubeconfig_dict, load_client_configuration, write_kubeconfig
from .rbac import RbacPolicy, Rule
from .server import DEFAULT_USER, FakeApiServer, RequestRecord

__all__ = [
    "DEFAULT_USER",
    "REGIONS",
    "ApiError",
    "FakeApiServer",
    "FakeRegions",
    "RbacPolicy",
    "RequestRecord",
    "Rule",
    "kubeconfig_dict",
    "load_client_configuration",
    "running_regions",
    "write_kubeconfig",
]
