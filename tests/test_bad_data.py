"""One odd entry never fails a resource, and `raw` is what was served (issue 18, the data half).

Each listing here is served byte for byte by the emulator (`verbatim_listing`) and pulled into a
real SQLite file and a real PostgreSQL database (`mirror_engine`), as a pull meets it.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from clevertim_sync import jsontext
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.listing import Listing
from clevertim_sync.daemon.jobs import JobOutcome
from clevertim_sync.daemon.metrics import DaemonMetrics
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror import schema
from clevertim_sync.pull import pipeline
from clevertim_sync.pull.pipeline import PullReport, pull
from clevertim_sync.reporting.reports import REPORTS, run_report
from clevertim_sync.survey.probe import probe

TOKEN = "test-token"


def entry(value: Any) -> bytes:
    """One entry's JSON text as a Python server writes it: NUL and lone surrogates as escapes,
    integers of any size exactly."""
    return json.dumps(value).encode()


def serve(emulator: EmulatorServer, resource: str, entries: list[bytes]) -> None:
    body = b'{"status": "OK", "content": [' + b", ".join(entries) + b"]}"
    emulator.control.add_fault(
        kind="verbatim_listing",
        method="GET",
        path=f"^/{resource}$",
        body_base64=base64.b64encode(body).decode(),
    )


def pulled(engine: sa.Engine, emulator: EmulatorServer, *names: str) -> PullReport:
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        return pull(engine, client, resources=list(names))


def raws(engine: sa.Engine, resource: str) -> dict[Any, Any]:
    table = schema.CURRENT[resource]
    with engine.connect() as conn:
        return {r.id: jsontext.loads(r.raw) for r in conn.execute(sa.select(table.c.id, table.c.raw))}


def column(engine: sa.Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(sql).scalars())


GOOD = [{"id": i, "fn": f"Good {i}", "lm": "2020-01-01T00:00:00Z"} for i in (1, 2, 3)]


def test_a_nul_anywhere_is_u_fffd_in_typed_columns_and_child_rows_and_exact_in_raw(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    odd = {
        "id": 9,
        "fn": "Ad\x00a",
        "email": ["a\x00@example.com"],
        "tags": ["x\x00"],
        "phones": [{"type": "Work", "no": "+44\x001"}],
        "cf": {"3": "gold\x00", "4": ["a\x00", "b"]},
        "lm": "2020-01-01T00:00:00Z",
    }
    serve(emulator, "contact", [*map(entry, GOOD), entry(odd)])
    report = pulled(mirror_engine, emulator, "contact")
    counts = report.resources["contact"]
    assert report.ok, counts.error
    assert (counts.inserted, counts.bad_entries) == (4, {"odd_text": 1})
    assert raws(mirror_engine, "contact")[9] == odd  # raw: exactly as served
    assert column(mirror_engine, "SELECT first_name FROM contacts WHERE id = 9") == ["Ad\ufffda"]
    assert column(mirror_engine, "SELECT value FROM contact_emails") == ["a\ufffd@example.com"]
    assert column(mirror_engine, "SELECT value FROM contact_tags") == ["x\ufffd"]
    assert column(mirror_engine, "SELECT number FROM contact_phones") == ["+44\ufffd1"]
    values = "SELECT value FROM contact_custom_values ORDER BY custom_field_id, position"
    assert column(mirror_engine, values) == ["gold\ufffd", "a\ufffd", "b"]
    again = pulled(mirror_engine, emulator, "contact").resources["contact"]
    assert (again.unchanged, again.updated, again.bad_entries) == (4, 0, {"odd_text": 1})


def test_lone_surrogates_and_bytes_not_utf8_do_not_refuse_the_listing(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    surrogate = {"id": 8, "fn": "\ud800", "ln": "x\udfffy", "tags": ["\udc00"], "lm": "2020-01-01T00:00:00Z"}
    not_utf8 = b'{"id": 7, "fn": "Caf\xe9", "ln": "ok"}'
    serve(emulator, "contact", [*map(entry, GOOD), entry(surrogate), not_utf8])
    report = pulled(mirror_engine, emulator, "contact")
    counts = report.resources["contact"]
    assert report.ok, counts.error
    assert counts.inserted == 5 and counts.bad_entries == {"odd_text": 1, "not_utf8": 1}
    stored = raws(mirror_engine, "contact")
    assert stored[8] == surrogate  # the escapes kept in raw's JSON text
    assert stored[7] == {"id": 7, "fn": "Caf\ufffd", "ln": "ok"}  # raw is text: U+FFFD there too
    names = "SELECT first_name, last_name FROM contacts WHERE id IN (7, 8) ORDER BY id"
    with mirror_engine.connect() as conn:
        assert [tuple(r) for r in conn.exec_driver_sql(names)] == [
            ("Caf\ufffd", "ok"),
            ("\ufffd", "x\ufffdy"),
        ]
    assert column(mirror_engine, "SELECT value FROM contact_tags") == ["\ufffd"]


def test_deep_nesting_is_kept_or_left_out_and_the_next_resource_is_pulled(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    kept = {"id": 5, "fn": "Deep", "x": json.loads("[" * 300 + "]" * 300)}  # past orjson's 254
    too_deep = b'{"id": 6, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    serve(emulator, "contact", [*map(entry, GOOD), entry(kept), too_deep])
    report = pulled(mirror_engine, emulator, "contact", "note")
    assert report.ok and set(report.resources) == {"contact", "note"}
    counts = report.resources["contact"]
    assert counts.inserted == 4 and counts.bad_entries == {"unreadable": 1} and counts.skipped == 1
    assert raws(mirror_engine, "contact")[5] == kept
    assert report.resources["note"].inserted > 0


def test_an_id_served_twice_keeps_the_newest_copy_whatever_the_order(
    mirror_engine: sa.Engine, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same copy wins in any order and across batches, and a repeated listing records no
    change (no history row, no update)."""
    monkeypatch.setattr(pipeline, "BATCH", 2)  # the two copies in different batches too
    old = {"id": 1, "fn": "Old", "lm": "2020-01-01T00:00:00Z"}
    new = {"id": 1, "fn": "New", "lm": "2021-01-01T00:00:00Z"}
    others = [entry(r) for r in GOOD[1:]]
    for first, second in ((old, new), (new, old), (old, new)):
        serve(emulator, "contact", [entry(first), *others, entry(second)])
        counts = pulled(mirror_engine, emulator, "contact").resources["contact"]
        emulator.control.clear_faults()
        assert counts.error is None and counts.bad_entries == {"duplicate_id": 1}
        assert raws(mirror_engine, "contact")[1] == new
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, 3)
    history = "SELECT op FROM history WHERE resource = 'contact' AND record_id = 1 ORDER BY id"
    assert column(mirror_engine, history) == ["insert"]  # served twice three times: no change


