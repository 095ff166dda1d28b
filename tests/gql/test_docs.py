"""The GraphQL in the docs is valid against the served schema: every ```graphql block, and
every JSON request body with a `query`, of the reference and the EPR how-to."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from graphql import parse, validate

from entrypoints.http.gql.schema import executable_schema

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
PAGES = [DOCS / "reference/graphql.md", DOCS / "how-to/move-from-epr.md"]


def documents() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        found += [(page.name, b) for b in re.findall(r"```graphql\n(.*?)```", text, re.S)]
        for block in re.findall(r"```json\n(.*?)```", text, re.S):
            body = json.loads(block)
            if "query" in body:
                found.append((page.name, body["query"]))
        curls = re.findall(r"-d '(\{\"query\".*?\})'", text, re.S)
        found += [(page.name, json.loads(b.replace("\n", " "))["query"]) for b in curls]
    return found


DOCUMENTS = documents()


def test_the_docs_hold_graphql() -> None:
    assert len(DOCUMENTS) >= 8


@pytest.mark.parametrize(("page", "document"), DOCUMENTS)
def test_every_document_of_the_docs_is_valid(page: str, document: str) -> None:
    assert validate(executable_schema(), parse(document)) == [], (page, document)
