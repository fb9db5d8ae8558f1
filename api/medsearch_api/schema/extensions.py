"""The one extension list of both GraphQL endpoints (``/graphql`` and the seed-compat ``/compat/graphql``):
depth, alias, token and cost limits, the audit record, and masking of unexpected errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter

from medsearch.contracts.settings import ApiSettings
from medsearch_api.audit import audit_extension
from medsearch_api.limits import DEFAULT_PAGES, FIELD_WORK, LISTING_WORK, CostLimiter

MAX_ALIASES = 20
MAX_TOKENS = 2000


def mask_unexpected(error: Any) -> bool:
    ext = getattr(error, "extensions", None) or {}
    if "code" in ext:
        return False
    # GraphQL validation / parse errors have no original error and are safe to show.
    return getattr(error, "original_error", None) is not None


def extensions(
    settings: ApiSettings, *, endpoint: str, field_work: Mapping[str, int] = FIELD_WORK,
    listing_work: Mapping[str, int] = LISTING_WORK, default_pages: Mapping[str, int] = DEFAULT_PAGES,
) -> list[Any]:
    """The extensions of the schema served at ``endpoint`` (its audit name); the cost weights are its own."""
    s = settings
    return [
        lambda: QueryDepthLimiter(max_depth=s.max_query_depth),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: CostLimiter(max_cost=s.max_query_cost, max_first=s.max_first, max_k=s.max_k, field_work=field_work,
                            listing_work=listing_work, default_pages=default_pages),
        audit_extension(endpoint),
        lambda: MaskErrors(should_mask_error=mask_unexpected, error_message="internal error"),
    ]
