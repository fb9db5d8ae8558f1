"""Query cost limit: a validation rule estimating the work a query asks for before it runs.

cost(field) = 1 + multiplier x cost(selections), where the multiplier is the page size a field asks for
(``first``, ``k``, ``size``; a variable counts as its ceiling, since validation runs before variables are
known; without the argument, the field's default page size); nested lists without one (a study's images and
reports) count as 10.

On top of that, fields whose work does not show in their output are charged a fixed amount for every time they
occur in the document, not multiplied by an enclosing page: ``totalCount`` (an exact count), facets (an
aggregation over every matching report) and listing (a search without query text walks the whole index in
order). The weights are in ``field_work`` / ``listing_work`` (see docs/security.md).
Depth and aliases are limited by strawberry's own QueryDepthLimiter / MaxAliasesLimiter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
)
from strawberry.extensions import AddValidationRules

_PAGE_ARGS = {"first": "max_first", "size": "max_first", "k": "max_k"}
# Nested lists without a page argument (a study's images / reports): their estimated length.
_NESTED_LISTS = {"images": 10, "reports": 10, "Images": 10}


# Fixed work per occurrence (main schema): an exact count; an aggregation over the matching reports.
FIELD_WORK = {"totalCount": 1000, "icd10Facets": 2500, "entityFacets": 2500}
# A search root field without query text lists the whole index in order.
LISTING_WORK = {"searchReports": 500}
# Page sizes when the page argument is left out (the schema's defaults).
DEFAULT_PAGES = {"searchReports": 10, "similarImages": 10, "icd10Facets": 20, "entityFacets": 20}
_QUERY_ARGS = ("query", "input")


class CostLimiter(AddValidationRules):
    def __init__(self, *, max_cost: int, max_first: int, max_k: int, field_work: Mapping[str, int] = FIELD_WORK,
                 listing_work: Mapping[str, int] = LISTING_WORK,
                 default_pages: Mapping[str, int] = DEFAULT_PAGES) -> None:
        ceilings = {"max_first": max_first, "max_k": max_k}

        class _CostRule(ValidationRule):
            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)
                self.fragments: dict[str, FragmentDefinitionNode] = {}
                self.work = 0

            def enter_document(self, node: Any, *_args: Any) -> None:
                self.fragments = {d.name.value: d for d in node.definitions
                                  if isinstance(d, FragmentDefinitionNode)}
                for d in node.definitions:
                    if isinstance(d, OperationDefinitionNode):
                        self.work = 0
                        cost = self._cost(d.selection_set, set())
                        cost += self.work
                        if cost > max_cost:
                            name = d.name.value if d.name else "anonymous"
                            self.report_error(GraphQLError(
                                f"operation {name} is too expensive (estimated cost {cost} > {max_cost}); "
                                "ask for smaller pages or fewer nested lists",
                                extensions={"code": "QUERY_TOO_COMPLEX", "cost": cost, "maxCost": max_cost},
                            ))

            def _cost(self, sel: SelectionSetNode | None, seen: set[str]) -> int:
                if sel is None:
                    return 0
                total = 0
                for s in sel.selections:
                    if isinstance(s, FieldNode):
                        name = s.name.value
                        self.work += field_work.get(name, 0)
                        if name in listing_work and self._lists(s):
                            self.work += listing_work[name]
                        mult = _NESTED_LISTS.get(name, 1)
                        if not any(a.name.value in _PAGE_ARGS for a in s.arguments or ()):
                            mult = max(mult, default_pages.get(name, 1))
                        for arg in s.arguments or ():
                            key = _PAGE_ARGS.get(arg.name.value)
                            if key is None:
                                continue
                            if isinstance(arg.value, IntValueNode):
                                mult = max(mult, int(arg.value.value))
                            elif isinstance(arg.value, VariableNode):
                                mult = max(mult, ceilings[key])
                        total += 1 + mult * self._cost(s.selection_set, seen)
                    elif isinstance(s, InlineFragmentNode):
                        total += self._cost(s.selection_set, seen)
                    elif isinstance(s, FragmentSpreadNode):
                        name = s.name.value
                        frag = self.fragments.get(name)
                        if frag is not None and name not in seen:  # cycles are reported by graphql itself
                            total += self._cost(frag.selection_set, seen | {name})
                return total

            @staticmethod
            def _lists(node: FieldNode) -> bool:
                """No query text (absent, null or blank literal) or a variable (it may be null): a listing."""
                for arg in node.arguments or ():
                    if arg.name.value in _QUERY_ARGS:
                        v = arg.value
                        return not isinstance(v, StringValueNode) or not v.value.strip()
                return True

        super().__init__([_CostRule])
