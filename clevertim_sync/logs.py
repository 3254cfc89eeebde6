"""Logging: structlog configured once per process, JSON lines for journald, readable on a terminal.

Owns: `configure_logging(fmt, level)`, the secret-redacting processor and the one registry of
secret values: the API client registers its token (`register_secret`), the alerts their receivers'
URLs (`register_url_secret`: a Slack webhook's tokens, a mail password, an ntfy topic); and
`scrub_traceback`, so that an exception's message quotes no record in a logged traceback.
Standard-library loggers (httpx, alembic, APScheduler, apprise) are routed through the same
processors, so redaction covers them too.


Usage elsewhere: `log = structlog.get_logger(__name__)`, then dotted event names with key-values:
`log.info("pull.finished", resource="contact", inserted=3)`.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, Literal, TextIO
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
Format = Literal["auto", "json", "console"]

# A key is secret when one of its words is one of these ("api_key", "X-Auth-Token", "password").
_SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "pwd",
        "authorization",
        "auth",
        "secret",
        "apikey",
        "credential",
        "credentials",
        "cookie",
        "bearer",
    }
)
# camelCase or run-together keys ("accessToken", "apikey") end with one of these.
_SECRET_SUFFIXES = ("token", "password", "secret", "apikey", "authorization")
# Keys that name where a secret lives, not the secret: keep them, they help debugging.
_HARMLESS_SUFFIXES = ("_file", "_path", "_dir", "_env")
_SPLIT = re.compile(r"[^a-z0-9]+")
# Shorter values are not registered: masking every "t" in every line would destroy the logs.
MIN_SECRET_LENGTH = 4

# Longest first, so that a whole URL is masked before the tokens inside it.
_secrets: list[str] = []
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask `value` (and its HTTP basic-auth form `value:X`) wherever it appears in a log value."""
    if len(value) < MIN_SECRET_LENGTH:
        return
    basic = base64.b64encode(f"{value}:X".encode()).decode("ascii")
    with _secrets_lock:
        _secrets.extend(s for s in (value, basic) if s not in _secrets)
        _secrets.sort(key=len, reverse=True)


def register_url_secret(url: str) -> None:
    """Mask a URL that holds secrets (an apprise receiver's) wherever it or a part of it appears.

    Registered: the whole URL; the user and the password; every query value and the fragment;
    the host when it is not a host name (`slack://TokenA/...`, `ntfy://my-topic`); and each path
    segment that looks like a token, that is every segment but a plain word: letters only, all
    of one case, shorter than 16 characters. So a Slack webhook's `T0.../B0.../XXXX...` (a digit,
    mixed case, or 24 characters) are masked, while `services`, `api`, `hooks`, `send` or
    `webhook` stay readable in every other log line; a segment that is such a plain word is
    masked only as part of the whole URL. Each part is registered raw and percent-decoded, as a
    library may log either."""
    register_secret(url)
    parts = urlsplit(url)
    found = [parts.username, parts.password, parts.fragment]
    found += [segment for segment in parts.path.split("/") if _looks_like_token(unquote(segment))]
    found += [value for _key, value in parse_qsl(parts.query, keep_blank_values=True)]
    host = _host_as_written(parts.netloc)
    if host and "." not in host and host.lower() != "localhost" and not host.startswith("["):
        found += [host, host.lower()]  # (urlsplit's hostname is lower-cased; a log line may not be)
    for value in found:
        if value:
            register_secret(value)
            register_secret(unquote(value))


# A path segment that cannot be much of a secret: a short word of one case ("services", "API").
_PLAIN_WORD = re.compile(r"[a-z]{1,15}|[A-Z]{1,15}")


def _looks_like_token(segment: str) -> bool:
    return bool(segment) and _PLAIN_WORD.fullmatch(segment) is None


def _host_as_written(netloc: str) -> str:
    """The host part of a URL's netloc in its own case, without user, password and port."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):  # an IPv6 literal: never a token
        return host
    return host.partition(":")[0]


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    if lowered.endswith(_HARMLESS_SUFFIXES):
        return False
    words = _SPLIT.split(lowered)
    if any(w in _SECRET_WORDS for w in words):
        return True
    compact = lowered.replace("_", "").replace("-", "")
    return compact.endswith(_SECRET_SUFFIXES)


def _mask_string(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any, secrets: tuple[str, ...], depth: int = 0) -> Any:
    if isinstance(value, str):
        return _mask_string(value, secrets) if secrets else value
    if depth > 5:  # deep structures do not belong in log lines; do not recurse forever
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else _redact_value(v, secrets, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, secrets, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return _redact_value(bytes(value).decode("utf-8", "replace"), secrets, depth + 1)
    if secrets and not isinstance(value, int | float | bool) and value is not None:
        # An object whose str() carries a secret (an exception, a SecretStr's value...).
        text = str(value)
        if any(s in text for s in secrets):
            return _mask_string(text, secrets)
    return value


_QUOTED = re.compile(r'"[^"\n]*"|\'[^\'\n]*\'')
_TRACEBACK_HEADINGS = ("Traceback ", "During handling ", "The above exception ")


def without_quotes(text: str) -> str:
    """`text` with every quoted span emptied: what an error message quotes is often a value."""
    return _QUOTED.sub('"…"', text)


def scrub_traceback(text: str) -> str:
    """A rendered traceback without what an exception's message may quote from a record: the
    frames (indented lines: files, line numbers, code) stay; SQLAlchemy's `[parameters: ...]`
    goes, and so does every quoted span of the exception lines (`KeyError: '...'`, PostgreSQL's
    `invalid input syntax for type integer: "..."`)."""
    out = []
    for line in text.splitlines():
        if line.startswith("[parameters:"):
            continue
        message = line and not line[0].isspace() and not line.startswith(_TRACEBACK_HEADINGS)
        out.append(without_quotes(line) if message else line)
    return "\n".join(out)


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: secret keys become "[redacted]", registered secret values are masked."""
    if "exc_info" in event_dict:
        # Render the traceback here so that it is masked too, whatever renderer follows.
        event_dict = structlog.processors.format_exc_info(_logger, _name, event_dict)
        if isinstance(event_dict.get("exception"), str):
            event_dict["exception"] = scrub_traceback(event_dict["exception"])
    secrets = tuple(_secrets)
    for key in list(event_dict):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key], secrets)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    # OPT_NON_STR_KEYS: structlog callers may log dicts keyed by ints (record ids).
    return orjson.dumps(obj, default=default or str, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


def shared_processors() -> list[Processor]:
    """Everything but the renderer, in order; the same chain serves structlog and stdlib records."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return number


def configure_logging(
    fmt: Format = "auto", level: str | int = "info", *, stream: TextIO | None = None
) -> None:
    """Set up structlog and the stdlib root logger for this process. Safe to call again (SIGHUP)."""
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    number = _level_number(level)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_clevertim_sync", False):
            root.removeHandler(old)
    handler._clevertim_sync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(number)
    # httpx logs every request at INFO; our client logs what matters with context.
    logging.getLogger("httpx").setLevel(max(number, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(number, logging.WARNING))

    structlog.configure(
        processors=[*shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(number),
        # Not cached: tests (capture_logs) and SIGHUP reconfigure loggers made at import time.
        cache_logger_on_first_use=False,
    )


def bind_context(**values: Any) -> None:
    """Bind key-values (account=..., run_id=...) to every log line of this thread/task."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context(*keys: str) -> None:
    if keys:
        structlog.contextvars.unbind_contextvars(*keys)
    else:
        structlog.contextvars.clear_contextvars()
