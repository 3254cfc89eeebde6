"""The decision table, pure: what to do after each API error, by where it happened.

Owns: `Where` (a read by the client, a listing reaching the pull, a photo, a queue item's request,
a DELETE, the daemon's start-up token check), `Action` and `Decision` (what happens to this
request, and whether every request to the server pauses or the run stops), the one `TABLE`
(every class of the `ApiError` tree, one row each), and `decide`. The package's docstring shows
the same table; `tests/health/test_health.py` walks one against the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from clevertim_sync import errors as e


class Where(StrEnum):
    """Where an error happened: one column of the table."""

    READ = "read"  # a GET by the client, asked after each attempt: retry it, or give up to the caller
    LISTING = "listing"  # a listing's failure reaching the pull (after the client's retries)
    PHOTO = "photo"  # a contact photo (never retried by the client: the next pull tries again)
    WRITE = "write"  # a queue item's POST/PUT, or the GET/listing it re-reads first
    DELETE = "delete"  # a queue item's DELETE
    START = "start"  # the daemon's token check at start-up (after the client's retries)


class Action(StrEnum):
    """What happens to the request (or the resource, photo or queue item it was for)."""

    RETRY = "retry"  # again after a delay: a read at once (health.delays), an item later, one attempt spent
    GIVE_UP = "give up"  # a read: no more tries, the error goes to the caller (and its own column)
    FAIL = "fail"  # this resource or photo is recorded as failed; the others go on
    UNAVAILABLE = "unavailable"  # an optional resource the account lacks (400/404/501): not a failure
    DEAD_LETTER = "dead letter"  # the item fails with the server's message; the others flow
    BACK = "back"  # the item goes back as it was, no attempt spent (the server's fault, not the item's)
    DONE = "done"  # the item did what was asked (a DELETE of a record that is gone)


@dataclass(frozen=True)
class Decision:
    """One cell of the table.

    `pause`: every request to this server (pull, photos, push) waits until the pause ends.
    `stop`: the run ends here with one message; what is left waits for the next run. `halt`: a
    stop that a person must act on (the token or clevertim.url), reported as such. `brief`: a
    read retried on the short budget (clevertim.connect_retries: a server that cannot be reached
    is usually down for everything)."""

    action: Action
    pause: bool = False
    stop: bool = False
    halt: bool = False
    brief: bool = False

    def __str__(self) -> str:
        words = [str(self.action)]
        if self.brief:
            words[0] += " briefly"
        if self.pause:
            words.append("pause")
        if self.halt:
            words.append("halt")
        elif self.stop:
            words.append("stop")
        return ", ".join(words)

    @classmethod
    def parse(cls, text: str) -> Decision:
        """The cell as the docstring's table writes it (`str()` of a Decision): `back, pause, stop`."""
        first, *rest = [w.strip() for w in text.split(",")]
        brief = first.endswith(" briefly")
        action = Action(first.removesuffix(" briefly"))
        unknown = set(rest) - {"pause", "stop", "halt"}
        if unknown:
            raise ValueError(f"not a decision: {text!r}")
        halt = "halt" in rest
        return cls(action, pause="pause" in rest, stop=halt or "stop" in rest, halt=halt, brief=brief)


Row = Mapping[Where, Decision]

RETRY = Decision(Action.RETRY)
GIVE_UP = Decision(Action.GIVE_UP)
FAIL = Decision(Action.FAIL)
DEAD = Decision(Action.DEAD_LETTER)
FATAL = Decision(Action.GIVE_UP, stop=True)  # at start-up: the daemon does not start


def _row(
    read: Decision,
    listing: Decision,
    photo: Decision,
    write: Decision,
    *,
    delete: Decision | None = None,
    start: Decision = FATAL,
) -> Row:
    return {
        Where.READ: read,
        Where.LISTING: listing,
        Where.PHOTO: photo,
        Where.WRITE: write,
        Where.DELETE: delete or write,
        Where.START: start,
    }