def test_raw_and_export_are_what_was_served(
    mirror_engine: sa.Engine, emulator: EmulatorServer, tmp_path: Path
) -> None:
    served = {"id": "445", "fn": "Big", "n": 123456789012345678901234567890, "f": 0.1, "g": -1e300}
    serve(emulator, "contact", [*map(entry, GOOD), entry(served), b'{"id": 446, "h": 1e400}'])
    file = {"id": 1441, "name": "a.pdf", "parentId": "f1001"}
    serve(emulator, "file", [entry(file)])
    report = pulled(mirror_engine, emulator, "contact", "file")
    assert report.ok, report.failed
    contacts = raws(mirror_engine, "contact")
    assert contacts[445] == served and contacts[446] == {"id": 446, "h": 10**400}
    assert raws(mirror_engine, "file") == {"1441": file}  # the typed id is text, raw keeps 1441
    with mirror_engine.connect() as conn:
        from clevertim_sync.mirror.store import export_jsonl  # noqa: PLC0415

        export_jsonl(conn, tmp_path)
    exported = [jsontext.loads(line) for line in (tmp_path / "contact.jsonl").read_bytes().splitlines()]
    assert served in exported
    assert [orjson.loads(line) for line in (tmp_path / "file.jsonl").read_bytes().splitlines()] == [file]
    for name in REPORTS:  # nothing that reads raw fails on such records
        run_report(mirror_engine, name)


