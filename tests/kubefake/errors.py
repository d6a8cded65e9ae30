"""Kubernetes `Status` failures as the fake API server sends them.

`ApiError` carries the HTTP code, the machine-readable reason and the message that
the real API server would put in its `Status` body. The builders below copy the
message shapes of k8s.io/apimachinery's `errors` package (NotFound, AlreadyExists,
Conflict, Invalid, Forbidden, ...), because client code often matches on them.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request failure that the server returns as a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}

    def status(self) -> dict[str, Any]:
        """Return the `Status` body, with keys in the order the real server writes them."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        # The real server leaves `reason` out for some storage errors, and clients see that.
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    message = f'{_qualified(group, plural)} "{name}" not found'
    return ApiError(404, "NotFound", message, details=_details(name, group, plural))


def unknown_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def already_exists(group: str, plural: str, name: str) -> ApiError:
    message = f'{_qualified(group, plural)} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, details=_details(name, group, plural))


def conflict(group: str, plural: str, name: str, cause: str) -> ApiError:
    """Build a Conflict; `plural` may carry a subresource, as in `pods/binding`."""
    message = f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": {cause}'
    return ApiError(409, "Conflict", message, details=_details(name, group, plural))


STALE_OBJECT = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(group: str, kind: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """Build a 422 Invalid from (field, cause reason, cause message) triples.

    Cause reasons are the `metav1.CauseType` values, such as `FieldValueRequired`.
    """
    qualified_kind = f"{kind}.{group}" if group else kind
    summary = ", ".join(f"{field}: {message}" for field, _, message in causes)
    if len(causes) > 1:
        summary = f"[{summary}]"
    details = _details(name, group, kind)
    details["causes"] = [{"reason": reason, "message": message, "field": field} for field, reason, message in causes]
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {summary}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(group: str, plural: str, name: str, cause: str) -> ApiError:
    subject = f'{_qualified(group, plural)} "{name}"' if name else _qualified(group, plural)
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {cause}", details=_details(name, group, plural))


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def internal_error(cause: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {cause}", details={"causes": [{"message": cause}]})


def method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})", details={})


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type!r})")


def resource_version_on_create() -> ApiError:
    # Storage rejects this with a bare 500 and no reason, so clients see it like that.
    return ApiError(500, "", "resourceVersion should not be set on objects to be created")


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")
