"""Event receivers: validation of a registration, its fingerprint and the idempotency rule."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import rfc8785

from core.domain import commands, errors
from core.domain.errors import FieldError
from core.domain.fields import check_description, check_name
from core.domain.model import Receiver
from core.domain.schemas import SCHEMA_FIELD, CompiledSchema, compile_schema


def fingerprint(name: str, type_: str, version: str, schema: dict[str, Any]) -> str:
    """Lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of name, type, version, schema.

    Raises `rfc8785.CanonicalizationError` (a ValueError) for what JCS cannot
    represent: integers beyond +/-(2**53 - 1), NaN, infinities, lone surrogates.
    """
    document: dict[str, Any] = {"name": name, "type": type_, "version": version, "schema": schema}
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def new_receiver(
    cmd: commands.RegisterReceiver, *, id: str, tenant_id: str, now: datetime
) -> tuple[Receiver, CompiledSchema]:
    """A new receiver from a registration, with its compiled schema.

    Every field problem is collected into one `errors.Invalid`; a schema over the
    size limit raises `errors.TooLarge` at once. Values are stored as given.
    """
    problems: list[FieldError] = []
    check_name(problems, "/name", cmd.name)
    check_name(problems, "/type", cmd.type)
    check_name(problems, "/version", cmd.version)
    check_description(problems, "/description", cmd.description)
    compiled: CompiledSchema | None = None
    try:
        compiled = compile_schema(cmd.schema)
    except errors.Invalid as exc:
        problems.extend(exc.errors)
    digest = ""
    if compiled is not None:
        try:
            digest = fingerprint(cmd.name, cmd.type, cmd.version, cmd.schema)
        except rfc8785.CanonicalizationError as exc:
            problems.append(
                FieldError(SCHEMA_FIELD, f"cannot be canonicalized (RFC 8785 JCS): {exc}")
            )
    errors.raise_if(problems, "The receiver is invalid")
    assert compiled is not None  # raise_if has raised otherwise
    receiver = Receiver(
        id=id,
        tenant_id=tenant_id,
        name=cmd.name,
        type=cmd.type,
        version=cmd.version,
        description=cmd.description,
        schema=cmd.schema,
        fingerprint=digest,
        created_at=now,
    )
    return receiver, compiled


def decide_registration(existing: Receiver | None, candidate: Receiver) -> Receiver:
    """The receiver a registration answers with: the candidate if new, the existing one if
    the same registration is repeated; anything else under the same triple is a conflict.
    """
    if existing is None:
        return candidate
    triple = (existing.name, existing.type, existing.version)
    if triple != (candidate.name, candidate.type, candidate.version):
        raise ValueError("decide_registration compares receivers of the same triple only")
    same_schema = existing.fingerprint == candidate.fingerprint
    same_description = existing.description == candidate.description
    if same_schema and same_description:
        return existing
    differences: list[FieldError] = []
    if not same_schema:
        differences.append(
            FieldError(
                "/schema",
                "differs from the registered schema: a receiver's schema never changes, "
                "a new schema means a new version",
            )
        )
    if not same_description:
        differences.append(FieldError("/description", "differs from the registered description"))
    parts = " and ".join(
        part
        for part, differs in (("schema", not same_schema), ("description", not same_description))
        if differs
    )
    label = f"name={existing.name!r}, type={existing.type!r}, version={existing.version!r}"
    raise errors.Conflict(
        f"A receiver with {label} is already registered (id {existing.id}) with a different "
        f"{parts}. A receiver's schema never changes: a new schema means a new version.",
        differences,
    )
