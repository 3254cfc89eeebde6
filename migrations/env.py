"""Alembic environment: migrations run on the connection `db.upgrade` passes in, or on a URL
from `-x url=...`, the alembic config's sqlalchemy.url, or the clevertim-sync settings."""

from __future__ import annotations

from alembic import context

from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.settings import load

# Other areas put their tables on the same metadata in their own modules: import those here when
# you want `alembic revision --autogenerate` to see them (migrations themselves are explicit).

target_metadata = schema.metadata
config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return load().database.url


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
