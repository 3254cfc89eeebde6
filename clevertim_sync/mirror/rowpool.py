"""Rows for the store to insert: raw text, content hash, typed row and child rows of each record,
built in this process or, for a big batch, in a worker process while the caller inserts.

Why a process: a first sync spends as much time in Python turning records into rows
(`columns.RowBuilder`, `orjson.dumps`, `record_hash`) as SQLite spends inserting them, and the
GIL keeps a thread from overlapping the two. `RowPool` keeps one worker process (started on first
use, once per pull) that builds chunk k+1 while the pull's thread inserts chunk k; on the 2-core
machine that is the second core. A chunk goes out as its records' JSON (one `orjson.dumps`:
cheaper to send than pickled dicts, and parsed back to the same records) and comes back as
tuples. At most `AHEAD` chunks are in flight, so the rows of a big listing are never all held.

Must not import: SQLAlchemy, httpx (the worker process imports this module, and it starts fast).
"""

from __future__ import annotations

import gc
import io
import multiprocessing
import multiprocessing.connection
import os
import pickle
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
import structlog

from clevertim_sync import resources
from clevertim_sync.diff import record_hash
from clevertim_sync.mirror.columns import RowBuilder

# (current rows, [child rows of each of the builder's child props]), as RowBuilder.rows gives.
Rows = tuple[list[tuple[Any, ...]], list[list[tuple[Any, ...]]]]
# A record to insert and its content hash, None when not computed yet (a first load's diff).
Item = tuple[Mapping[str, Any], str | None]

log = structlog.get_logger(__name__)

AHEAD = 3  # chunks sent to the worker and not yet taken: one being built, the next ones queued

BUILDERS = {
    (r.name, sqlite): RowBuilder(r, sqlite=sqlite) for r in resources.RESOURCES for sqlite in (True, False)
}


def build_rows(resource: str, sqlite: bool, items: Iterable[Item]) -> Rows:
    """The rows of `items` in this process; the raw is the record's JSON, once."""
    return BUILDERS[(resource, sqlite)].rows(
        [(rec, orjson.dumps(rec).decode(), digest or record_hash(rec)) for rec, digest in items]
    )


def _build_from_json(resource: str, sqlite: bool, body: bytes, digests: list[str | None]) -> bytes:
    """In the worker: the same rows from the records' JSON (orjson round-trips them exactly),
    pickled here without the memo (rows hold no shared or cyclic objects): 6x faster than the
    executor's own pickling of ~10^5 small tuples, and faster to load."""
    rows = build_rows(resource, sqlite, zip(orjson.loads(body), digests, strict=True))
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(rows)
    return out.getvalue()


def _start_worker() -> None:
    """The worker's initializer. No cyclic GC: the worker makes only acyclic garbage, and the
    collector's passes over ~10^6 new tuples per listing cost more than its work. And it exits
    when the pull's process dies (SIGKILL): it would otherwise wait on its queue for ever."""
    gc.disable()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


class RowPool:
    """One worker process building rows for the chunks of a big batch, in order.

    If the worker dies (killed, out of memory, or a calling script without the
    `if __name__ == "__main__"` guard that spawning needs), the rest is built in this process.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lost = False

    def rows(self, resource: str, sqlite: bool, chunks: Sequence[Sequence[Item]]) -> Iterator[Rows]:
        """The rows of each chunk, in order."""
        done = 0
        if not self._lost:
            try:
                for rows in self._from_worker(resource, sqlite, chunks):
                    yield rows
                    done += 1
            except BrokenProcessPool as exc:
                log.warning("pull.row_worker_lost", error=str(exc))
                self._lost = True
                self.close()
        for chunk in chunks[done:]:
            yield build_rows(resource, sqlite, chunk)

    def _from_worker(self, resource: str, sqlite: bool, chunks: Sequence[Sequence[Item]]) -> Iterator[Rows]:
        # While the worker starts, the first chunk is built here; later batches go all to the worker.
        here = 0 if self._pool is not None else 1
        if self._pool is None:
            # spawn, not fork: the pull's process has threads (fetch, checkpoints) and connections.
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
            )
        pending: deque[Future[bytes]] = deque()
        sent = here

        def send_more() -> None:
            nonlocal sent
            while sent < len(chunks) and len(pending) < AHEAD:
                pending.append(self._submit(resource, sqlite, chunks[sent]))
                sent += 1

        try:
            send_more()
            for chunk in chunks[:here]:
                yield build_rows(resource, sqlite, chunk)
            while pending:
                rows = pickle.loads(pending.popleft().result())  # noqa: S301 our own worker's rows
                send_more()
                yield rows
        finally:
            for future in pending:  # the caller stopped early (an error): drop the rest
                future.cancel()

    def _submit(self, resource: str, sqlite: bool, chunk: Sequence[Item]) -> Future[bytes]:
        assert self._pool is not None
        body = orjson.dumps([rec for rec, _ in chunk])
        return self._pool.submit(_build_from_json, resource, sqlite, body, [d for _, d in chunk])

    def close(self) -> None:
        """Stop the worker process, if one was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
