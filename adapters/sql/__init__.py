"""The Store port over SQLAlchemy Core (async): SQLite (embedded default) and PostgreSQL.

- `tables`: the one MetaData (log, heads, checkpoints, read models) and its indexes.
- `migrations`: Alembic scripts, run programmatically (`migrate`, `pending`).
- `engine`: URLs normalized to the async drivers, SQLite's PRAGMAs and BEGIN recipe.
- `store`: `SqlStore`, the Store port, and the one projection used by append and replay.
"""
