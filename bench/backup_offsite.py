"""What off-site backups cost at 100,000 contacts: archive sizes, age, restic's repository growth,
restore times. Run it alone (timings): `flock /tmp/bench.lock scripts/with-postgres .venv/bin/python
bench/backup_offsite.py [--contacts 100000] [--workdir /tmp/clevertim-bench-backup]`.

  pull        a first pull from the emulator (photos on) into a SQLite mirror
  archive     `backup`: the gzip'd archive, and the same encrypted with age (pyrage)
  seal        sealing and opening the plain archive in a child process: pyrage against the `age`
              binary (the plausible alternative): seconds and peak RSS (flat memory is the point)
  restic      one repository fed on stdin (what the daemon does) and one fed a directory with the
              same uncompressed files (the alternative): growth of the repository for the first
              backup, a second of the unchanged mirror, and one after 1% of every resource changed
  restore     from the encrypted archive and from restic into an empty SQLite (and PostgreSQL
              under scripts/with-postgres), and the drill
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyrage
import sqlalchemy as sa

from clevertim_sync.api.client import ClevertimClient
from clevertim_sync.backup import archive as bk
from clevertim_sync.backup import configured, restic
from clevertim_sync.emulator import EmulatorServer
from clevertim_sync.mirror.db import make_engine, upgrade
from clevertim_sync.pull.pipeline import pull
from clevertim_sync.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from pull import change_one_percent  # bench/pull.py, beside this file

TOKEN = "bench-token"
MB = 1_000_000


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(what: str, fn: Any) -> Any:
    t = time.perf_counter()
    out = fn()
    print(f"{what:<58} {time.perf_counter() - t:7.2f} s")
    return out


PYRAGE_CHILD = """
import sys, time, pyrage
plain, sealed, opened, key = sys.argv[1:]
identity = pyrage.x25519.Identity.from_str(open(key).read().strip())
t = time.perf_counter()
with open(plain, "rb") as a, open(sealed, "wb") as b:
    pyrage.encrypt_io(a, b, [identity.to_public()])
t1 = time.perf_counter()
with open(sealed, "rb") as a, open(opened, "wb") as b:
    pyrage.decrypt_io(a, b, [identity])
