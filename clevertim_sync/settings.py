"""Configuration: a TOML file overridden by environment variables, validated into one frozen Settings.

Owns: where the config file is looked for, which environment variables override what, the
defaults, and turning every problem into one ConfigError (exit status 2) that lists them all.


Sources, later wins: built-in defaults < the TOML file < environment variables. The token comes
from `CLEVERTIM_TOKEN`, else the file named by `CLEVERTIM_TOKEN_FILE` (or `clevertim.token_file`),
else the systemd credential `clevertim-token` in `$CREDENTIALS_DIRECTORY`. It is a SecretStr so
that no repr, log line or exception shows it. The alert URLs likewise: `alerts.urls`, plus those in
`alerts.urls_file` (or `CLEVERTIM_SYNC_ALERT_URLS_FILE`, else the credential
`clevertim-sync-alert-urls`). Backups: the age recipients are `backup.age_recipients` plus those in
`backup.age_recipients_file`; restic's password file is `backup.restic_password_file`, else the
credential `clevertim-sync-restic-password`, else restic's own `RESTIC_PASSWORD_FILE`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from clevertim_sync import resources
from clevertim_sync.errors import ConfigError

DEFAULT_URL = "https://www.clevertim.com/api"
DEFAULT_DB_FILE = "clevertim-sync.sqlite3"
CREDENTIAL_NAME = "clevertim-token"
ALERT_URLS_CREDENTIAL = "clevertim-sync-alert-urls"
RESTIC_PASSWORD_CREDENTIAL = "clevertim-sync-restic-password"  # noqa: S105 (a name, not a password)


def config_search_path(env: Mapping[str, str]) -> list[Path]:
    """Where a config file is looked for when `--config` is not given, first match wins."""
    paths = [Path("clevertim-sync.toml")]
    xdg = env.get("XDG_CONFIG_HOME") or (str(Path(env["HOME"]) / ".config") if "HOME" in env else None)
    if xdg:
        paths.append(Path(xdg) / "clevertim-sync" / "config.toml")
    paths.append(Path("/etc/clevertim-sync/config.toml"))
    return paths


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_url_problems(url: str, *, allow_insecure_http: bool) -> list[str]:
    """Why `url` cannot be the API's base URL (empty: it can): the one rule, for the settings and
    the client alike. A URL that carries credentials is not echoed."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return ["the API URL must not carry credentials: give the token through CLEVERTIM_TOKEN"]
    problems = []
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"the API URL must be an http(s) URL such as {DEFAULT_URL}, not {url!r}")
    elif parts.scheme == "http" and not is_loopback(url) and not allow_insecure_http:
        problems.append(
            f"the API URL {url!r} is plain HTTP to a remote host, which would send the token in clear; "
            "use https, or set clevertim.allow_insecure_http = true if you really mean it"
        )
    if parts.query or parts.fragment:
        problems.append(f"the API URL must not have a query or fragment: {url!r}")
    return problems


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClevertimSettings(_Section):
    url: str = Field(DEFAULT_URL, description="the API's base URL (https; plain http only to loopback)")
    token: SecretStr | None = Field(
        None,
        description="the API token; rather CLEVERTIM_TOKEN, token_file or the systemd credential "
        "clevertim-token, so that it stays out of the file",
    )
    token_file: Path | None = Field(
        None, description="a file holding the token, read again after the server refused it (rotation)"
    )
    allow_insecure_http: bool = Field(
        False, description="allow a plain-http URL to a remote host (the token would travel in clear)"
    )
    timeout: float = Field(30.0, gt=0, le=600, description="seconds for connect, read and write")
    read_retries: int = Field(5, ge=0, le=20, description="retries of a GET within one pull")
    connect_retries: int = Field(
        3, ge=0, le=20, description="retries of a GET that could not connect (at most read_retries)"
    )
    rate_limit_floor: float = Field(
        30.0, ge=0, le=3600, description="least seconds to wait after a 429 without Retry-After"
    )
    ca_bundle: Path | None = Field(None, description="PEM file of CA certificates (TLS-inspecting proxy)")
    user_agent: str = Field("clevertim-sync", description="the User-Agent header of every request")

    @model_validator(mode="after")
    def _check_url(self) -> ClevertimSettings:
        problems = api_url_problems(self.url, allow_insecure_http=self.allow_insecure_http)
        if problems:
            raise ValueError("; ".join(problems))
        if self.ca_bundle is not None:
            problem = _pem_problem(self.ca_bundle)
            if problem:
                raise ValueError(f"ca_bundle {self.ca_bundle}: {problem}")
        return self


