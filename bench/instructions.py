"""Instructions a sync executes, this checkout against another one (valgrind's callgrind).

    .venv/bin/python bench/instructions.py --baseline CHECKOUT [--contacts 10000]

Wall and CPU times on this shared machine move by 15% to 20% from one run of the same sync to the
next, so `bench/pull.py --baseline` needs many rounds to tell a few percent apart. An instruction
count does not move: the same process counted twice differs by under 0.1%. This runs, for each
checkout (the other one with its own .venv), against one emulator of `--contacts` contacts and
under callgrind: the start-up alone (interpreter, imports), a first sync into an empty SQLite
mirror, and a no-change sync of that mirror. Each sync's count is its process's less the
start-up's.

Counts are split: orjson, msgspec (the JSON readers and writer) and the rest. Under valgrind
orjson's parser runs a path of six times the instructions msgspec's runs, where natively the two
take the same time (docs/explanation/performance.md): compare the rest here, and time the
parsers natively. Needs valgrind (`apt-get install valgrind`); about 10 minutes at 10,000 contacts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("start-up", "first", "no change")
PARTS = ("orjson", "msgspec", "rest")


def drive(bench_pull: str, url: str, db: str, phase: str) -> None:
    """In the process being counted: a checkout's own bench/pull.py, its imports, then `phase`."""
    spec = importlib.util.spec_from_file_location("bench_pull", bench_pull)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    importlib.import_module("clevertim_sync.api.client")
    importlib.import_module("clevertim_sync.mirror.db")
    if phase != "start-up":
        module.phase_sync(url, db)


def count(checkout: Path, url: str, db: Path, phase: str, out: Path) -> dict[str, int]:
    """Instructions of one counted process, by part."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        str(checkout / ".venv" / "bin" / "python"),
        __file__,
        "--drive",
        str(checkout / "bench" / "pull.py"),
        url,
        str(db),
        phase,
    ]
    # One hash seed: dict and set layouts, hence the counts, are the same from run to run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=3600)
    table = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)], check=True, capture_output=True, text=True
    ).stdout
    parts = dict.fromkeys(PARTS, 0)
    total = 0
    for line in table.splitlines():
        found = re.match(r"\s*([\d,]+) ", line)
        if not found:
            continue
        n = int(found.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = n
        elif "/orjson/" in line:
            parts["orjson"] += n
        elif "/msgspec/" in line:
            parts["msgspec"] += n
    parts["rest"] = total - parts["orjson"] - parts["msgspec"]
    return parts


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout, with its own .venv")
    parser.add_argument("--contacts", type=int, default=10_000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    sys.path.insert(0, str(ROOT / "bench"))
    from pull import Emulator, _commit  # noqa: PLC0415 -- bench/ is on the path only from here

    emulator = Emulator(args.contacts)
    sides = {"this": ROOT, "baseline": args.baseline.resolve()}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    try:
        with tempfile.TemporaryDirectory() as work:
            for side, checkout in sides.items():
                db = Path(work) / f"{side}.sqlite3"
                for phase in PHASES:
                    counts.setdefault(side, {})[phase] = got = count(
                        checkout, emulator.url, db, phase, Path(work) / "callgrind.out"
                    )
                    told = "  ".join(f"{p} {got[p] / 1e9:6.3f} G" for p in PARTS)
                    print(f"  {side:8s} {phase:9s} {told}", flush=True)
    finally:
        emulator.close()
    print(f"\nthis checkout ({_commit(ROOT)})\nover the baseline ({_commit(sides['baseline'])}),")
    print("instructions of each sync (its process less the start-up's):")
    for phase in PHASES[1:]:
        parts = []
        for part in PARTS:
            this, base = (counts[s][phase][part] - counts[s]["start-up"][part] for s in sides)
            ratio = f"{this / base:5.2f}x" if base else "  -  "
            parts.append(f"{part} {this / 1e9:6.3f} / {base / 1e9:6.3f} G = {ratio}")
        print(f"  {phase:9s} " + "   ".join(parts))


if __name__ == "__main__":
    main()