# A server-level failure is one whose row pauses or stops a run: every other request would meet it
# too. An outage (cannot connect, 429, 5xx) or a refused token pauses the push (with growing
# waits, no attempt spent: an outage says nothing about the item); a 429 on a listing pauses
# everyone (the server said when); a redirect stops without a pause (a fixed URL goes at once).
OUTAGE = Decision(Action.BACK, pause=True, stop=True)
TABLE: Mapping[type[e.ApiError], Row] = {
    e.ApiError: _row(GIVE_UP, FAIL, FAIL, DEAD),
    e.TransportError: _row(
        Decision(Action.RETRY, brief=True),
        Decision(Action.FAIL, stop=True),
        Decision(Action.FAIL, stop=True),
        OUTAGE,
        start=RETRY,
    ),
    e.ResponseLost: _row(RETRY, FAIL, FAIL, RETRY, start=RETRY),
    e.MalformedResponse: _row(RETRY, FAIL, FAIL, RETRY, start=RETRY),
    e.BadRequest: _row(GIVE_UP, Decision(Action.UNAVAILABLE), FAIL, DEAD),
    e.AuthFailed: _row(GIVE_UP, FAIL, FAIL, Decision(Action.DEAD_LETTER, stop=True)),
    e.LoginRequired: _row(
        GIVE_UP,
        Decision(Action.FAIL, stop=True),
        Decision(Action.FAIL, stop=True),
        Decision(Action.BACK, pause=True, halt=True, stop=True),
    ),
    e.Redirected: _row(
        GIVE_UP,
        Decision(Action.FAIL, stop=True),
        Decision(Action.FAIL, stop=True),
        Decision(Action.BACK, halt=True, stop=True),
    ),
    e.NotFound: _row(GIVE_UP, Decision(Action.UNAVAILABLE), FAIL, DEAD, delete=Decision(Action.DONE)),
    e.RequestNotParsed: _row(GIVE_UP, FAIL, FAIL, DEAD),
    e.NotSupported: _row(GIVE_UP, Decision(Action.UNAVAILABLE), FAIL, DEAD),
    e.ForeignHost: _row(GIVE_UP, FAIL, FAIL, DEAD),
    e.TooLarge: _row(GIVE_UP, FAIL, FAIL, DEAD),
    e.ListingTooLarge: _row(GIVE_UP, FAIL, FAIL, DEAD),
    e.SpoolFailed: _row(GIVE_UP, FAIL, FAIL, DEAD),
    e.RateLimited: _row(
        RETRY,
        Decision(Action.FAIL, pause=True, stop=True),
        Decision(Action.FAIL, pause=True, stop=True),
        OUTAGE,
        start=RETRY,
    ),
    e.ServiceUnavailable: _row(RETRY, FAIL, FAIL, OUTAGE, start=RETRY),
}

# The statuses of an optional resource's listing that mean "this account lacks the endpoint" (an
# older plan, no rights), where the table says `unavailable`; any other status is a failure.
UNAVAILABLE_STATUSES = frozenset({400, 404, 501})


def decide(
    exc: e.ApiError,
    where: Where,
    *,
    optional: bool = False,
    table: Mapping[type[e.ApiError], Row] = TABLE,
) -> Decision:
    """The cell of `table` for `exc`'s class (or its nearest ancestor in the table) at `where`.

    `optional`: the listing is of an optional resource (`Resource.optional`); only then, and
    only for a status in UNAVAILABLE_STATUSES, is `unavailable` kept, else it is `fail`."""
    for cls in type(exc).__mro__:
        row = table.get(cls)
        if row is not None:
            break
    else:  # pragma: no cover - ApiError is in every table
        raise KeyError(type(exc).__name__)
    decision: Decision = row[where]
    if decision.action is Action.UNAVAILABLE and not (optional and exc.status in UNAVAILABLE_STATUSES):
        return Decision(Action.FAIL, pause=decision.pause, stop=decision.stop, halt=decision.halt)
    return decision
