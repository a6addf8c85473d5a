"""The processes and the schema: `notifier db`, `worker`, `web`, `peers` and `demo`.

`worker`, `web` and `demo` are top-level commands (no group): `cli.py` registers them.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from notifier.commands.common import JsonOption, cli_errors, err, out, print_json, table
from notifier.settings import get_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
peers_app = typer.Typer(help="Loopback stand-ins for the SMSC and the mail relay (tests and demos).",
                        no_args_is_help=True)

# --- db -----------------------------------------------------------------------------------------


@db_app.command("upgrade")
@cli_errors
def db_upgrade() -> None:
    """Create or migrate the schema to the latest revision."""
    from notifier.db import current_revision, upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    err.print(f"database at revision {current_revision(settings.database_url)}")


# --- processes ----------------------------------------------------------------------------------


@cli_errors
def worker(
    threads: Annotated[int | None, typer.Option(min=1,
                                                help="Worker threads (default: dispatch.worker_threads).")] = None,
    channels: Annotated[str, typer.Option(help="Channels this worker opens.")] = "sms,email",
) -> None:
    """Consume notifications from the Redis broker until SIGTERM / Ctrl-C."""
    from notifier.campaigns import parse_channels
    from notifier.dispatch.loops import run_worker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_worker(get_settings(), stop, channels=parse_channels(channels), threads=threads)


@cli_errors
def demo(
    subscribers: Annotated[int, typer.Option(min=1, help="How many subscribers to generate.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed of the generated data.")] = 2026,
    as_json: JsonOption = False,
) -> None:
    """Generate a small realistic data set, start loopback SMSC and SMTP peers, run both campaigns."""
    from notifier.demo import run_demo

    summary = run_demo(get_settings(), subscribers=subscribers, seed=seed, log=err.print)
    if as_json:
        print_json(summary)
        return
    for name, part in summary["feeds"].items():
        out.print(table(f"feed {name}", [part]))
    for name, part in summary["campaigns"].items():
        out.print(table(f"campaign {name}", [{"channel": ch, **c} for ch, c in part.items()]))


@peers_app.command("smsc")
@cli_errors
def peers_smsc(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (default: smpp.port).")] = None,
    log: Annotated[Path, typer.Option(help="Where each submit_sm received is logged, one JSON line each.")]
        = Path("var/peers/smsc-submits.jsonl"),
) -> None:
    """Run the loopback SMSC (SMPP 3.4) in the foreground until Ctrl-C / SIGTERM. Test only."""
    from notifier.peers.smsc import serve_foreground

    serve_foreground(port=port or get_settings().smpp.port, log_path=log, announce=_announce)


@peers_app.command("smtp")
@cli_errors
def peers_smtp(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (default: smtp.port).")] = None,
    store: Annotated[Path, typer.Option(help="Where each message's headers are logged, one JSON line each.")]
        = Path("var/peers/mail-received.jsonl"),
) -> None:
    """Run the loopback mail relay (SMTP) in the foreground until Ctrl-C / SIGTERM. Test only."""
    from notifier.peers.smtp_sink import serve_foreground

    serve_foreground(port=port or get_settings().smtp.port, store_path=store, announce=_announce)


def _announce(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)
    sys.stderr.flush()


@cli_errors
def web(
    host: Annotated[str, typer.Option(help="Address to listen on (a proxy in front gives Twilio https).")]
        = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve Twilio's status callbacks and the TwiML of warning calls until Ctrl-C / SIGTERM."""
    from notifier.web import serve

    serve(get_settings(), host=host, port=port)
