"""The one extension list of both GraphQL endpoints (``/graphql`` and the seed-compat ``/compat/graphql``):
depth, alias, token and cost limits, the audit record, masking of unexpected errors, and caches of the parsed
and validated query documents.

Clients send the same few query texts with different variables; parsing and validating each again was a third of
the gateway's CPU per request (py-spy, listing page 100). The parsed document is cached by query text
(strawberry's ``ParserCache``); the validation result by query text per schema (:class:`ValidationMemo`): every
rule here (depth, aliases, cost) reads the document only, never the variables, and each schema's rules are fixed
by its settings, so one text always validates the same way. strawberry's own ``ValidationCache`` keys on the rule
classes too, which its limiters create anew for every request, so it would never hit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.schema import validate_document

from medsearch.contracts.settings import ApiSettings
from medsearch_api.audit import audit_extension
from medsearch_api.limits import DEFAULT_PAGES, FIELD_WORK, LISTING_WORK, CostLimiter

MAX_ALIASES = 20
MAX_TOKENS = 2000
CACHED_DOCUMENTS = 256  # distinct query texts whose parse and validation are kept (LRU)


def mask_unexpected(error: Any) -> bool:
    ext = getattr(error, "extensions", None) or {}
    if "code" in ext:
        return False
    # GraphQL validation / parse errors have no original error and are safe to show.
    return getattr(error, "original_error", None) is not None


class ValidationMemo:
    """The validation errors of the last ``maxsize`` query texts of one schema (thread-safe LRU)."""

    def __init__(self, maxsize: int = CACHED_DOCUMENTS) -> None:
        self.maxsize = maxsize
        self._errors: OrderedDict[str, tuple[GraphQLError, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, query: str) -> tuple[GraphQLError, ...] | None:
        with self._lock:
            errors = self._errors.get(query)
            if errors is not None:
                self._errors.move_to_end(query)
            return errors

    def put(self, query: str, errors: tuple[GraphQLError, ...]) -> None:
        with self._lock:
            self._errors[query] = errors
            self._errors.move_to_end(query)
            while len(self._errors) > self.maxsize:
                self._errors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._errors)


class CachedValidation(SchemaExtension):
    """Validates a query text once per schema (with every rule the other extensions added), then reuses the result."""

    def __init__(self, memo: ValidationMemo) -> None:
        super().__init__()
        self.memo = memo

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.query is not None and ctx.graphql_document is not None and ctx.pre_execution_errors is None:
            errors = self.memo.get(ctx.query)
            if errors is None:
                errors = tuple(validate_document(ctx.schema._schema, ctx.graphql_document, ctx.validation_rules))
                self.memo.put(ctx.query, errors)
            ctx.pre_execution_errors = list(errors)
        yield


def extensions(
    settings: ApiSettings, *, endpoint: str, field_work: Mapping[str, int] = FIELD_WORK,
    listing_work: Mapping[str, int] = LISTING_WORK, default_pages: Mapping[str, int] = DEFAULT_PAGES,
) -> list[Any]:
    """The extensions of the schema served at ``endpoint`` (its audit name); the cost weights are its own."""
    s = settings
    memo = ValidationMemo()
    return [
        lambda: ParserCache(maxsize=CACHED_DOCUMENTS),
        lambda: QueryDepthLimiter(max_depth=s.max_query_depth),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: CostLimiter(max_cost=s.max_query_cost, max_first=s.max_first, max_k=s.max_k, field_work=field_work,
                            listing_work=listing_work, default_pages=default_pages),
        lambda: CachedValidation(memo),
        audit_extension(endpoint),
        lambda: MaskErrors(should_mask_error=mask_unexpected, error_message="internal error"),
    ]
