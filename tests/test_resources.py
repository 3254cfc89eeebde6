"""The resource registry: its facts are consistent and edit validation refuses what the API would."""

from __future__ import annotations

import pytest

from clevertim_sync import resources as r


def test_pull_order_puts_parents_first() -> None:
    seen: set[str] = set()
    for res in r.RESOURCES:
        assert set(res.parents) <= seen, f"{res.name} comes before one of its parents"
        seen.add(res.name)


def test_every_ref_targets_a_resource() -> None:
    for res in r.RESOURCES:
        for prop in res.ref_props:
            assert prop.target in (*r.BY_NAME, "customer"), (res.name, prop.api)


def test_a_record_id_is_checked_by_what_the_registry_says_its_ids_are() -> None:
    # The one check of a record id handed to a write (queue, fold, client path): no stricter
    # than the registry. For a resource with integer ids a bool or a numeric text is none.
    for res in (res for res in r.RESOURCES if res.id_kind == "int"):
        for good in (1, 0, 2**40):
            assert r.id_problem(res.name, good) is None
        for bad in (True, "7", 7.0, None, "local:contact:3"):
            assert r.id_problem(res.name, bad) == f"{bad!r} is no integer id of a {res.name}"


def test_columns_and_child_tables_are_unique() -> None:
    for res in r.RESOURCES:
        columns = [p.column for p in res.props]
        assert len(columns) == len(set(columns)), res.name
    child_tables = [p.child_table for res in r.RESOURCES for p in res.child_props]
    assert len(child_tables) == len(set(child_tables))


def test_a_valid_create_has_no_problems() -> None:
    assert r.edit_problems("contact", "create", {"fn": "Ada", "email": ["ada@example.com"]}) == []
    assert r.edit_problems("comment", "create", {"comment": "hi", "nid": 3}) == []
    assert r.edit_problems("opportunity", "create", {"name": "Deal", "value": "4500.50"}) == []


@pytest.mark.parametrize(
    ("resource", "op", "fields", "needle"),
    [
        ("widget", "create", {}, "unknown resource"),
        ("contact", "create", {"title": "CEO"}, "needs fn or ln"),
        ("contact", "update", {"shoe_size": 9}, "no property 'shoe_size'"),
        ("contact", "update", {"notes": [1]}, "read-only"),
        ("contact", "update", {"fn": 7}, "must be a string"),
        ("contact", "update", {"companyId": "seven"}, "integer id"),
        ("contact", "update", {"ctype": "Z"}, "must be one of"),
        ("opportunity", "update", {"value": "lots"}, "decimal"),
        ("task", "update", {"startDate": {"y": 2024}}, "y, mo, d"),
        ("comment", "update", {"comment": "edited"}, "cannot be updated"),
        ("comment", "create", {"comment": "hi"}, "exactly one"),
        ("comment", "create", {"comment": "hi", "nid": 1, "tid": 2}, "exactly one"),
        ("user", "update", {"user": "x"}, "read-only in the Clevertim API"),
        ("group", "delete", {}, "read-only in the Clevertim API"),
        ("contact", "update", {}, "at least one"),
        ("contact", "update", {"id": 4}, "set by the server"),
    ],
)
def test_invalid_edits_are_refused_with_a_reason(resource: str, op: str, fields: dict, needle: str) -> None:
    problems = r.edit_problems(resource, op, fields)
    assert any(needle in p for p in problems), problems
