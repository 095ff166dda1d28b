"""How deep and how costly a query is, measured on its text before anything runs.

- **Depth**: the longest chain of nested fields (a root field is depth 1).
- **Cost**: how many values the answer can hold at most. Every field costs 1; a list
  of objects multiplies what is inside it by the most it can hold: a page's (or a
  delivery's attempts') `limit` (its default when not given), a group's 100 members, one element for
  `*_by_id`, 1000 for EPR's unpaginated searches. A mutation costs
  `MUTATION_COST` (each one is a write of its own).

Introspection fields (`__schema`, `__type`) are left to graphql-core's own bound
on introspection depth. Fragments are measured once per type they are spread on
(a chain of fragments costs its size, not its expansion); a cycle is left to
validation. The walk is linear in the size of the document, which the parser
has already bounded (`max_tokens`).
"""

from __future__ import annotations

from typing import Any, Final

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)

from core.ports import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from entrypoints.http.gql.errors import QueryRefused

__all__ = ["LIST_SIZES", "MUTATION_COST", "check", "measure"]

#: The most elements of each list of objects that has no `limit` (others: MAX_PAGE_SIZE).
LIST_SIZES: Final[dict[str, int]] = {
    "Query.events_by_id": 1,
    "Query.event_receivers_by_id": 1,
    "Query.event_receiver_groups_by_id": 1,
    "Query.event_receivers_by_fingerprint": 1,
    "Query.subscriptions_by_id": 1,
    "EventReceiverGroup.event_receivers": 100,
    "GroupStatus.members": 100,
    "Delivery.attempts": 20,  # its `limit`'s default (resolvers.DEFAULT_ATTEMPTS)
}
MUTATION_COST: Final = 100

_Measure = tuple[int, int]  # (depth, cost)


class _Walk:
    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variables: dict[str, Any]
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.memo: dict[tuple[str, str, int], _Measure] = {}
        self.active: set[str] = set()

    def page_size(self, field: FieldNode) -> int | None:
        """The `limit` argument's value, clamped as the resolver clamps it; None: no limit."""
        for argument in field.arguments or ():
            if argument.name.value != "limit":
                continue
            node = argument.value
            value: Any = None
            if isinstance(node, IntValueNode):
                value = int(node.value)
            elif isinstance(node, VariableNode):
                value = self.variables.get(node.name.value)
            if isinstance(value, int) and not isinstance(value, bool):
                return max(1, min(value, MAX_PAGE_SIZE))
            return MAX_PAGE_SIZE
        return None

    def selections(self, node: SelectionSetNode, parent: GraphQLObjectType, page: int) -> _Measure:
        depth = cost = 0
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                d, c = self.field(selection, parent, page)
            elif isinstance(selection, InlineFragmentNode):
                inner = parent
                if selection.type_condition is not None:
                    named = self.schema.get_type(selection.type_condition.name.value)
                    inner = named if isinstance(named, GraphQLObjectType) else parent
                d, c = self.selections(selection.selection_set, inner, page)
            elif isinstance(selection, FragmentSpreadNode):
                d, c = self.spread(selection.name.value, parent, page)
            else:  # pragma: no cover - the three kinds of selection
                continue
            depth, cost = max(depth, d), cost + c
        return depth, cost

    def spread(self, name: str, parent: GraphQLObjectType, page: int) -> _Measure:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.active:
            return 0, 0  # unknown or cyclic: validation refuses it
        key = (name, parent.name, page)
        if key not in self.memo:
            named = self.schema.get_type(fragment.type_condition.name.value)
            inner = named if isinstance(named, GraphQLObjectType) else parent
            self.active.add(name)
            self.memo[key] = self.selections(fragment.selection_set, inner, page)
            self.active.discard(name)
        return self.memo[key]

    def field(self, node: FieldNode, parent: GraphQLObjectType, page: int) -> _Measure:
        name = node.name.value
        definition = parent.fields.get(name)
        if name.startswith("__") or definition is None:
            return 0, 0  # introspection has its own bound; an unknown field is refused later
        kind = definition.type
        if isinstance(kind, GraphQLNonNull):
            kind = kind.of_type
        many = isinstance(kind, GraphQLList)
        while isinstance(kind, GraphQLList | GraphQLNonNull):
            kind = kind.of_type
        if node.selection_set is None or not isinstance(kind, GraphQLObjectType):
            return 1, 1
        own = self.page_size(node)
        inner_page = own if own is not None else page
        depth, cost = self.selections(node.selection_set, kind, inner_page)
        times = 1
        if many:
            coordinate = f"{parent.name}.{name}"
            if parent.name.endswith("Connection"):
                times = page
            elif own is not None:  # a list with a `limit` of its own
                times = own
            else:
                times = LIST_SIZES.get(coordinate, MAX_PAGE_SIZE)
        return depth + 1, 1 + times * cost


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> _Measure:
    """(depth, cost) of the operation that would run; (0, 0) when none can be chosen
    (execution reports that)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return 0, 0
    operation = operations[0]
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0, 0
    walk = _Walk(schema, document, variables or {})
    if operation.operation != OperationType.MUTATION:
        return walk.selections(operation.selection_set, root, DEFAULT_PAGE_SIZE)
    depth = cost = 0
    for selection in operation.selection_set.selections:
        single = SelectionSetNode(selections=(selection,))
        d, c = walk.selections(single, root, DEFAULT_PAGE_SIZE)
        depth = max(depth, d)
        cost += c + (MUTATION_COST - 1 if c else 0)
    return depth, cost


def check(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    *,
    max_depth: int,
    max_cost: int,
) -> None:
    """Raise `QueryRefused` when the operation is deeper or costlier than allowed."""
    depth, cost = measure(schema, document, operation_name, variables)
    if depth > max_depth:
        raise QueryRefused(
            "QUERY_TOO_DEEP",
            f"The query is {depth} fields deep; at most {max_depth} are allowed.",
            depth=depth,
            max_depth=max_depth,
        )
    if cost > max_cost:
        raise QueryRefused(
            "QUERY_TOO_COSTLY",
            f"The query could return {cost} values; at most {max_cost} are allowed. "
            "Ask for smaller pages (limit) or fewer fields.",
            cost=cost,
            max_cost=max_cost,
        )
