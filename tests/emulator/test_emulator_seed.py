"""The seeded account: deterministic, in proportion, with the variety of a real account, and
conforming to the resource registry."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clevertim_sync import resources
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.emulator.seed import CUSTOM_FIELDS, OWNER, generate


@pytest.fixture(scope="module")
def account() -> dict[str, list[dict[str, Any]]]:
    return generate(1000, 3)


def test_same_seed_same_bytes_other_seed_other_data() -> None:
    assert orjson.dumps(generate(300, 5)) == orjson.dumps(generate(300, 5))
    assert generate(300, 5)["contact"] != generate(300, 6)["contact"]


def test_the_served_account_is_deterministic_too() -> None:
    with EmulatorServer(contacts=40, seed=9) as one, EmulatorServer(contacts=40, seed=9) as two:
        assert one.control.state() == two.control.state()


def test_proportions(account: dict[str, list[dict[str, Any]]]) -> None:
    counts = {name: len(recs) for name, recs in account.items()}
    assert counts == {
        "customfield": len(CUSTOM_FIELDS),
        "user": 8,
        "group": 3,
        "company": 100,
        "contact": 1000,
        "opportunity": 100,
        "case": 50,
        "task": 400,
        "note": 400,
        "comment": 150,
        "folder": 23,  # documents (emulator/documents.py): 3 + contacts/50 folders,
        "file": 102,  # 2 + contacts/10 files,
        "linkedfile": 51,  # 1 + contacts/20 linked files
    }
    assert list(account) == list(resources.PULL_ORDER)


def test_documents_nest_and_records_point_at_them(account: dict[str, list[dict[str, Any]]]) -> None:
    folders = {f["id"]: f for f in account["folder"]}
    assert all(isinstance(k, str) and k.startswith("f") for k in folders)
    assert [f["id"] for f in folders.values() if f["parentId"] is None] == ["f1001"]  # one root
    depth = {}
    for f in account["folder"]:  # each folder's parent comes before it
        depth[f["id"]] = 0 if f["parentId"] is None else depth[f["parentId"]] + 1
    assert max(depth.values()) >= 2  # folders within folders within the root
    assert all(f["parentId"] in folders for f in account["file"])
    files = {f["id"] for f in account["file"]}
    links = {f["id"] for f in account["linkedfile"]}
    for name in ("contact", "company", "case", "opportunity", "note"):
        carrying = [r for r in account[name] if r.get("files") or r.get("lfiles")]
        assert carrying, name
        assert all(set(r["files"]) <= files and set(r["lfiles"]) <= links for r in carrying)
    photos = [c for c in account["contact"] if c.get("cphoto")]
    assert 200 <= len(photos) <= 300 and all(c["cphoto"].endswith(".png") for c in photos)


def test_zero_contacts_is_an_empty_account() -> None:
    data = generate(0, 1)
    assert all(not data[name] for name in ("contact", "company", "note", "task", "comment"))
    assert data["user"] and data["customfield"]


def test_contacts_and_companies_share_unique_ids(account: dict[str, list[dict[str, Any]]]) -> None:
    customer_ids = [r["id"] for r in account["contact"] + account["company"]]
    assert len(set(customer_ids)) == len(customer_ids) == 1100
    assert sorted(customer_ids) == list(range(1, 1101))
    for name, recs in account.items():
        assert [r["id"] for r in recs] == sorted({r["id"] for r in recs}), name


def test_variety_of_contacts(account: dict[str, list[dict[str, Any]]]) -> None:
    contacts = account["contact"]
    assert any(not c["fn"].isascii() for c in contacts)
    assert any(c["fn"] == "" for c in contacts)
    assert any("title" not in c for c in contacts) and any(c.get("title") is None for c in contacts)
    assert any(len(c["email"]) >= 2 for c in contacts) and any(c["email"] == [] for c in contacts)
    assert any(len(c["phones"]) >= 2 for c in contacts)
    assert any(c.get("companyId") is None for c in contacts) and any(c.get("companyId") for c in contacts)
    assert any({"atypet", "fullname", "app"} <= c.keys() for c in contacts)
    assert any(c["is_private"] and c["puser"] == OWNER for c in contacts)
    assert any(c["is_private"] and c["puser"] != OWNER for c in contacts)
    assert any(not c["is_private"] and c["gid"] for c in contacts)


def test_custom_fields_of_every_type_single_and_multi(account: dict[str, list[dict[str, Any]]]) -> None:
    fields = {str(f["id"]): f for f in account["customfield"]}
    assert {f["elemType"] for f in fields.values()} == {
        "input", "select", "date", "user", "state", "country", "region",
        "contact", "company", "case", "opportunity", "currency",
    }  # fmt: skip
    seen: dict[str, Any] = {}
    for name in ("contact", "company", "case", "opportunity"):
        for rec in account[name]:
            for key, value in rec["cf"].items():
                assert isinstance(value, list) == fields[key]["multiple"]
                seen.setdefault(key, value)
    assert set(seen) == set(fields)  # every field has a value somewhere
    assert any(isinstance(v, list) for v in seen.values()) and any(isinstance(v, str) for v in seen.values())


def test_variety_of_tasks_notes_comments(account: dict[str, list[dict[str, Any]]]) -> None:
    tasks, notes, comments = account["task"], account["note"], account["comment"]
    assert any("h" in t["startDate"] for t in tasks) and any("h" not in t["startDate"] for t in tasks)
    assert any("endDate" not in t for t in tasks)
    assert any(t["is_completed"] for t in tasks) and any(t["is_deleted"] for t in tasks)
    assert any(t["rec"] != "N" for t in tasks)
    assert {n["type"] for n in notes} >= {"N", "S", "E"}
    assert all(n["hl"] for n in notes)
    assert any(c["nid"] is not None for c in comments) and any(c["tid"] is not None for c in comments)
    assert all((c["nid"] is None) != (c["tid"] is None) for c in comments)
    assert all("userId" in r for r in tasks + notes + comments + account["opportunity"])


def test_small_accounts_still_hold_every_showcase() -> None:
    data = generate(20, 1)
    contacts = data["contact"]
    assert any(c["fn"] == "" for c in contacts)
    assert any(c["is_private"] and c["puser"] != OWNER for c in contacts)
    assert any(c.get("gid") == 4 for c in contacts)
    assert any(t["is_deleted"] for t in data["task"]) and any(t["is_completed"] for t in data["task"])
    assert {c["nid"] is None for c in data["comment"]} == {True, False}


def test_records_conform_to_the_registry(account: dict[str, list[dict[str, Any]]]) -> None:
    """Every writable property of every seeded record has the registry's kind (as a local edit
    would be checked; "update" so that a seeded empty name, which the web UI allows, passes)."""
    for res in resources.RESOURCES:
        if not res.writable:
            continue
        for rec in account[res.name]:
            fields = {k: v for k, v in rec.items() if k in res.by_api and not res.by_api[k].read_only}
            if res.name == "note" and fields.get("type") == "E":  # set by the service only
                del fields["type"]
            op = "update" if res.updatable else "create"
            assert resources.edit_problems(res.name, op, fields) == [], (res.name, rec["id"])
