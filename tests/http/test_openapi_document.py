"""The served OpenAPI document describes every response body concretely."""

from __future__ import annotations

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
