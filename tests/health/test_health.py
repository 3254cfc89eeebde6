"""The server's health, one owner (clevertim_sync/health): the table in its docstring is the
code's, every error of the tree has a row, the package is pure, the pause row behaves, and the
client, the pull, photos and the worker follow the table they are given (a test-only table
below swaps a decision in each column and each of them follows). Against the emulator over
loopback on SQLite and PostgreSQL; the client's reads through httpx MockTransport."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from support.ownership import touching

import clevertim_sync.health
from clevertim_sync import errors as e
from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.daemon import healthz
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.health import TABLE, Action, Decision, Pause, Policy, ServerHealth, Where, decide
from clevertim_sync.mirror import pause as server_pause
from clevertim_sync.mirror.pause import PauseRow
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import PushSettings, Settings
from clevertim_sync.writeback import outbox, queue
from clevertim_sync.writeback.tables import writeback_queue
from clevertim_sync.writeback.worker import push

TOKEN = "test-token"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def api_error(cls: type[e.ApiError], status: int | None = None, **fields: Any) -> e.ApiError:
    return cls("request failed", method="GET", resource="contact", status=status, **fields)


# --- the table --------------------------------------------------------------------------------------


def docstring_tables() -> dict[str, dict[Where, Decision]]:
    """{error class name: {column: decision}} as the package's docstring writes them."""
    rows: dict[str, dict[Where, Decision]] = {}
    columns: list[Where] = []
    for line in (clevertim_sync.health.__doc__ or "").splitlines():
        if not line.startswith("|") or set(line) <= {"|", "-"}:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "error":
            columns = [Where(c) for c in cells[1:]]
            continue
        rows.setdefault(cells[0], {}).update(
            {w: Decision.parse(c) for w, c in zip(columns, cells[1:], strict=True)}
        )
    return rows


