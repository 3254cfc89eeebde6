"""The pure diff: hashing, change detection, the mass-delete rule (hypothesis properties)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clevertim_sync.diff import (
    Changes,
    apply_changes,
    changed_fields,
    compute_changes,
    mass_delete_refused,
    record_hash,
)
from clevertim_sync.errors import InvalidListing

json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
lms = st.sampled_from(["2017-01-02T05:22:12Z", "2018-03-04T00:00:00Z", "2020-12-31T23:59:59Z"])


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(st.dictionaries(st.sampled_from(["fn", "ln", "tags", "cf", "x"]), json_values, max_size=4))
    return {"id": draw(st.integers(1, 30)), **body, "lm": draw(lms)}


def _listing(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({r["id"]: r for r in recs}.values())  # unique ids, as a sane listing has


def _index(state: dict[int, dict[str, Any]]) -> dict[int, tuple[str, Any]]:
    return {rid: (record_hash(r), r.get("lm")) for rid, r in state.items()}


@settings(max_examples=60, deadline=None)
@given(old=st.lists(records(), max_size=20), new=st.lists(records(), max_size=20))
def test_applying_the_diff_to_the_old_state_gives_the_new_state(old: list[Any], new: list[Any]) -> None:
    state = {r["id"]: r for r in _listing(old)}
    listing = _listing(new)
    changes = compute_changes("contact", listing, _index(state))
    assert apply_changes(state, changes) == {r["id"]: r for r in listing}
    # every id lands in exactly one bucket
    buckets = [r["id"] for r, _ in (*changes.inserts, *changes.updates, *changes.touches)]
    assert len(buckets) + changes.unchanged == len(listing)
    assert set(changes.deletes).isdisjoint(r["id"] for r in listing)


@settings(max_examples=30, deadline=None)
@given(recs=st.lists(records(), max_size=20))
def test_a_second_diff_of_the_same_listing_is_empty(recs: list[Any]) -> None:
    listing = _listing(recs)
    first = compute_changes("contact", listing, {})
    state = apply_changes({}, first)
    again = compute_changes("contact", listing, _index(state))
    assert again.empty and again.unchanged == len(listing)


def test_an_lm_bump_alone_is_a_touch_not_an_update() -> None:
    rec = {"id": 1, "fn": "Ada", "lm": "2017-01-02T05:22:12Z"}
    bumped = {**rec, "lm": "2019-01-01T00:00:00Z"}
    changes = compute_changes("contact", [bumped], _index({1: rec}))
    assert [r for r, _ in changes.touches] == [bumped]
    assert not changes.updates and not changes.inserts


def test_a_content_change_without_lm_bump_is_an_update() -> None:
    rec = {"id": 1, "fn": "Ada", "lm": "2017-01-02T05:22:12Z"}
    edited = {**rec, "fn": "Grace"}
    changes = compute_changes("contact", [edited], _index({1: rec}))
    assert [r for r, _ in changes.updates] == [edited]


def test_hash_ignores_key_order_and_lm_but_not_nested_content() -> None:
    a = {"id": 1, "fn": "A", "cf": {"1": "x", "2": ["a", "b"]}, "lm": "2017-01-02T05:22:12Z"}
    b = {"lm": "2020-01-01T00:00:00Z", "cf": {"2": ["a", "b"], "1": "x"}, "fn": "A", "id": 1}
    assert record_hash(a) == record_hash(b)
    assert record_hash(a) != record_hash({**a, "cf": {"1": "x", "2": ["b", "a"]}})
    assert record_hash(a) != record_hash({**a, "unknown_new_prop": None})


def test_duplicate_ids_are_a_malformed_listing() -> None:
    with pytest.raises(InvalidListing, match="id 7 appears more than once") as err:
        compute_changes("note", [{"id": 7}, {"id": 8}, {"id": 7}], {})
    assert err.value.resource == "note"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"fn": "no id"}, "no id"),
        ({"id": "f1001"}, "not an integer"),
        ({"id": True}, "not an integer"),
        ({"id": 7.5}, "not an integer"),
        (["not", "an", "object"], "not an object"),
    ],
)
def test_an_entry_without_a_usable_id_is_left_out_and_the_rest_applies(bad: Any, reason: str) -> None:
    stored = {1: {"id": 1, "fn": "A"}, 2: {"id": 2, "fn": "B"}}
    changes = compute_changes("contact", [bad, {"id": 1, "fn": "A2"}, {"id": 2, "fn": "B"}], _index(stored))
    assert [r["id"] for r, _ in changes.updates] == [1] and changes.unchanged == 1
    assert len(changes.skipped) == 1 and reason in changes.skipped[0]
    assert changes.deletes == []


def test_a_skipped_entry_that_may_be_a_stored_record_does_not_delete_it() -> None:
    stored = {5: {"id": 5, "fn": "A"}, 6: {"id": 6, "fn": "B"}}
    changes = compute_changes("contact", [{"id": 5.0, "fn": "A"}, {"id": 6, "fn": "B"}], _index(stored))
    assert changes.deletes == [] and len(changes.skipped) == 1


def test_a_numeric_string_id_is_the_integer() -> None:
    stored = {7: {"id": 7, "fn": "A"}}
    changes = compute_changes("contact", [{"id": "7", "fn": "A"}, {"id": "8", "fn": "B"}], _index(stored))
    assert changes.unchanged == 1 and changes.deletes == []
    assert [r["id"] for r, _ in changes.inserts] == [8]


def test_server_computed_lists_hash_the_same_in_any_order() -> None:
    a = {"id": 1, "fn": "A", "notes": [3, 1, 2], "tasks": [9, 8], "email": ["b@x", "a@x"]}
    assert record_hash(a) == record_hash({**a, "notes": [1, 2, 3], "tasks": [8, 9]})
    assert record_hash(a) != record_hash({**a, "notes": [1, 2]})
    # a list the user orders (emails) still counts its order
    assert record_hash(a) != record_hash({**a, "email": ["a@x", "b@x"]})
    # the index holds the sorted hash: a reshuffled listing is unchanged, no history
    changes = compute_changes("contact", [{**a, "notes": [2, 3, 1]}], {1: (record_hash(a), None)})
    assert changes.unchanged == 1 and not changes.updates


def test_vanished_and_returned_record_is_deleted_then_inserted_again() -> None:
    rec = {"id": 5, "fn": "A", "lm": "2017-01-02T05:22:12Z"}
    gone = compute_changes("contact", [], _index({5: rec}))
    assert gone.deletes == [5]
    back = compute_changes("contact", [rec], _index(apply_changes({5: rec}, gone)))
    assert [r["id"] for r, _ in back.inserts] == [5]


def test_changed_fields_lists_old_and_new_values_except_lm() -> None:
    old = {"id": 1, "fn": "A", "tags": ["x"], "gone": 1, "lm": "a"}
    new = {"id": 1, "fn": "B", "tags": ["x"], "added": None, "lm": "b"}
    assert changed_fields(old, new) == {"fn": ["A", "B"], "gone": [1, None], "added": [None, None]}


@pytest.mark.parametrize(
    ("deletes", "mirrored", "listed", "refused"),
    [
        (0, 100, 100, False),
        (25, 100, 75, False),  # exactly the threshold share is allowed
        (26, 100, 74, True),
        (5, 5, 0, True),  # an empty listing of a non-empty mirror, however small
        (3, 5, 2, False),  # below min_records the share rule does not apply
        (0, 0, 0, False),
    ],
)
def test_mass_delete_rule(deletes: int, mirrored: int, listed: int, refused: bool) -> None:
    got = mass_delete_refused(
        deletes=deletes, mirrored=mirrored, listed=listed, threshold=0.25, min_records=10
    )
    assert got is refused


def test_changes_empty() -> None:
    assert Changes().empty


def test_a_text_id_resource_keeps_its_ids_as_text() -> None:
    listing = [{"id": "f1001", "name": "a"}, {"id": 7, "name": "b"}, {"id": " f2 "}, {"id": 1.5}, {}]
    changes = compute_changes("folder", listing, {"f9": ("h", None)})
    assert [rec["id"] for rec, _ in changes.inserts] == ["f1001", "7", "f2"]  # 7 is "7", trimmed
    assert changes.deletes == ["f9"] and len(changes.skipped) == 2
    with pytest.raises(InvalidListing, match="'7' appears more than once"):
        compute_changes("folder", [{"id": 7}, {"id": "7"}], {})
    # The same spellings of an integer-id resource: "7" is 7, a word is no id.
    ints = compute_changes("contact", [{"id": "7"}, {"id": "f1001"}], {})
    assert [rec["id"] for rec, _ in ints.inserts] == [7] and len(ints.skipped) == 1
