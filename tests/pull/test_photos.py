"""Contact photos (`pull.photos = true`): fetched after the contacts, only when `cphoto` changed,
kept as bytes with their sha256; a failing photo never fails the pull; the token goes only to
the API's own host. Against the emulator over loopback, on SQLite and PostgreSQL; the client's
redirect and size rules also through httpx MockTransport."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import with_quirks

from clevertim_sync.api import errors as e
from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.emulator import EmulatorServer, documents
from clevertim_sync.emulator.documents import png
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import Settings

# a photo's read is retried once
pytestmark = pytest.mark.api_client(read_retries=1)

TOKEN = "test-token"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def photos_on(**pull: Any) -> Settings:
    return Settings.model_validate({"pull": {"photos": True, **pull}})


def stored(engine: sa.Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.contact_id: r for r in conn.execute(sa.select(schema.contact_photos))}


def photo_requests(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [r for r in emulator.control.requests() if r["resource"] == "getcphoto"]


def with_photo(emulator: EmulatorServer) -> dict[int, str]:
    """{contact id: cphoto} of the contacts the token sees with a photo (as the emulator stores them)."""
    return {
        c["id"]: c["cphoto"] for c in emulator.control.state(as_token=TOKEN)["contact"] if c.get("cphoto")
    }


def test_photos_are_off_by_default(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    emulator.control.clear_requests()
    report = pull(mirror_engine, api_client)
    assert report.ok and report.photos is None
    assert with_photo(emulator) and not photo_requests(emulator) and not stored(mirror_engine)


@with_quirks  # the contacts' ids as strings, "" for a null cphoto, ...
def test_photos_are_fetched_once_and_again_only_when_cphoto_changes(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    expected = with_photo(emulator)
    report = pull(mirror_engine, api_client, settings=photos_on())
    assert report.ok and report.photos is not None
    assert (report.photos.fetched, report.photos.failed, report.photos.left) == (len(expected), 0, 0)
    rows = stored(mirror_engine)
    assert {cid: r.cphoto for cid, r in rows.items()} == expected
    for cid, row in rows.items():
        image = bytes(row.content)
        assert image == png(cid) and image.startswith(PNG_SIGNATURE)
        assert struct.unpack(">II", image[16:24]) == (8, 8)  # IHDR: a real 8x8 image
        assert row.sha256 == hashlib.sha256(image).hexdigest() and row.size == len(image)
        assert row.content_type == "image/png" and row.fetched_at is not None and row.last_error is None
    assert all(r["auth"] for r in photo_requests(emulator))  # the API's own host: with the token

    emulator.control.clear_requests()
    assert pull(mirror_engine, api_client, settings=photos_on()).ok
    assert photo_requests(emulator) == []  # nothing changed: nothing fetched

    changed, dropped, gone = list(expected)[:3]
    emulator.control.update("contact", changed, {"cphoto": "portrait-2.png"})
    emulator.control.update("contact", dropped, {"cphoto": None})
    emulator.control.delete("contact", gone)
    report = pull(mirror_engine, api_client, settings=photos_on())
    assert report.photos is not None and (report.photos.fetched, report.photos.removed) == (1, 2)
    assert [r["path"] for r in photo_requests(emulator)] == [f"/getcphoto/{changed}/portrait-2.png"]
    rows = stored(mirror_engine)
    assert rows[changed].cphoto == "portrait-2.png" and dropped not in rows and gone not in rows


def test_a_failing_photo_never_fails_the_pull_and_is_tried_again(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, cli_runner: Any,
    migrated_database_url: str,
) -> None:  # fmt: skip
    first, second, *rest = with_photo(emulator)
    emulator.control.add_fault(kind="status", status=500, path=f"^/getcphoto/{first}/")
    emulator.control.add_fault(kind="truncate", path=f"^/getcphoto/{second}/")
    report = pull(mirror_engine, api_client, settings=photos_on())
    contacts = report.resources["contact"]
    assert report.ok and report.status == "ok" and contacts.inserted == contacts.listed > 0
    assert report.photos is not None and (report.photos.fetched, report.photos.failed) == (len(rest), 2)
    rows = stored(mirror_engine)
    assert rows[first].content is None and "HTTP 500" in rows[first].last_error
    assert rows[second].content is None and rows[second].last_error
    status = cli_runner(migrated_database_url)("status", code=0).output
    assert f"contact photos: {len(rest)} kept, 2 failing" in status

    emulator.control.clear_faults()
    emulator.control.clear_requests()
    report = pull(mirror_engine, api_client, settings=photos_on())
    assert report.photos is not None and (report.photos.fetched, report.photos.failed) == (2, 0)
    assert sorted(r["id"] for r in photo_requests(emulator)) == sorted([first, second])
    assert all(
        r.last_error is None and bytes(r.content) == png(cid) for cid, r in stored(mirror_engine).items()
    )


def test_photos_are_kept_in_backups_and_restored(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient, tmp_path: Path,
    empty_database: Callable[[], str],
) -> None:  # fmt: skip
    assert pull(mirror_engine, api_client, settings=photos_on()).ok
    before = stored(mirror_engine)
    archive = bk.backup(mirror_engine, tmp_path / "backups")
    assert archive.manifest.tables["contact_photos"] == len(before) > 0
    bk.verify(archive.path)
    target = empty_database()
    bk.restore(archive.path, target)
    restored = make_engine(target)
    try:
        after = stored(restored)
        # And the restored mirror goes on: nothing changed, so nothing is fetched again.
        emulator.control.clear_requests()
        assert pull(restored, api_client, settings=photos_on()).ok
        assert photo_requests(emulator) == []
    finally:
        restored.dispose()
    assert {k: (bytes(r.content), r.sha256, r.cphoto) for k, r in after.items()} == {
        k: (bytes(r.content), r.sha256, r.cphoto) for k, r in before.items()
    }


def test_a_photo_over_the_limit_is_not_kept(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    report = pull(mirror_engine, api_client, settings=photos_on(photo_max_bytes=20))
    assert report.ok and report.photos is not None and report.photos.fetched == 0
    assert all(
        r.content is None and "over the limit of 20" in r.last_error for r in stored(mirror_engine).values()
    )


# A fresh process fetches the bomb: its peak RSS (ru_maxrss, KiB on Linux) is then this fetch's.
_FETCH_A_BOMB = """
import resource, sys
from clevertim_sync.api import errors as e
from clevertim_sync.api.client import ClevertimClient
url, cid, cphoto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with ClevertimClient(url, "test-token", read_retries=0) as client:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        client.photo(cid, cphoto, max_bytes=1 << 20)
    except e.TooLarge as exc:
        print("TooLarge", exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)
