"""The executable schema: `schema.graphql` (EPR's SDL and what Waypost adds), its scalars,
and the resolvers of `resolvers.FIELDS`, each behind its permission."""

from __future__ import annotations

import inspect
import pathlib
from collections.abc import Awaitable
from functools import cache
from typing import Any, Final

from graphql import GraphQLObjectType, GraphQLResolveInfo, GraphQLSchema, build_schema

from core.domain.access import Permission
from entrypoints.http.gql import scalars
from entrypoints.http.gql.context import Context
from entrypoints.http.gql.resolvers import FIELDS, Resolver

__all__ = ["ROOTS", "SDL", "executable_schema"]

SDL: Final = (pathlib.Path(__file__).parent / "schema.graphql").read_text(encoding="utf-8")
ROOTS: Final = ("Query", "Mutation")


def _guarded(permission: Permission, resolver: Resolver) -> Any:
    """The field's resolver, once the caller holds `permission` (asked once per request)."""

    async def checked(ctx: Context, parent: Any, args: dict[str, Any]) -> Any:
        await ctx.allow(permission)
        result = resolver(ctx, parent, args)
        return await result if inspect.isawaitable(result) else result

    def resolve(parent: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any | Awaitable[Any]:
        ctx: Context = info.context
        if ctx.granted(permission):
            return resolver(ctx, parent, args)
        return checked(ctx, parent, args)

    return resolve


@cache
def executable_schema() -> GraphQLSchema:
    """The schema with its resolvers. Refuses to build when a root field has no resolver
    (hence no permission) or a resolver names no field of the schema."""
    schema = build_schema(SDL)
    scalars.install(schema)
    for coordinate, (permission, resolver) in FIELDS.items():
        type_name, field_name = coordinate.split(".")
        owner = schema.get_type(type_name)
        if not isinstance(owner, GraphQLObjectType) or field_name not in owner.fields:
            raise LookupError(f"the schema has no field {coordinate}")
        owner.fields[field_name].resolve = _guarded(permission, resolver)
    for root in ROOTS:
        owner = schema.get_type(root)
        assert isinstance(owner, GraphQLObjectType)
        for name in owner.fields:
            if f"{root}.{name}" not in FIELDS:
                raise LookupError(f"{root}.{name} has no resolver, hence no permission")
    return schema
