"""strawberry permissions: reader / ingester / admin (roles from :mod:`medsearch_api.auth`)."""

from __future__ import annotations

from typing import Any

from strawberry import Info
from strawberry.permission import BasePermission

from medsearch_api import errors


def _require(info: Info[Any, Any], role: str) -> bool:
    ctx = info.context
    principal = getattr(ctx, "principal", None)
    if principal is None:
        raise errors.error("authentication required (Authorization: Bearer <token>)", errors.UNAUTHENTICATED)
    if not principal.has(role):
        response = getattr(ctx, "response", None)
        if response is not None:
            response.status_code = 403
        raise errors.error(f"this operation needs the {role} role", errors.FORBIDDEN)
    return True


class IsReader(BasePermission):
    message = "reader role required"

    def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        return _require(info, "reader")


class IsIngester(BasePermission):
    message = "ingester role required"

    def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        return _require(info, "ingester")
