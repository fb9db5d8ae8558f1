"""GraphQL errors with ``extensions.code`` (the codes clients switch on)."""

from __future__ import annotations

import logging
import secrets

from graphql import GraphQLError

log = logging.getLogger("medsearch_api.errors")

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
BAD_USER_INPUT = "BAD_USER_INPUT"
NOT_FOUND = "NOT_FOUND"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL = "INTERNAL_SERVER_ERROR"


def error(message: str, code: str, **extra: object) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extra})


def bad_input(message: str, argument: str | None = None) -> GraphQLError:
    return error(message, BAD_USER_INPUT, **({"argument": argument} if argument else {}))


def unavailable(message: str) -> GraphQLError:
    return error(message, SERVICE_UNAVAILABLE)


def dependency_unavailable(what: str, err: BaseException, hint: str = "") -> GraphQLError:
    """A dependency failed: its verbatim error (hosts, URIs, internals) goes to the log under a reference id;
    the client gets what failed, the reference and an optional hint, never the dependency's own text."""
    ref = secrets.token_hex(6)
    log.warning("%s unavailable (reference %s): %s: %s", what, ref, type(err).__name__, err)
    return error(f"{what} is unavailable{hint} (reference {ref})", SERVICE_UNAVAILABLE, reference=ref)
