"""The accounts one daemon serves: the single `[clevertim]` account, or each `[[accounts]]` entry.

Owns: turning the top-level Settings into one complete Settings per account (its own URL, token,
database), so that pull(), push() and the API client, which know one account, need no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from clevertim_sync.errors import ConfigError
from clevertim_sync.settings import AccountSettings, Settings, read_token_file

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Account:
    name: str
    settings: Settings


def _token(acc: AccountSettings, problems: list[str]) -> SecretStr | None:
    if acc.token is not None:
        return acc.token
    if acc.token_file is None:
        problems.append(f"account {acc.name}: give token_file (or token) for its API token")
        return None
    found: list[str] = []
    text = read_token_file(Path(acc.token_file), found)
    problems.extend(f"account {acc.name}: {p}" for p in found)
    return None if text is None else SecretStr(text)


def accounts(settings: Settings) -> list[Account]:
    """One Account per mirror to keep, or ConfigError listing every problem."""
    if not settings.accounts:
        settings.token_value()  # raises ConfigError when there is no token at all
        return [Account(DEFAULT_NAME, settings)]
    problems: list[str] = []
    names = [a.name for a in settings.accounts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"accounts: names must be unique, repeated: {', '.join(dupes)}")
    out: list[Account] = []
    databases: dict[str, str] = {}
    for acc in settings.accounts:
        token = _token(acc, problems)
        db_url = acc.database_url or f"sqlite:///{(settings.state_dir / f'{acc.name}.sqlite3').resolve()}"
        if db_url in databases:
            problems.append(
                f"accounts {databases[db_url]} and {acc.name} share one database; give each its own"
            )
        databases[db_url] = acc.name
        clevertim = settings.clevertim.model_copy(
            update={
                "url": acc.url,
                "token": token,
                "token_file": acc.token_file,
                "allow_insecure_http": acc.allow_insecure_http,
            }
        )
        database = settings.database.model_copy(update={"url": db_url})
        out.append(
            Account(
                acc.name,
                settings.model_copy(update={"clevertim": clevertim, "database": database, "accounts": ()}),
            )
        )
    if problems:
        raise ConfigError(problems)
    return out
