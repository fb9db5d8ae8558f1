"""The strawberry schema of ``/graphql``: typed, camelCase, cursor pagination. A module per type (each with a
``from_record`` classmethod wrapping the repository's records), the filter inputs, the Query and Mutation roots,
and the extension list both GraphQL endpoints share (:mod:`.extensions`). Resolvers stay thin: they validate
arguments, call :mod:`medsearch_api.resolvers` (through per-request DataLoaders where lookups repeat) and wrap
records in types.
"""

from __future__ import annotations

import strawberry

from medsearch.contracts.settings import ApiSettings
from medsearch_api.logs import Schema as LoggingSchema
from medsearch_api.schema.extensions import extensions
from medsearch_api.schema.mutation import Mutation
from medsearch_api.schema.query import Query


def build_schema(settings: ApiSettings | None = None) -> strawberry.Schema:
    return LoggingSchema(query=Query, mutation=Mutation,
                         extensions=extensions(settings or ApiSettings(), endpoint="graphql"))


schema = build_schema()

__all__ = ["build_schema", "schema"]
