"""The `clevertim-sync emulator` command: serve the bundled Clevertim stand-in in the foreground.

Owns: turning the command's options into an EmulatorServer, printing its base URL, and stopping
cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click
import orjson

from clevertim_sync.cli import cli
from clevertim_sync.emulator import EmulatorServer, FaultSpecError
from clevertim_sync.emulator.quirks import QuirkSpecError, parse_quirks
from clevertim_sync.emulator.replay import Replay
from clevertim_sync.survey.capture import load_capture


def _parse_faults(specs: tuple[str, ...]) -> list[dict[str, Any]]:
    faults = []
    for spec in specs:
        try:
            fault = orjson.loads(spec)
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--fault") from None
        if not isinstance(fault, dict):
            raise click.BadParameter(
                'a fault is a JSON object such as \'{"kind": "status"}\'', param_hint="--fault"
            )
        faults.append(fault)
    return faults


def _parse_quirks(text: str) -> list[str]:
    try:
        return parse_quirks(text)
    except QuirkSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--quirks") from None


@cli.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option(
    "--token", envvar="CLEVERTIM_EMULATOR_TOKEN", required=True, help="API token of the owner user."
)
@click.option("--read-only-token", default=None, help="A second token whose user can read but not write.")
@click.option("--contacts", default=1000, show_default=True, type=click.IntRange(0), help="Account size.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the generated account.")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="JSON",
    help='A fault to inject, repeatable: \'{"kind":"status","status":503,"path":"^/contact$","times":2}\'.',
)
@click.option(
    "--from",
    "capture_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Serve this capture (written by `probe --capture`) instead of a seeded account; read-only.",
)
@click.option(
    "--shuffle-lists",
    is_flag=True,
    help="With --from: reshuffle the server-computed id lists on every listing served.",
)
@click.option(
    "--quirks",
    default="",
    metavar="NAME[,NAME...]",
    help="Serve as a real server may differ: multi_refs, bool01, string_ids, shuffled_lists, "
    "string_date_parts, empty_strings, normalising, or all of those; and, by name only, the "
    "transport quirks redirect, login_page, lying_encoding, rate_limited (toggle later at "
    "/_control/quirks).",
)
def emulator_command(
    *,
    quirks: str,
    host: str,
    port: int,
    token: str,
    read_only_token: str | None,
    contacts: int,
    seed: int,
    faults: tuple[str, ...],
    capture_dir: Path | None,
    shuffle_lists: bool,
) -> None:
    """Serve a Clevertim API stand-in with a seeded account until Ctrl-C or SIGTERM.

    The control surface (faults, state, web-UI edits, request log) is under /_control/ on the
    same port and answers loopback clients only. With --from DIR, the API serves that capture
    exactly as captured (GET only; writes answer 501).
    """
    specs = _parse_faults(faults)
    replay = None
    if capture_dir is not None:
        replay = Replay(load_capture(capture_dir), shuffle_lists=shuffle_lists, seed=seed)
        contacts = 0  # the seeded account is not served: keep it small
    elif shuffle_lists:
        raise click.UsageError("--shuffle-lists goes with --from DIR")
    try:
        server = EmulatorServer(
            token=token,
            read_only_token=read_only_token,
            contacts=contacts,
            seed=seed,
            host=host,
            port=port,
            faults=specs,
            replay=replay,
            quirks=_parse_quirks(quirks),
        ).start()
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from None

    stopped = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    click.echo(server.base_url, nl=True)
    click.echo(f"control surface: {server.root_url}/_control/  (Ctrl-C to stop)", err=True)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
