"""Logging setup: the redaction processor, JSON lines and console output, stdlib routing."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa
import structlog

from clevertim_sync import logs
from clevertim_sync.logs import REDACTED, configure_logging, is_secret_key, redact_secrets, register_secret
from clevertim_sync.mirror.failures import error_text

SECRET = "tok-4f8a9b2c7d1e"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "api_key",
        "apiKey",
        "password",
        "Authorization",
        "auth",
        "client_secret",
        "accessToken",
        "X-Auth-Token",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["resource", "author", "token_file", "status", "records", "authority_id"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_processor_redacts_keys_and_registered_values_nested() -> None:
    register_secret(SECRET)
    event = {
        "event": f"failed with {SECRET}",
        "token": "anything",
        "headers": {"Authorization": "Basic abc", "Accept": "json"},
        "items": [f"a{SECRET}b", 3, None],
        "exc": ValueError(f"bad {SECRET}"),
        "count": 5,
    }
    out = redact_secrets(None, "info", event)
    assert out["token"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert out["event"] == f"failed with {REDACTED}"
    assert out["items"] == [f"a{REDACTED}b", 3, None]
    assert SECRET not in str(out["exc"]) and out["count"] == 5


def test_basic_auth_form_of_the_secret_is_masked() -> None:
    register_secret(SECRET)
    header = "Basic " + base64.b64encode(f"{SECRET}:X".encode()).decode()
    assert redact_secrets(None, "info", {"event": "x", "h": header})["h"] == f"Basic {REDACTED}"


def test_short_values_are_not_registered() -> None:
    register_secret("t")
    assert redact_secrets(None, "info", {"event": "test it"})["event"] == "test it"


def test_json_lines_with_utc_iso_timestamp_and_redaction() -> None:
    register_secret(SECRET)
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = structlog.get_logger("clevertim_sync.test")
    log.info("pull.finished", resource="contact", inserted=3, token=SECRET)
    log.debug("hidden.debug")
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        log.exception("pull.crashed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["pull.finished", "pull.crashed"]
    first = lines[0]
    assert first["resource"] == "contact" and first["inserted"] == 3 and first["token"] == REDACTED
    assert first["level"] == "info" and first["logger"] == "clevertim_sync.test"
    assert first["timestamp"].endswith("Z") and datetime.fromisoformat(first["timestamp"]).tzinfo
    assert "RuntimeError" in lines[1]["exception"]
    assert SECRET not in out.getvalue()


def test_stdlib_loggers_go_through_the_same_chain() -> None:
    register_secret(SECRET)
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    logging.getLogger("some.library").info("running with %s", SECRET)
    logging.getLogger("httpx").info("HTTP Request: GET /api/contact")  # quietened to WARNING
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1 and lines[0]["event"] == f"running with {REDACTED}"
    assert lines[0]["logger"] == "some.library"


def test_console_format_is_readable() -> None:
    register_secret(SECRET)
    out = TtyStream()
    configure_logging("auto", "debug", stream=out)
    structlog.get_logger("x").debug("push.item", item=4, password="p")
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # a terminal gets colours
    assert "push.item" in text and "item=4" in text and "password=[redacted]" in text
    assert not text.lstrip().startswith("{")  # not JSON


def test_auto_is_json_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging("auto", "warning", stream=out)
    structlog.get_logger("x").info("quiet")
    structlog.get_logger("x").warning("loud", n=1)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_reconfigure_does_not_duplicate_handlers() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    configure_logging("json", "info", stream=out)
    structlog.get_logger("x").info("once")
    assert len(out.getvalue().splitlines()) == 1


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("json", "chatty", stream=io.StringIO())
    assert logs.MIN_SECRET_LENGTH >= 4


def test_a_logged_traceback_and_an_error_text_quote_no_value_of_a_record() -> None:
    # SQLAlchemy's text carries the statement's parameters; a driver's or Python's quotes a value.
    engine = sa.create_engine("sqlite://")
    errors: list[Exception] = []
    seeded = "Zebulon Canary"  # a record's value (not on the lines a traceback shows)
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 'x')")
        try:
            conn.execute(sa.text("INSERT INTO t VALUES (1, :name)"), {"name": seeded})
        except sa.exc.IntegrityError as exc:
            errors.append(exc)
    errors.append(KeyError(seeded.lower().replace(" ", "@") + ".example"))
    out = io.StringIO()
    configure_logging("console", "debug", stream=out)
    log = structlog.get_logger("clevertim_sync.test")
    for error in errors:
        try:
            raise error
        except Exception:
            log.exception("pull.crashed")
        assert "anary" not in error_text(error)
    assert error_text(errors[0]) == "IntegrityError: UNIQUE constraint failed: t.id"
    assert error_text(errors[1]) == 'KeyError: "…"'
    logged = out.getvalue()
    assert "IntegrityError" in logged and "KeyError" in logged and "Traceback" in logged
    assert "anary" not in logged and "[parameters" not in logged


def test_an_alert_url_masks_its_token_segments_and_not_the_common_words_of_its_path() -> None:
    slack = "https://hooks.slack.com/services/T0AB12CD3/B0XY45ZW6/abcdEFGHijklMNOPqrstUVWX"
    webhook = "json://alerts.example.org/api/webhook/send/hooks/CALLBACKTOKENWXYZ?x=1"
    ntfy = "ntfy://MyTopicHere"
    for url in (slack, webhook, ntfy):
        logs.register_url_secret(url)
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = structlog.get_logger("clevertim_sync.test")
    plain = "the services api of the send hooks webhook SERVICES"
    log.info("unrelated", note=plain)
    log.info(
        "sending", to="T0AB12CD3/B0XY45ZW6/abcdEFGHijklMNOPqrstUVWX", then="CALLBACKTOKENWXYZ MyTopicHere"
    )
    log.info("sent", url=slack, host="mytopichere")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["note"] == plain  # words of an alert URL's path stay readable elsewhere
    tokens = ("T0AB12CD3", "B0XY45ZW6", "abcdEFGHijklMNOPqrstUVWX", "CALLBACKTOKENWXYZ", "MyTopicHere")
    assert [t for t in tokens if t in out.getvalue()] == []
    assert lines[1]["to"] == f"{REDACTED}/{REDACTED}/{REDACTED}"
    assert lines[2]["url"] == REDACTED and lines[2]["host"] == REDACTED
