"""The three PATCH body formats that kubernetes-asyncio sends.

- `application/merge-patch+json`: RFC 7386 JSON merge patch.
- `application/strategic-merge-patch+json` (what kubernetes-asyncio picks for a dict
  body): a merge patch that merges the lists Kubernetes marks `patchStrategy: merge`
  by their merge key and honours the `$patch: replace|delete` and
  `$deleteFromPrimitiveList/` directives. `$setElementOrder` and `$retainKeys` are
  accepted and ignored.
- `application/json-patch+json` (for a list body): RFC 6902 operations.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request, unsupported_media_type

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# NOTE: the real server looks merge keys up by the field's path in the OpenAPI
# schema. This table goes by the field name alone, which agrees for pods, nodes,
# jobs, events and leases but would not for arbitrary kinds.
_MERGE_KEYS = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "ownerReferences": "uid",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "ports": "containerPort",
    "addresses": "type",
    "readinessGates": "conditionType",
}
_MERGED_PRIMITIVE_LISTS = {"finalizers"}


def apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Return `target` with `patch` applied; `target` itself is left unchanged."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch body must be a JSON array of operations")
        return json_patch(target, patch)
    if media_type not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        raise unsupported_media_type(content_type)
    if not isinstance(patch, dict):
        raise bad_request(f"{media_type} body must be a JSON object, got {type(patch).__name__}")
    if media_type == MERGE_PATCH:
        return merge_patch(target, patch)
    merged = strategic_merge_patch(target, patch)
    if merged is None:
        raise bad_request("a strategic merge patch cannot delete the whole object")
    return merged


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge `patch` into `target`; returns None when the patch contains `$patch: delete`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    if directive is not None:
        raise bad_request(f"unknown $patch directive {directive!r}: use replace or delete")

    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys":
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and key in _MERGE_KEYS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, _MERGE_KEYS[key])
        elif isinstance(value, list) and key in _MERGED_PRIMITIVE_LISTS:
            existing = list(result.get(key) or [])
            result[key] = existing + [item for item in value if item not in existing]
        else:
            result[key] = _strip_directives(value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(item) for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"strategic merge patch: every item of this list needs the merge key {merge_key!r}")
        index = next((i for i, existing in enumerate(result) if existing.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip_directives(item) for key, item in value.items() if not key.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return copy.deepcopy(value)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"json patch: path {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _patch_failed(f"path {path!r} does not exist")
    return node, parts[-1]


def _patch_failed(cause: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: json patch: {cause}")


def _get(document: Any, path: str) -> Any:
    node = document
    for part in _pointer(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _patch_failed(f"path {path!r} does not exist")
    return node


def _remove(document: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _patch_failed("cannot remove the whole document")
    parent, last = _parent(document, parts, path)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _patch_failed(f"path {path!r} does not exist")


def _add(document: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(document, parts, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _patch_failed(f"index {last!r} is out of range in {path!r}")
    else:
        raise _patch_failed(f"path {path!r} does not name a container")
    return document


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    document: Any = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"json patch: each operation needs 'op' and 'path', got {operation!r}")
        op, path = operation["op"], operation["path"]
        if op == "add":
            document = _add(document, path, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            _remove(document, path)
        elif op == "replace":
            _get(document, path)
            if _pointer(path):
                _remove(document, path)
            document = _add(document, path, copy.deepcopy(operation.get("value")))
        elif op == "move":
            value = _remove(document, operation["from"])
            document = _add(document, path, value)
        elif op == "copy":
            document = _add(document, path, copy.deepcopy(_get(document, operation["from"])))
        elif op == "test":
            if _get(document, path) != operation.get("value"):
                raise _patch_failed(f"test operation failed at {path!r}")
        else:
            raise bad_request(f"json patch: unknown operation {op!r}")
    if not isinstance(document, dict):
        raise bad_request("json patch must leave an object")
    return document
