"""The pure diff: hashing, change detection, the mass-delete rule (hypothesis properties)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clevertim_sync import jsontext
from clevertim_sync.entries import LeftOut
from clevertim_sync.pull.diff import (
    Changes,
    ListingDiff,
    MirrorIndex,
    changed_fields,
    compute_changes,
    mass_delete_refused,
    preferred,
    raw_lm,
    record_digest,
    record_hash,
)

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
def test_every_id_lands_in_exactly_one_bucket(old: list[Any], new: list[Any]) -> None:
    """What applying the buckets does is tested on the real store (tests/mirror/test_store.py); here,
    that they split the listing and the mirror exactly."""
    state = {r["id"]: r for r in _listing(old)}
    listing = _listing(new)
    changes = compute_changes("contact", listing, _index(state))
    listed = {r["id"]: r for r in listing}
    assert {r["id"] for r, _ in changes.inserts} == listed.keys() - state.keys()
    assert {r["id"] for r, _ in (*changes.updates, *changes.touches)} <= listed.keys() & state.keys()
    assert all(record_hash(r) != record_hash(state[r["id"]]) for r, _ in changes.updates)
    assert all(record_hash(r) == record_hash(state[r["id"]]) for r, _ in changes.touches)
    buckets = [r["id"] for r, _ in (*changes.inserts, *changes.updates, *changes.touches)]
    assert len(buckets) + changes.unchanged == len(listing)
    assert changes.deletes == sorted(state.keys() - listed.keys())


@settings(max_examples=60, deadline=None)
@given(
    old=st.lists(records(), max_size=20),
    new=st.lists(records(), max_size=20),
    size=st.integers(1, 6),
    shuffle=st.randoms(use_true_random=False),
)
def test_a_listing_diffed_in_batches_gives_what_it_gives_in_one(
    old: list[Any], new: list[Any], size: int, shuffle: Any
) -> None:
    """In any order, in batches of any size: the same buckets and deletes as in one go."""
    state = {r["id"]: r for r in _listing(old)}
    listing = _listing(new)
    shuffle.shuffle(listing)
    whole = compute_changes("contact", listing, _index(state))
    diff = ListingDiff("contact", MirrorIndex.of(_index(state)))
    parts = [diff.batch(listing[i : i + size]) for i in range(0, len(listing), size)]

    def ids(bucket: str, changes: list[Changes]) -> list[int]:
        return sorted(r["id"] for c in changes for r, _ in getattr(c, bucket))

    for bucket in ("inserts", "updates", "touches"):
        assert ids(bucket, parts) == ids(bucket, [whole])
    assert sum(c.unchanged for c in parts) == whole.unchanged
    assert diff.deletes() == whole.deletes and diff.listed == len(listing)


@settings(max_examples=30, deadline=None)
@given(recs=st.lists(records(), max_size=20))
def test_a_second_diff_of_the_same_listing_is_empty(recs: list[Any]) -> None:
    listing = _listing(recs)
    again = compute_changes("contact", listing, _index({r["id"]: r for r in listing}))
    assert again.empty and again.unchanged == len(listing)


@pytest.mark.parametrize("size", [1, 2, 10])
@pytest.mark.parametrize("stored", [[], [7], [3, 7]])
def test_an_id_listed_twice_in_different_batches_is_caught(size: int, stored: list[int]) -> None:
    """Whether the id is mirrored or new, listed in order or not, in one batch or two: the later
    copy goes to `duplicates` (the store decides which copy stays), reported, never refusing."""
    listing = [{"id": 7}, {"id": 2}, {"id": 9}, {"id": 7, "x": 1}]
    diff = ListingDiff("note", MirrorIndex.of({i: (record_hash({"id": i}), None) for i in stored}))
    batches = [listing[i : i + size] for i in range(0, len(listing), size)]
    for batch in batches[:-1]:
        assert not diff.batch(batch).duplicates
    last = diff.batch(batches[-1])
    assert last.duplicates == [({"id": 7, "x": 1}, 7, record_hash({"id": 7, "x": 1}))]
    assert last.reasons == {"duplicate_id": 1}


def test_the_index_finds_ids_given_in_any_order_and_keeps_32_bytes_each() -> None:
    rows = [(i, record_hash({"id": i}), f"lm{i}") for i in (5, 3, 9, 1)]
    index = MirrorIndex(rows)
    assert list(index) == [1, 3, 5, 9] and len(index) == 4
    for rid, digest, lm in rows:
        assert index.same(index.position(rid), bytes.fromhex(digest), lm) == (True, True)
    assert index.position(4) == -1 and index.position("3") == -1
    assert index.same(index.position(3), record_digest({"id": 4}), "lm3") == (False, True)
    assert index.same(index.position(3), record_digest({"id": 3}), "lm4") == (True, False)
    big = MirrorIndex((i, record_hash({"id": i}), None) for i in range(10_000))
    size = sum(sys.getsizeof(part) for part in (big._ids, big._digests, big._lms))
    assert size < 33 * 10_000


def test_text_ids_work_as_keys() -> None:
    """Ids are only keys of the index (another resource may have text ids such as f1001)."""
    index = MirrorIndex([("f2", "a" * 32, None), ("f10", "b" * 32, None)])
    assert index.position("f10") >= 0 and index.position(10) == -1
    diff = ListingDiff("note", index)
    diff.batch([])
    assert diff.deletes() == ["f10", "f2"]


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


def test_duplicate_ids_do_not_refuse_the_listing() -> None:
    changes = compute_changes("note", [{"id": 7}, {"id": 8}, {"id": 7, "x": 1}], {})
    assert [r["id"] for r, _ in changes.inserts] == [7, 8]
    assert changes.duplicates == [({"id": 7, "x": 1}, 7, record_hash({"id": 7, "x": 1}))]


def test_the_copy_kept_of_an_id_served_twice_is_chosen_by_content_not_position() -> None:
    old = {"id": 7, "fn": "A", "lm": "2020-01-01T00:00:00Z"}
    new = {"id": 7, "fn": "B", "lm": "2021-01-01T00:00:00Z"}
    assert preferred(old, record_hash(old), new, record_hash(new), raw_lm)
    assert not preferred(new, record_hash(new), old, record_hash(old), raw_lm)
    same_lm = {**old, "fn": "C"}  # then the greater hash, whichever came first
    a, b = sorted([old, same_lm], key=record_hash)
    assert preferred(a, record_hash(a), b, record_hash(b), raw_lm)
    assert not preferred(b, record_hash(b), a, record_hash(a), raw_lm)
    no_lm = {"id": 7, "fn": "D"}  # no lm is the oldest
    assert preferred(no_lm, record_hash(no_lm), old, record_hash(old), raw_lm)
    assert not preferred(old, record_hash(old), no_lm, record_hash(no_lm), raw_lm)


def test_an_entry_the_parser_left_out_is_reported_and_its_id_not_deleted() -> None:
    stored = {5: {"id": 5, "fn": "A"}, 6: {"id": 6, "fn": "B"}}
    listing = [LeftOut("unreadable", 5), {"id": 6, "fn": "B"}]
    changes = compute_changes("contact", listing, _index(stored))
    assert changes.deletes == [] and changes.reasons == {"unreadable": 1} and len(changes.skipped) == 1


def test_a_record_nested_too_deep_to_hash_is_left_out_not_a_crash() -> None:
    deep: Any = "x"
    for _ in range(jsontext.MAX_DEPTH + 5):
        deep = [deep]
    changes = compute_changes("contact", [{"id": 5, "x": deep}, {"id": 6}], _index({5: {"id": 5}}))
    assert [r["id"] for r, _ in changes.inserts] == [6] and changes.deletes == []
    assert changes.reasons == {"unreadable": 1}
    kept: Any = "x"
    for _ in range(300):  # past orjson's limit (254), within ours: kept
        kept = [kept]
    assert compute_changes("contact", [{"id": 5, "x": kept}], {}).inserts


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
    assert [r for r, _ in changes.inserts] == [{"id": "8", "fn": "B"}]  # kept as served


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
    back = compute_changes("contact", [rec], _index({}))
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
    # kept as served; their ids are "f1001", "7" and "f2" (7 is "7", trimmed)
    assert [rec["id"] for rec, _ in changes.inserts] == ["f1001", 7, " f2 "]
    assert changes.deletes == ["f9"] and len(changes.skipped) == 2
    twice = compute_changes("folder", [{"id": 7}, {"id": "7"}], {})
    assert [(r, rid) for r, rid, _ in twice.duplicates] == [({"id": "7"}, "7")]
    # The same spellings of an integer-id resource: "7" is 7, a word is no id.
    ints = compute_changes("contact", [{"id": "7"}, {"id": "f1001"}], {})
    assert [rec["id"] for rec, _ in ints.inserts] == ["7"] and len(ints.skipped) == 1
