"""The throwaway PostgreSQL the suite relies on is really there and isolated per test."""

from __future__ import annotations

import sqlalchemy as sa


def test_each_test_gets_an_empty_database(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        assert sa.inspect(conn).get_table_names() == []
        conn.execute(sa.text("CREATE TABLE probe (x integer)"))
        conn.execute(sa.text("INSERT INTO probe VALUES (1)"))
        assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 1
    engine.dispose()
