"""Request attributes from an API path, as kube-apiserver's RequestInfoFactory derives them.

Paths have the forms `/api/v1/{resource}[/{name}[/{subresource}]]`,
`/api/v1/namespaces/{namespace}/{resource}[/{name}[/{subresource}]]` and the
same under `/apis/{group}/{version}`. The verb comes from the HTTP method: GET is
`get` with a name and `list` (or `watch` with `?watch=true`) without one, DELETE
without a name is `deletecollection`. Anything else, such as `/version`, is a
non-resource request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .resources import ResourceType, lookup

_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def truthy(value: str | None) -> bool:
    """Parse a boolean query parameter as Go's strconv.ParseBool does."""
    return (value or "") in ("1", "t", "T", "true", "TRUE", "True")


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    verb: str
    is_resource: bool = False
    group: str = ""
    version: str = ""
    plural: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    resource: ResourceType | None = None
    # True when the path had more parts than any known form.
    malformed: bool = False

    @property
    def resource_name(self) -> str:
        """The resource as RBAC names it, with any subresource: `pods`, `pods/binding`."""
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


def parse_request(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    parts = [part for part in path.split("/") if part]
    method = method.upper()
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        rest = []
    if not rest:
        return RequestInfo(method=method, path=path, verb=method.lower())

    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        if len(rest) >= 3:
            rest = rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""

    if method == "GET" and name:
        verb = "get"
    elif method == "GET":
        verb = "watch" if truthy(query.get("watch")) else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return RequestInfo(
        method=method,
        path=path,
        verb=verb,
        is_resource=True,
        group=group,
        version=version,
        plural=plural,
        subresource=subresource,
        namespace=namespace,
        name=name,
        resource=lookup(group, version, plural),
        malformed=len(rest) > 3,
    )
