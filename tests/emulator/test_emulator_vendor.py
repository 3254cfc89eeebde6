"""Conformance with the vendor's own Python client, clevertimapi 0.0.1: list, create, read,
update and delete a contact through it against the emulator.

clevertimapi builds its Authorization header from a bytes object ("Basic b'...'"), which breaks
on Python 3; the test patches base64.standard_b64encode to return str while it runs. The
emulator itself stays strict: the unpatched header is refused with 401.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import clevertimapi
import pytest
from clevertimapi.session import SessionError

from clevertim_sync.emulator import EmulatorServer

TOKEN = "test-token"


@pytest.fixture
def fixed_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    original: Callable[[bytes], bytes] = base64.standard_b64encode
    monkeypatch.setattr(base64, "standard_b64encode", lambda raw: original(raw).decode("ascii"))


def test_unpatched_vendor_client_gets_401(emulator: EmulatorServer) -> None:
    session = clevertimapi.Session(TOKEN, endpoint_url=emulator.base_url)
    with pytest.raises(SessionError, match="HTTP 401"):
        clevertimapi.Contact.all(session)


@pytest.mark.usefixtures("fixed_base64")
def test_vendor_client_crud_on_a_contact(emulator: EmulatorServer) -> None:
    session = clevertimapi.Session(TOKEN, endpoint_url=emulator.base_url)

    listed = clevertimapi.Contact.all(session)
    assert len(listed) == len(emulator.control.state(as_token=TOKEN)["contact"])

    contact = clevertimapi.Contact(session)
    contact.first_name = "Ada"
    contact.last_name = "Lovelace"
    contact.emails = ["ada@example.com"]
    contact.phone_numbers = [clevertimapi.contact.PhoneNumber(phone_number="+44 1", phone_type="Work")]
    contact.save()
    assert contact.key is not None
    assert contact.added_on and contact.last_modified

    # A fresh session, so the read goes to the server rather than the client's cache.
    fresh = clevertimapi.Session(TOKEN, endpoint_url=emulator.base_url)
    read = clevertimapi.Contact(fresh, key=contact.key)
    assert (read.first_name, read.last_name, list(read.emails)) == ("Ada", "Lovelace", ["ada@example.com"])
    assert read.phone_numbers[0].phone_type == "Work"

    read.title = "Countess"  # the vendor client PUTs the whole entry as it read it
    read.save()
    stored = emulator.control.record("contact", contact.key)
    assert stored["title"] == "Countess" and stored["fn"] == "Ada"
    assert stored["lm"] >= stored["ao"]

    read.delete()
    with pytest.raises(SessionError, match="HTTP 404"):
        clevertimapi.Contact(clevertimapi.Session(TOKEN, endpoint_url=emulator.base_url), key=contact.key)
    methods = [(r["method"], r["status"]) for r in emulator.control.requests()]
    assert ("POST", 200) in methods and ("PUT", 200) in methods and ("DELETE", 200) in methods
