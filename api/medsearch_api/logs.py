"""What the gateway logs, and what it never does: query strings (search text, thumbnail signatures) and GraphQL
source text (query literals can hold report text or patient identifiers) stay out of every log line."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError

log = logging.getLogger("medsearch_api.graphql")


def strip_query(path: str) -> str:
    """``/thumbnails/x?exp=1&sig=abc`` → ``/thumbnails/x?…``: the path stays, the query string never."""
    return path.split("?", 1)[0] + "?…" if "?" in path else path


class StripQueryStrings(logging.Filter):
    """For uvicorn's access log, whose records carry ``(client, method, full path, HTTP version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], strip_query(args[2]), *args[3:])
        return True


def install_access_log_filter() -> None:
    """Idempotent: attach :class:`StripQueryStrings` to the ``uvicorn.access`` logger."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, StripQueryStrings) for f in logger.filters):
        logger.addFilter(StripQueryStrings())


class Schema(strawberry.Schema):
    """strawberry's schema, logging errors without their text: strawberry's logger prints the GraphQL source
    excerpt, and messages echo input (a syntax error quotes the unexpected token, a filter error the value)."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            ext = error.extensions or {}
            code = ext.get("code") or ("GRAPHQL_VALIDATION_FAILED" if not error.path else "-")
            path = ".".join(str(p) for p in error.path or ())
            original = error.original_error
            if original is None or isinstance(original, GraphQLError):
                log.info("graphql error %s at %s (argument %s)", code, path or "-", ext.get("argument", "-"))
            else:  # unexpected: the client gets a masked message; the cause is logged, never the query
                log.error("graphql internal error at %s: %s", path or "-", type(original).__name__,
                          exc_info=original)
