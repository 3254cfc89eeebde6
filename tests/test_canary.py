"""The canary: distinctive values seeded in every property and child list of the emulator's
records (and as plain strings where objects are expected) must never come out of the mirror
except where the user asks for them (export, backups, Datasette, reports).

Every path that reports on a listing is driven: a pull at log level debug, an unparseable body,
an HTML page, a truncated body, a failing resource, `status`, the daemon at debug level with its
alerts sent to a real local receiver and its sd_notify lines, and `probe --report --capture`.
Every output is then scanned for the canary: stdout and stderr, the daemon's log, the notify
socket, `last_error` and the other error rows of the database, the alert bodies, the report and
the capture files."""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import EMULATOR_TOKEN, CliInvoke, wait_for
from support.daemon import Daemon, config
from support.webhook import Receiver

from clevertim_sync import resources
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.resources import Kind
from clevertim_sync.writeback.tables import writeback_queue

CANARY = "Qz7canary"  # in every seed: found anywhere (even cut short), it is a leak
_IDS = Kind.INT, Kind.REF, Kind.TEXT_REF, Kind.INT_LIST  # ids and references: not personal
# Bookkeeping the mirror and the emulator rely on (ids, times, who sees a record): left as they are.
_KEPT = frozenset({"id", "lm", "ao", "userId", "gid", "is_company", "is_private"})


def _seeds() -> Iterator[str]:
    """Distinctive values of the shapes personal data takes: a name, an e-mail, a phone, a text."""
    # With a NUL: a value PostgreSQL's text refuses, so that a database error is driven too.
    shapes = ("{} Smith", "{}@example.org", "+44 7700 {}", "<p>Call {} back</p>", "{}", "{}\x00 Jr")
    for n in itertools.count():
        yield shapes[n % len(shapes)].format(f"{CANARY}{n:03d}x")


def _canary_value(prop: resources.Prop, seed: Callable[[], str]) -> Any:
    kind = prop.kind
    if kind is Kind.STR_LIST:
        return [seed(), seed()]
    if kind is Kind.PHONES:  # an entry as the API serves it, and one as a plain string
        return [{"type": seed(), "no": seed()}, seed()]
    if kind is Kind.SMIDS:
        return [{"type": seed(), "smid": seed()}, seed()]
    return seed()  # a text; and a plain string where a number, a date or an object is expected


def seed_canaries(emulator: EmulatorServer) -> int:
    """Every property but ids of one record per resource holds a canary; returns how many."""
    seeds = _seeds()
    state = emulator.control.state(as_token=EMULATOR_TOKEN)
    planted = 0
    for res in resources.RESOURCES:
        records = state.get(res.name) or []
        if not records:
            continue
        record = records[0]  # the listing's first entry: what a quoted body would start with
        fields: dict[str, Any] = {}
        for prop in res.props:
            if prop.api in _KEPT or prop.kind in _IDS:
                continue
            if prop.kind is Kind.CUSTOM_FIELDS:
                keys = list(record.get(prop.api) or {}) or ["1"]
                fields[prop.api] = {key: next(seeds) for key in keys}
            else:
                fields[prop.api] = _canary_value(prop, lambda: next(seeds))
        # Properties the registry does not know, two of them named like closed sets.
        fields |= {"type": next(seeds), "status": next(seeds), "zz_unknown": next(seeds)}
        emulator.control.update(res.name, record["id"], fields)
        planted += len(fields)
    return planted


