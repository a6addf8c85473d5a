"""The `notifier` command: parses arguments and prints; everything else lives in `notifier/`.

With `--json`, a command prints one JSON document on standard output and nothing else; progress
and logs go to standard error. A usage or input problem is one line on standard error, exit 2.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from notifier.errors import NotifierError
from notifier.settings import Settings, get_settings

app = typer.Typer(help="Warn subscribers about infected devices and leaked data, in Vietnamese.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
subscribers_app = typer.Typer(help="The operator's customer export.", no_args_is_help=True)
assignments_app = typer.Typer(help="Which account used which IP address when.", no_args_is_help=True)
feed_app = typer.Typer(help="Security feeds: infected hosts, leaked data.", no_args_is_help=True)
campaign_app = typer.Typer(help="Plan, run and follow warning campaigns.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(assignments_app, name="assignments")
app.add_typer(feed_app, name="feed")
app.add_typer(campaign_app, name="campaign")

out = Console()
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TzOption = Annotated[str | None, typer.Option("--tz", help="Zone of times without one (default: the format's).")]


def cli_errors(func: F) -> F:
    """Turn notifier's own errors into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NotifierError as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    return get_settings()


def _print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False) -> None:
    """notifier: warn an operator's subscribers, in Vietnamese, and prove delivery."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
@cli_errors
def db_upgrade() -> None:
    """Create or migrate the schema to the latest revision."""
    from notifier.db import current_revision, upgrade

    settings = _settings()
    upgrade(settings.database_url)
    err.print(f"database at revision {current_revision(settings.database_url)}")


# --- imports ----------------------------------------------------------------------------------


def _print_import(result: Any, as_json: bool, what: str) -> None:
    if as_json:
        _print_json(result.as_json())
        return
    err.print(f"{what}: {result.accepted} accepted, {result.rejected} rejected")
    for error in result.errors[:50]:
        err.print(f"  line {error['line']}: {error['reason']}", markup=False, highlight=False)
    if result.rejected > 50:
        err.print(f"  … {result.rejected - 50} more (use --json or `feed show --items`)")


@subscribers_app.command("import")
@cli_errors
def subscribers_import(
    file: Path,
    tz: TzOption = None,
    column_map: Annotated[Path | None, typer.Option(help="TOML file renaming the export's headers.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import or update accounts from the operator's customer CSV."""
    from notifier.db import session_scope
    from notifier.importing import import_subscribers, load_column_map

    settings = _settings()
    with session_scope(settings.database_url) as session:
        result = import_subscribers(session, file, tz=tz or settings.timezone,
                                    column_map=load_column_map(column_map) if column_map else None)
    _print_import(result, as_json, "subscribers")


