"""An RBAC allow-list for the fake, loaded from Role and ClusterRole manifests.

A `Rule` matches the way the RBAC authorizer's rule resolution does. `*` matches
any verb, group or resource. A resource `pods/binding` names a subresource, and
`*/status` matches that subresource of any resource. `resourceNames` narrows a
rule to named objects, so such a rule never matches list, watch or create, which
carry no name. Rules from a Role apply only in the Role's namespace.

NOTE: bindings are not evaluated. Every Role and ClusterRole in the manifest is
granted to the server's single user, so a manifest whose bindings grant less
than its roles passes here and fails on a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    # None for a ClusterRole rule, which applies in every namespace and at cluster scope.
    namespace: str | None = None

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any], *, namespace: str | None = None) -> Rule:
        unknown = set(rule) - {"verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in RBAC rule {dict(rule)!r}: use verbs, apiGroups, resources, resourceNames")
        if not rule.get("verbs"):
            raise ValueError(f"RBAC rule {dict(rule)!r} has no verbs")
        return cls(
            verbs=frozenset(rule["verbs"]),
            api_groups=frozenset(rule.get("apiGroups") or []),
            resources=frozenset(rule.get("resources") or []),
            resource_names=frozenset(rule.get("resourceNames") or []),
            namespace=namespace,
        )

    def allows(self, verb: str, group: str, resource: str, subresource: str, name: str, namespace: str) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        combined = f"{resource}/{subresource}" if subresource else resource
        resource_matches = (
            "*" in self.resources
            or combined in self.resources
            or (bool(subresource) and f"*/{subresource}" in self.resources)
        )
        if not resource_matches:
            return False
        return not self.resource_names or name in self.resource_names


class RbacPolicy:
    """The rules granted to the user of one fake API server."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)

    @classmethod
    def from_rules(cls, rules: Iterable[Mapping[str, Any]], *, namespace: str | None = None) -> RbacPolicy:
        """Build a policy from rule dicts, as a ClusterRole (or a Role when `namespace` is set) lists them."""
        return cls(Rule.from_dict(rule, namespace=namespace) for rule in rules)

    @classmethod
    def from_yaml(cls, source: str | Path) -> RbacPolicy:
        """Load every Role and ClusterRole from a YAML text or file; other kinds are skipped."""
        text = source.read_text() if isinstance(source, Path) else source
        return cls.from_manifests(yaml.safe_load_all(text))

    @classmethod
    def from_manifests(cls, documents: Iterable[Any]) -> RbacPolicy:
        """Build a policy from parsed manifests; kinds other than Role and ClusterRole are skipped."""
        rules: list[Rule] = []
        roles = 0
        for document in documents:
            if not isinstance(document, dict):
                continue
            kind = document.get("kind")
            if kind not in ("Role", "ClusterRole"):
                continue
            roles += 1
            namespace = None
            if kind == "Role":
                namespace = (document.get("metadata") or {}).get("namespace")
                if not namespace:
                    name = (document.get("metadata") or {}).get("name")
                    raise ValueError(f"Role {name!r} has no metadata.namespace: a Role grants rules in one namespace, so set it")
            rules.extend(Rule.from_dict(rule, namespace=namespace) for rule in document.get("rules") or [])
        if roles == 0:
            raise ValueError("the RBAC manifest contains no Role or ClusterRole")
        return cls(rules)

    def allows(self, verb: str, group: str, resource: str, subresource: str, name: str, namespace: str) -> bool:
        return any(rule.allows(verb, group, resource, subresource, name, namespace) for rule in self.rules)


def forbidden_reason(user: str, verb: str, group: str, resource: str, subresource: str, namespace: str) -> str:
    """Word the denial as kube-apiserver's authorization filter does."""
    combined = f"{resource}/{subresource}" if subresource else resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return f'User "{user}" cannot {verb} resource "{combined}" in API group "{group}" {scope}'
