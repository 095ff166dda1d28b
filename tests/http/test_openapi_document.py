"""The served OpenAPI document describes every response body concretely."""

from __future__ import annotations

from typing import Any

from entrypoints.bootstrap import create_app
from entrypoints.settings import DatabaseSettings, Settings


def test_every_envelope_types_its_data() -> None:
    app = create_app(Settings(database=DatabaseSettings(url="memory://")))
    schemas = app.openapi_schema.to_schema()["components"]["schemas"]
    envelopes = {name: s for name, s in schemas.items() if "data" in s.get("properties", {})}
    assert len(envelopes) >= 12
    for name, schema in envelopes.items():
        data = schema["properties"]["data"]
        assert data != {"type": "object"}, f"{name}.data is untyped in the document"
        if data.get("type") == "array":
            assert data["items"] != {"type": "object"}, f"{name}.data items are untyped"


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    app = create_app(Settings(database=DatabaseSettings(url="memory://")))
    paths = app.openapi_schema.to_schema()["paths"]
    return [
        (method.upper(), path, operation)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def test_every_operation_has_a_description() -> None:
    missing = [f"{m} {p}" for m, p, op in _operations() if not op.get("description")]
    assert not missing, f"operations without a description: {missing}"


def test_every_400_is_a_problem_document() -> None:
    for method, path, op in _operations():
        answer = op.get("responses", {}).get("400")
        if answer is None:
            continue
        assert list(answer["content"]) == ["application/problem+json"], (method, path)
        schema = answer["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}, (method, path)


def test_every_idempotent_post_declares_the_idempotency_key() -> None:
    # The documented routes that take no Idempotency-Key (tests/http/test_idempotency.py
    # says why); a new API key's or a rotated secret's retry is told what was made, never the
    # credential.
    not_replayed = {"/api/v1/auth/token", "/api/v1/auth/revoke"}
    for method, path, op in _operations():
        names = {p["name"] for p in op.get("parameters", [])}
        if method == "POST" and path not in not_replayed:
            assert "Idempotency-Key" in names, path
            [header] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
            assert header["in"] == "header"
            assert header["schema"]["maxLength"] == 255
            # what the key itself may bring: reused with another body, or still running
            assert {"409", "422"} <= set(op["responses"]), path
        else:
            assert "Idempotency-Key" not in names, (method, path)


def test_the_token_endpoint_documents_its_body_as_form_and_json() -> None:
    [token] = [op for m, p, op in _operations() if (m, p) == ("POST", "/api/v1/auth/token")]
    body = token["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/x-www-form-urlencoded", "application/json"}
    for media in body["content"].values():
        schema = media["schema"]
        assert schema["required"] == ["grant_type"]
        assert schema["properties"]["grant_type"]["enum"] == [
            "password",
            "api_key",
            "refresh_token",
        ]
        assert {"username", "password", "tenant", "api_key", "refresh_token"} <= set(
            schema["properties"]
        )
    [revoke] = [op for m, p, op in _operations() if (m, p) == ("POST", "/api/v1/auth/revoke")]
    assert revoke["requestBody"]["content"]["application/json"]["schema"]["required"] == ["token"]


def test_the_console_is_not_part_of_the_api_description() -> None:
    assert not [p for _, p, _ in _operations() if p.startswith(("/console", "/schema"))]
