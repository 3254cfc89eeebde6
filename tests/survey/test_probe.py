"""`clevertim-sync probe`, captures and `emulator --from`, against the real emulator over loopback.

What is proven here: a capture and a report hold none of the account's names, emails, phones,
addresses or texts; a capture served by `emulator --from` syncs into a mirror whose export is
the capture, record for record and byte for byte; the probe finds each variant of the API
reference's "Variants to expect" in a hand-made quirky capture (keyed by the stable finding
names of clevertim_sync.survey.probe); and nothing a server does (errors, HTML, a redirect, a body
whose Content-Encoding lies) stops the probe.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from clevertim_sync import resources, shapes
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.api.errors import NotFound, NotSupported
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.emulator.replay import Replay
from clevertim_sync.emulator.seed import CURRENCIES, OPP_STATUS, PHONE_TYPES
from clevertim_sync.survey.capture import (
    MANIFEST,
    TIMESTAMP_LIKE,
    Anonymiser,
    CaptureError,
    CaptureWriter,
    closed_props,
    load_capture,
)
from clevertim_sync.survey.probe import VARIANTS, Finding, ProbeResult, probe, summary

EMULATOR_TOKEN = "test-token"  # the `emulator` fixture's owner token
CliInvoke = Callable[..., Any]

# Properties whose strings are personal: names, emails, phones, addresses, texts, labels.
PERSONAL = frozenset(
    {
        "fn", "ln", "cn", "title", "fullname", "description", "user", "name", "desc", "hl", "comment",
        "location", "address", "city", "postcode", "region", "country", "email", "website", "tags",
        "no", "smid", "f", "s", "e", "t", "cf", "values", "cphoto", "link", "icon",
    }
)  # fmt: skip


def _personal_strings(value: Any, key: str | None, inside: bool = False) -> Iterator[tuple[str, str]]:
    """(property, string) for every string under a personal property (nested ones included)."""
    personal = inside or key in PERSONAL
    if isinstance(value, str):
        if personal and value:
            yield key or "", value
    elif isinstance(value, list):
        for v in value:
            yield from _personal_strings(v, key, personal)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _personal_strings(v, k, personal or k in PERSONAL)


def _kept_on_purpose(value: str) -> bool:
    """A custom field's id reference ("12"), date or currency code: kept by design."""
    return value.isdigit() or TIMESTAMP_LIKE.match(value) is not None or value in CURRENCIES


