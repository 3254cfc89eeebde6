"""The pure three-way merge: only changed fields are sent, newer remote values are never clobbered,
conflicts follow the policy and keep the losing value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clevertim_sync.writeback.merge import Edit, coalesce, loosely_same, matches_identity, matches_sent, merge

BASE = {"fn": "Ada", "ln": "Lovelace", "title": "Countess", "tags": ["a"]}


def test_only_locally_changed_fields_are_sent() -> None:
    remote = {**BASE, "ln": "King"}  # changed remotely, not locally
    result = merge({"title": "Analyst"}, BASE, remote)
    assert result.send == {"title": "Analyst"}
    assert not result.conflicts


def test_a_field_already_at_the_local_value_is_not_sent() -> None:
    remote = {**BASE, "title": "Analyst"}
    assert merge({"title": "Analyst"}, BASE, remote).send == {}


def test_different_fields_changed_on_both_sides_merge() -> None:
    remote = {**BASE, "ln": "King"}
    result = merge({"fn": "Augusta"}, BASE, remote)
    assert result.send == {"fn": "Augusta"}
    assert not result.needs_resolution


@pytest.mark.parametrize(
    ("policy", "sent", "winner", "needs"),
    [
        ("manual", {"fn": "Augusta"}, "none", True),
        ("local-wins", {"fn": "Augusta", "title": "Analyst"}, "local", False),
        ("remote-wins", {"fn": "Augusta"}, "remote", False),
    ],
)
def test_the_same_field_changed_on_both_sides_follows_the_policy(
    policy: Any, sent: dict[str, Any], winner: str, needs: bool
) -> None:
    remote = {**BASE, "title": "Mathematician"}
    result = merge({"fn": "Augusta", "title": "Analyst"}, BASE, remote, policy)
    assert result.send == sent
    assert result.needs_resolution is needs
    conflict = result.conflicts["title"]
    # The losing value is kept whichever side won.
    assert (conflict.base, conflict.local, conflict.remote, conflict.winner) == (
        "Countess",
        "Analyst",
        "Mathematician",
        winner,
    )


def test_unknown_base_takes_differences_as_local_changes() -> None:
    assert merge({"title": "X"}, None, BASE).send == {"title": "X"}
    assert merge({"title": "X"}, {"fn": "Ada"}, BASE).send == {"title": "X"}


def test_decimals_written_two_ways_are_the_same() -> None:
    same = merge({"value": "4500"}, {"value": "100"}, {"value": 4500.0})
    assert same.send == {} and not same.conflicts  # already so: no conflict either
    typed = merge({"value": "4500"}, {"value": "100"}, {"value": 4500.0}, resource="opportunity")
    assert typed.send == {} and not typed.conflicts
    # A server that spells booleans 0/1: true is 1, so an edit already applied sends nothing.
    assert merge({"flag": True}, {"flag": 1}, {"flag": 1}).send == {}


def test_values_compare_by_meaning_not_spelling() -> None:
    base = {"is_private": False, "cust": 445, "is_completed": False, "name": "Call"}
    remote = {"is_private": 0, "cust": "445", "is_completed": "0", "name": " Call "}
    # nothing changed remotely (only spelled differently): the local edits are sent, no conflict
    edit = {"is_private": True, "cust": 446, "is_completed": True}
    result = merge(edit, base, remote, resource="task")
    assert result.send == edit and not result.conflicts
    # an edit the server already holds (spelled its way) is already applied: nothing to send
    done = merge({"is_completed": True, "cust": [445]}, base, {**remote, "is_completed": 1}, resource="task")
    assert done.send == {} and not done.conflicts


def test_lost_create_matching_normalises_as_the_server_does() -> None:
    sent = {"desc": "Call back  tomorrow", "cust": 33, "is_private": False}
    served = {"id": 9, "desc": "<p>Call back tomorrow</p>", "cust": ["33"], "is_private": 0}
    assert matches_sent(served, sent, "note")
    assert not matches_sent({**served, "cust": [34]}, sent, "note")
    assert matches_identity({**served, "is_private": 1}, sent, "note")
    assert not matches_identity({**served, "desc": "<p>Other</p>"}, sent, "note")
    assert matches_identity(
        {"id": 3, "fn": " Ada", "ln": "Lovelace", "title": "x"}, {"fn": "Ada", "ln": "Lovelace"}, "contact"
    )


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        merge({}, {}, {}, "newest-wins")  # type: ignore[arg-type]


def test_coalesce_takes_later_values_and_each_fields_own_base() -> None:
    first = Edit({"fn": "A", "title": "T1"}, {"fn": "X", "title": "Old"})
    second = Edit({"title": "T2"}, {"fn": "X", "title": "Seen-later"})
    fields, base = coalesce([first, second])
    assert fields == {"fn": "A", "title": "T2"}
    assert base == {"fn": "X", "title": "Seen-later"}
    assert coalesce([Edit({"fn": "A"}, None)]) == ({"fn": "A"}, None)


def test_matches_sent_ignores_empty_values_and_server_extras() -> None:
    record = {"id": 9, "fn": "Ada", "lm": "2024-01-01T00:00:00Z", "email": []}
    assert matches_sent(record, {"fn": "Ada", "title": ""})
    assert not matches_sent(record, {"fn": "Ada", "ln": "L"})


values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "b", "c"]))
records = st.dictionaries(st.sampled_from(["f1", "f2", "f3", "f4"]), values)


@given(local=records, base=records, remote=records)
def test_merge_never_clobbers_a_remote_change_under_manual(
    local: dict[str, Any], base: dict[str, Any], remote: dict[str, Any]
) -> None:
    full_base = {k: base.get(k) for k in local}
    result = merge(local, full_base, remote)
    for key, value in result.send.items():
        assert key in local and value == local[key]
        # Sent only when the remote still holds the base value: nobody else changed it.
        assert loosely_same(remote.get(key), full_base[key])
    for key, value in local.items():
        if key not in result.send and key not in result.conflicts:
            assert loosely_same(remote.get(key), value)