def _pem_problem(path: Path) -> str | None:
    """Why `path` is not a usable PEM bundle of CA certificates, or None."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if b"-----BEGIN CERTIFICATE-----" not in text:
        return "is not a PEM file of certificates (no BEGIN CERTIFICATE line)"
    return None


class DatabaseSettings(_Section):
    url: str = Field(  # filled in by load(): a SQLite file in the state or working directory
        "",
        description="SQLAlchemy URL of the mirror: sqlite:///PATH or postgresql://USER@HOST/DB; "
        "unset: <state_dir>/clevertim-sync.sqlite3",
    )
    sqlite_busy_timeout: float = Field(30.0, gt=0, description="seconds a writer waits for a lock")


class PullSettings(_Section):
    interval: float = Field(900.0, gt=0, description="seconds between scheduled pulls")
    jitter: float = Field(
        30.0, ge=0, description="most random seconds added to a pull (at most a quarter of its interval)"
    )
    intervals: dict[str, float] = Field(default_factory=dict, description="per-resource intervals")
    mass_delete_threshold: float = Field(
        0.25, gt=0, le=1, description="largest share of a resource one pull may delete"
    )
    mass_delete_min_records: int = Field(
        10, ge=0, description="below this many mirrored records the share rule does not apply"
    )
    unavailable_retry: float = Field(
        21600.0, gt=0, description="seconds before a resource this account lacks (404/400/501) is tried again"
    )
    photos: bool = Field(False, description="fetch contact photos into contact_photos (opt-in)")
    photo_max_bytes: int = Field(5_000_000, gt=0, description="largest contact photo kept, in bytes")
    photos_per_pull: int = Field(
        1000, gt=0, description="most photos one pull fetches (a first pull of a big account spreads out)"
    )
    max_listing_bytes: int = Field(
        2_000_000_000,
        gt=0,
        description="largest listing body downloaded, in bytes (a bigger one fails its resource only)",
    )

    def jitter_for(self, interval: float) -> float:
        """The random spread of a pull scheduled every `interval` s: `jitter`, but at most a quarter
        of the interval, so a short interval stays roughly periodic (5 s pulls are not 0-35 s apart)."""
        return min(self.jitter, interval / 4)

    @model_validator(mode="after")
    def _check_resources(self) -> PullSettings:
        unknown = sorted(set(self.intervals) - set(resources.BY_NAME))
        if unknown:
            raise ValueError(f"pull.intervals names unknown resources: {', '.join(unknown)}")
        bad = sorted(k for k, v in self.intervals.items() if v <= 0)
        if bad:
            raise ValueError(f"pull.intervals must be positive seconds: {', '.join(bad)}")
        return self


class PushSettings(_Section):
    interval: float = Field(30.0, gt=0, description="seconds between scheduled pushes")
    conflict_policy: Literal["manual", "local-wins", "remote-wins"] = Field(
        "manual",
        description="a field changed here and in Clevertim: manual leaves it to `queue resolve`, "
        "local-wins sends the edit, remote-wins keeps Clevertim's value",
    )
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    max_attempts: int = Field(8, ge=1, le=100, description="transient failures before dead-letter")
    backoff_base: float = Field(2.0, gt=0, description="seconds of the first retry wait")
    backoff_max: float = Field(600.0, gt=0, description="longest retry wait in seconds")
    lease: float = Field(300.0, gt=0, description="seconds a claimed item stays claimed")


def _cores() -> int:
    """The cores this process may run on (a container's or a systemd CPUAffinity= limit counts)."""
    return len(os.sched_getaffinity(0)) or 1


class DaemonSettings(_Section):
    health_listen: str | None = Field(None, description="host:port of /healthz and /metrics, off if unset")
    job_deadline: float = Field(1800.0, gt=0, description="seconds one pull or push may take")
    stale_after: float = Field(3600.0, gt=0, description="seconds after which a pull is not fresh")
    concurrent_pulls: int = Field(
        default_factory=_cores,
        ge=1,
        le=256,
        description="pulls running at once across all accounts (default: the number of cores); "
        "the daemon's peak memory is start-up + this x one pull",
    )
    concurrent_pushes: int = Field(
        2, ge=1, le=64, description="pushes running at once across all accounts, beside the pulls"
    )
    concurrent_backups: int = Field(1, ge=1, le=16, description="backups running at once across all accounts")
    memory_max: str = Field(
        "256M",
        pattern=r"^[0-9]+[KMGT]?$",
        description="the unit's MemoryMax= (as systemd writes it: 256M, 1G), against which `check` "
        "tells whether the configured accounts fit; change it with the unit's",
    )
    rebalance_interval: float = Field(
        5.0,
        gt=0,
        le=60,
        description="with `run --standby` over PostgreSQL: seconds between two looks at how the "
        "accounts are spread over the live daemons",
    )


class AccountSettings(_Section):
    """One of several Clevertim accounts served by one daemon (`[[accounts]]`), each in its own mirror."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", description="names logs, metrics, files")
    url: str = Field(DEFAULT_URL, description="this account's API base URL")
    token: SecretStr | None = Field(None, description="this account's API token (rather token_file)")
    token_file: Path | None = Field(None, description="a file holding this account's token")
    allow_insecure_http: bool = Field(False, description="as clevertim.allow_insecure_http")
    database_url: str = Field("", description="its mirror's URL; default: <state_dir>/<name>.sqlite3")

    @model_validator(mode="after")
    def _check(self) -> AccountSettings:
        # The same URL rules as the single account: no credentials in it, no clear-text token.
        problems = api_url_problems(self.url, allow_insecure_http=self.allow_insecure_http)
        if problems:
            raise ValueError(f"account {self.name}: " + "; ".join(problems))
        if self.token is not None and self.token_file is not None:
            raise ValueError(f"account {self.name}: give token or token_file, not both")
        return self


class BackupSettings(_Section):
    dir: Path | None = Field(None, description="where backups go; unset: <state_dir>/backups")
    interval: float | None = Field(None, gt=0, description="seconds between scheduled backups")
    keep: int = Field(
        7, ge=1, description="newest backups kept in dir (with restic: forget --keep-last for this account)"
    )
    keep_daily: int = Field(0, ge=0, description="also keep the newest backup of each of the last N days")
    keep_weekly: int = Field(0, ge=0, description="also keep the newest backup of each of the last N weeks")
    age_recipients: tuple[str, ...] = Field(
        (), description="age public keys (age1... or ssh-ed25519 ...) every archive in dir is encrypted to"
    )
    age_recipients_file: Path | None = Field(
        None, description="a file of more age recipients, one a line (# comments), like age -R"
    )
    restic_repository: str | None = Field(
        None, description="a restic repository (a path, sftp:..., s3:..., rest:...) each backup is sent to"
    )
    restic_password_file: Path | None = Field(
        None,
        description="the restic repository's password file (else the credential or RESTIC_PASSWORD_FILE)",
    )
    restic_options: tuple[str, ...] = Field(
        (), description="extended options given to restic as -o (sftp.command=..., s3.storage-class=...)"
    )
    drill_interval: float | None = Field(
        None, gt=0, description="seconds between restore drills of the newest restic snapshot (needs restic)"
    )

    @model_validator(mode="after")
    def _check(self) -> BackupSettings:
        problems = [f"age_recipients: {p}" for p in recipient_problems(self.age_recipients)]
        if self.drill_interval is not None and self.restic_repository is None:
            problems.append(
                "drill_interval needs restic_repository: the daemon holds no age identity, so it can "
                "drill only restic snapshots (run `clevertim-sync restore --drill` where the identity is)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def age_recipient(text: str) -> Any:
    """One age recipient parsed by pyrage (an x25519 `age1...` key or an SSH public key); raises
    ValueError. The one parser: the settings check and the encryption (backup/seal.py) both use it."""
    import pyrage  # noqa: PLC0415 (a native module: only for a config that names recipients)

    kind = pyrage.ssh.Recipient if text.startswith("ssh-") else pyrage.x25519.Recipient
    try:
        return kind.from_str(text)
    except Exception as exc:  # pyrage raises RecipientError or ValueError, by key kind
        raise ValueError(str(exc)) from None


def recipient_problems(recipients: tuple[str, ...]) -> list[str]:
    """Why some of `recipients` are not age recipients (a public key may be quoted, shortened)."""
    problems = []
    for n, text in enumerate(recipients, start=1):
        try:
            age_recipient(text)
        except ValueError:
            problems.append(
                f"recipient {n} ({text[:12]}...) is not an age public key (age1...) nor an SSH one"
            )
    return problems


class AlertSettings(_Section):
    """`[alerts]`: where the daemon tells a person what went wrong (apprise URLs), and when.

    `sync`, `push` and `backup` run from a shell, cron or a timer tell the same conditions when no
    daemon holds the mirror's instance lock (daemon/command_alerts.py).

    One set of receivers for the whole daemon; with several accounts each message names its account.
    The URLs often carry secrets (a Slack token, a mail password): they are SecretStr, and may come
    from `urls_file` (one URL a line) or the systemd credential `clevertim-sync-alert-urls`.
    """

    urls: tuple[SecretStr, ...] = Field(
        (),
        description="apprise URLs of the receivers (ntfy, Slack, e-mail, a webhook, ...); empty: no alerts",
    )
    urls_file: Path | None = Field(
        None, description="a file of more apprise URLs, one a line (secrets stay out)"
    )
    failures: int = Field(3, ge=1, le=1000, description="failed pulls of a resource in a row before an alert")
    repeat_after: float = Field(
        86400.0, ge=60, description="seconds before a condition that stays is told again"
    )
    interval: float = Field(300.0, gt=0, description="seconds between evaluations besides those after jobs")


class Settings(_Section):
    clevertim: ClevertimSettings = Field(default_factory=ClevertimSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    pull: PullSettings = Field(default_factory=PullSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON lines when stdout is no terminal (journald), readable lines on one"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="least level logged")
    state_dir: Path = Field(
        Path(), description="where the default mirror and backups live; $STATE_DIRECTORY under systemd wins"
    )
    accounts: tuple[AccountSettings, ...] = Field(
        (),
        description="[[accounts]]: several Clevertim accounts served by one daemon, each with its own "
        "mirror; empty: the one account of [clevertim] and [database]",
    )
    config_file: Path | None = None  # the file these came from (set by load(); None: no file)

    def token_value(self) -> str:
        """The API token, for the one place that needs it in clear: the HTTP client."""
        if self.clevertim.token is None:
            raise ConfigError(
                ["no API token: set CLEVERTIM_TOKEN or CLEVERTIM_TOKEN_FILE, or clevertim.token_file"]
            )
        return self.clevertim.token.get_secret_value()

    def fresh_token(self) -> str:
        """The token as its file (or systemd credential) holds it now: read again, so a rotated
        token is used without a reload. ConfigError if the file cannot be read or is empty."""
        path = self.clevertim.token_file
        if path is None:
            return self.token_value()
        problems: list[str] = []
        token = read_token_file(path, problems)
        if token is None:
            raise ConfigError(problems)
        return token


# Environment variable -> (section, key) in the TOML layout.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "CLEVERTIM_URL": ("clevertim", "url"),
    "CLEVERTIM_TOKEN": ("clevertim", "token"),
    "CLEVERTIM_TOKEN_FILE": ("clevertim", "token_file"),
    "CLEVERTIM_SYNC_DATABASE_URL": ("database", "url"),
    "CLEVERTIM_SYNC_PULL_INTERVAL": ("pull", "interval"),
    "CLEVERTIM_SYNC_PUSH_INTERVAL": ("push", "interval"),
    "CLEVERTIM_SYNC_HEALTH_LISTEN": ("daemon", "health_listen"),
    "CLEVERTIM_SYNC_ALERT_URLS_FILE": ("alerts", "urls_file"),
    "CLEVERTIM_SYNC_LOG_FORMAT": ("", "log_format"),
    "CLEVERTIM_SYNC_LOG_LEVEL": ("", "log_level"),
}


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        problems.append(f"config file {path} does not exist")
    except PermissionError:
        problems.append(f"config file {path} is not readable by this user")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path} is not valid TOML: {exc}")
    return {}


def read_token_file(path: Path, problems: list[str]) -> str | None:
    """The stripped token in `path`, or None with the reason added to `problems`."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"token file {path} cannot be read: {exc.strerror}")
        return None
    if not token:
        problems.append(f"token file {path} is empty")
        return None
    return token


def read_alert_urls(path: Path, problems: list[str]) -> list[str]:
    """The URLs in `path`, one a line (blank lines and # comments skipped), or [] with the reason."""
    return _read_lines(path, "alert urls file", "URL", problems)


def _read_lines(path: Path, what: str, item: str, problems: list[str]) -> list[str]:
    """The lines of `path` that are not blank nor # comments, or [] with the reason in `problems`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        problems.append(f"{what} {path} cannot be read: {exc.strerror}")
        return []
    found = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not found:
        problems.append(f"{what} {path} holds no {item}")
    return found


def _format_validation_error(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return out


def load(config_path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the config file and the environment, or raise ConfigError with every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if config_path is None and env.get("CLEVERTIM_SYNC_CONFIG"):
        config_path = Path(env["CLEVERTIM_SYNC_CONFIG"])
    if config_path is None:
        config_path = next((c for c in config_search_path(env) if c.is_file()), None)
    if config_path is not None:
        raw = _read_toml(config_path, problems)

    for var, (section, key) in ENV_OVERRIDES.items():
        if var in env and env[var] != "":
            target = raw.setdefault(section, {}) if section else raw
            if not isinstance(target, dict):
                problems.append(f"[{section}] in the config file must be a table")
                continue
            target[key] = env[var]

    raw["config_file"] = config_path
    state_dir = Path(env.get("STATE_DIRECTORY", "").split(":")[0] or raw.get("state_dir") or ".")
    raw["state_dir"] = state_dir
    clevertim = raw.setdefault("clevertim", {})
    if isinstance(clevertim, dict) and not clevertim.get("token"):
        token_file = clevertim.get("token_file")
        creds = env.get("CREDENTIALS_DIRECTORY")
        if token_file:
            clevertim["token"] = read_token_file(Path(token_file), problems)
        elif creds and (Path(creds) / CREDENTIAL_NAME).is_file():
            # Remembered as the token's file: the client reads it again after a refusal.
            clevertim["token_file"] = Path(creds) / CREDENTIAL_NAME
            clevertim["token"] = read_token_file(Path(creds) / CREDENTIAL_NAME, problems)
    elif isinstance(clevertim, dict):
        clevertim.pop("token_file", None)  # a token given outright wins: no file to read again
    alerts = raw.get("alerts")
    creds = env.get("CREDENTIALS_DIRECTORY")
    alert_file = alerts.get("urls_file") if isinstance(alerts, dict) else None
    if alert_file is None and creds and (Path(creds) / ALERT_URLS_CREDENTIAL).is_file():
        alert_file = Path(creds) / ALERT_URLS_CREDENTIAL
    if alert_file and isinstance(alerts := raw.setdefault("alerts", {}), dict):
        # The file's URLs come after those written in the config itself.
        inline = alerts.get("urls", [])
        alerts["urls"] = [*(inline if isinstance(inline, list) else [inline])]
        alerts["urls"] += read_alert_urls(Path(alert_file), problems)
    _backup_files(raw, creds, env, problems)
    database = raw.setdefault("database", {})
    if isinstance(database, dict) and not database.get("url"):
        database["url"] = f"sqlite:///{(state_dir / DEFAULT_DB_FILE).resolve()}"

    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_format_validation_error(exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def read_recipients(path: Path, problems: list[str]) -> list[str]:
    """The age recipients in `path`, one a line (blank lines and # comments skipped), as `age -R`."""
    return _read_lines(path, "backup.age_recipients_file", "recipient", problems)


def _backup_files(
    raw: dict[str, Any], creds: str | None, env: Mapping[str, str], problems: list[str]
) -> None:
    """The recipients file's keys join `age_recipients`; restic's password file is the configured
    one, else the systemd credential, else none (restic then reads RESTIC_PASSWORD_FILE itself)."""
    backup = raw.get("backup")
    if not isinstance(backup, dict):
        return
    if backup.get("age_recipients_file"):
        inline = backup.get("age_recipients", [])
        backup["age_recipients"] = [*(inline if isinstance(inline, list) else [inline])]
        backup["age_recipients"] += read_recipients(Path(backup["age_recipients_file"]), problems)
    if backup.get("restic_repository") and not backup.get("restic_password_file"):
        if creds and (Path(creds) / RESTIC_PASSWORD_CREDENTIAL).is_file():
            backup["restic_password_file"] = Path(creds) / RESTIC_PASSWORD_CREDENTIAL
        elif env.get("RESTIC_PASSWORD_FILE"):
            backup["restic_password_file"] = Path(env["RESTIC_PASSWORD_FILE"])