@assignments_app.command("import")
@cli_errors
def assignments_import(
    file: Path,
    fmt: Annotated[str, typer.Option("--format", help="sessions-csv")] = "sessions-csv",
    tz: TzOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import IP assignments (who had which address when)."""
    from notifier.db import session_scope
    from notifier.importing import import_assignments

    settings = _settings()
    with session_scope(settings.database_url) as session:
        result = import_assignments(session, file, fmt=fmt, tz=tz or settings.timezone)
    _print_import(result, as_json, "assignments")


@feed_app.command("import")
@cli_errors
def feed_import(
    file: Path,
    fmt: Annotated[str, typer.Option("--format", help="shadowserver | leak-csv")],
    source: Annotated[str | None, typer.Option(help="Who sent the feed.")] = None,
    report_type: Annotated[str | None, typer.Option(help="Shadowserver report type, if not in the file name.")] = None,
    tz: TzOption = None,
    again: Annotated[bool, typer.Option("--again", help="Import a file that was imported before.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Import a security feed, keep every line, and match it to accounts."""
    from notifier.db import session_scope
    from notifier.importing import import_feed

    settings = _settings()
    with session_scope(settings.database_url) as session:
        result = import_feed(session, file, fmt=fmt, tz=tz, source=source, report_type=report_type, again=again)
    if as_json:
        _print_json(result.as_json())
        return
    _print_import(result, False, f"feed {result.id}")
    err.print("matched {matched}, unmatched {unmatched}, ambiguous {ambiguous}".format(**result.counts))


@feed_app.command("show")
@cli_errors
def feed_show(
    feed_id: int,
    items: Annotated[bool, typer.Option("--items", help="List every line with its outcome.")] = False,
    status: Annotated[str | None, typer.Option(help="Only items with this status.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a feed's counts, and with --items each line's outcome (bad rows with their reason)."""
    from notifier.db import session_scope
    from notifier.reports import feed_items, feed_summary

    with session_scope(_settings().database_url) as session:
        summary = feed_summary(session, feed_id)
        rows = feed_items(session, feed_id, status=status) if items else []
    if as_json:
        _print_json(rows if items else summary)
        return
    out.print(_table("feed", [{"field": k, "value": v} for k, v in summary.items()]))
    if items:
        out.print(_table("items", [{k: r[k] for k in ("line", "status", "account_id", "reason")} for r in rows]))


# --- campaigns --------------------------------------------------------------------------------


@campaign_app.command("create")
@cli_errors
def campaign_create(
    feed: Annotated[int, typer.Option(help="Feed id.")],
    template: Annotated[str, typer.Option(help="infected_device | data_leak")],
    channels: Annotated[str, typer.Option(help="Ordered channel chain, e.g. sms,email.")] = "sms,email",
    name: Annotated[str | None, typer.Option(help="A name for people.")] = None,
    again: Annotated[bool, typer.Option("--again", help="Allow a second campaign on the same feed and channel.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Plan a campaign: one notification per matched account and channel."""
    from notifier.campaigns import create_campaign, parse_channels
    from notifier.db import session_scope
    from notifier.rendering import Renderer

    settings = _settings()
    Renderer(settings.templates_dir).check_template(template)
    with session_scope(settings.database_url) as session:
        plan = create_campaign(session, feed_id=feed, template=template, channels=parse_channels(channels),
                               name=name, again=again)
    if as_json:
        _print_json({"id": plan.campaign_id, "accounts": plan.accounts, "planned": plan.planned,
                     "suppressed": plan.suppressed})
        return
    err.print(f"campaign {plan.campaign_id}: {plan.accounts} accounts, {plan.planned} notifications planned, "
              f"{plan.suppressed} suppressed")


@campaign_app.command("run")
@cli_errors
def campaign_run(campaign_id: int, as_json: JsonOption = False) -> None:
    """Send a campaign and follow it until every notification is settled."""
    from notifier.dispatch import run_campaign

    settings = _settings()
    with _progress(enabled=not as_json) as on_progress:
        status = run_campaign(settings, campaign_id, on_progress=on_progress)
    if as_json:
        _print_json(status)
    else:
        _print_status(status)


@campaign_app.command("pause")
@cli_errors
def campaign_pause(campaign_id: int) -> None:
    """Hold a campaign; `campaign run ID` resumes it."""
    from notifier.campaigns import pause_campaign
    from notifier.db import session_scope

    with session_scope(_settings().database_url) as session:
        pause_campaign(session, campaign_id)
    err.print(f"campaign {campaign_id} paused; `notifier campaign run {campaign_id}` resumes it")


@campaign_app.command("cancel")
@cli_errors
def campaign_cancel(campaign_id: int) -> None:
    """Stop a campaign for good; what was not yet sent is cancelled."""
    from notifier.campaigns import cancel_campaign
    from notifier.db import session_scope

    with session_scope(_settings().database_url) as session:
        cancelled = cancel_campaign(session, campaign_id)
    err.print(f"campaign {campaign_id} cancelled; {cancelled} notification(s) will not be sent")


@campaign_app.command("status")
@cli_errors
def campaign_status_cmd(campaign_id: int, as_json: JsonOption = False) -> None:
    """Counts per state and per channel."""
    from notifier.campaigns import campaign_status
    from notifier.db import session_scope

    with session_scope(_settings().database_url) as session:
        status = campaign_status(session, campaign_id)
    if as_json:
        _print_json(status)
    else:
        _print_status(status)


def _print_status(status: dict[str, Any]) -> None:
    out.print(f"campaign {status['id']} [{status['state']}] {status['name']}", markup=False, highlight=False)
    rows = [{"channel": channel, **counts} for channel, counts in status["by_channel"].items()]
    out.print(_table("by channel", rows))


class _progress:
    """A rich progress bar on stderr fed by the dispatcher's status callbacks."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Callable[[dict[str, object]], None] | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), console=err, transient=False)
        self.bar.start()
        self.task = self.bar.add_task("sending", total=None, detail="")
        return self.update

    def update(self, status: dict[str, Any]) -> None:
        from notifier.outbox import PENDING_STATES

        states: dict[str, int] = status["states"]
        total = int(status["total"])
        done = total - sum(states.get(s, 0) for s in PENDING_STATES)
        detail = " ".join(f"{k}:{v}" for k, v in states.items())
        self.bar.update(self.task, total=total, completed=done, detail=detail)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


# --- care staff -------------------------------------------------------------------------------


@app.command("history")
@cli_errors
def history(
    msisdn: Annotated[str | None, typer.Option(help="Phone number, any usual form.")] = None,
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    account: Annotated[str | None, typer.Option(help="The operator's account id.")] = None,
    actor: Annotated[str | None, typer.Option(help="Who is looking (recorded in the audit log).")] = None,
    as_json: JsonOption = False,
) -> None:
    """What was sent to a subscriber, when, and whether it arrived. Every lookup is audited."""
    from notifier.db import session_scope
    from notifier.history import default_actor, lookup_history

    with session_scope(_settings().database_url) as session:
        rows = lookup_history(session, msisdn=msisdn, email=email, account=account, actor=actor or default_actor())
    if as_json:
        _print_json(rows)
        return
    table_rows = [{k: r[k] for k in ("notification_id", "campaign_id", "channel", "destination", "state",
                                     "threat", "sent_at", "delivered_at")} for r in rows]
    out.print(_table(f"{len(rows)} notification(s)", table_rows))


# --- processes --------------------------------------------------------------------------------


@app.command("worker")
@cli_errors
def worker(
    threads: Annotated[int | None, typer.Option(help="Worker threads (default: dispatch.worker_threads).")] = None,
    channels: Annotated[str, typer.Option(help="Channels this worker opens.")] = "sms,email",
) -> None:
    """Consume notifications from the Redis broker until SIGTERM / Ctrl-C."""
    from notifier.campaigns import parse_channels
    from notifier.dispatch import run_worker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_worker(_settings(), stop, channels=parse_channels(channels), threads=threads)


@app.command("demo")
@cli_errors
def demo(
    subscribers: Annotated[int, typer.Option(help="How many subscribers to generate.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed of the generated data.")] = 2026,
    as_json: JsonOption = False,
) -> None:
    """Generate a small realistic data set, start loopback SMSC and SMTP peers, run both campaigns."""
    from notifier.demo import run_demo

    summary = run_demo(_settings(), subscribers=subscribers, seed=seed, log=err.print)
    if as_json:
        _print_json(summary)
        return
    for name, part in summary["feeds"].items():
        out.print(_table(f"feed {name}", [part]))
    for name, part in summary["campaigns"].items():
        out.print(_table(f"campaign {name}", [{"channel": ch, **c} for ch, c in part.items()]))


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table


if __name__ == "__main__":
    app()
