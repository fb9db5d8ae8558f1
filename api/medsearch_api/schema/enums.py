"""The records' enums as GraphQL enums: strawberry.enum registers each class in place, so the root fields take
the records' own classes (import them from here, so that they are registered first)."""

from __future__ import annotations

import strawberry

from medsearch_api.records import EntityKind, Polarity, SearchMode

strawberry.enum(SearchMode, description="How searchReports ranks reports.")
strawberry.enum(Polarity, description="Assertion of a finding: present, absent or uncertain.")
strawberry.enum(EntityKind, description="Clinical entity category.")

__all__ = ["EntityKind", "Polarity", "SearchMode"]