def _enum_values(originals: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The values of the closed sets the report and the capture copy on purpose."""
    found: set[str] = set()
    for name, records in originals.items():
        for rec in records:
            for key in closed_props(name):
                value = rec.get(key)
                items = value if isinstance(value, list) else [value]
                found.update(v for v in items if isinstance(v, str))  # phones: their types, below
            for label in ("phones", "smids"):
                found.update(item.get("type") for item in rec.get(label) or [])
    return found


def _assert_not_copied(originals: dict[str, list[dict[str, Any]]], text: str, where: str) -> None:
    """No personal original appears in `text`: a string of 6+ characters nowhere in it, a
    shorter one (4-5) not as a whole JSON string. (Shorter ones are checked per record.)"""
    checked = 0
    enums = _enum_values(originals)
    for name, records in originals.items():
        for rec in records:
            for key, original in _personal_strings(rec, None):
                if _kept_on_purpose(original) or original in enums:
                    continue  # e.g. a select field's option "Email" is also a task's atype
                escaped = orjson.dumps(original).decode()
                if len(original) >= 6:
                    assert escaped[1:-1] not in text, f"{where}: {name}.{key} {original!r} was copied"
                elif len(original) >= 4:
                    assert escaped not in text, f"{where}: {name}.{key} {original!r} was copied"
                checked += 1
    assert checked > 300  # the check looked at the account, not at nothing


@pytest.fixture
def run(cli_runner: Callable[..., CliInvoke], sqlite_url: str) -> CliInvoke:
    return cli_runner(sqlite_url)


def test_probe_report_and_capture_hold_no_personal_text(
    emulator: EmulatorServer, run: CliInvoke, tmp_path: Path
) -> None:
    originals = emulator.control.state()
    result = run("probe", "--capture", str(tmp_path / "cap"), code=0)
    report_path = tmp_path / f"clevertim-probe-{datetime.now(UTC):%Y-%m-%d}.json"  # the default name
    assert f"report: {report_path.name}" in result.output
    report_text = report_path.read_text(encoding="utf-8")
    capture_text = "".join(p.read_text(encoding="utf-8") for p in sorted((tmp_path / "cap").iterdir()))

    _assert_not_copied(originals, report_text, "report")
    _assert_not_copied(originals, capture_text, "capture")

    # Record by record: every personal string of the capture differs from its original, and
    # everything else (ids, references, numbers, booleans, timestamps, enums, key order) is kept.
    manifest = orjson.loads((tmp_path / "cap" / MANIFEST).read_bytes())
    seen = emulator.control.state(as_token=EMULATOR_TOKEN)
    for name in resources.PULL_ORDER:
        captured = orjson.loads((tmp_path / "cap" / f"{name}.json").read_bytes())["content"]
        assert manifest["resources"][name]["records"] == len(captured) == len(seen[name])
        for orig, fake in zip(seen[name], captured, strict=True):
            assert list(orig) == list(fake), "same keys in the same order"
            for key, value in orig.items():
                if key in PERSONAL:
                    _assert_same_shape_new_text(value, fake[key], f"{name} {orig['id']} {key}")
                elif key != "phones" and key != "smids":
                    assert fake[key] == value or key in ("app", "atypet"), (name, key)
            for label in ("phones", "smids"):
                for o, f in zip(orig.get(label) or [], fake.get(label) or [], strict=True):
                    assert o["type"] == f["type"]  # a closed set: kept
                    inner = "no" if label == "phones" else "smid"
                    _assert_same_shape_new_text(o[inner], f[inner], f"{name} {label}")
    report = orjson.loads(report_text)
    ctype = report["resources"]["contact"]["properties"]["ctype"]["values"]
    assert set(ctype) <= resources.CUSTOMER_TYPES  # enum values are copied into the report
    fn = report["resources"]["contact"]["properties"]["fn"]
    assert "values" not in fn and fn["formats"]  # a name only by its shape


def _assert_same_shape_new_text(orig: Any, fake: Any, where: str) -> None:
    if isinstance(orig, str):
        assert isinstance(fake, str), where
        assert len(fake) == len(orig), where
        if orig and not _kept_on_purpose(orig):
            assert fake != orig, f"{where}: {orig!r} kept"
        if "@" in orig:
            assert fake.count("@") == orig.count("@") and fake.count(".") == orig.count("."), where
        assert [c.isdigit() for c in fake] == [c.isdigit() for c in orig], where  # phones stay phones
    elif isinstance(orig, list):
        assert isinstance(fake, list) and len(fake) == len(orig), where
        for o, f in zip(orig, fake, strict=True):
            _assert_same_shape_new_text(o, f, where)
    elif isinstance(orig, dict):
        assert isinstance(fake, dict) and list(fake) == list(orig), where
        for k in orig:
            if not (isinstance(orig[k], str) and orig[k].isdigit()):
                _assert_same_shape_new_text(orig[k], fake[k], where)
    else:
        assert fake == orig, where


def test_anonymiser_is_consistent_and_keeps_shapes() -> None:
    anon = Anonymiser(b"k" * 32)
    assert anon.text("Ana Smith") == anon.text("Ana Smith")
    assert Anonymiser(b"j" * 32).text("Ana Smith") != anon.text("Ana Smith")  # the key is per capture
    url = anon.text("https://www.acme.example/about")
    assert url.startswith("https://www.") and url != "https://www.acme.example/about"
    html = anon.text('<p>Call <a href="x">Bob</a> &amp; co</p>')
    assert html.startswith("<p>") and "<a " in html and "</a>" in html and "&amp;" in html
    assert "Bob" not in html and "Call" not in html
    assert anon.text("山田 太郎") != "山田 太郎" and len(anon.text("山田 太郎")) == 5
    rec = anon.record(
        "task",
        {"id": "17", "cust": ["445", 3], "startDate": {"y": "2024", "mo": 5}, "is_completed": "1",
         "atype": "Call", "name": "Ring Bob", "lm": "2024-01-02T03:04:05Z"},
    )  # fmt: skip
    assert rec["id"] == "17" and rec["cust"] == ["445", 3] and rec["startDate"] == {"y": "2024", "mo": 5}
    assert rec["is_completed"] == "1" and rec["atype"] == "Call" and rec["lm"] == "2024-01-02T03:04:05Z"
    assert rec["name"] != "Ring Bob" and len(rec["name"]) == len("Ring Bob")


def test_anonymiser_invents_every_digit_and_letter_whatever_its_script_and_moves_custom_dates() -> None:
    anon = Anonymiser(b"k" * 32)
    phones = {
        "Arabic-Indic": "+٤٤ ٧٧٠٠ ٩٠٠٤٦١",
        "Extended Arabic-Indic": "۰۷۷۰۰ ۹۰۰۴۶۱",
        "Devanagari": "+९१ ९८७६५ ४३२१०",
        "full-width": "０７７００ ９００４６１",
        "Bengali": "০১৭১১ ২২৩৩৪৪",
    }
    for script, phone in phones.items():
        fake = anon.text(phone)
        assert len(fake) == len(phone), script
        kept = [a for a, b in zip(phone, fake, strict=True) if a == b and a.isdigit()]
        assert len(kept) <= len([c for c in phone if c.isdigit()]) // 3, f"{script}: {phone} -> {fake}"
        # digits stay digits of their own script, the rest of the shape stays
        assert [unicodedata.name(c).split()[0] if c.isdigit() else c for c in fake] == [
            unicodedata.name(c).split()[0] if c.isdigit() else c for c in phone
        ], script
    # Every letter is invented, in scripts with a block of their own and in all others.
    for name in ("Ævar Þórsson", "Ṭhākur", "ยามาดะ", "Ŋgũgĩ"):
        fake = anon.text(name)
        letters = [c for c in name if c.isalpha()]
        kept = [a for a, b in zip(name, fake, strict=True) if a == b and a.isalpha()]
        assert len(kept) <= len(letters) // 3 and all(c.isalpha() for c in fake if c != " "), (name, fake)
    # A custom field of type date (a birthday): moved by 1 to 730 days; the same date the same way.
    anon.learn_custom_fields([{"id": 7, "elemType": "date"}, {"id": 8, "elemType": "input"}])
    rec = anon.record("contact", {"id": 1, "cf": {"7": "1984-02-29", "8": "2001-09-11T08:46:00Z"}})
    born, at = rec["cf"]["7"], rec["cf"]["8"]
    assert TIMESTAMP_LIKE.match(born) and born != "1984-02-29"
    assert 1 <= abs((date.fromisoformat(born) - date(1984, 2, 29)).days) <= 730
    assert at.endswith("T08:46:00Z") and at[:10] != "2001-09-11"
    assert anon.record("contact", {"id": 2, "cf": {"7": "1984-02-29"}})["cf"]["7"] == born
    # Outside custom values a date is the record's bookkeeping (lm, ao): kept.
    assert anon.record("contact", {"id": 1, "lm": "2024-01-02T03:04:05Z"})["lm"] == "2024-01-02T03:04:05Z"


# Values in places a closed set is, or is thought to be: none of them may reach the report.
CLOSED_LOOKALIKES = {
    "phones": ["+44 7700 900461", "Zebulon mobile 07700"],  # phones served as plain strings
    "type": "Zebulon",  # a short value of an undeclared property named `type`
    "status": "Qwertyuiop",  # ... and `status`: on a contact, neither is declared closed
}


def test_the_report_copies_only_declared_closed_sets_and_only_values_that_look_closed(
    emulator: EmulatorServer, run: CliInvoke, tmp_path: Path
) -> None:
    contact = next(c for c in emulator.control.state(as_token=EMULATOR_TOKEN)["contact"] if c.get("phones"))
    emulator.control.update("contact", contact["id"], CLOSED_LOOKALIKES)
    opp = emulator.control.state(as_token=EMULATOR_TOKEN)["opportunity"][0]
    emulator.control.update("opportunity", opp["id"], {"status": "Call 07700 900462", "currency": "zeb@x.io"})
    old = os.umask(0o022)
    try:
        run("probe", "--report", str(tmp_path / "r.json"), "--capture", str(tmp_path / "cap"), code=0)
    finally:
        os.umask(old)
    report = (tmp_path / "r.json").read_text(encoding="utf-8")
    for seed in ("7700", "Zebulon", "Qwertyuiop", "zeb@"):
        assert seed not in report, seed
    props = orjson.loads(report)["resources"]
    statuses = set(props["opportunity"]["properties"]["status"]["values"])
    assert "<string text>" in statuses and statuses - {"<string text>"} <= set(OPP_STATUS)  # declared
    assert len(statuses) > 1
    assert "values" not in props["contact"]["properties"]["type"]  # undeclared: shapes only
    assert set(props["contact"]["properties"]["phones"]["values"]) <= {*PHONE_TYPES, "<string text>"}
    captured = (tmp_path / "cap" / "contact.json").read_text(encoding="utf-8")
    for seed in ("7700 900461", "Zebulon", "Qwertyuiop"):
        assert seed not in captured, seed
    # Owner-only, whatever the umask: the report, every capture file, the capture directory.
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cap").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cap").iterdir()} == {0o600}


def test_a_capture_served_by_emulator_from_syncs_to_exactly_the_capture(
    emulator: EmulatorServer,
    cli_runner: Callable[..., CliInvoke],
    database_url: str,
    tmp_path: Path,
) -> None:
    capture = tmp_path / "cap"
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        probe(client, capture=CaptureWriter(capture))
    listings = load_capture(capture)
    with EmulatorServer(token=EMULATOR_TOKEN, contacts=0, replay=Replay(listings)) as replay:
        run = cli_runner(database_url, CLEVERTIM_URL=replay.base_url)
        run("sync", code=0)
        run("export", str(tmp_path / "export"), code=0)
        with ClevertimClient(replay.base_url, EMULATOR_TOKEN) as client:
            # Listings byte for byte, a record by id as captured, writes refused clearly.
            raw = client.list_raw("contact")
            assert raw.body_bytes == (capture / "contact.json").stat().st_size
            first = raw.content[0]
            assert client.get("contact", first["id"]) == first
            with pytest.raises(NotSupported) as refused:
                client.create("note", {"desc": "x"})
            # The server's own words are kept on the error (messages tell only their length).
            assert "replays a capture" in (refused.value.server_message or "")
            assert client.list_raw("note").content  # a refused write changed nothing
    for name in resources.PULL_ORDER:
        captured = orjson.loads((capture / f"{name}.json").read_bytes())["content"]
        exported = (tmp_path / "export" / f"{name}.jsonl").read_bytes().splitlines()
        # raw is what was served; the order is the id column's (the documents' text ids: 7 is "7")
        text = name in resources.TEXT_ID_RESOURCES
        in_order = sorted(captured, key=lambda r: shapes.as_text_id(r["id"]) if text else r["id"])
        expected = [orjson.dumps(rec) for rec in in_order]
        assert exported == expected, name
        assert expected or name == "case"  # the account has data in (almost) every resource


def test_emulator_from_command_serves_a_capture(tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.control.add_fault(kind="status", status=404, path="^/folder$")  # an account without them
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        probe(client, capture=CaptureWriter(tmp_path / "cap"), names=["user", "folder"])
    cmd = [sys.executable, "-m", "clevertim_sync", "emulator", "--from", str(tmp_path / "cap"), "--port", "0"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(CLEVERTIM_EMULATOR_TOKEN="tok"),
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        with ClevertimClient(base, "tok") as client:
            assert client.list_raw("user").body_bytes == (tmp_path / "cap" / "user.json").stat().st_size
            with pytest.raises(NotFound, match="HTTP 404"):
                client.list_raw("folder")  # captured as a 404: answers 404 again
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = subprocess.run(
        [*cmd[:4], "--from", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "no readable manifest.json" in bad.stderr


def _env(**extra: str) -> dict[str, str]:
    import os  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
    return env | {"CLEVERTIM_EMULATOR_TOKEN": "tok"} | extra


# --- the variants of the API reference ---------------------------------------------------------


def _quirky_capture(directory: Path) -> None:
    """A hand-made capture with every "Variants to expect" shape the probe should name."""
    back_refs = list(range(40, 28, -1))  # 12 ids, descending: unsorted, and reshuffled per read
    listings: dict[str, list[dict[str, Any]]] = {
        "customfield": [{"id": 1, "name": "Source", "elemType": "input", "multiple": "0"}],
        "user": [{"id": 1, "user": "Owner", "is_owner": 1, "is_admin": 0}],
        "group": [{"id": 1, "name": "Sales", "gid": 1, "users": [1]}, "not an object", {"id": None}],
        "company": [
            {
                "id": 2,
                "cn": "Acme",
                "is_company": 1,
                "notes": back_refs,
                "tasks": [],
                "files": ["f1001", 2.5],
            },
            {"id": 3, "cn": "", "is_company": True, "notes": back_refs[::-1], "lc": "yesterday"},
        ],
        "contact": [
            {"id": "17", "fn": "Ana", "companyId": "2", "email": [1, "a@b.example"], "zzz": {"q": 1}},
            {"id": 18, "fn": "Bob", "companyId": "", "is_company": "false"},
        ],
        "opportunity": [{"id": 5, "name": "Deal", "cust": 2, "value": "4500", "currency": "EUR"}],
        "case": [],
        "task": [
            {
                "id": 7,
                "name": "Call",
                "cust": "17",
                "case": "",
                "opp": [5],
                "startDate": {"y": "2024", "mo": "5", "d": "1", "h": "9", "mi": "30"},
                "is_completed": 1,
                "is_deleted": "0",
                "atype": "Call",
            },
        ],
        "note": [
            {"id": 9, "desc": "<p>hello</p>", "type": "N", "cust": [33, 43, 53], "opportunity": None},
            {"id": 10, "desc": "x", "type": "N", "cust": [2], "case": None},
        ],
        "comment": [{"id": 11, "comment": "ok", "nid": "9", "tid": None}],
        "folder": [
            {"id": "f1001", "name": "Contracts", "parentId": None, "is_dir": 1},
            {"id": 2.5, "name": "Odd", "parentId": "f1001"},
        ],
    }
    directory.mkdir()
    entries: dict[str, Any] = {}
    for name, records in listings.items():
        (directory / f"{name}.json").write_bytes(orjson.dumps({"status": "OK", "content": records}))
        entries[name] = {"file": f"{name}.json", "records": len(records)}
    entries["file"] = {"error": {"status": 404, "what": "NotFound"}}
    entries["linkedfile"] = {"error": {"status": 501, "what": "NotSupported"}}
    manifest = {"format": "clevertim-sync capture", "version": 1, "resources": entries}
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest))


def _where(result: ProbeResult) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in result.findings():
        found.setdefault(f.key, set()).add(f"{f.resource}.{f.prop}" if f.prop else f.resource)
    return found


def _finding(result: ProbeResult, key: str, where: str) -> Finding:
    return next(f for f in result.findings() if f.key == key and f"{f.resource}.{f.prop}" == where)


def test_the_probe_names_every_variant_of_the_reference(tmp_path: Path) -> None:
    _quirky_capture(tmp_path / "quirks")
    replay = Replay(load_capture(tmp_path / "quirks"), shuffle_lists=True, seed=7)
    with (
        EmulatorServer(token=EMULATOR_TOKEN, contacts=0, replay=replay) as server,
        ClevertimClient(server.base_url, EMULATOR_TOKEN) as client,
    ):
        result = probe(client)
    found = _where(result)
    expected = {
        "multi_valued_reference": {"note.cust", "task.opp"},
        "bool_as_int": {"user.is_owner", "user.is_admin", "company.is_company", "task.is_completed"},
        "bool_as_string": {"customfield.multiple", "contact.is_company", "task.is_deleted"},
        "numeric_string_id": {"contact.id", "contact.companyId", "task.cust", "comment.nid"},
        "non_integer_id": {"folder.id", "group.id"},  # "f1001" is a folder's id: no finding
        "string_date_parts": {"task.startDate"},
        "empty_string": {"contact.companyId", "task.case"},
        "unsorted_server_list": {"company.notes"},
        "unordered_server_list": {"company.notes"},
        "typed_null": {"company.lc"},
        "dropped_child_entry": {"contact.email", "company.files"},  # 2.5 is no file id
        "unknown_property": {"contact.zzz"},
    }
    for key, places in expected.items():
        assert key in VARIANTS
        assert places <= found.get(key, set()), (key, found.get(key))
    assert "company.cn" not in found.get("empty_string", set())  # "" is a fine string
    # Counts and example ids are right, and the mirror's action is said.
    cust = _finding(result, "multi_valued_reference", "note.cust")
    assert cust.count == 2 and cust.examples == [9, 10] and cust.detail == "list of 1: 1, list of 3: 1"
    assert "notes.customer_id" in cust.mirror
    assert _finding(result, "unordered_server_list", "company.notes").count == 2
    assert _finding(result, "numeric_string_id", "contact.id").examples == ["17"]
    # The documents: one file referenced, the folder listing counted, the refusals tolerated.
    docs = result.documents()
    assert docs["files_referenced"] == 2 and docs["endpoints"]["folder"] == {"records": 2}
    assert docs["endpoints"]["file"]["status"] == 404 and docs["endpoints"]["linkedfile"]["status"] == 501
    # Without reshuffling, a stable order is not reported as changing between reads.
    with (
        EmulatorServer(token=EMULATOR_TOKEN, contacts=0, replay=Replay(replay.listings)) as server,
        ClevertimClient(server.base_url, EMULATOR_TOKEN) as client,
    ):
        steady = _where(probe(client))
    assert "unordered_server_list" not in steady and "listing_changed" not in steady
    assert "unsorted_server_list" in steady


def test_the_seeded_account_has_no_variant(emulator: EmulatorServer) -> None:
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        found = _where(probe(client))
    # The emulator's own account: only the documented unknown properties, and notes stored as
    # HTML as the vendor's service does (information, not a variant); its folders' text ids and
    # its records' lists of file ids are no variant either.
    assert set(found) == {"unknown_property", "html_text"}, found
    assert found["html_text"] == {"note.desc"}


def test_the_probe_counts_the_accounts_documents(emulator: EmulatorServer) -> None:
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        result = probe(client)
    state = emulator.control.state(as_token=EMULATOR_TOKEN)
    referenced = {
        key: {i for name in ("contact", "company", "case", "opportunity", "note") for r in state[name]
              for i in r.get(key) or []}
        for key in ("files", "lfiles")
    }  # fmt: skip
    docs = result.documents()
    assert docs["files_referenced"] == len(referenced["files"]) > 0
    assert docs["linked_files_referenced"] == len(referenced["lfiles"]) > 0
    assert docs["contact_photos"] == sum(1 for c in state["contact"] if c.get("cphoto")) > 0
    assert docs["endpoints"] == {
        name: {"records": len(state[name])} for name in ("folder", "file", "linkedfile")
    }
    line = next(x for x in summary(result) if x.startswith("documents:"))
    assert f"{docs['contact_photos']} contact photo(s)" in line
    assert f"/folder: {len(state['folder'])} entries" in line


def test_a_change_between_the_two_reads_is_reported(emulator: EmulatorServer) -> None:
    def edit_between_reads(line: str) -> None:
        if line == "contact: read 2 of 2":  # someone at work in Clevertim meanwhile
            emulator.control.update("contact", 4, {"title": "Chief"})

    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        result = probe(client, names=["contact", "company"], progress=edit_between_reads)
    changed = _finding(result, "listing_changed", "contact.None")
    assert changed.count == 1 and changed.examples == [4]
    assert not any(f.key == "listing_changed" and f.resource == "company" for f in result.findings())


# --- nothing stops it ----------------------------------------------------------------------------


def test_the_probe_reports_failing_endpoints_and_goes_on(emulator: EmulatorServer) -> None:
    emulator.control.add_fault(kind="html", status=502, path="^/contact$")
    emulator.control.add_fault(kind="status", status=503, path="^/note$", retry_after=5)
    emulator.control.add_fault(kind="reset", path="^/task$")
    emulator.control.add_fault(kind="truncate", path="^/comment$")
    with ClevertimClient(emulator.base_url, EMULATOR_TOKEN) as client:
        result = probe(client)
    errors = {f.resource: f.detail for f in result.findings() if f.key == "endpoint_error"}
    assert "ServiceUnavailable HTTP 502" in errors["contact"]
    assert "ServiceUnavailable HTTP 503" in errors["note"]
    assert "ResponseLost" in errors["task"] or "TransportError" in errors["task"]
    assert "ResponseLost" in errors["comment"] or "MalformedResponse" in errors["comment"]  # truncated
    assert result.surveys["company"].records == 3 and result.surveys["user"].records == 8


def test_redirects_html_logins_and_lying_encodings_are_reported(tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        if name == "user":
            return httpx.Response(302, headers={"Location": "https://login.example/"})
        if name == "contact":
            return httpx.Response(200, headers={"Content-Type": "text/html"}, content=b"<html>login</html>")
        if name == "note":  # gzip promised, garbage sent: httpx raises a DecodingError
            return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip at all")
        body = {"status": "OK", "content": [{"id": 1, "name": "x"}]}
        return httpx.Response(
            200, headers={"X-RateLimit-Remaining": "99", "Server": "nginx"}, content=orjson.dumps(body)
        )

    with ClevertimClient("https://api.example/api", "tok", http=httpx.MockTransport(answer)) as client:
        result = probe(client, capture=CaptureWriter(tmp_path / "cap"))
    errors = {f.resource: f.detail for f in result.findings() if f.key == "endpoint_error"}
    assert set(errors) >= {"user", "contact", "note"}
    assert "HTTP 302" in errors["user"] and "HTTP 200" in errors["contact"]  # a login page
    assert {f.key for f in result.findings()} >= {"rate_limit_headers"}
    assert result.surveys["case"].headers["x-ratelimit-remaining"] == "99"
    listings = load_capture(tmp_path / "cap")
    assert listings["user"].status == 302 or listings["user"].body is None
    assert listings["case"].body is not None


def test_load_capture_refuses_what_is_not_a_capture(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no readable manifest"):
        load_capture(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "something else"}')
    with pytest.raises(CaptureError, match="not a capture manifest"):
        load_capture(tmp_path)
