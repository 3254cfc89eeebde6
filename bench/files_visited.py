"""How many of the package's files a reader follows: the files whose functions run in a pull and
in the push of one queue item, for this checkout and, with --baseline, another one.

    .venv/bin/python bench/files_visited.py [--baseline CHECKOUT] [--list]

Each side runs its own `clevertim-sync` (its own .venv) against its own emulator: `sync` into a new
SQLite mirror, then `edit update contact ID --set fn=...` (not counted), then `push`. A profile hook
records every clevertim_sync file in which a function was called (a module's or a class's body and
what it calls while the module is imported are not counted: an import is not a step a reader
follows). It also counts the modules at the
package's root. Not timed: it measures the layout, not the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"

# Runs in the checkout's own interpreter: the CLI under a profile hook, the files it called into.
TRACER = """
import json, sys, threading
package, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
files = set()
def hook(frame, event, arg):
    code = frame.f_code
    # Functions only (CO_NEWLOCALS): not a module's or a class's body, run once at import.
    if event != "call" or not code.co_flags & 2 or not code.co_filename.startswith(package):
        return
    caller = frame.f_back
    while caller is not None:  # nor what a module's body calls while it is imported
        if caller.f_code.co_filename.startswith("<frozen importlib"):
            return
        caller = caller.f_back
    files.add(code.co_filename[len(package) + 1:])
sys.argv = ["clevertim-sync", *args]
sys.setprofile(hook)
threading.setprofile(hook)
from clevertim_sync.cli import main
try:
    main()
except SystemExit:
    pass
finally:
    sys.setprofile(None)
    with open(out, "w") as f:
        json.dump(sorted(files), f)
"""


def visited(checkout: Path) -> dict[str, list[str]]:
    exe = checkout / ".venv" / "bin"
    package = str(checkout / "clevertim_sync")
    emulator = subprocess.Popen(
        [str(exe / "clevertim-sync"), "emulator", "--port", "0", "--token", TOKEN, "--contacts", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "mirror.sqlite3"
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLEVERTIM")}
            env |= {
                "CLEVERTIM_URL": url,
                "CLEVERTIM_TOKEN": TOKEN,
                "CLEVERTIM_SYNC_DATABASE_URL": f"sqlite:///{db}",
                "CLEVERTIM_SYNC_LOG_LEVEL": "warning",
            }

            def traced(*args: str) -> list[str]:
                out = Path(tmp) / "files.json"
                cmd = [str(exe / "python"), "-c", TRACER, package, str(out), *args]
                subprocess.run(cmd, check=True, env=env, cwd=tmp, capture_output=True, timeout=300)
                return list(json.loads(out.read_text()))

            pull = traced("sync")
            with sqlite3.connect(db) as conn:
                (contact,) = conn.execute("SELECT min(id) FROM contacts").fetchone()
            edit = [str(exe / "clevertim-sync"), "edit", "update", "contact", str(contact), "--set", "fn=Ada"]
            done = subprocess.run(
                edit, check=False, env=env, cwd=tmp, capture_output=True, text=True, timeout=300
            )
            if done.returncode:
                raise SystemExit(f"{checkout}: {done.stderr}")
            push = traced("push")
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
    root = sorted(p.name for p in (checkout / "clevertim_sync").glob("*.py") if p.name != "__init__.py")
    return {"pull": pull, "push": push, "root modules": root}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout (with its own .venv)")
    parser.add_argument("--list", action="store_true", help="name the files, not only count them")
    args = parser.parse_args()
    sides = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    for side, checkout in sides.items():
        found = visited(checkout)
        git = ["git", "-C", str(checkout), "log", "-1", "--format=%h"]
        head = subprocess.run(git, check=False, capture_output=True, text=True)
        counts = ", ".join(f"{what}: {len(files)}" for what, files in found.items())
        print(f"{side} ({checkout}, {head.stdout.strip()}): files visited by {counts}")
        if args.list:
            for what, files in found.items():
                print(f"  {what}: {' '.join(files)}")


if __name__ == "__main__":
    main()
