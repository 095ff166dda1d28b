"""The Store port over SQLite (embedded default) and PostgreSQL, on the drivers themselves.

- `tables`: the one MetaData (log, heads, checkpoints, read models) and its indexes: the
  schema, declared once with SQLAlchemy Core.
- `migrations`: Alembic scripts, run programmatically (`migrate`, `pending`).
- `engine`: URLs normalized to the async drivers; SQLAlchemy engines (the migrations',
  and the pool a PostgreSQL store draws its connections from).
- `queries`: the statement catalogue: Core constructs compiled once per dialect into the
  driver's SQL and parameter order.
- `drivers`: connections and transactions on sqlite3 (inline, on the event loop) and
  asyncpg, with no SQLAlchemy on the hot path.
- `store`: `SqlStore`, the Store port, and the one projection used by append and replay.
"""
