"""What the full-text search costs the pull's bulk writes (SQLite: FTS5 kept in bulk by mirror/search.py
since migration 0004, by per-row triggers before; PostgreSQL: GIN indexes), and how long a backup,
verify and restore of that mirror take.

    .venv/bin/python bench/fts_triggers.py [--contacts 5000] [--repeat 3] [--pg URL]

First, whole first pulls from the emulator over HTTP, into a mirror without and with search. Then
records come from the emulator's seed (realistic text in notes, contacts, companies). For each
database, two fresh mirrors: one migrated to 0002_writeback_queue (no search index), one to head
(with search). Each phase applies the same changes through `store.apply_changes`, the pull's own
write path, and the best of --repeat runs is printed:

  insert  every record of every resource inserted (a first pull)
  update  every record changed (a pull rewrites a changed record as delete + insert)
  delete  every note deleted

Then backup / verify / restore of the head mirror (SQLite only: the file is what is timed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import store
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.diff import Changes, record_hash
from clevertim_sync.pull.pipeline import pull


def seeded_records(contacts: int, work: Path, repeat: int) -> dict[str, list[dict[str, Any]]]:
    """The seed's records; on the way, time whole first pulls (HTTP included) without and with search."""
    server = EmulatorServer(token="b", contacts=contacts, seed=7).start()
    try:
        times: dict[str, list[float]] = {"0002_writeback_queue": [], "head": []}
        for i in range(repeat):
            for revision, runs in times.items():
                engine = make_engine(f"sqlite:///{work / f'pull-{revision}-{i}.sqlite3'}")
                upgrade(engine, revision)
                with ClevertimClient(server.base_url, "b") as client:
                    t = time.perf_counter()
                    assert pull(engine, client).ok
                    runs.append(time.perf_counter() - t)
                engine.dispose()
        without, with_fts = min(times["0002_writeback_queue"]), min(times["head"])
        print(
            f"sqlite     first pull over HTTP: no index {without:.2f}s  with search {with_fts:.2f}s  "
            f"ratio {with_fts / without:4.2f}x"
        )
        return server.control.state()
    finally:
        server.stop()


def apply(engine: sa.Engine, name: str, changes: Changes) -> None:
    with engine.begin() as conn:
        store.apply_changes(conn, name, changes, run_id=None, at=store.now())


def phases(engine: sa.Engine, state: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    t = time.perf_counter()
    for name in resources.PULL_ORDER:
        apply(engine, name, Changes(inserts=[(r, record_hash(r)) for r in state.get(name, [])]))
    out["insert"] = time.perf_counter() - t
    changed = {
        name: [{**r, "description": "changed", "desc": f"{r.get('desc') or ''} changed"} for r in recs]
        for name, recs in state.items()
    }
    t = time.perf_counter()
    for name in resources.PULL_ORDER:
        apply(engine, name, Changes(updates=[(r, record_hash(r)) for r in changed.get(name, [])]))
    out["update"] = time.perf_counter() - t
    t = time.perf_counter()
    apply(engine, "note", Changes(deletes=[r["id"] for r in state.get("note", [])]))
    out["delete"] = time.perf_counter() - t
    return out


def best(
    repeat: int, url_for: Callable[[int], str], revision: str, state: dict[str, Any]
) -> dict[str, float]:
    runs = []
    for i in range(repeat):
        engine = make_engine(url_for(i))
        upgrade(engine, revision)
        runs.append(phases(engine, state))
        engine.dispose()
    return {k: min(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", help="a PostgreSQL server URL (a database per run is created on it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        state = seeded_records(args.contacts, work, args.repeat)
        total = sum(len(v) for v in state.values())
        print(f"{total} records ({len(state['note'])} notes, {len(state['contact'])} contacts)")
        targets: list[tuple[str, Callable[[str, int], str]]] = [
            ("sqlite", lambda rev, i: f"sqlite:///{work / f'{rev}-{i}.sqlite3'}")
        ]
        if args.pg:
            admin = sa.create_engine(args.pg, isolation_level="AUTOCOMMIT")

            def pg(rev: str, i: int) -> str:
                name = f"bench_{rev[:4]}_{i}_{time.monotonic_ns()}"
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                return args.pg.rsplit("/", 1)[0] + f"/{name}"

            targets.append(("postgresql", pg))
        for label, url in targets:
            without = best(args.repeat, lambda i, u=url: u("0002", i), "0002_writeback_queue", state)
            with_fts = best(args.repeat, lambda i, u=url: u("head", i), "head", state)
            for phase in without:
                ratio = with_fts[phase] / without[phase]
                print(
                    f"{label:<10} {phase:<7} no index {without[phase]:6.2f}s  "
                    f"with search {with_fts[phase]:6.2f}s  ratio {ratio:4.2f}x"
                )
        mirror = make_engine(f"sqlite:///{work / 'head-0.sqlite3'}")
        t = time.perf_counter()
        result = bk.backup(mirror, work / "backups")
        t_backup = time.perf_counter() - t
        t = time.perf_counter()
        bk.verify(result.path)
        t_verify = time.perf_counter() - t
        t = time.perf_counter()
        bk.restore(result.path, f"sqlite:///{work / 'restored.sqlite3'}")
        t_restore = time.perf_counter() - t
        db_size = (work / "head-0.sqlite3").stat().st_size
        print(
            f"sqlite     backup {t_backup:.2f}s ({db_size / 1e6:.1f} MB -> {result.size / 1e6:.1f} MB)  "
            f"verify {t_verify:.2f}s  restore {t_restore:.2f}s"
        )


if __name__ == "__main__":
    main()