print(f"{t1 - t:.2f} {time.perf_counter() - t1:.2f}")
"""


def peak_of(argv: list[str]) -> tuple[str, float]:
    """(stdout, peak RSS in MB) of one child, by GNU time."""
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], check=True, capture_output=True, text=True)
    return done.stdout, int(done.stderr.strip().splitlines()[-1]) / 1000


def seal_child(tool: str, plain: Path, work: Path, key: Path) -> None:
    """Seal and open `plain` in child processes; print seconds and peak RSS."""
    sealed, opened = work / f"{tool}.age", work / f"{tool}.out"
    if tool == "pyrage":
        out, peak = peak_of(
            [sys.executable, "-c", PYRAGE_CHILD, str(plain), str(sealed), str(opened), str(key)]
        )
        seal_s, open_s = (float(x) for x in out.split())
    else:
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True)
        t = time.perf_counter()
        _, peak_seal = peak_of(["age", "-r", recipient.stdout.strip(), "-o", str(sealed), str(plain)])
        seal_s = time.perf_counter() - t
        t = time.perf_counter()
        _, peak_open = peak_of(["age", "-d", "-i", str(key), "-o", str(opened), str(sealed)])
        open_s, peak = time.perf_counter() - t, max(peak_seal, peak_open)
    assert opened.read_bytes() == plain.read_bytes()
    print(f"seal   {tool:<7} {plain.stat().st_size / MB:6.1f} MB: seal {seal_s:.2f} s, open {open_s:.2f} s, "
          f"peak RSS {peak:.0f} MB")  # fmt: skip
    sealed.unlink()
    opened.unlink()


def restic_dir_backup(repo: restic.Repository, engine: sa.Engine, work: Path) -> int:
    """The alternative to stdin: the same uncompressed files handed to restic as a directory
    (one stable path, so restic's parent snapshot applies). Returns the repository's growth."""
    before = tree_size(Path(repo.location))
    stage = work / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    stream = bk.take_stream(engine, stage)
    (stage / "manifest.json").write_bytes(stream.manifest.to_json())
    repo.run("backup", str(stage), "--quiet", what="backup")
    return tree_size(Path(repo.location)) - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/clevertim-bench-backup"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    work = args.workdir
    work.mkdir(parents=True)
    identity = pyrage.x25519.Identity.generate()
    (work / "identity.txt").write_text(f"{identity}\n")
    (work / "password").write_text("bench password\n")
    server = EmulatorServer(token=TOKEN, contacts=args.contacts, seed=7).start()
    try:
        url = f"sqlite:///{work / 'mirror.sqlite3'}"
        engine = make_engine(url)
        upgrade(engine)
        settings = Settings.model_validate({"pull": {"photos": True, "photos_per_pull": 10**6}})
        with ClevertimClient(server.base_url, TOKEN, timeout=600) as client:
            report = timed(
                f"pull   first pull of {args.contacts} contacts, photos on",
                lambda: pull(engine, client, settings=settings),
            )
            assert report.ok, report
        print(f"mirror file {(work / 'mirror.sqlite3').stat().st_size / MB:.1f} MB")

        plain = timed("archive plain (gzip)", lambda: bk.backup(engine, work / "plain"))
        sealed = timed(
            "archive encrypted with age",
            lambda: bk.backup(engine, work / "sealed", recipients=[str(identity.to_public())]),
        )
        print(f"archive plain {plain.size / MB:.1f} MB, encrypted {sealed.size / MB:.1f} MB")
        for tool in ("pyrage", "age"):
            seal_child(tool, plain.path, work, work / "identity.txt")

        results: dict[str, list[int]] = {"stdin": [], "dir": []}
        repos = {}
        for kind in results:
            location = str(work / f"repo-{kind}")
            subprocess.run(
                ["restic", "--repo", location, "--password-file", str(work / "password"), "init", "--quiet"],
                check=True,
            )
            repos[kind] = restic.repository(location, work / "password", work / f"cache-{kind}")

        def one_round(label: str) -> None:
            before = tree_size(Path(repos["stdin"].location))
            sent = timed(
                f"restic {label}: stdin", lambda: restic.send(engine, repos["stdin"], "bench", work_dir=work)
            )
            results["stdin"].append(tree_size(Path(repos["stdin"].location)) - before)
            print(f"       sent {sent.bytes_sent / MB:.1f} MB, restic says {sent.data_added / MB:.2f} MB new")
            results["dir"].append(
                timed(f"restic {label}: a directory", lambda: restic_dir_backup(repos["dir"], engine, work))
            )

        one_round("first backup")
        one_round("second, unchanged")
        edited = change_one_percent(server.control, seed=7)
        with ClevertimClient(server.base_url, TOKEN, timeout=600) as client:
            assert pull(engine, client, settings=settings).ok
        print(f"(edited {edited} records, 1% of each resource, and pulled them)")
        one_round("after 1% changed")
        for kind, growth in results.items():
            first, unchanged, changed = (g / MB for g in growth)
            print(f"repository growth ({kind:<5}): first {first:.1f} MB, unchanged +{unchanged:.2f} MB, "
                  f"1% changed +{changed:.2f} MB")  # fmt: skip

        targets = [("sqlite", lambda n: f"sqlite:///{work / f'restored-{n}.sqlite3'}")]
        pg = os.environ.get("CLEVERTIM_SYNC_TEST_PG_URL")
        if pg:
            admin = sa.create_engine(pg, isolation_level="AUTOCOMMIT")

            def pg_db(n: str) -> str:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "bench_{n}"'))
                return pg.rsplit("/", 1)[0] + f"/bench_{n}"

            targets.append(("postgresql", pg_db))
        for kind, target in targets:
            timed(
                f"restore {kind}: encrypted archive",
                lambda t=target: bk.restore(sealed.path, t("age"), identity=work / "identity.txt"),
            )
            timed(
                f"restore {kind}: restic (newest snapshot)",
                lambda t=target: restic.restore_from(repos["stdin"], t("restic")),
            )
        drill = timed(
            "drill: restic snapshot into a temporary SQLite, read back",
            lambda: configured.drill_restic(repos["stdin"]),
        )
        print(drill.line())
        engine.dispose()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