"""


def test_a_gzip_bomb_is_refused_at_the_limit_with_memory_bounded_by_a_piece(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    bomb = documents.gzip_bomb()  # made before anything is measured (256 KiB -> 256 MiB)
    assert len(bomb) < 1 << 20
    cid, cphoto = next(iter(with_photo(emulator).items()))
    emulator.control.add_fault(kind="gzip_bomb", path="^/getcphoto/")
    fetch = subprocess.run(
        [sys.executable, "-c", _FETCH_A_BOMB, emulator.base_url, str(cid), cphoto],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    told, grown_mib = fetch.stdout.splitlines()
    assert told.startswith("TooLarge") and f"over the limit of {1 << 20} bytes" in told
    assert int(grown_mib) < 16, f"fetching the bomb grew the peak RSS by {grown_mib} MiB"
    # The pull keeps no photo, says why, and the next one fetches it again.
    emulator.control.add_fault(kind="gzip_bomb", path="^/getcphoto/", times=None)
    report = pull(mirror_engine, api_client, settings=photos_on(photo_max_bytes=1 << 20))
    assert report.ok and report.photos is not None and report.photos.fetched == 0
    rows = stored(mirror_engine)
    assert rows and all(r.content is None and "over the limit" in r.last_error for r in rows.values())


def test_the_client_decodes_gzip_and_deflate_photos_and_refuses_other_encodings() -> None:
    image = png(5)
    packed = {
        "gzip": gzip.compress(image),
        "deflate": zlib.compress(image),
        "identity": image,
        "br": image,
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        encoding = request.url.path.split("/")[-1].removesuffix(".png")
        return httpx.Response(
            200,
            content=iter([packed[encoding]]),  # a stream, as from the network
            headers={"Content-Type": "image/png", "Content-Encoding": encoding},
        )

    with _client(answer) as client:
        for encoding in ("gzip", "deflate", "identity"):
            assert client.photo(5, f"{encoding}.png", max_bytes=10_000).content == image
        with pytest.raises(e.MalformedResponse, match="an encoding not asked for: br"):
            client.photo(5, "br.png", max_bytes=10_000)


def test_a_refused_token_ends_the_round_and_the_rest_wait(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    due = with_photo(emulator)
    emulator.control.add_fault(kind="login_page", status=200, path="^/getcphoto/")
    emulator.control.clear_requests()
    report = pull(mirror_engine, api_client, settings=photos_on())
    assert report.ok  # the listings went through; only the photos met the login page
    assert report.photos is not None and (report.photos.failed, report.photos.left) == (1, len(due) - 1)
    assert len(photo_requests(emulator)) == 1


def test_a_pull_fetches_at_most_photos_per_pull(
    mirror_engine: sa.Engine, emulator: EmulatorServer, api_client: ClevertimClient
) -> None:
    due = len(with_photo(emulator))
    assert due > 4
    counts = []
    for _ in range(3):
        report = pull(mirror_engine, api_client, settings=photos_on(photos_per_pull=2))
        assert report.photos is not None
        counts.append((report.photos.fetched, report.photos.left))
    assert counts == [(2, due - 2), (2, due - 4), (min(2, due - 4), max(0, due - 6))]
    assert len(stored(mirror_engine)) == min(6, due)


class _Cdn(BaseHTTPRequestHandler):
    """Another host: serves any path as a PNG and remembers the headers it was sent."""

    seen: list[dict[str, str]] = []  # noqa: RUF012 (one list per test, reset by the fixture)

    def do_GET(self) -> None:  # http.server's name for it
        type(self).seen.append(dict(self.headers.items()))
        body = png(999)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def cdn() -> Iterator[tuple[str, list[dict[str, str]]]]:
    _Cdn.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Cdn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Cdn.seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_photo_redirected_to_another_host_is_fetched_without_the_token(
    mirror_engine: sa.Engine,
    emulator: EmulatorServer,
    api_client: ClevertimClient,
    cdn: tuple[str, list[dict[str, str]]],
) -> None:
    where, seen = cdn
    contact = next(iter(with_photo(emulator)))
    emulator.control.add_fault(
        kind="redirect", status=302, path=f"^/getcphoto/{contact}/", location=f"{where}/cdn/{contact}.png"
    )
    report = pull(mirror_engine, api_client, settings=photos_on())
    assert report.ok and report.photos is not None and report.photos.failed == 0
    assert bytes(stored(mirror_engine)[contact].content) == png(999)  # what the other host served
    assert len(seen) == 1 and not any(k.lower() == "authorization" for k in seen[0])
    assert TOKEN not in str(seen)


def test_the_emulator_serves_photos_with_the_apis_rules(emulator: EmulatorServer) -> None:
    contact, cphoto = next(iter(with_photo(emulator).items()))
    url = emulator.base_url.removesuffix("/api") + f"/getcphoto/{contact}/{cphoto}"
    assert httpx.get(url).status_code == 401  # no token, no photo
    ok = httpx.get(url, auth=(TOKEN, "X"))
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png" and ok.content == png(contact)
    assert httpx.get(url.replace(cphoto, "other.png"), auth=(TOKEN, "X")).status_code == 404
    assert (
        httpx.get(f"{emulator.base_url}/folder/f1001", auth=(TOKEN, "X")).json()["content"][0]["id"]
        == "f1001"
    )


# --- the client's rules, through MockTransport ------------------------------------------------


def _client(handler: Any) -> ClevertimClient:
    return ClevertimClient("https://crm.example/api", "tok-123", http=httpx.MockTransport(handler))


def test_the_client_sends_the_token_only_to_the_apis_host_and_never_down_to_http() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.host == "crm.example":
            return httpx.Response(302, headers={"Location": "https://cdn.example/p/1.png"})
        return httpx.Response(200, content=iter([png(1)]), headers={"Content-Type": "image/png"})

    with _client(handler) as client:
        photo = client.photo(7, "me & you.png", max_bytes=10_000)
    assert photo.content == png(1) and photo.content_type == "image/png"
    assert str(sent[0].url) == "https://crm.example/getcphoto/7/me%20%26%20you.png"
    assert "authorization" in sent[0].headers and "authorization" not in sent[1].headers

    def downgrade(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "http://cdn.example/p/1.png"})

    with _client(downgrade) as client, pytest.raises(e.ForeignHost, match="not followed"):
        client.photo(7, "a.png", max_bytes=10_000)

    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again"})

    with _client(loop) as client, pytest.raises(e.Redirected, match="more than 3 redirects"):
        client.photo(7, "a.png", max_bytes=10_000)


def test_the_client_keeps_no_photo_over_the_limit_nor_anything_but_an_image() -> None:
    def streamed(request: httpx.Request) -> httpx.Response:  # no Content-Length: counted as it comes
        return httpx.Response(
            200, content=iter([b"x" * 600, b"y" * 600]), headers={"Content-Type": "image/jpeg"}
        )

    with _client(streamed) as client, pytest.raises(e.TooLarge, match="over the limit of 1000 bytes"):
        client.photo(7, "a.jpg", max_bytes=1000)

    answers = {
        "/getcphoto/1/a.png": httpx.Response(404, json={"status": "ERROR", "error": "no such photo"}),
        "/getcphoto/2/a.png": httpx.Response(200, text="<html><form>login</form></html>",
                                             headers={"Content-Type": "text/html"}),
        "/getcphoto/3/a.png": httpx.Response(200, json={"status": "OK", "content": []}),
    }  # fmt: skip

    with _client(lambda request: answers[request.url.path]) as client:
        with pytest.raises(e.NotFound):
            client.photo(1, "a.png", max_bytes=1000)
        with pytest.raises(e.LoginRequired):
            client.photo(2, "a.png", max_bytes=1000)
        with pytest.raises(e.MalformedResponse, match="not an image"):
            client.photo(3, "a.png", max_bytes=1000)
