"""The server's health, one owner: what happens after an API error, and every delay.

The client (a read's retries), the pull (a listing), photos, the writeback worker (a queue
item) and the daemon (its start-up check, a scheduled pull during a pause) report an error here
and follow the answer; none decides by itself. Changing whether a 503 pauses everyone, or the
delay of a retry, is a change of this package only.

- `table.py`: the decision table, pure (`decide`): every error of the tree (errors.py), one row;
- `delays.py`: backoff with jitter, Retry-After, a failing resource's rest, the start-up waits;
- `policy.py`: the numbers of the delays (defaults, or `Policy.from_settings`) with the table;
- `owner.py`: `ServerHealth`, the decision applied for one run: the pause set (its row is the
  mirror's, `mirror/pause.py`, through `PauseStore`), read before sending, lifted after a success.

The table, in two parts (`tests/health/test_health.py` checks that this copy is `table.TABLE`); a class
not in it takes its nearest ancestor's row.

Reads:

| error              | read          | listing           | photo             | start         |
|--------------------|---------------|-------------------|-------------------|---------------|
| ApiError           | give up       | fail              | fail              | give up, stop |
| TransportError     | retry briefly | fail, stop        | fail, stop        | retry         |
| ResponseLost       | retry         | fail              | fail              | retry         |
| MalformedResponse  | retry         | fail              | fail              | retry         |
| BadRequest         | give up       | unavailable       | fail              | give up, stop |
| AuthFailed         | give up       | fail              | fail              | give up, stop |
| LoginRequired      | give up       | fail, stop        | fail, stop        | give up, stop |
| Redirected         | give up       | fail, stop        | fail, stop        | give up, stop |
| NotFound           | give up       | unavailable       | fail              | give up, stop |
| RequestNotParsed   | give up       | fail              | fail              | give up, stop |
| NotSupported       | give up       | unavailable       | fail              | give up, stop |
| ForeignHost        | give up       | fail              | fail              | give up, stop |
| TooLarge           | give up       | fail              | fail              | give up, stop |
| ListingTooLarge    | give up       | fail              | fail              | give up, stop |
| SpoolFailed        | give up       | fail              | fail              | give up, stop |
| RateLimited        | retry         | fail, pause, stop | fail, pause, stop | retry         |
| ServiceUnavailable | retry         | fail              | fail              | retry         |

Writes (a queue item):

| error              | write             | delete            |
|--------------------|-------------------|-------------------|
| ApiError           | dead letter       | dead letter       |
| TransportError     | back, pause, stop | back, pause, stop |
| ResponseLost       | retry             | retry             |
| MalformedResponse  | retry             | retry             |
| BadRequest         | dead letter       | dead letter       |
| AuthFailed         | dead letter, stop | dead letter, stop |
| LoginRequired      | back, pause, halt | back, pause, halt |
| Redirected         | back, halt        | back, halt        |
| NotFound           | dead letter       | done              |
| RequestNotParsed   | dead letter       | dead letter       |
| NotSupported       | dead letter       | dead letter       |
| ForeignHost        | dead letter       | dead letter       |
| TooLarge           | dead letter       | dead letter       |
| ListingTooLarge    | dead letter       | dead letter       |
| SpoolFailed        | dead letter       | dead letter       |
| RateLimited        | back, pause, stop | back, pause, stop |
| ServiceUnavailable | back, pause, stop | back, pause, stop |

The columns: **read** a GET by the client, after each attempt (`retry` within the read budget,
`retry briefly` within clevertim.connect_retries; then `give up`: the caller's column decides);
**listing** a listing's failure reaching the pull; **photo** a contact photo (never retried: the
next pull tries it again); **write** a queue item's POST/PUT or the GET it re-reads first;
**delete** a queue item's DELETE; **start** the daemon's token check at start-up (`retry`: wait
and check again; `give up, stop`: the daemon does not start).

The words: `fail` the resource or photo is recorded failed, the rest goes on; `unavailable` an
optional resource (/folder, /file, /linkedfile) whose listing answered 400, 404 or 501: the
account lacks it, not a failure (any other status: `fail`); `dead letter` the item fails with the
server's message (`retry` becomes one after push.max_attempts); `back` the item goes back as it
was, no attempt spent; `done` a DELETE of a record that is gone did what was asked; `pause` the
daemon's pulls (photos with them) and every push wait until the pause ends (a `sync` by hand does
not): what the server asked for a read (Retry-After, or clevertim.rate_limit_floor for a bare
429), backoff over the outages in a row for a write; `stop` the run ends with one message, the
rest waits for the next run; `halt` a stop a person must act on (the token or clevertim.url). A
create whose request may have reached the server (`ApiError.may_have_reached_server`) and goes
`retry` or `back` is reconciled against the server before it is sent again (writeback/worker.py).
"""

from __future__ import annotations

from clevertim_sync.health.owner import Pause, PauseStore, ServerHealth, Verdict
from clevertim_sync.health.policy import Policy
from clevertim_sync.health.table import TABLE, Action, Decision, Where, decide

__all__ = [
    "TABLE",
    "Action",
    "Decision",
    "Pause",
    "PauseStore",
    "Policy",
    "ServerHealth",
    "Verdict",
    "Where",
    "decide",
]