def _error_rows(database_url: str) -> str:
    """What the mirror keeps about failures (not the records it keeps: a photo's cphoto is one)."""
    columns = (
        schema.resource_status.c.resource,
        schema.resource_status.c.last_error,
        schema.runs.c.error,
        schema.alert_state.c.detail,
        schema.contact_photos.c.last_error,
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = [list(conn.execute(sa.select(column)).scalars()) for column in columns]
    finally:
        engine.dispose()
    return json.dumps(rows, default=str)


def _leaks(where: str, text: str) -> list[str]:
    return [f"{where}: …{text[max(0, at - 60) : at + 60]}…" for at in _find_all(text, CANARY)][:3]


def _find_all(text: str, needle: str) -> Iterator[int]:
    at = text.find(needle)
    while at >= 0:
        yield at
        at = text.find(needle, at + 1)


def test_nothing_a_record_holds_leaves_the_mirror_on_any_path_that_reports_on_a_listing(
    emulator: EmulatorServer,
    cli_runner: Callable[..., CliInvoke],
    database_url: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    assert seed_canaries(emulator) > 100
    outputs: dict[str, str] = {}
    cli_config = tmp_path / "cli.toml"  # no retries: a failure is told at once
    cli_config.write_text("[clevertim]\nread_retries = 0\n[pull]\nphotos = true\n")
    invoke = cli_runner(database_url, CLEVERTIM_SYNC_LOG_LEVEL="debug")

    def run(*args: str) -> Any:
        return invoke("--config", str(cli_config), *args)

    # A pull that goes well, at debug level: the canaries are mirrored, and told nowhere. The
    # photos fail (a contact's cphoto is a canary): their last_error is scanned.
    emulator.control.add_fault(kind="status", status=503, path="^/getcphoto/", times=None)
    result = run("sync")  # (a resource may fail on a NUL: what is told of it is scanned)
    assert '"level":"debug"' in result.output and "pull.finished" in result.output, result.output
    outputs["sync (debug)"] = result.output
    # Then every way a listing can be broken or refused, each on its own resource.
    faults = {
        "contact": {"kind": "broken_listing"},  # a complete body of invalid JSON
        "company": {"kind": "html"},  # a proxy's HTML page
        "opportunity": {"kind": "truncate"},  # cut short of its Content-Length
        "task": {"kind": "status", "status": 500},  # a failing resource
        "note": {"kind": "bad_encoding"},  # says gzip, is not
    }
    for name, spec in faults.items():
        emulator.control.add_fault(**spec, path=f"^/{name}$", times=None)
    result = run("sync")
    assert result.exit_code != 0
    outputs["sync (faults)"] = result.output
    outputs["status"] = run("status").output
    rows = _error_rows(database_url)
    assert all(name in rows for name in faults)  # each failure was recorded...
    if database_url.startswith("sqlite"):  # (on PostgreSQL a NUL may have failed the contacts)
        assert "HTTP 503" in rows  # ...the photos' too
    outputs["error rows"] = rows  # ...and is scanned below

    # The daemon at debug level, its alerts to a real receiver, its sd_notify lines.
    daemon = Daemon(
        tmp_path,
        "daemon",
        config(
            emulator.base_url,
            database_url,
            pull=1,
            extra=f'[alerts]\nurls = ["{receiver.url}"]\nfailures = 1\ninterval = 1\n',
        ).replace('log_format = "json"\n', 'log_format = "json"\nlog_level = "debug"\n', 1),
    )
    try:
        daemon.ready()
        wait_for(receiver.titles, "the alert", 60)
        wait_for(lambda: any("pull" in line for line in daemon.notify.lines()), "a STATUS= line", 30)
        daemon.signal(signal.SIGTERM)
        daemon.wait(30)
    finally:
        daemon.close()
    assert any(e["level"] == "debug" for e in daemon.events()), daemon.output()[:3000]  # at debug level
    outputs["daemon log"] = daemon.output()
    outputs["notify"] = "\n".join(daemon.notify.lines())
    outputs["alerts"] = json.dumps(receiver.messages)
    assert "pulls failing" in outputs["alerts"]
    outputs["error rows after the daemon"] = _error_rows(database_url)

    # The probe, while the faults last (its endpoint errors) and once they are gone (its shapes).
    for when in ("faults", "clean"):
        report, capture = tmp_path / f"probe-{when}.json", tmp_path / f"capture-{when}"
        result = run("probe", "--report", str(report), "--capture", str(capture))
        outputs[f"probe output ({when})"] = result.output
        outputs[f"probe report ({when})"] = report.read_text(encoding="utf-8")
        for path in sorted(capture.iterdir()):
            outputs[f"capture {when} {path.name}"] = path.read_text(encoding="utf-8")
        emulator.control.clear_faults()
    assert "endpoint_error" in outputs["probe report (faults)"]

    leaks = [leak for where, text in outputs.items() for leak in _leaks(where, text)]
    assert leaks == []
    # The scan looked at the real thing: the mirror does hold the canaries (export may show them).
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            raws = conn.execute(sa.select(schema.CURRENT["user"].c.raw)).scalars().all()
    finally:
        engine.dispose()
    assert any(CANARY in raw for raw in raws)


def test_a_write_refused_with_a_message_quoting_a_record_is_told_without_it_but_the_queue_keeps_it(
    emulator: EmulatorServer,
    cli_runner: Callable[..., CliInvoke],
    database_url: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    """Clevertim refusing a write (or a photo) may echo the record's values in its error text:
    that text stays on the queue item (`queue show`, `queue list`: the user's own queue), and
    goes to no log, alert, `status` or error row."""
    contact = emulator.control.state(as_token=EMULATOR_TOKEN)["contact"][1]
    email = f"{CANARY}jane@acme.example"
    emulator.control.update("contact", contact["id"], {"email": [email], "cphoto": "jane.jpg"})
    cli_config = tmp_path / "cli.toml"
    cli_config.write_text(f'[alerts]\nurls = ["{receiver.url}"]\nfailures = 1\n[pull]\nphotos = true\n')
    invoke = cli_runner(database_url, CLEVERTIM_SYNC_LOG_LEVEL="debug")

    def run(*args: str, code: int | None = None) -> Any:
        return invoke("--config", str(cli_config), *args, code=code)

    said = f"invalid email {email!r}: did you mean {email}.com?"
    outputs: dict[str, str] = {}
    emulator.control.add_fault(kind="status", status=400, path="^/getcphoto/", message=said)
    outputs["sync (debug)"] = run("sync", "--resource", "contact", code=0).output
    run("edit", "update", "contact", str(contact["id"]), "--set", "title=Refused", code=0)
    emulator.control.add_fault(kind="status", status=400, method="PUT", path="^/contact/", message=said)
    result = run("push", "--json")
    assert result.exit_code == 1 and '"level":"debug"' in result.output, result.output
    outputs["push (debug)"] = result.output
    outputs["push again"] = run("push").output  # the failed item, told again by the alerts' evaluation
    outputs["status"] = run("status").output
    outputs["alerts status"] = run("alerts", "status").output
    outputs["alerts"] = json.dumps(receiver.messages)
    assert "failed" in outputs["alerts"]  # the queue's alert went out, and is scanned
    outputs["error rows"] = _error_rows(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            item = conn.execute(sa.select(writeback_queue)).one()
    finally:
        engine.dispose()
    outputs["the item's last_error"] = item.last_error
    assert [leak for where, text in outputs.items() for leak in _leaks(where, text)] == []
    # Told by its length, beside what happened.
    assert "HTTP 400" in item.last_error and f"({len(said)} characters)" in item.last_error
    assert f"(HTTP 400) - the server's message ({len(said)} characters)" in outputs["error rows"]
    # Where the user looks at their own queue, the server's words are there in full.
    assert item.server_message == said
    assert said in run("queue", "show", str(item.id), code=0).output
    assert said in run("queue", "list", code=0).output
