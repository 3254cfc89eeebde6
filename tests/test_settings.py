"""Settings: file plus environment, every problem reported at once, the token never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.errors import ConfigError
from clevertim_sync.settings import load


def test_defaults_and_env_overrides(tmp_path: Path) -> None:
    s = load(
        None,
        {"STATE_DIRECTORY": str(tmp_path), "CLEVERTIM_TOKEN": "sekrit", "CLEVERTIM_SYNC_PULL_INTERVAL": "60"},
    )
    assert s.clevertim.url == "https://www.clevertim.com/api"
    assert s.pull.interval == 60
    assert s.database.url == f"sqlite:///{tmp_path.resolve()}/clevertim-sync.sqlite3"
    assert s.token_value() == "sekrit"
    assert "sekrit" not in repr(s)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[clevertim]\nurl = "http://crm.example.com/api"\n[pull]\ninterval = -1\n'
        '[push]\nconflict_policy = "coin-flip"\n'
    )
    with pytest.raises(ConfigError) as info:
        load(cfg, {"CLEVERTIM_TOKEN_FILE": str(tmp_path / "missing")})
    text = str(info.value)
    assert "plain HTTP" in text and "pull.interval" in text and "conflict_policy" in text
    assert "missing" in text and info.value.exit_code == 2


def test_token_from_systemd_credentials(tmp_path: Path) -> None:
    (tmp_path / "clevertim-token").write_text("from-creds\n")
    s = load(None, {"CREDENTIALS_DIRECTORY": str(tmp_path), "STATE_DIRECTORY": str(tmp_path)})
    assert s.token_value() == "from-creds"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://crm.example.com/api", "plain HTTP"),
        ("ftp://crm.example.com/api", "http(s) URL"),
        ("https://crm.example.com/api?x=1", "query or fragment"),
        ("https://sekrit:X@crm.example.com/api", "must not carry credentials"),
    ],
)
def test_the_settings_and_the_client_refuse_the_same_urls_alike(
    tmp_path: Path, url: str, needle: str
) -> None:
    # One rule (settings.api_url_problems): a URL the client would refuse never gets past the
    # configuration, and both say the same; credentials in it are never echoed.
    with pytest.raises(ConfigError) as from_settings:
        load(None, {"CLEVERTIM_URL": url, "CLEVERTIM_TOKEN": "t", "STATE_DIRECTORY": str(tmp_path)})
    with pytest.raises(ConfigError) as from_client:
        ClevertimClient(url, "t")
    assert any(needle in p for p in from_settings.value.problems), from_settings.value.problems
    assert from_client.value.problems == [p.split(": ", 1)[1] for p in from_settings.value.problems]
    assert "sekrit" not in str(from_settings.value) + str(from_client.value)


def test_plain_http_to_loopback_is_allowed(tmp_path: Path) -> None:
    s = load(None, {"CLEVERTIM_URL": "http://127.0.0.1:8080/api", "STATE_DIRECTORY": str(tmp_path)})
    assert s.clevertim.url.startswith("http://127.0.0.1")


def test_the_file_read_is_named_and_none_when_there_is_none(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "STATE_DIRECTORY": str(tmp_path)}
    assert load(None, env).config_file is None
    found = tmp_path / "clevertim-sync" / "config.toml"
    found.parent.mkdir()
    found.write_text("[pull]\ninterval = 120\n")
    s = load(None, env)
    assert s.config_file == found and s.pull.interval == 120
    given = tmp_path / "given.toml"
    given.write_text("")
    assert load(given, env).config_file == given


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_ca_bundle_is_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    good = tmp_path / "proxy-ca.pem"
    good.write_text(PEM)
    env = {"STATE_DIRECTORY": str(tmp_path), "CLEVERTIM_TOKEN": "t"}
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[clevertim]\nca_bundle = "{good}"\n')
    assert load(cfg, env).clevertim.ca_bundle == good
    for bad, why in ((tmp_path / "missing.pem", "cannot be read"), (cfg, "not a PEM file")):
        cfg2 = tmp_path / "bad.toml"
        cfg2.write_text(f'[clevertim]\nca_bundle = "{bad}"\n')
        with pytest.raises(ConfigError, match=why):
            load(cfg2, env)


def test_the_token_s_file_is_remembered_and_read_again(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "clevertim-token").write_text("first\n")
    s = load(None, {"CREDENTIALS_DIRECTORY": str(creds), "STATE_DIRECTORY": str(tmp_path)})
    assert s.clevertim.token_file == creds / "clevertim-token"
    (creds / "clevertim-token").write_text("second\n")
    assert s.token_value() == "first" and s.fresh_token() == "second"
    (creds / "clevertim-token").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        s.fresh_token()
    # A token given outright wins; there is no file to read again.
    s = load(
        None,
        {
            "CLEVERTIM_TOKEN": "direct",
            "CLEVERTIM_TOKEN_FILE": str(creds / "x"),
            "STATE_DIRECTORY": str(tmp_path),
        },
    )
    assert s.clevertim.token_file is None and s.fresh_token() == "direct"


def test_transport_defaults(tmp_path: Path) -> None:
    s = load(None, {"STATE_DIRECTORY": str(tmp_path)})
    c = s.clevertim
    assert (c.rate_limit_floor, c.connect_retries, c.ca_bundle) == (30.0, 3, None)