def test_entries_that_are_no_objects_are_left_out_and_reported(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    serve(emulator, "contact", [*map(entry, GOOD), b"5", b'"text"', b"[1, 2]", b"null", b'{"fn": "no id"}'])
    counts = pulled(mirror_engine, emulator, "contact").resources["contact"]
    assert counts.error is None and counts.inserted == 3
    assert counts.bad_entries == {"not_object": 4, "no_id": 1} and counts.skipped == 5


class _Crashing:
    """The real client, but one resource's listing meets a bug (what no test data can provoke
    any longer): the seam `pull` takes its listings through."""

    def __init__(self, client: ClevertimClient, resource: str) -> None:
        self.client, self.resource = client, resource

    def listing(self, resource: str) -> Listing:
        if resource == self.resource:
            raise RuntimeError("a bug that quotes a record: Ada Lovelace")
        return self.client.listing(resource)


def test_an_unexpected_exception_fails_that_resource_and_the_run_goes_on(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    with ClevertimClient(emulator.base_url, TOKEN) as client, capture_logs() as logs:
        report = pull(mirror_engine, _Crashing(client, "company"), resources=["company", "contact"])
    crashed = [e for e in logs if e["event"] == "pull.resource_crashed"]
    assert crashed and crashed[0]["error_type"] == "RuntimeError" and "Lovelace" not in repr(logs)
    assert report.failed == ["company"] and report.resources["contact"].inserted > 0
    error = report.resources["company"].error or ""
    assert "RuntimeError" in error and "Lovelace" not in error
    with mirror_engine.connect() as conn:
        status = conn.execute(
            sa.select(schema.resource_status).where(schema.resource_status.c.resource == "company")
        ).one()
        run = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == report.run_id)).one()
    assert status.consecutive_failures == 1 and status.last_error == error
    assert run.status == "partial" and "company" in (run.error or "")


def test_a_listing_over_the_ceiling_fails_that_resource_with_a_clear_message(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    with ClevertimClient(emulator.base_url, TOKEN, max_listing_bytes=5000) as client:
        report = pull(mirror_engine, client, resources=["group", "contact"])
    assert report.failed == ["contact"] and report.resources["group"].error is None
    error = report.resources["contact"].error or ""
    assert "pull.max_listing_bytes (5000 bytes)" in error
    assert len(emulator.control.requests()) == 2  # not retried


def test_a_disk_that_fills_while_spooling_fails_that_resource(
    mirror_engine: sa.Engine, emulator: EmulatorServer, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tiny_disk / "filler").open("wb") as f, pytest.raises(OSError, match="No space"):  # noqa: PT012
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_disk))
    report = pulled(mirror_engine, emulator, "contact")
    error = report.resources["contact"].error or ""
    assert report.failed == ["contact"]
    assert (
        f"could not write the listing to a temporary file in {tiny_disk} (No space left on device)" in error
    )
    (tiny_disk / "filler").unlink()
    assert pulled(mirror_engine, emulator, "contact").ok


def test_bad_entries_are_shown_by_status_metrics_and_probe(
    mirror_engine: sa.Engine, emulator: EmulatorServer, migrated_database_url: str, cli_runner: Any
) -> None:
    twice = {"id": 2, "fn": "Again"}
    serve(emulator, "contact", [*map(entry, GOOD), entry({"id": 9, "fn": "N\x00L"}), entry(twice)])
    report = pulled(mirror_engine, emulator, "contact")
    assert report.resources["contact"].bad_entries == {"odd_text": 1, "duplicate_id": 1}
    out = cli_runner(migrated_database_url)("status", code=0).output
    assert "odd entries: 1 duplicate_id, 1 odd_text" in out

    metrics = DaemonMetrics(list)
    metrics.observe(JobOutcome("main", "pull", "ok", 1.0, result=report))
    text = metrics.exposition()[2].decode()
    labels = 'account="main",reason="{}",resource="contact"'
    assert f"clevertim_sync_bad_entries{{{labels.format('odd_text')}}} 1.0" in text
    assert f"clevertim_sync_bad_entries{{{labels.format('duplicate_id')}}} 1.0" in text
    assert f"clevertim_sync_bad_entries{{{labels.format('not_utf8')}}} 0.0" in text

    emulator.control.clear_faults()
    serve(
        emulator,
        "contact",
        [*map(entry, GOOD), entry(twice), entry({"id": 9, "fn": "\ud800"}), b'{"id": 4, "x": "\xff"}'],
    )
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        found = {f.key for f in probe(client, names=["contact"]).findings()}
    assert {"duplicate_id", "odd_text", "not_utf8"} <= found, found


