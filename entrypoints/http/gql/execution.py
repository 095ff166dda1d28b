"""One GraphQL request, from its bytes to its answer, with every limit on the way.

1. The body: `{"query", "operationName"?, "variables"?}` (other keys ignored); not
   JSON, or not that shape: 400.
2. The query's size (`max_query_bytes`), then the parser's token budget
   (`max_tokens`): a huge or pathological document is refused while being read.
3. Depth and cost (`limits`), before validation (some of whose rules are quadratic)
   and before any resolver: an abusive query costs a parse and a walk, nothing more.
4. Validation (graphql-core's rules, introspection refused when it is off). Parsed
   and validated documents are kept by their text (clients repeat their queries).
5. EPR compatibility (`lenient`): fields of input objects that the schema does not
   have are dropped from the variables, as EPR's Go server ignored unknown JSON
   fields (epr-python sends whole objects: `id`, `created_at`, `fingerprint`...).
6. Execution; the errors are formatted by `errors.format_error`.

Request errors (steps 2 to 4) answer 200 with `errors` and no `data`, as GraphQL
over HTTP does for `application/json`; only a body that is no GraphQL request is a
400. A field that met a database that cannot serve makes the answer a 503 (with what
did resolve, and the route adds `Retry-After`): the client should retry, as it would
a REST request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any, Final, TypeGuard

import msgspec
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    execute,
    parse,
    specified_rules,
    type_from_ast,
    validate,
)

from core.ports import Unavailable
from entrypoints.http.gql import limits
from entrypoints.http.gql.context import Context
from entrypoints.http.gql.errors import QueryRefused, format_error, request_error
from entrypoints.http.gql.schema import executable_schema
from entrypoints.settings import GraphQLSettings

__all__ = ["Endpoint", "GraphQLRequest"]

#: Parsed and validated documents kept, by query text.
DOCUMENT_CACHE: Final = 256


class GraphQLRequest(msgspec.Struct, kw_only=True):
    query: str
    operationName: str | None = None  # noqa: N815 - the protocol's name
    variables: dict[str, Any] | None = None


_decoder: Final = msgspec.json.Decoder(GraphQLRequest)


class _NoIntrospection(NoSchemaIntrospectionCustomRule):
    """graphql-core's rule, its errors marked with their code."""

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {**(error.extensions or {}), "code": "INTROSPECTION_DISABLED"}
        super().report_error(error)


class Endpoint:
    """The GraphQL endpoint's logic, independent of the route that serves it."""

    def __init__(self, settings: GraphQLSettings, schema: GraphQLSchema | None = None) -> None:
        self.settings = settings
        self.schema = schema or executable_schema()
        rules = list(specified_rules)
        if not settings.introspection:
            rules.append(_NoIntrospection)
        self._rules = tuple(rules)
        self._documents: OrderedDict[str, DocumentNode | list[dict[str, Any]]] = OrderedDict()

    async def run(
        self, body: bytes, context: Callable[[], Context], *, lenient: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, answer) for one request's body."""
        try:
            request = _decoder.decode(body)
        except msgspec.DecodeError as exc:
            message = "The body is not a GraphQL request (a JSON object with a `query`): "
            return 400, {"errors": [request_error("BAD_REQUEST", message + str(exc))]}
        try:
            document = self._document(request)
        except QueryRefused as refused:
            return 200, {
                "errors": [request_error(refused.code, refused.message, **refused.extensions)]
            }
        if isinstance(document, list):
            return 200, {"errors": document}
        variables = request.variables
        if lenient and variables:
            variables = _known_fields(self.schema, document, request.operationName, variables)
        result = execute(
            self.schema,
            document,
            context_value=context(),
            variable_values=variables,
            operation_name=request.operationName,
            is_awaitable=_is_awaitable,
        )
        if not isinstance(result, ExecutionResult):
            result = await result
        answer: dict[str, Any] = {}
        if result.errors:
            answer["errors"] = [format_error(e, phase="execution") for e in result.errors]
        if result.data is not None or not result.errors or _executed(result):
            answer["data"] = result.data
        unavailable = any(isinstance(e.original_error, Unavailable) for e in result.errors or ())
        return (503 if unavailable else 200), answer

    def _document(self, request: GraphQLRequest) -> DocumentNode | list[dict[str, Any]]:
        """The parsed, measured and validated document; its errors; or QueryRefused."""
        settings = self.settings
        query = request.query
        if len(query.encode("utf-8")) > settings.max_query_bytes:
            raise QueryRefused(
                "QUERY_TOO_LARGE",
                f"The query is longer than {settings.max_query_bytes} bytes; "
                "pass large values as variables.",
                max_query_bytes=settings.max_query_bytes,
            )
        known = self._documents.get(query)
        if known is None:
            try:
                parsed = parse(query, max_tokens=settings.max_tokens)
            except GraphQLError as exc:
                if exc.message.endswith("tokens. Parsing aborted."):
                    raise QueryRefused(
                        "QUERY_TOO_LARGE",
                        f"The query has more than {settings.max_tokens} tokens.",
                        max_tokens=settings.max_tokens,
                    ) from None
                parse_failed = format_error(exc, phase="validation")
                parse_failed["extensions"] = {"code": "GRAPHQL_PARSE_FAILED"}
                return [parse_failed]
            known = parsed
        if isinstance(known, list):
            self._documents.move_to_end(query)
            return known
        limits.check(
            self.schema,
            known,
            request.operationName,
            request.variables,
            max_depth=settings.max_depth,
            max_cost=settings.max_cost,
        )
        if query not in self._documents:
            errors = validate(self.schema, known, self._rules)
            outcome: DocumentNode | list[dict[str, Any]] = known
            if errors:
                outcome = [format_error(e, phase="validation") for e in errors]
            self._documents[query] = outcome
            if len(self._documents) > DOCUMENT_CACHE:
                self._documents.popitem(last=False)
            return outcome
        self._documents.move_to_end(query)
        return known


#: What a resolver here may return that must be awaited: a coroutine (an async resolver)
#: or a future (a batch loader's, `asyncio.gather`'s).
_AWAITABLE: Final = (CoroutineType, asyncio.Future)


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    """graphql-core asks this of every value it completes (1,100 times for a page of 100
    events); its general check costs twice this one, which knows our resolvers."""
    return isinstance(value, _AWAITABLE)


def _executed(result: ExecutionResult) -> bool:
    """Whether execution began (a field error), not a refusal of the variables."""
    return any(error.path is not None for error in result.errors or ())


def _known_fields(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any],
) -> dict[str, Any]:
    """`variables` without the input-object fields the schema does not have."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return variables
    pruned = dict(variables)
    for definition in operations[0].variable_definitions or ():
        name = definition.variable.name.value
        kind = type_from_ast(schema, definition.type)
        if name in pruned and kind is not None:
            pruned[name] = _prune(pruned[name], kind)  # type: ignore[arg-type]
    return pruned


def _prune(value: Any, kind: GraphQLInputType) -> Any:
    if isinstance(kind, GraphQLNonNull):
        return _prune(value, kind.of_type)
    if isinstance(kind, GraphQLList):
        if isinstance(value, list):
            return [_prune(item, kind.of_type) for item in value]
        return _prune(value, kind.of_type)
    if isinstance(kind, GraphQLInputObjectType) and isinstance(value, dict):
        fields = kind.fields
        return {k: _prune(v, fields[k].type) for k, v in value.items() if k in fields}
    return value
