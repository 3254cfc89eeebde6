"""The probe finds every quirk the emulator can serve (emulator/quirks.py): a real account with
any of those variants is told apart from our reading of the docs on day one."""

from __future__ import annotations

import pytest

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.emulator.quirks import REGISTRY
from clevertim_sync.survey.probe import probe

# quirk -> (finding, where it must be seen: "resource.property")
EXPECTED = {
    "multi_refs": ("multi_valued_reference", "note.cust"),
    "bool01": ("bool_as_int", "task.is_completed"),
    "string_ids": ("numeric_string_id", "contact.id"),
    "shuffled_lists": ("unordered_server_list", "contact"),  # whichever lists have 2+ ids
    "string_date_parts": ("string_date_parts", "task.startDate"),
    "empty_strings": ("empty_string", "contact.companyId"),
    "normalising": ("html_text", "note.desc"),
    "redirect": ("endpoint_error", "contact"),
    "login_page": ("endpoint_error", "contact"),
    "lying_encoding": ("endpoint_error", "contact"),
    "rate_limited": ("endpoint_error", "contact"),
}


def test_every_quirk_has_an_expected_finding() -> None:
    assert set(EXPECTED) == set(REGISTRY)


@pytest.mark.parametrize("quirk", list(EXPECTED))
def test_the_probe_finds_each_quirk_the_emulator_serves(emulator: EmulatorServer, quirk: str) -> None:
    finding, where = EXPECTED[quirk]
    resource, _, prop = where.partition(".")
    with ClevertimClient(emulator.base_url, "test-token", read_retries=0, connect_retries=0) as client:
        if quirk == "normalising":
            _normalised_writes_are_seen(emulator, client)
            return
        if quirk == "shuffled_lists":  # a list long enough that two shuffles of it differ
            customer = client.list("contact")[0]["id"]
            for i in range(6):
                emulator.control.create("note", {"desc": f"note {i}", "cust": customer})
        plain = probe(client, names=[resource])
        emulator.set_quirks([quirk])
        quirky = probe(client, names=[resource])
    found = {(f.key, f.prop) for f in quirky.findings()}
    if prop:
        assert (finding, prop) in found, sorted(found)
    assert finding in quirky.keys(), sorted(found)  # noqa: SIM118 (a set of names, not a dict)
    if quirk != "normalising":  # without the quirk, the same account shows no such finding
        assert finding not in plain.keys()  # noqa: SIM118


def _html_notes(client: ClevertimClient) -> int:
    return sum(f.count for f in probe(client, names=["note"]).findings() if f.key == "html_text")


def _normalised_writes_are_seen(emulator: EmulatorServer, client: ClevertimClient) -> None:
    """A normalising server stores a plain note as HTML: the probe counts one more html_text."""
    customer = client.list("contact")[0]["id"]
    before = _html_notes(client)
    client.create("note", {"desc": "Called about the renewal", "cust": customer})
    assert _html_notes(client) == before  # stored as written
    emulator.set_quirks(["normalising"])
    client.create("note", {"desc": "Called about the renewal  ", "cust": customer})
    assert _html_notes(client) == before + 1
