"""Syntax checks for Kubernetes names that `regions.toml` carries.

Each check returns None for a valid name, or a short reason that an error message
can quote. The rules are the ones the Kubernetes API server applies
(k8s.io/apimachinery/pkg/util/validation): a region name becomes a label value and
a Prometheus label, node labels and taints must be accepted by a real node object,
and an extended resource name must be one the kubelet could advertise.
"""

from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
_QUALIFIED_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", re.ASCII)

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63

# Resources that `regions.toml` sets through their own node keys.
_STANDARD_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})


def dns_label_problem(name: str) -> str | None:
    """Check an RFC 1123 label: lower-case letters, digits and '-', at most 63
    characters, starting and ending with a letter or digit."""
    if not name:
        return "must not be empty"
    if len(name) > DNS_LABEL_MAX:
        return f"must be at most {DNS_LABEL_MAX} characters, has {len(name)}"
    if not _DNS_LABEL.fullmatch(name):
        return (
            "must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (for example eu-west)"
        )
    return None


def dns_subdomain_problem(name: str) -> str | None:
    """Check an RFC 1123 subdomain: DNS labels joined by '.', at most 253 characters."""
    if not name:
        return "must not be empty"
    if len(name) > DNS_SUBDOMAIN_MAX:
        return f"must be at most {DNS_SUBDOMAIN_MAX} characters, has {len(name)}"
    if not all(_DNS_LABEL.fullmatch(part) for part in name.split(".")):
        return (
            "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (for example node-1.example.com)"
        )
    return None


def qualified_name_problem(name: str) -> str | None:
    """Check a qualified name such as a label key: an optional DNS subdomain prefix and
    '/', then a name of at most 63 letters, digits, '-', '_' and '.' that starts and
    ends with a letter or digit."""
    prefix, slash, local = name.rpartition("/")
    if slash:
        if not prefix:
            return "has an empty prefix before '/'"
        problem = dns_subdomain_problem(prefix)
        if problem is not None:
            return f"prefix {prefix!r} {problem}"
    if not local:
        return "must have a name part (for example example.com/name)"
    if len(local) > DNS_LABEL_MAX:
        return f"name part must be at most {DNS_LABEL_MAX} characters, has {len(local)}"
    if not _QUALIFIED_NAME_PART.fullmatch(local):
        return (
            "name part must consist of letters, digits, '-', '_' and '.', starting "
            "and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Check a label value: empty, or at most 63 letters, digits, '-', '_' and '.'
    that start and end with a letter or digit."""
    if not value:
        return None
    if len(value) > LABEL_VALUE_MAX:
        return f"must be at most {LABEL_VALUE_MAX} characters, has {len(value)}"
    if not _QUALIFIED_NAME_PART.fullmatch(value):
        return (
            "must consist of letters, digits, '-', '_' and '.', starting and ending "
            "with a letter or digit"
        )
    return None


def extended_resource_problem(name: str) -> str | None:
    """Check the name of an extended resource such as `nvidia.com/gpu` or
    `hugepages-2Mi`."""
    if name in _STANDARD_RESOURCES:
        key = name.replace("-", "_")
        return f"is a standard resource; set it with the node key {key} instead"
    problem = qualified_name_problem(name)
    if problem is not None:
        return problem
    if "/" not in name and not name.startswith("hugepages-"):
        return "must be fully qualified with a domain prefix (for example example.com/gpu)"
    return None
