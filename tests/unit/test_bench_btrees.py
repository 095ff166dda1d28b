"""The b-tree benchmark (bench/btrees.py) measures the schema the migrations create: its
full variant is the declared log, events and latest tables, and every variant leaves out
only things that exist (a renamed index would otherwise turn a variant into the full
schema without a word)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sql import tables as t
from bench.btrees import VARIANTS, ddl, layout

DECLARED = (t.log, t.events, t.latest)


DIALECTS: list[sa.engine.Dialect] = [sqlite.dialect(), postgresql.dialect()]  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("dialect", DIALECTS, ids=["sqlite", "pg"])
def test_the_full_variant_is_the_declared_schema(dialect: sa.engine.Dialect) -> None:
    assert ddl(layout(frozenset()), dialect) == ddl(DECLARED, dialect)


def _parts(tables: tuple[sa.Table, ...] | list[sa.Table]) -> set[str]:
    names = {table.name for table in tables}
    for table in tables:
        names |= {str(c.name) for c in table.constraints if c.name is not None}
        names |= {str(index.name) for index in table.indexes}
    return names


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_variant_leaves_out_exactly_what_it_names(name: str) -> None:
    leave_out = VARIANTS[name]
    declared = _parts(DECLARED)
    assert leave_out <= declared
    assert _parts(layout(leave_out)) == declared - leave_out - {
        part  # a table left out takes its constraints and indexes with it
        for table in DECLARED
        if table.name in leave_out
        for part in _parts((table,))
    }