def test_odd_entries_far_into_a_big_listing_are_read_window_by_window(tmp_path: Path) -> None:
    """A listing of several windows (api/listing.py): the cuts are still proven, the odd entries
    read exactly, whatever window they fall in."""
    good = [{"id": i, "fn": f"Name {i}", "phones": [{"type": "Work", "no": str(i)}] * 3} for i in range(4000)]
    odd: dict[int, tuple[bytes, Any]] = {
        700: (entry({"id": 700, "fn": "\ud800"}), {"id": 700, "fn": "\ud800"}),
        1500: (b'{"id": 1500, "fn": "caf\xe9"}', {"id": 1500, "fn": "caf\ufffd"}),
        2300: (entry({"id": 2300, "n": 2**70}), {"id": 2300, "n": 2**70}),
        3100: (entry({"id": 3100, "x": json.loads("[" * 300 + "]" * 300)}), None),
    }
    odd[3100] = (odd[3100][0], json.loads(odd[3100][0]))
    parts = [odd[r["id"]][0] if r["id"] in odd else entry(r) for r in good]
    body = b'{"status": "OK", "content": [' + b", ".join(parts) + b"]}"
    assert len(body) > 2 * (1 << 18)
    spool = (tmp_path / "body").open("w+b")
    spool.write(body)
    read = Listing.spooled("contact", spool)
    assert read is not None
    with read as listing:
        got = [r for batch in listing.batches(1000) for r in batch]
        findings = listing.findings
    want = [odd[r["id"]][1] if r["id"] in odd else r for r in good]
    assert got == want
    assert sorted(findings) == [("not_utf8", 1500), ("odd_text", 700)]


def test_an_unexpected_exception_in_the_dry_run_fails_that_resource_and_the_plan_goes_on(
    mirror_engine: sa.Engine, emulator: EmulatorServer
) -> None:
    with ClevertimClient(emulator.base_url, TOKEN) as client, capture_logs() as logs:
        plans = pipeline.plan_pull(
            mirror_engine, _Crashing(client, "company"), resources=["company", "contact"]
        )
    company, contact = plans
    assert contact.error is None and len(contact.inserts) > 0  # the next resource is planned
    error = company.error or ""
    # The error's class and where it happened, never its text.
    assert "unexpected RuntimeError while pulling company" in error and "test_bad_data.py:" in error
    assert "Lovelace" not in error and "Lovelace" not in repr(logs)
    crashed = [e for e in logs if e["event"] == "pull.resource_crashed"]
    assert crashed and crashed[0]["resource"] == "company" and crashed[0]["frames"]
    with mirror_engine.connect() as conn:  # a dry run writes nothing, a failure neither
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.resource_status)).scalar() == 0


class _FullDiskFile(io.BytesIO):
    """A temporary file on a disk that is full: every write fails, and so does the close that
    tries to flush what is left (what a real file's buffer does after a failed write)."""

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        super().close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_that_fails_the_spool_s_close_too_is_still_told_as_a_full_disk(
    mirror_engine: sa.Engine, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("clevertim_sync.api.client.spool_file", _FullDiskFile)
    report = pulled(mirror_engine, emulator, "contact")
    error = report.resources["contact"].error or ""
    assert report.failed == ["contact"] and "(No space left on device)" in error, error
    assert "unexpected" not in error
