"""GraphQL errors with ``extensions.code`` (the codes clients switch on)."""

from __future__ import annotations

from graphql import GraphQLError

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