def the_tree() -> list[type[e.ApiError]]:
    found, todo = [], [e.ApiError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_docstring_table_is_the_code_and_covers_every_error_of_the_tree() -> None:
    written = docstring_tables()
    assert written == {cls.__name__: dict(row) for cls, row in TABLE.items()}
    assert {cls.__name__ for cls in the_tree()} <= set(written)
    assert all(set(row) == set(Where) for row in written.values())


@pytest.mark.parametrize("cls", the_tree(), ids=lambda c: c.__name__)
def test_decide_gives_each_error_its_row(cls: type[e.ApiError]) -> None:
    exc = api_error(cls, status=418)
    for where in Where:
        expected = TABLE[cls][where]
        if expected.action is Action.UNAVAILABLE:  # only an optional resource's 400/404/501
            expected = Decision(Action.FAIL)
        assert decide(exc, where) == expected


def test_unavailable_only_for_an_optional_resource_and_its_statuses() -> None:
    for cls, status in ((e.BadRequest, 400), (e.NotFound, 404), (e.NotSupported, 501)):
        exc = api_error(cls, status)
        assert decide(exc, Where.LISTING, optional=True).action is Action.UNAVAILABLE
        assert decide(exc, Where.LISTING).action is Action.FAIL
    assert decide(api_error(e.BadRequest, 405), Where.LISTING, optional=True).action is Action.FAIL


def test_a_server_level_failure_is_one_definition() -> None:
    # What the issue found in three places (api/errors server_wide, worker OUTAGE_ERRORS, the
    # pull's 429-only pause): now the rows that stop or pause.
    stops_a_pull = {c.__name__ for c, row in TABLE.items() if row[Where.LISTING].stop}
    pauses_a_push = {c.__name__ for c, row in TABLE.items() if row[Where.WRITE].pause}
    assert stops_a_pull == {"TransportError", "LoginRequired", "Redirected", "RateLimited"}
    assert pauses_a_push == {"TransportError", "LoginRequired", "RateLimited", "ServiceUnavailable"}


def test_the_health_package_imports_neither_sqlalchemy_nor_httpx() -> None:
    code = (
        "import sys, clevertim_sync.health, clevertim_sync.health.delays; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'httpx', 'structlog')"
        " or m.startswith(('clevertim_sync.api', 'clevertim_sync.mirror'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the owner: verdicts and the pause ----------------------------------------------------------------


class Row:
    """An in-memory PauseStore (the owner's unit tests; the real row is tested below)."""

    def __init__(self, pause: Pause | None = None) -> None:
        self.pause = pause

    def get(self) -> Pause | None:
        return self.pause

    def set(self, pause: Pause, now: datetime) -> None:
        self.pause = pause

    def clear(self) -> None:
        self.pause = None


class Top:
    def uniform(self, a: float, b: float) -> float:
        return b


def test_an_outage_pauses_with_growing_waits_and_a_success_lifts_it() -> None:
    row = Row()
    policy = Policy(item_backoff_base=2.0, item_backoff_cap=600.0)
    health = ServerHealth(row, policy, clock=lambda: T0, rng=Top())
    waits = []
    for _ in range(3):
        verdict = health.after_error(api_error(e.ServiceUnavailable, 503), Where.WRITE, attempts=4)
        assert verdict.decision.action is Action.BACK and verdict.attempts == 4  # no attempt spent
        assert verdict.paused_until is not None and verdict.retry_at == verdict.paused_until
        waits.append((verdict.paused_until - T0).total_seconds())
    assert waits == [2.0, 4.0, 8.0] and row.pause is not None and row.pause.failures == 3
    assert health.recovering and health.paused_until(T0) == row.pause
    health.succeeded()
    assert row.pause is None and not health.recovering


def test_a_read_pauses_for_what_the_server_asked() -> None:
    row = Row()
    health = ServerHealth(row, Policy(rate_limit_floor=45.0), clock=lambda: T0)
    assert health.after_error(api_error(e.RateLimited, 429), Where.LISTING).paused_until == T0 + timedelta(
        seconds=45
    )
    asked = api_error(e.RateLimited, 429, retry_after=120.0)
    assert health.after_error(asked, Where.PHOTO).paused_until == T0 + timedelta(seconds=120)
    assert health.after_error(api_error(e.ServiceUnavailable, 503), Where.LISTING).paused_until is None


def test_an_item_is_retried_then_dead_lettered_after_max_attempts() -> None:
    health = ServerHealth(Row(), Policy(max_attempts=3, item_backoff_base=1.0), clock=lambda: T0, rng=Top())
    lost = api_error(e.ResponseLost)
    first = health.after_error(lost, Where.WRITE, attempts=0)
    assert (first.decision.action, first.attempts, first.retry_at) == (
        Action.RETRY,
        1,
        T0 + timedelta(seconds=1),
    )
    last = health.after_error(lost, Where.WRITE, attempts=2)
    assert (last.decision.action, last.attempts, last.gave_up) == (Action.DEAD_LETTER, 3, True)
    gone = health.after_error(api_error(e.NotFound, 404), Where.DELETE, attempts=0)
    assert gone.decision.action is Action.DONE


def test_the_pause_row_is_set_by_racing_workers_and_never_shortened(mirror_engine: sa.Engine) -> None:
    # Worker threads meeting one outage set the pause at the same moment (a PostgreSQL unique
    # violation, now and then, when it was read-then-insert).
    engine = mirror_engine
    start = threading.Barrier(8)

    def meet_outage(i: int) -> None:
        start.wait()
        server_pause.put(engine, Pause(T0 + timedelta(seconds=10 + i), i, f"503 #{i}"), T0)

    with ThreadPoolExecutor(8) as pool:
        for _round in range(20):
            server_pause.clear(engine)
            list(pool.map(meet_outage, range(8)))
            pause = server_pause.get(engine)
            assert pause is not None and pause.not_before == T0 + timedelta(seconds=17)

    server_pause.put(engine, Pause(T0 + timedelta(seconds=5), 9, "a shorter Retry-After"), T0)
    pause = server_pause.get(engine)
    assert pause is not None and pause.not_before == T0 + timedelta(seconds=17)
    assert (pause.failures, pause.reason) == (9, "a shorter Retry-After")
    server_pause.put(engine, Pause(T0 + timedelta(minutes=5), 10, "longer"), T0)
    assert server_pause.get(engine) == Pause(T0 + timedelta(minutes=5), 10, "longer")
    PauseRow(engine, read_only=True).clear()  # a dry run's store: never changes it
    assert server_pause.get(engine) is not None


def test_the_queue_rules_are_handed_the_pause_and_the_health_check_asks_server_health(
    mirror_engine: sa.Engine,
) -> None:
    # outbox.stuck and newest_due read no pause row: their callers hand them the pause, which the
    # health check (and the daemon's queue watch) asks ServerHealth for.
    engine = mirror_engine
    with engine.begin() as conn:
        item = conn.execute(
            sa.insert(writeback_queue)
            .values(resource="contact", op="update", target_id=1, created_at=T0 - timedelta(hours=1))
            .returning(writeback_queue.c.id)
        ).scalar_one()
    paused = Pause(T0 + timedelta(minutes=10), 1, "outage")
    server_pause.put(engine, paused, T0)
    with engine.connect() as conn:
        assert outbox.stuck(conn, T0, 600, None) == (1, 3600.0)  # the row says paused; not asked
        assert outbox.stuck(conn, T0, 600, paused) == (0, None)
        assert outbox.newest_due(conn, T0, None) == item
        assert outbox.newest_due(conn, T0, paused) == 0
        assert healthz.read_queue_facts(conn, T0, 600).stuck == 0  # the pause in force: waiting is right
    server_pause.clear(engine)
    with engine.connect() as conn:
        assert healthz.read_queue_facts(conn, T0, 600).stuck == 1


def test_only_the_pause_row_s_module_issues_statements_on_it() -> None:
    # The pause is the health owner's (ServerHealth), its row mirror/pause.py's: no other module
    # names the table or writes SQL on it (who may build a PauseRow: pyproject's import-linter).
    def names_it(node: ast.AST) -> str | None:
        named = (
            (isinstance(node, ast.Name) and node.id == "writeback_pause")
            or (isinstance(node, ast.Attribute) and node.attr == "writeback_pause")
            or (isinstance(node, ast.alias) and node.name == "writeback_pause")
        )
        return "names the pause's table" if named else None

    assert touching("writeback_pause", {"mirror/pause.py", "mirror/schema.py"}, names_it) == []


# --- each part follows the table it is given ------------------------------------------------------

# One decision swapped in each column a part reads: if a part decided by itself, it would not follow.
SWAPPED = {
    **TABLE,
    e.NotFound: {**TABLE[e.NotFound], Where.READ: Decision(Action.RETRY)},
    e.ServiceUnavailable: {
        **TABLE[e.ServiceUnavailable],
        Where.READ: Decision(Action.GIVE_UP),
        Where.LISTING: Decision(Action.FAIL, pause=True, stop=True),
    },
    e.RequestNotParsed: {**TABLE[e.RequestNotParsed], Where.PHOTO: Decision(Action.FAIL, stop=True)},
    e.BadRequest: {**TABLE[e.BadRequest], Where.WRITE: Decision(Action.BACK, pause=True, stop=True)},
}


@pytest.mark.parametrize("table", ["default", "swapped"])
def test_the_client_retries_a_read_as_the_table_says(table: str) -> None:
    answers = {"/api/contact/7": 404, "/api/contact": 503}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(answers[request.url.path], json={"status": "ERROR", "error": "no"})

    policy = Policy(table=SWAPPED) if table == "swapped" else None
    client = ClevertimClient(
        "https://crm.example.com/api",
        TOKEN,
        http=httpx.MockTransport(handler),
        sleep=lambda _s: None,
        read_retries=2,
        policy=policy,
    )
    with pytest.raises(e.NotFound):
        client.get("contact", 7)
    with pytest.raises(e.ServiceUnavailable):
        client.list("contact")
    tries = {path: seen.count(path) for path in answers}
    assert tries == (
        {"/api/contact/7": 3, "/api/contact": 1} if policy else {"/api/contact/7": 1, "/api/contact": 3}
    )


@pytest.mark.parametrize("table", ["default", "swapped"])
def test_the_pull_follows_the_table_for_a_listing(
    table: str, mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    first, *rest = resources.PULL_ORDER
    emulator.control.add_fault(kind="status", status=503, path=f"^/{resources.get(first).path.strip('/')}$")
    policy = Policy(table=SWAPPED) if table == "swapped" else None
    report = pull(mirror_engine, api_client, policy=policy)
    assert report.failed == [first]
    pause = server_pause.get(mirror_engine)
    if policy is None:  # a 503 on a listing: that resource failed, the others were pulled, no pause
        assert report.skipped == [] and report.halted is None and pause is None
    else:
        assert report.skipped == rest and "paused until" in (report.halted or "")
        assert pause is not None and pause.not_before > datetime.now(UTC) + timedelta(seconds=20)


@pytest.mark.parametrize("table", ["default", "swapped"])
def test_photos_follow_the_table(
    table: str, mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    due = [c for c in emulator.control.state(as_token=TOKEN)["contact"] if c.get("cphoto")]
    assert len(due) > 1
    emulator.control.add_fault(kind="status", status=500, path="^/getcphoto/")
    policy = Policy(table=SWAPPED) if table == "swapped" else None
    report = pull(
        mirror_engine, api_client, settings=Settings.model_validate({"pull": {"photos": True}}), policy=policy
    )
    assert report.ok and report.photos is not None
    counts = (report.photos.failed, report.photos.left)
    assert counts == ((1, len(due) - 1) if policy else (len(due), 0))


@pytest.mark.parametrize("table", ["default", "swapped"])
def test_the_worker_follows_the_table_for_a_write(
    table: str, mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    assert pull(mirror_engine, api_client).ok
    contact = emulator.control.state(as_token=TOKEN)["contact"][0]["id"]
    item = queue.enqueue_update(mirror_engine, "contact", int(contact), {"title": "CTO"})
    emulator.control.add_fault(kind="status", status=400, method="PUT", path="^/contact/")
    policy = Policy(table=SWAPPED) if table == "swapped" else None
    settings = Settings(push=PushSettings(concurrency=1))
    report = push(mirror_engine, api_client, settings, policy=policy)
    got = queue.get_item(mirror_engine, item.id)
    pause = server_pause.get(mirror_engine)
    if policy is None:  # a 400: the item is dead-lettered, the server is not paused
        assert (report.failed, got.state, got.attempts, pause) == (1, "failed", 1, None)
    else:
        assert (report.failed, report.retry_later, got.state, got.attempts) == (0, 1, "pending", 0)
        assert pause is not None and report.stopped is not None and re.search("paused until", report.stopped)


def test_a_rate_limited_photo_pauses_every_request_as_a_listing_does(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    # Before the health owner, photos stopped at a 429 but never set the pause: the push went on.
    emulator.control.add_fault(kind="status", status=429, retry_after=90, path="^/getcphoto/")
    before = datetime.now(UTC)
    report = pull(mirror_engine, api_client, settings=Settings.model_validate({"pull": {"photos": True}}))
    assert report.ok and report.photos is not None and report.photos.failed == 1
    pause = server_pause.get(mirror_engine)
    assert pause is not None and pause.not_before >= before + timedelta(seconds=90)
