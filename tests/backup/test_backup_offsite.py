"""Backups kept elsewhere: archives encrypted with age (pyrage), snapshots sent to a real restic
binary's local repository, on SQLite and PostgreSQL. The end-to-end drill is test_backup_drill.py."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import Result
from support.mirror_data import dump
from support.offsite import new_identity, new_repository

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.backup import configured, restic
from clevertim_sync.daemon.service import Service
from clevertim_sync.daemon.wiring import real_backends
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.errors import BackupError, ConfigError
from clevertim_sync.mirror import schema
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import Settings, load

TOKEN = "test-token"


# --- age ------------------------------------------------------------------------------------------


def layers(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """`data` and everything that decompresses or unpacks out of it, recursively."""
    yield data
    if depth > 4:
        return
    for magic, opener in (
        (b"\x1f\x8b", gzip.decompress),
        (b"BZh", bz2.decompress),
        (b"\xfd7zXZ", lzma.decompress),
    ):
        if data.startswith(magic):
            yield from layers(opener(data), depth + 1)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member)
                if f is not None:
                    yield from layers(f.read(), depth + 1)
    except tarfile.TarError:
        pass


def record_texts(engine: sa.Engine) -> set[bytes]:
    """Every value of a mirrored record that is text worth searching for, and a slice of each photo."""
    texts: set[bytes] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 8 and any(c.isalpha() for c in value):
            texts.add(value.encode())

    with engine.connect() as conn:
        for table in schema.CURRENT.values():
            for (raw,) in conn.execute(sa.select(table.c.raw)):
                walk(orjson.loads(raw))
        for (content,) in conn.execute(sa.select(schema.contact_photos.c.content)):
            texts.add(bytes(content[len(content) // 2 : len(content) // 2 + 32]))
    return texts


def found_in(path: Path, texts: set[bytes]) -> set[bytes]:
    everything = list(layers(path.read_bytes()))
    return {t for t in texts if any(t in layer for layer in everything)}


def test_an_age_archive_holds_none_of_the_mirrors_text_in_any_form(
    sqlite_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with ClevertimClient(emulator.base_url, TOKEN) as client:
        assert pull(engine, client, settings=Settings.model_validate({"pull": {"photos": True}})).ok
    texts = record_texts(engine)
    assert len(texts) > 100
    recipient = new_identity(tmp_path / "identity.txt")
    plain = bk.backup(engine, tmp_path / "plain")
    sealed = bk.backup(engine, tmp_path / "sealed", recipients=[recipient])
    engine.dispose()
    # A record value that is a word of the schema revision's name ("customers") is no leak.
    texts = {t for t in texts if t not in str(sealed.manifest.schema_version).encode()}
    # The search finds the mirror's text in a plain archive (gzip'd inside a tar)...
    assert found_in(plain.path, texts) == texts
    # ...and none of it, nor the source's URL or table names, in the encrypted one.
    assert found_in(sealed.path, texts) == set()
    outside = b"".join(layers(sealed.path.read_bytes()))
    assert sqlite_url.encode() not in outside and b"contact_photos" not in outside
    with tarfile.open(sealed.path) as tar:
        assert tar.getnames() == ["manifest.json", "sealed.tar.age", "manifest.sha256"]
        envelope = orjson.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert set(envelope) == {
        "format", "format_version", "created_at", "method", "schema_version", "source_id", "files",
        "sealed", "tool_version",
    }  # fmt: skip


def test_an_age_archive_restores_only_with_its_identity(
    mirror: sa.Engine, migrated_database_url: str, empty_database: Any, tmp_path: Path
) -> None:
    identity = tmp_path / "identity.txt"
    recipient = new_identity(identity)
    other = tmp_path / "other.txt"
    new_identity(other)
    sealed = bk.backup(mirror, tmp_path / "b", recipients=[recipient, new_identity(tmp_path / "second.txt")])
    target = empty_database()

    # Without the key: the file is whole and its checksum right; the contents wait for --identity.
    envelope = bk.check_envelope(sealed.path)
    assert envelope is not None and envelope.schema_version == sealed.manifest.schema_version
    assert envelope.source_id == bk.source_id(sealed.manifest.source)
    with pytest.raises(BackupError, match="encrypted with age: give --identity"):
        bk.verify(sealed.path)
    for missing_or_wrong, message in (
        (None, "encrypted with age: give --identity"),
        (other, "does not open this backup"),
        (tmp_path / "nowhere.txt", "cannot read the identity file"),
        (tmp_path / "b", "cannot read the identity file"),
    ):
        with pytest.raises(BackupError, match=message):
            bk.restore(sealed.path, target, identity=missing_or_wrong)
    # Nothing was written: the target is as empty as it was.
    if migrated_database_url.startswith("sqlite"):
        assert not Path(target.removeprefix("sqlite:///")).exists()
    else:
        assert sa.inspect(make_engine(target)).get_table_names() == []

    assert bk.verify(sealed.path, identity=identity) == sealed.manifest
    # Either recipient's identity opens it: a second key is how a recipient is rotated.
    assert bk.verify(sealed.path, identity=tmp_path / "second.txt") == sealed.manifest
    restored = bk.restore(sealed.path, target, identity=identity)
    assert restored.manifest == sealed.manifest
    assert dump(target) == dump(migrated_database_url)


def test_an_altered_or_cut_encrypted_archive_is_refused_without_the_key(
    mirror: sa.Engine, tmp_path: Path
) -> None:
    identity = tmp_path / "identity.txt"
    sealed = bk.backup(mirror, tmp_path / "b", recipients=[new_identity(identity)])
    data = bytearray(sealed.path.read_bytes())
    with tarfile.open(sealed.path) as tar:
        offset = tar.getmember("sealed.tar.age").offset_data
    data[offset + 500] ^= 0xFF
    altered = tmp_path / "altered.tar"
    altered.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"checksum of sealed\.tar\.age does not match"):
        bk.check_envelope(altered)
    with pytest.raises(BackupError, match=r"checksum of sealed\.tar\.age does not match"):
        bk.restore(altered, f"sqlite:///{tmp_path / 'x.sqlite3'}", identity=identity)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(BackupError, match="truncated"):
        bk.check_envelope(cut)


def test_retention_tells_encrypted_archives_of_two_mirrors_apart(tmp_path: Path) -> None:
    recipient = new_identity(tmp_path / "identity.txt")
    engines = []
    for name in ("a", "b"):
        engine = make_engine(f"sqlite:///{tmp_path / name}.sqlite3")
        upgrade(engine)
        engines.append(engine)
    for _ in range(3):
        for engine in engines:
            bk.backup(engine, tmp_path / "shared", keep=2, recipients=[recipient])
    sources = [bk.check_envelope(p).source_id for p in sorted((tmp_path / "shared").iterdir())]  # type: ignore[union-attr]
    assert len(sources) == 4 and len(set(sources)) == 2  # two of each mirror kept
    for engine in engines:
        engine.dispose()


def test_age_recipients_come_from_the_config_and_its_file(tmp_path: Path) -> None:
    first, second = new_identity(tmp_path / "1.txt"), new_identity(tmp_path / "2.txt")
    (tmp_path / "recipients").write_text(f"# the office's key\n{second}\n\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[backup]\nage_recipients = ["{first}"]\nage_recipients_file = "{tmp_path / "recipients"}"\n'
    )
    assert load(config, env={}).backup.age_recipients == (first, second)
    config.write_text('[backup]\nage_recipients = ["age1notakey", "AGE-SECRET-KEY-1XYZ"]\n')
    with pytest.raises(ConfigError) as err:
        load(config, env={})
    assert "recipient 1 (age1notakey...) is not an age public key" in str(err.value)
    assert "recipient 2" in str(err.value) and "XYZ" not in str(err.value)  # a secret is never echoed whole


# --- restic --------------------------------------------------------------------------------------


def restic_settings(tmp_path: Path, location: str, password: Path, **backup: Any) -> Settings:
    return Settings.model_validate(
        {
            "state_dir": tmp_path / "state",
            "backup": {"restic_repository": location, "restic_password_file": password, **backup},
        }
    )


def test_each_backup_is_one_restic_snapshot_and_retention_is_restics(
    mirror: sa.Engine, tmp_path: Path
) -> None:
    location, password = new_repository(tmp_path)
    settings = restic_settings(tmp_path, location, password, keep=2)
    repo = restic.configured(settings)
    assert repo is not None
    other = restic.send(mirror, repo, "other-account", work_dir=tmp_path / "w")  # never forgotten here
    done = [configured.backup_as_configured(mirror, settings, "acme") for _ in range(4)]
    assert all(d.archive is None for d in done)  # no dir: restic alone
    sent = [d.restic for d in done if d.restic is not None]
    ours = restic.snapshots(repo, "acme")
    assert [s.short_id for s in ours] == [s.snapshot_id for s in sent[-2:]]
    assert [s.forgotten for s in sent] == [[], [], [sent[0].snapshot_id], [sent[1].snapshot_id]]
    revision = sent[0].manifest.schema_version
    assert set(ours[-1].tags) == {"clevertim-sync", "account:acme", f"schema:{revision}"}
    assert [s.short_id for s in restic.snapshots(repo, "other-account")] == [other.snapshot_id]
    # Restic got the archive uncompressed: the SQLite file (or the dump) as it is, not gzip'd.
    assert all(not name.endswith(".gz") for name in sent[-1].manifest.files)


def test_a_second_snapshot_of_an_unchanged_mirror_adds_little(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    # Many of restic's chunks (512 KiB to 8 MiB each, cut where the content says, by a polynomial
    # each repository draws at random): varied rows, as real records are (rows that repeat one
    # pattern may hold no cut point at all), about 20 MB of them.
    rng = random.Random(21)
    with engine.begin() as conn:
        conn.execute(
            schema.CURRENT["contact"].insert(),
            [
                {
                    "id": i,
                    "first_name": rng.randbytes(12).hex(),
                    "raw": orjson.dumps({"id": i, "note": rng.randbytes(200).hex()}).decode(),
                    "content_hash": str(i),
                }
                for i in range(1, 40_001)
            ],
        )
    repo = restic.repository(*new_repository(tmp_path))
    first = restic.send(engine, repo, "acme", work_dir=tmp_path / "w")
    second = restic.send(engine, repo, "acme", work_dir=tmp_path / "w")
    engine.dispose()
    assert first.data_added > first.bytes_sent / 2  # the first one is all new
    # Only the first chunk (the manifest with its time, the dump's header) is new, at most restic's
    # largest chunk; the rows are found already there.
    assert second.bytes_sent == first.bytes_sent > 16 * 2**20
    assert second.data_added <= 8 * 2**20 + 2**16


def test_a_restic_snapshot_restores_to_an_equal_mirror(
    mirror: sa.Engine, migrated_database_url: str, empty_database: Any, tmp_path: Path
) -> None:
    location, password = new_repository(tmp_path)
    repo = restic.repository(location, password)
    first = restic.send(mirror, repo, "acme", work_dir=tmp_path / "w")
    with mirror.begin() as conn:  # a later snapshot: --snapshot picks the earlier one
        conn.execute(sa.delete(schema.CURRENT["contact"]).where(schema.CURRENT["contact"].c.id == 1))
    restic.send(mirror, repo, "acme", work_dir=tmp_path / "w")
    newest, chosen = empty_database(), empty_database()
    snap, result = restic.restore_from(repo, newest)
    contacts = schema.CURRENT["contact"].name
    assert result.manifest.tables[contacts] == 29 and snap.tag_value("account:") == "acme"
    assert dump(newest) == dump(migrated_database_url)
    snap, result = restic.restore_from(repo, chosen, snapshot=first.snapshot_id)
    assert snap.short_id == first.snapshot_id and result.rows[contacts] == 30
    with pytest.raises(BackupError, match=r"no clevertim-sync snapshot .* has the id 'ffffffff'"):
        restic.restore_from(repo, chosen, snapshot="ffffffff", force=True)


def test_restic_missing_or_without_password_is_told_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location, password = new_repository(tmp_path)
    restic.preflight(restic_settings(tmp_path, location, password))
    for var in ("RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="restic needs the repository's password"):
        restic.preflight(restic_settings(tmp_path, location, None))  # type: ignore[arg-type]
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        restic.preflight(restic_settings(tmp_path, location, tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(ConfigError, match="`restic` is not on the PATH: install it"):
        restic.preflight(restic_settings(tmp_path, location, password))


def test_restics_password_comes_from_the_file_the_credential_or_restics_variable(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "clevertim-sync-restic-password").write_text("s3cret\n")
    config = tmp_path / "config.toml"
    config.write_text('[backup]\nrestic_repository = "sftp:nas:/srv/crm"\n')
    env = {"CREDENTIALS_DIRECTORY": str(creds), "RESTIC_PASSWORD_FILE": "/elsewhere"}
    assert load(config, env=env).backup.restic_password_file == creds / "clevertim-sync-restic-password"
    assert load(config, env={"RESTIC_PASSWORD_FILE": "/elsewhere"}).backup.restic_password_file == Path(
        "/elsewhere"
    )
    config.write_text(f'[backup]\nrestic_repository = "x"\nrestic_password_file = "{tmp_path / "pw"}"\n')
    assert load(config, env=env).backup.restic_password_file == tmp_path / "pw"
    config.write_text("[backup]\ndrill_interval = 3600\n")
    with pytest.raises(ConfigError, match="drill_interval needs restic_repository"):
        load(config, env={})


def test_a_wrong_restic_password_or_a_missing_repository_says_what_to_do(
    mirror: sa.Engine, tmp_path: Path
) -> None:
    location, _password = new_repository(tmp_path)
    (tmp_path / "wrong").write_text("not it\n")
    with pytest.raises(BackupError, match="wrong password"):
        restic.send(mirror, restic.repository(location, tmp_path / "wrong"), "acme", work_dir=tmp_path / "w")
    with pytest.raises(BackupError, match="init"):
        restic.send(
            mirror,
            restic.repository(str(tmp_path / "none"), tmp_path / "wrong"),
            "acme",
            work_dir=tmp_path / "w",
        )
    # backup.restic_options reach restic as -o (sftp.command=..., s3.region=...).
    location, password = new_repository(tmp_path, "with-options")
    settings = restic_settings(tmp_path, location, password, restic_options=["local.connections=1"])
    assert configured.backup_as_configured(mirror, settings, "acme").restic is not None
    settings = restic_settings(tmp_path, location, password, restic_options=["local.nonsense=1"])
    with pytest.raises(BackupError, match=r"option local\.nonsense is not known"):
        configured.backup_as_configured(mirror, settings, "acme")
    assert restic.shown("rest:https://user:pa55@host:8000/crm") == "rest:https://user:***@host:8000/crm"
    assert os.listdir(tmp_path / "w") == []  # the uncompressed snapshot does not stay behind


def test_the_backup_and_check_commands_follow_the_configuration(
    cli_runner: Callable[..., Callable[..., Result]], tmp_path: Path
) -> None:
    recipient = new_identity(tmp_path / "identity.txt")
    location, password = new_repository(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[backup]\ndir = "{tmp_path / "b"}"\nage_recipients = ["{recipient}"]\n'
        f'restic_repository = "{location}"\nrestic_password_file = "{password}"\n'
    )
    run = cli_runner(f"sqlite:///{tmp_path / 'mirror.sqlite3'}", CLEVERTIM_SYNC_CONFIG=str(config))
    run("sync", code=0)
    out = run("backup", code=0).output.splitlines()
    assert "sqlite backup, encrypted with age" in out[0] and out[1].startswith("restic snapshot ")
    assert "ok    restic: " in run("check").output
    # The drill with no source: the configured one (restic), else the newest archive in dir.
    assert run("restore", "--drill", code=0).output.startswith("drill OK: restic ")
    config.write_text(f'[backup]\ndir = "{tmp_path / "b"}"\nage_recipients = ["{recipient}"]\n')
    drilled = run("restore", "--drill", "--identity", str(tmp_path / "identity.txt"), code=0).output
    assert drilled.startswith(f"drill OK: {tmp_path / 'b'}/clevertim-sync-")
    config.write_text(
        f'[backup]\ndir = "{tmp_path / "b"}"\nage_recipients = ["{recipient}"]\n'
        f'restic_repository = "{location}"\nrestic_password_file = "{password}"\n'
    )
    missing = cli_runner(
        f"sqlite:///{tmp_path / 'mirror.sqlite3'}", CLEVERTIM_SYNC_CONFIG=str(config), PATH=str(tmp_path)
    )
    assert (
        "FAIL  restic: backup.restic_repository is set but `restic` is not on the PATH"
        in missing("check").output
    )


def test_the_daemon_does_not_start_without_restic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location, password = new_repository(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[clevertim]\ntoken = "t"\n[database]\nurl = "sqlite:///{tmp_path / "m.sqlite3"}"\n'
        f'[backup]\ninterval = 3600\nrestic_repository = "{location}"\nrestic_password_file = "{password}"\n'
    )
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(ConfigError, match="`restic` is not on the PATH"):
        Service(load(config, env={}), real_backends(), env={})


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")
def test_an_ssh_key_can_be_the_recipient_and_its_private_key_the_identity(
    mirror: sa.Engine, tmp_path: Path
) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(key)], check=True)
    sealed = bk.backup(mirror, tmp_path / "b", recipients=[key.with_suffix(".pub").read_text().strip()])
    assert bk.verify(sealed.path, identity=key) == sealed.manifest
