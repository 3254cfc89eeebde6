"""When the server refuses (issue 11, "fail fast and say why"): redirects, login pages, a refused
token, a lying Content-Encoding, 429 without Retry-After and a dead server, end to end against the
emulator's faults over loopback, on SQLite and PostgreSQL: what the pull, the push and `check` do.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Sleeps
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from clevertim_sync import resources
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.listing import Listing
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import pause as server_pause
from clevertim_sync.mirror import schema
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import ClevertimSettings, PushSettings, Settings, load
from clevertim_sync.writeback import queue
from clevertim_sync.writeback.worker import push

# the client's own retries meet the server's refusals
pytestmark = pytest.mark.api_client(read_retries=2)

TOKEN = "test-token"  # the `emulator` fixture's owner token (tests/conftest.py)
FIRST = resources.PULL_ORDER[0]
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def api_requests(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return emulator.control.requests()


def run_row(engine: Engine, run_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(schema.runs).where(schema.runs.c.id == run_id)).one()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the pull ------------------------------------------------------------------------------------


def test_a_redirect_stops_the_pull_at_once_is_not_followed_and_names_the_location(
    mirror_engine: Engine, emulator: EmulatorServer, api_client: ClevertimClient, sleeps: Sleeps
) -> None:
    # Another host listens: the token must never reach it.
    with socket.socket() as elsewhere:
        elsewhere.bind(("127.0.0.1", 0))
        elsewhere.listen()
        elsewhere.setblocking(False)
        location = f"http://127.0.0.1:{elsewhere.getsockname()[1]}/api/{FIRST}"
        emulator.control.add_fault(method="GET", path=".*", kind="redirect", status=301, location=location)
        report = pull(mirror_engine, api_client)
        with pytest.raises(BlockingIOError):
            elsewhere.accept()  # nobody came
    assert len(api_requests(emulator)) == 1 and sleeps == []  # neither retried nor followed
    assert report.failed == [FIRST] and report.skipped == list(resources.PULL_ORDER[1:])
    error = report.resources[FIRST].error or ""
    assert location in error and "clevertim.url" in error
    assert report.halted and "Redirected" in report.halted
    row = run_row(mirror_engine, report.run_id)
    assert row.status == "failed" and location in row.error


@pytest.mark.parametrize("status", [200, 401, 403])
def test_a_login_page_stops_the_pull_at_the_first_one(
    mirror_engine: Engine, emulator: EmulatorServer, api_client: ClevertimClient, sleeps: Sleeps, status: int
) -> None:
    emulator.control.add_fault(method="GET", path=".*", kind="login_page", status=status)
    report = pull(mirror_engine, api_client)
    assert len(api_requests(emulator)) == 1 and sleeps == []
    assert report.failed == [FIRST] and len(report.skipped) == len(resources.PULL_ORDER) - 1
    assert "login page" in (report.resources[FIRST].error or "")


def test_a_refused_token_stops_the_pull_and_a_rotated_token_file_is_read_before_the_next(
    mirror_engine: Engine, emulator: EmulatorServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("revoked-token\n")
    settings = load(env={"CLEVERTIM_URL": emulator.base_url, "CLEVERTIM_TOKEN_FILE": str(token_file)})
    with ClevertimClient.from_settings(settings, sleep=lambda _: None) as client:
        refused = pull(mirror_engine, client)
        assert refused.failed == [FIRST] and refused.skipped
        assert "HTTP 401" in (refused.resources[FIRST].error or "")
        assert len(api_requests(emulator)) == 1
        token_file.write_text(f"{TOKEN}\n")  # rotated, no reload, the same client
        assert pull(mirror_engine, client).ok


def test_a_lying_content_encoding_on_a_listing_is_retried(
    mirror_engine: Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    emulator.control.add_fault(method="GET", path="^/contact$", kind="bad_encoding", times=1)
    assert pull(mirror_engine, api_client).ok
    assert [r["fault"] for r in api_requests(emulator) if r["resource"] == "contact"] == [
        "bad_encoding",
        None,
    ]


def test_a_429_without_retry_after_waits_the_floor_and_pauses_the_whole_pull_and_the_push(
    mirror_engine: Engine, emulator: EmulatorServer, sleeps: Sleeps
) -> None:
    settings = Settings(clevertim=ClevertimSettings(url=emulator.base_url, rate_limit_floor=45.0))
    emulator.control.add_fault(method="GET", path=".*", kind="status", status=429)
    with ClevertimClient(
        emulator.base_url, TOKEN, read_retries=2, rate_limit_floor=45.0, sleep=sleeps.append
    ) as client:
        before = datetime.now(UTC)
        report = pull(mirror_engine, client, settings=settings)
    seen = api_requests(emulator)
    assert {r["resource"] for r in seen} == {FIRST} and len(seen) == 3  # never moved on
    assert sleeps and all(s >= 45.0 for s in sleeps)  # not ~0.5 s and ~1 s
    assert report.skipped == list(resources.PULL_ORDER[1:]) and "rate limited" in (report.halted or "")
    pause = server_pause.get(mirror_engine)
    assert pause is not None and pause.not_before >= before + timedelta(seconds=45)

    # The push shares the pause: nothing goes out before it ends.
    emulator.control.clear_faults()
    queue.enqueue_create(mirror_engine, "company", {"cn": "Paused Co"})
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0) as client:
        pushed = push(mirror_engine, client, Settings())
    assert pushed.paused_until is not None and pushed.claimed == 0
    assert all(r["method"] == "GET" for r in api_requests(emulator))


def test_a_dead_server_is_given_up_after_the_first_resource(mirror_engine: Engine, sleeps: Sleeps) -> None:
    calls: list[str] = []
    with ClevertimClient(
        f"http://127.0.0.1:{closed_port()}/api", TOKEN, read_retries=5, connect_retries=2, sleep=sleeps.append
    ) as client:
        real_listing = client.listing

        def counted(resource: str) -> Listing:
            calls.append(resource)
            return real_listing(resource)

        client.listing = counted  # type: ignore[method-assign]
        report = pull(mirror_engine, client)
    assert calls == [FIRST] and len(sleeps) == 2  # one resource, three tries, then one message
    assert report.skipped == list(resources.PULL_ORDER[1:]) and "TransportError" in (report.halted or "")
    assert "could not connect" in (report.resources[FIRST].error or "")


def test_a_pull_against_a_closed_port_ends_quickly_with_the_default_settings(mirror_engine: Engine) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api"
    settings = Settings(clevertim=ClevertimSettings(url=url, token=SecretStr(TOKEN)))
    started = time.monotonic()
    with ClevertimClient.from_settings(settings) as client:  # real sleeps, default retries
        report = pull(mirror_engine, client, settings=settings)
    assert time.monotonic() - started < 20  # was ~90 s: 10 resources x 6 tries
    assert report.status == "failed" and len(report.skipped) == len(resources.PULL_ORDER) - 1


# --- the push ------------------------------------------------------------------------------------


def push_settings(**options: Any) -> Settings:
    return Settings(push=PushSettings(**{"concurrency": 2, "backoff_base": 10.0, **options}))


def writes(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [r for r in api_requests(emulator) if r["method"] in ("POST", "PUT", "DELETE")]


def test_a_redirect_on_a_write_stops_the_push_and_keeps_the_item_as_it_was(
    pulled_engine: Engine, emulator: EmulatorServer
) -> None:
    first = queue.enqueue_create(pulled_engine, "company", {"cn": "Redirected Co"})
    second = queue.enqueue_create(pulled_engine, "company", {"cn": "Second Co"})
    emulator.control.add_fault(method="POST", path=".*", kind="redirect", status=307, location="/login")
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0) as client:
        report = push(pulled_engine, client, push_settings(concurrency=1), now=T0)
    assert not report.ok and report.halted and "/login" in report.halted and report.failed == 0
    assert len(writes(emulator)) == 1  # the first answer stopped the push
    for item in (first, second):
        got = queue.get_item(pulled_engine, item.id)
        assert got.state == "pending" and got.attempts == 0
    assert server_pause.get(pulled_engine) is None  # a fixed URL goes at once

    emulator.control.clear_faults()
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0) as client:
        assert push(pulled_engine, client, push_settings(), now=T0).done == 2


@pytest.mark.parametrize("kind", ["login_page", "status401"])
def test_a_refused_token_pauses_the_push_without_dead_lettering(
    pulled_engine: Engine, emulator: EmulatorServer, kind: str
) -> None:
    item = queue.enqueue_create(pulled_engine, "company", {"cn": "Refused Co"})
    if kind == "login_page":
        emulator.control.add_fault(method="POST", path=".*", kind="login_page", status=403)
        token = TOKEN
    else:
        token = "revoked-token"
    with ClevertimClient(emulator.base_url, token, read_retries=0) as client:
        report = push(pulled_engine, client, push_settings(), now=T0)
    assert not report.ok and report.halted and "token" in report.halted and report.failed == 0
    got = queue.get_item(pulled_engine, item.id)
    assert got.state == "pending" and got.attempts == 0  # not dead-lettered: nothing to retry by hand
    pause = server_pause.get(pulled_engine)
    assert pause is not None and pause.not_before > T0
    with ClevertimClient(emulator.base_url, token, read_retries=0) as client:
        assert push(pulled_engine, client, push_settings(), now=T0).claimed == 0  # paused: nothing sent
    assert len(writes(emulator)) == 1

    emulator.control.clear_faults()
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0) as client:
        later = push(pulled_engine, client, push_settings(), now=pause.not_before + timedelta(seconds=1))
    assert later.done == 1 and server_pause.get(pulled_engine) is None


def test_a_lying_content_encoding_on_a_create_is_reconciled_never_sent_twice(
    pulled_engine: Engine, emulator: EmulatorServer
) -> None:
    item = queue.enqueue_create(pulled_engine, "company", {"cn": "Gzip Liar Co"})
    emulator.control.add_fault(method="POST", path="^/company$", kind="bad_encoding", times=1)
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0) as client:
        first = push(pulled_engine, client, push_settings(), now=T0)
        assert first.retry_later == 1 and not first.errors  # not an internal error
        assert queue.get_item(pulled_engine, item.id).state == "reconcile"
        second = push(pulled_engine, client, push_settings(), now=T0 + timedelta(hours=1))
    assert second.adopted == 1
    made = [c for c in emulator.control.state()["company"] if c.get("cn") == "Gzip Liar Co"]
    assert len(made) == 1 and len([w for w in writes(emulator) if w["method"] == "POST"]) == 1
    assert queue.get_item(pulled_engine, item.id).remote_id == made[0]["id"]


def test_a_429_without_retry_after_pauses_the_push_for_at_least_the_floor(
    pulled_engine: Engine, emulator: EmulatorServer
) -> None:
    queue.enqueue_create(pulled_engine, "company", {"cn": "Limited Co"})
    emulator.control.add_fault(method="POST", path=".*", kind="status", status=429, times=1)
    settings = push_settings(backoff_base=0.01).model_copy(
        update={"clevertim": ClevertimSettings(rate_limit_floor=90.0)}
    )
    with ClevertimClient(emulator.base_url, TOKEN, read_retries=0) as client:
        report = push(pulled_engine, client, settings, now=T0)
    assert report.paused_until is not None and report.paused_until >= T0 + timedelta(seconds=90)
    assert report.ok  # a pause the server asked for is not a failure


# --- check -----------------------------------------------------------------------------------------


def check_api(
    cli_process: Callable[..., subprocess.CompletedProcess[str]], database_url: str
) -> tuple[bool, str, float]:
    started = time.monotonic()
    done = cli_process(database_url, "check", "--json")
    took = time.monotonic() - started
    found = {f["check"]: (f["ok"], f["detail"]) for f in json.loads(done.stdout)}
    return (*found["api"], took)


def test_check_names_a_redirect_a_login_page_and_a_dead_server(
    emulator: EmulatorServer,
    database_url: str,
    cli_process: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    emulator.control.add_fault(
        method="GET", path=".*", kind="redirect", location="https://www.example.com/api/user"
    )
    ok, detail, _ = check_api(cli_process, database_url)
    assert not ok and "https://www.example.com/api/user" in detail and "not followed" in detail
    emulator.control.clear_faults()
    emulator.control.add_fault(method="GET", path=".*", kind="login_page")
    ok, detail, _ = check_api(cli_process, database_url)
    assert not ok and "login page" in detail and "token" in detail


def test_check_reports_a_dead_server_quickly(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
    env |= {
        "CLEVERTIM_URL": f"http://127.0.0.1:{closed_port()}/api",
        "CLEVERTIM_TOKEN": TOKEN,
        "CLEVERTIM_SYNC_DATABASE_URL": database_url,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "clevertim_sync", "check", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 20
    api = next(f for f in json.loads(done.stdout) if f["check"] == "api")
    assert not api["ok"] and "could not connect" in api["detail"]


def test_http_proxy_from_the_environment_is_used(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator stands in for the proxy: a host that does not resolve is reached through it.
    proxy = emulator.base_url.removesuffix("/api")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with ClevertimClient("http://crm.invalid/api", TOKEN, allow_insecure_http=True, read_retries=0) as client:
        assert len(client.list("user")) == 8
    assert [r["path"] for r in api_requests(emulator)] == ["/api/user"]


def test_sync_says_why_the_rest_was_skipped_in_one_line(
    emulator: EmulatorServer, database_url: str, cli_runner: Callable[..., Any]
) -> None:
    run = cli_runner(database_url)
    emulator.control.add_fault(
        method="GET", path=".*", kind="redirect", location="https://clevertim.example/x"
    )
    result = run("sync", code=1)
    said = [line for line in result.output.splitlines() if line.startswith("clevertim-sync:")]
    skipped = [line for line in said if "skipped" in line]
    assert len(skipped) == 1 and "Redirected" in skipped[0] and "comment" in skipped[0]
    assert "https://clevertim.example/x" in result.output


def test_a_cli_push_beside_a_running_daemon_goes_on_without_the_lock(
    emulator: EmulatorServer,
    migrated_database_url: str,
    mirror_engine: Engine,
    cli_runner: Callable[..., Any],
) -> None:
    from clevertim_sync.mirror import lock as instance_lock  # noqa: PLC0415

    run = cli_runner(migrated_database_url)
    run("sync", code=0)
    item = queue.enqueue_create(mirror_engine, "company", {"cn": "Beside The Daemon Co"})
    held = instance_lock.acquire(migrated_database_url)  # as a running daemon holds it
    try:
        run("push", code=0)
    finally:
        held.release()
    got = queue.get_item(mirror_engine, item.id)
    assert got.state == "done"
