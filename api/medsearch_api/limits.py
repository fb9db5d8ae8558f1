"""Query cost limit: a validation rule estimating the work a query asks for before it runs.

cost(field) = 1 + multiplier x cost(selections), where the multiplier is the page size a field asks for
(``first``, ``k``, ``size``; a variable counts as its ceiling, since validation runs before variables are
known); nested lists without one (a study's images and reports) count as 10.
Depth and aliases are limited by strawberry's own QueryDepthLimiter / MaxAliasesLimiter.
"""

from __future__ import annotations

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
    ValidationContext,
    ValidationRule,
    VariableNode,
)
from strawberry.extensions import AddValidationRules

_PAGE_ARGS = {"first": "max_first", "size": "max_first", "k": "max_k"}
# Nested lists without a page argument (a study's images / reports): their estimated length.
_NESTED_LISTS = {"images": 10, "reports": 10, "Images": 10}


class CostLimiter(AddValidationRules):
    def __init__(self, *, max_cost: int, max_first: int, max_k: int) -> None:
        ceilings = {"max_first": max_first, "max_k": max_k}

        class _CostRule(ValidationRule):
            def __init__(self, context: ValidationContext) -> None:
                super().__init__(context)
                self.fragments: dict[str, FragmentDefinitionNode] = {}

            def enter_document(self, node: Any, *_args: Any) -> None:
                self.fragments = {d.name.value: d for d in node.definitions
                                  if isinstance(d, FragmentDefinitionNode)}
                for d in node.definitions:
                    if isinstance(d, OperationDefinitionNode):
                        cost = self._cost(d.selection_set, set())
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
                        mult = _NESTED_LISTS.get(s.name.value, 1)
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

        super().__init__([_CostRule])
