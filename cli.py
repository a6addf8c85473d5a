"""The `notifier` command: parses arguments and prints; everything else lives in `notifier/`.

With `--json`, a command prints one JSON document on standard output and nothing else; progress
and logs go to standard error. A usage or input problem is one line on standard error, exit 2.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption, UsageError  # Typer vendors Click
from typer.core import TyperGroup

from notifier.errors import NotifierError
from notifier.settings import Settings, get_settings

# --- failures: one line `error: …` on stderr, exit code 2 -------------------------------------

EXIT_FAILURE = 2
VERBOSE_KEY = "notifier.verbose"  # in the click context's meta, set by the `main` callback
PIPED_OUTPUT_WIDTH = 400  # characters: wider than any table we print
MAX_WORD_CHARS = 120  # a 5,000-character argument echoed in a message is cut to this
_NEGATIVE_NUMBER = re.compile(r"-\d+(\.\d+)?")


def _fail(message: str) -> NoReturn:
    """Print `error: <message>` as exactly one line, personal data and passwords masked; exit 2."""
    from notifier.redaction import one_line, redact

    line = re.sub(rf"\S{{{MAX_WORD_CHARS + 1},}}", _shorten_word, one_line(redact(message)))
    print(f"error: {line}", file=sys.stderr, flush=True)
    raise typer.Exit(EXIT_FAILURE)


def _shorten_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return f"{word[:MAX_WORD_CHARS // 2]}…({len(word)} characters)"


def _command_path(ctx: typer.Context | None) -> str:
    """`notifier feed import`, whatever name the program was started under (tests, python -m)."""
    names: list[str] = []
    while ctx is not None:
        names.append((ctx.info_name or "") if ctx.parent is not None else "notifier")
        ctx = ctx.parent
    return " ".join(reversed(names))


def _usage_message(exc: UsageError) -> str:
    """Click's usage error as one clause plus where to look: "missing option '--format' (see …)"."""
    if isinstance(exc, NoSuchOption) and _NEGATIVE_NUMBER.fullmatch(exc.option_name):
        message = f"{exc.option_name} is not allowed here: ids and counts are whole numbers from 1"
    else:
        message = exc.format_message().replace("Value error, ", "").replace("Input should be", "must be")
    message = message.rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return f"{message} (see `{_command_path(exc.ctx)} --help`)"


def _database_url() -> str | None:
    try:
        return get_settings().database_url
    except Exception:  # noqa: BLE001 - the settings' own error is reported elsewhere
        return None


def _unexpected(exc: Exception, *, verbose: bool) -> NoReturn:
    """A database problem people can fix gets its sentence; anything else its type and first line.

    With -v the traceback comes first, redacted: it quotes SQL parameters and message texts.
    """
    from notifier.db import explain_database_error
    from notifier.redaction import format_exception

    if verbose:
        sys.stderr.write(format_exception(exc))
    explained = explain_database_error(exc, _database_url())
    if explained is not None:
        _fail(str(explained))
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    _fail(f"unexpected {type(exc).__name__}{detail} (run with -v for details)")


@contextmanager
def _one_line_errors(ctx: typer.Context | None) -> Iterator[None]:
    """Map every failure of parsing or running a command to `_fail`; help and exits pass through."""
    try:
        yield
    except (typer.Exit, NoArgsIsHelpError, KeyboardInterrupt, BrokenPipeError):
        raise  # --help, a bare group (its help), a command's own exit, Ctrl-C, `| head`: as Typer does
    except typer.Abort:
        _fail("aborted")
    except UsageError as exc:
        _fail(_usage_message(exc))
    except ClickException as exc:
        _fail(exc.format_message())
    except NotifierError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback
        _unexpected(exc, verbose=bool(ctx and ctx.meta.get(VERBOSE_KEY)))


class _RootGroup(TyperGroup):
    """The `notifier` group: parsing and running every command go through `_one_line_errors`.

    Being the group itself (not a wrapper around `app()`), it behaves the same for the installed
    script, `python cli.py` and the test runner.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: typer.Context | None = None,
                     **extra: Any) -> typer.Context:
        with _one_line_errors(None):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        with _one_line_errors(ctx):
            return super().invoke(ctx)


app = typer.Typer(help="Warn subscribers about infected devices and leaked data, in Vietnamese.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=_RootGroup)
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
peers_app = typer.Typer(help="Loopback stand-ins for the SMSC and the mail relay (tests and demos).",
                        no_args_is_help=True)
app.add_typer(peers_app, name="peers")

# Piped or redirected output gets the width its rows need (a file has no edge to cut at); a
# terminal gets its own width, and tables fold long cells there instead of hiding them behind "…".
out = Console(width=None if sys.stdout.isatty() else PIPED_OUTPUT_WIDTH)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TzOption = Annotated[str | None, typer.Option("--tz", help="Zone of times without one (default: the format's).")]

# --- option types: refuse what the database could not hold, before it gets there ---------------

MAX_ID = 2_147_483_647  # ids are PostgreSQL `integer` columns


def _row_id(text: str | int) -> int:
    """An id as people type it: 1 … MAX_ID, else refused here. A larger one names no row, and on
    PostgreSQL it would not even fit the query's `integer` parameter (a driver error, not "not found")."""
    value = str(text).strip()
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_ID):
        raise ValueError(f"must be a whole number from 1 to {MAX_ID}, not {value!r}")
    return int(value)


def id_option(help_text: str) -> Any:
    """A `--feed`-style option holding an id, checked like every id argument (`IdArgument`)."""
    return typer.Option(parser=_row_id, help=help_text)


IdArgument = Annotated[int, typer.Argument(parser=_row_id)]


def fits(column: str) -> Callable[[str], str]:
    """A parser for a text option stored in `table.column`: longer text is refused with the limit
    models.py declares, instead of a PostgreSQL error (or, on SQLite, a value kept over length)."""
    table, name = column.split(".")

    def parse(text: str) -> str:
        import notifier.models  # noqa: F401 - registers the tables
        from sqlmodel import SQLModel

        limit = SQLModel.metadata.tables[table].c[name].type.length
        if limit is not None and len(text) > limit:
            raise ValueError(f"longer than {limit} characters ({len(text)} given)")
        return text

    return parse


def cli_errors(func: F) -> F:
    """Turn notifier's own errors into one line on stderr and exit code 2.

    The root group does this for every error anyway; the decorator keeps a command's own failures
    visibly handled where it is defined.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NotifierError as exc:
            _fail(str(exc))

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    return get_settings()


def _print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=_json_value) + "\n")


def _json_value(value: object) -> object:
    """Times in JSON are ISO 8601 in UTC with the offset (`…+00:00`), whoever built the document."""
    from datetime import datetime

    from notifier.timefmt import iso_utc

    return iso_utc(value) if isinstance(value, datetime) else str(value)


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    """notifier: warn an operator's subscribers, in Vietnamese, and prove delivery."""
    from notifier.redaction import configure_logging

    ctx.meta[VERBOSE_KEY] = verbose
    configure_logging(verbose=verbose)


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
    if result.warned:
        err.print(f"{result.warned} warning{'' if result.warned == 1 else 's'}")
        for warning in result.warnings[:50]:
            err.print(f"  line {warning['line']}: {warning['reason']}", markup=False, highlight=False)
        if result.warned > 50:
            err.print(f"  … {result.warned - 50} more (use --json)")


@subscribers_app.command("import")
@cli_errors
def subscribers_import(
    file: Path,
    tz: TzOption = None,
    column_map: Annotated[Path | None, typer.Option(
        help="TOML file renaming the export's headers (default: [subscribers.columns] in the settings).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import or update accounts from the operator's customer CSV."""
    from notifier.db import session_scope
    from notifier.importing import import_subscribers, load_column_map

    settings = _settings()
    with session_scope(settings.database_url) as session:
        mapping = load_column_map(column_map) if column_map else settings.subscribers.columns or None
        result = import_subscribers(session, file, tz=tz or settings.timezone, column_map=mapping)
    _print_import(result, as_json, "subscribers")


@assignments_app.command("import")
@cli_errors
def assignments_import(
    file: Path,
    fmt: Annotated[str, typer.Option("--format", parser=fits("ip_assignment.source"),
                                     help="sessions-csv | radius-detail | static-csv | cgnat-csv")] = "sessions-csv",
    tz: TzOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import IP assignments (who had which address when)."""
    from notifier.db import session_scope
    from notifier.importing import import_assignments

    settings = _settings()
    with session_scope(settings.database_url) as session:
        result = import_assignments(session, file, fmt=fmt, tz=tz or settings.timezone, settings=settings)
    _print_import(result, as_json, "assignments")


@assignments_app.command("purge")
@cli_errors
def assignments_purge(
    before: Annotated[str | None, typer.Option("--before", help="Delete what ended before this date/time "
                                               "(local time unless it has a zone).")] = None,
    older_than_days: Annotated[int | None, typer.Option("--older-than-days",
                                                        help="Delete what ended more than N days ago "
                                                             "(default: identity.retention_days).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete IP assignments and NAT blocks that ended before the retention cutoff (open ones stay)."""
    from notifier.db import session_scope
    from notifier.identity.assignments import purge_assignments, purge_cutoff
    from notifier.models import utcnow

    settings = _settings()
    cutoff = purge_cutoff(now=utcnow(), retention_days=settings.identity.retention_days, tz=settings.timezone,
                          before=before, older_than_days=older_than_days)
    with session_scope(settings.database_url) as session:
        deleted = purge_assignments(session, before=cutoff)
    if as_json:
        _print_json({"before": cutoff.isoformat(), "deleted": deleted})
        return
    err.print(f"deleted {deleted['ip_assignment']} IP assignment(s) and {deleted['nat_block']} NAT block(s) "
              f"that ended before {cutoff.isoformat()}")


@feed_app.command("import")
@cli_errors
def feed_import(
    file: Path,
    fmt: Annotated[str, typer.Option("--format", parser=fits("feed.format"),
                                     help="shadowserver | leak-csv | ais-json")],
    source: Annotated[str | None, typer.Option(parser=fits("feed.source"), help="Who sent the feed.")] = None,
    report_type: Annotated[str | None, typer.Option(parser=fits("feed.report_type"),
                                                    help="Shadowserver report type, if not in the file name.")] = None,
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
    if result.already_imported:
        err.print(f"already imported: this request is feed {result.id} (nothing imported again)")
        return
    _print_import(result, False, f"feed {result.id}")
    err.print("matched {matched}, unmatched {unmatched}, ambiguous {ambiguous}".format(**result.counts))


@feed_app.command("show")
@cli_errors
def feed_show(
    feed_id: IdArgument,
    items: Annotated[bool, typer.Option("--items", help="List every line with its outcome.")] = False,
    status: Annotated[str | None, typer.Option(parser=fits("feed_item.status"),
                                               help="Only items with this status.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="With --items: CSV line,status,account_id,reason "
                                                        "on stdout.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a feed's counts, and with --items each line's outcome (bad rows with their reason).

    `--items --json` and `--items --csv` stream: a feed of a million lines is written as it is read.
    """
    from notifier.db import session_scope
    from notifier.reports import feed_summary, iter_feed_items

    if as_csv and as_json:
        raise typer.BadParameter("choose one of --csv and --json", param_hint="'--csv'")
    if as_csv and not items:
        raise typer.BadParameter("--csv lists items: add --items", param_hint="'--csv'")
    with session_scope(_settings().database_url) as session:
        summary = feed_summary(session, feed_id)
        if items and (as_json or as_csv):
            write = _write_items_csv if as_csv else _write_json_list
            write(iter_feed_items(session, feed_id, status=status))
            return
        listed = list(iter_feed_items(session, feed_id, status=status)) if items else []
    if as_json:
        _print_json(summary)
        return
    out.print(_fields_table("feed", summary))
    if items:
        out.print(_table("items", [_item_row(r) for r in listed]))


def _write_json_list(rows: Iterator[dict[str, Any]]) -> None:
    """A JSON array written one element at a time, so its size is not bounded by memory."""
    sys.stdout.write("[")
    for index, row in enumerate(rows):
        sys.stdout.write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False, default=_json_value))
    sys.stdout.write("\n]\n")


def _write_items_csv(rows: Iterator[dict[str, Any]]) -> None:
    """formats.md's item columns as CSV (`line,status,account_id,reason`), row by row."""
    import csv

    from notifier.reports import ITEM_OUTCOME_COLUMNS

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(ITEM_OUTCOME_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[name] is None else row[name] for name in ITEM_OUTCOME_COLUMNS])


def _item_row(item: dict[str, Any]) -> dict[str, Any]:
    """A feed line for people; a day-only `seen_at` is shown as that day, without a made-up 00:00."""
    from notifier.timefmt import DATE_PRECISION, local_display

    row = {k: item.get(k) for k in ("line", "status", "account_id", "seen_at", "reason")}
    if item.get("seen_precision") == DATE_PRECISION:
        row["seen_at"] = local_display(item["seen_at"], _settings().timezone, precision=DATE_PRECISION)
    return row


@feed_app.command("list")
@cli_errors
def feed_list(as_json: JsonOption = False) -> None:
    """Every feed, newest first: counts per outcome and the campaigns planned on it."""
    from notifier.db import session_scope
    from notifier.reports import list_feeds

    with session_scope(_settings().database_url) as session:
        feeds = list_feeds(session)
    if as_json:
        _print_json(feeds)
        return
    if not feeds:
        err.print("no feeds yet (import one with `notifier feed import FILE --format F`)", markup=False,
                  highlight=False)
        return
    rows = [{**feed, "campaigns": ", ".join(str(c) for c in feed["campaigns"])} for feed in feeds]
    out.print(_table(f"{len(feeds)} feed(s), newest first", rows))


# --- campaigns --------------------------------------------------------------------------------


@campaign_app.command("create")
@cli_errors
def campaign_create(
    feed: Annotated[int, id_option("Feed id.")],
    template: Annotated[str, typer.Option(parser=fits("campaign.template"),
                                          help="auto (each account gets the template of its events' threat "
                                               "category, templates/catalog.toml `categories`) or one template "
                                               "for all, e.g. infected_device")] = "auto",
    channels: Annotated[str, typer.Option(parser=fits("campaign.channels"),
                                          help="Ordered channel chain, e.g. sms,email.")] = "sms,email",
    name: Annotated[str | None, typer.Option(parser=fits("campaign.name"), help="A name for people.")] = None,
    again: Annotated[bool, typer.Option("--again", help="Allow a second campaign on the same feed and channel.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Plan a campaign: one notification per matched account and channel (an advisory feed: per
    account of its segment). An account already warned of the same threats within the cooldown
    gets no new one: its new events are attached to the earlier warning. With `--template auto`
    (the default) each account is told the story of its own events: an infected device before a
    leak when it has both (the leak is then left out and counted as untold)."""
    from notifier.campaigns import create_campaign, parse_channels
    from notifier.db import session_scope
    from notifier.rendering import Renderer
    from notifier.template_catalog import load_catalog
    from notifier.threat_categories import AUTO

    settings = _settings()
    renderer, catalog = Renderer(settings.templates_dir), load_catalog(settings.templates_dir)
    for used in sorted(set(catalog.categories.values())) if template == AUTO else [template]:
        renderer.check_template(used)
    with session_scope(settings.database_url) as session:
        plan = create_campaign(session, feed_id=feed, template=template, channels=parse_channels(channels),
                               name=name, again=again, catalog=catalog)
    if as_json:
        _print_json({"id": plan.campaign_id, "accounts": plan.accounts, "planned": plan.planned,
                     "suppressed": plan.suppressed, "attached": plan.attached, "templates": plan.templates,
                     "untold": plan.untold})
        return
    err.print(f"campaign {plan.campaign_id}: {plan.accounts} accounts, {plan.planned} notifications planned, "
              f"{plan.suppressed} suppressed, {plan.attached} attached to an earlier warning "
              f"(same threat within {settings.identity.cooldown_days:g} days)", markup=False, highlight=False)
    if plan.templates:
        err.print("accounts per template: " + ", ".join(f"{name} {count}" for name, count in plan.templates.items()),
                  markup=False, highlight=False)
    if plan.untold:
        err.print(f"{plan.untold} account(s) also have leaked-data events in this feed that their infected-device "
                  "warning does not tell (left unlinked, so a later leak warning is not held back)",
                  markup=False, highlight=False)


@campaign_app.command("run")
@cli_errors
def campaign_run(campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Send a campaign and follow it until every notification is settled."""
    from notifier.dispatch.loops import run_campaign

    settings = _settings()
    with _progress(enabled=not as_json) as on_progress:
        status = run_campaign(settings, campaign_id, on_progress=on_progress)
    if as_json:
        _print_json(status)
    else:
        _print_status(status)


@campaign_app.command("pause")
@cli_errors
def campaign_pause(campaign_id: IdArgument) -> None:
    """Hold a campaign; `campaign run ID` resumes it."""
    from notifier.campaigns import pause_campaign
    from notifier.db import session_scope

    with session_scope(_settings().database_url) as session:
        pause_campaign(session, campaign_id)
    err.print(f"campaign {campaign_id} paused; `notifier campaign run {campaign_id}` resumes it")


@campaign_app.command("cancel")
@cli_errors
def campaign_cancel(campaign_id: IdArgument) -> None:
    """Stop a campaign for good; what was not yet sent is cancelled."""
    from notifier.campaigns import cancel_campaign
    from notifier.db import session_scope

    with session_scope(_settings().database_url) as session:
        cancelled = cancel_campaign(session, campaign_id)
    err.print(f"campaign {campaign_id} cancelled; {cancelled} notification(s) will not be sent")


@campaign_app.command("retry")
@cli_errors
def campaign_retry(
    campaign_id: IdArgument,
    state: Annotated[str, typer.Option(help="Which outcomes to send again: failed, undelivered, expired "
                                            "(comma-separated). Never what was delivered.")] = "failed",
) -> None:
    """Send again what an operator decides to (failed by default); `campaign run ID` sends it."""
    from notifier.campaigns import parse_retry_states, retry_campaign
    from notifier.db import session_scope

    states = parse_retry_states(state)
    with session_scope(_settings().database_url) as session:
        count = retry_campaign(session, campaign_id, states)
    err.print(f"campaign {campaign_id}: {count} notification(s) ({', '.join(states)}) will be sent again; "
              f"`notifier campaign run {campaign_id}` sends them")


@campaign_app.command("reconcile")
@cli_errors
def campaign_reconcile(
    campaign_id: IdArgument,
    resend: Annotated[bool, typer.Option("--resend", help="Queue every unknown row again (counted as a resend).")] = False,
    mark_failed: Annotated[bool, typer.Option("--mark-failed", help="Mark every unknown row failed.")] = False,
    actor: Annotated[str | None, typer.Option(help="Who decides (default: the OS user).")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the notifications whose send the provider may or may not have taken (`unknown`), and
    with --resend or --mark-failed decide them."""
    from notifier.audit import default_actor
    from notifier.campaigns import get_campaign
    from notifier.db import session_scope
    from notifier.dispatch.unknown import decide_unknown, unknown_notifications

    if resend and mark_failed:
        raise typer.BadParameter("choose one of --resend and --mark-failed")
    with session_scope(_settings().database_url) as session:
        get_campaign(session, campaign_id)
        rows = unknown_notifications(session, campaign_id)
        decided = (decide_unknown(session, campaign_id, resend=resend, actor=actor or default_actor())
                   if resend or mark_failed else [])
    shown = rows  # destinations come masked from unknown_notifications
    if as_json:
        _print_json({"campaign_id": campaign_id, "unknown": shown, "decided": decided,
                     "decision": "resend" if resend else "mark-failed" if mark_failed else None})
        return
    if shown:
        out.print(_table(f"{len(shown)} unknown notification(s)", shown))
    if resend or mark_failed:
        what = "queued again (`notifier campaign run` sends them)" if resend else "marked failed"
        err.print(f"campaign {campaign_id}: {len(decided)} notification(s) {what}", markup=False, highlight=False)
    elif not shown:
        err.print(f"campaign {campaign_id} has no unknown notifications", markup=False, highlight=False)


@campaign_app.command("status")
@cli_errors
def campaign_status_cmd(
    campaign_id: IdArgument,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second until the campaign is settled "
                                        "(Ctrl-C stops): counts, the rate over the last 10 s and an ETA; "
                                        "with --json, one JSON line per refresh.")] = False,
) -> None:
    """Counts per state and per channel; --watch follows a running campaign."""
    from notifier.campaigns import campaign_status
    from notifier.db import session_scope

    if watch:
        _watch_status(campaign_id, as_json=as_json)
        return
    with session_scope(_settings().database_url) as session:
        status = campaign_status(session, campaign_id)
    if as_json:
        _print_json(status)
    else:
        _print_status(status)


def _watch_status(campaign_id: int, *, as_json: bool, interval_seconds: float = 1.0) -> None:
    """`campaign status --watch`: one refresh a second (notifier/dispatch/progress.py) until settled."""
    import time

    from rich.console import Group
    from rich.live import Live

    from notifier.db import session_scope
    from notifier.dispatch.progress import campaign_progress, describe_eta, describe_rate

    def refresh() -> Any:
        with session_scope(_settings().database_url) as session:
            return campaign_progress(session, campaign_id)

    def view(progress: Any) -> Group:
        status = progress.status
        rows = [{"channel": channel, **counts} for channel, counts in status["by_channel"].items()]
        return Group(Text(f"campaign {status['id']} [{status['state']}] {status['name']}"),
                     _table("by channel", rows), Text(describe_rate(progress)), Text(describe_eta(progress)))

    try:
        if as_json:
            while not (progress := refresh()).settled:
                sys.stdout.write(json.dumps(progress.as_json(), ensure_ascii=False, default=_json_value) + "\n")
                sys.stdout.flush()
                time.sleep(interval_seconds)
            sys.stdout.write(json.dumps(progress.as_json(), ensure_ascii=False, default=_json_value) + "\n")
            return
        with Live(console=out, auto_refresh=False) as live:
            while not (progress := refresh()).settled:
                live.update(view(progress), refresh=True)
                time.sleep(interval_seconds)
            live.update(view(progress), refresh=True)
    except KeyboardInterrupt:
        return


@campaign_app.command("list")
@cli_errors
def campaign_list(
    state: Annotated[str | None, typer.Option(help="Only campaigns in this state: planned | running | paused "
                                                   "| done | cancelled.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every campaign, newest first, with its notifications counted per state."""
    from notifier.campaigns import list_campaigns
    from notifier.db import session_scope

    with session_scope(_settings().database_url) as session:
        campaigns = list_campaigns(session, state=state)
    if as_json:
        _print_json(campaigns)
        return
    if not campaigns:
        hint = (f"no campaign is {state.strip().lower()} (`notifier campaign list` shows them all)" if state else
                "no campaigns yet (plan one with `notifier campaign create --feed ID --template T`; "
                "`notifier feed list` shows the feeds)")
        err.print(hint, markup=False, highlight=False)
        return
    out.print(_table(f"{len(campaigns)} campaign(s), newest first", _campaign_rows(campaigns)))


CAMPAIGN_LIST_COUNTS = ("planned", "queued", "sent", "delivered", "failed", "suppressed")


def _campaign_rows(campaigns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows: the usual counts always, any other state only when some campaign has it."""
    from notifier.dispatch.outbox import ALL_STATES

    shown = [s for s in ALL_STATES if s in CAMPAIGN_LIST_COUNTS or any(c["counts"][s] for c in campaigns)]
    return [{"id": c["id"], "feed": c["feed_id"], "template": c["template"], "channels": ",".join(c["channels"]),
             "state": c["state"], "created_at": c["created_at"], "total": c["total"],
             **{s: c["counts"][s] for s in shown}} for c in campaigns]


def _print_status(status: dict[str, Any]) -> None:
    from notifier.timefmt import local_display

    zone = _settings().timezone
    out.print(f"campaign {status['id']} [{status['state']}] {status['name']}", markup=False, highlight=False)
    times = [f"{label} {local_display(status.get(f'{label}_at'), zone)}"
             for label in ("created", "started", "finished") if status.get(f"{label}_at")]
    if times:
        out.print(", ".join(times), markup=False, highlight=False)
    rows = [{"channel": channel, **counts} for channel, counts in status["by_channel"].items()]
    out.print(_table("by channel", rows))
    if status.get("resent_after_unknown"):
        out.print(f"{status['resent_after_unknown']} sent again after their outcome was unknown "
                  "(no receipt came although the SMSC could hand it over)", markup=False, highlight=False)


class _progress:
    """A rich progress bar on stderr fed by the dispatcher's status callbacks.

    It appears with the first status, so a run refused before it starts (a route down) prints
    its one error line and nothing else.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> Callable[[dict[str, object]], None] | None:
        return self.update if self.enabled else None

    def _start(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[detail]}"), console=err, transient=False)
        self.bar.start()
        self.task = self.bar.add_task("sending", total=None, detail="")

    def update(self, status: dict[str, Any]) -> None:
        from notifier.dispatch.outbox import PENDING_STATES

        if self.bar is None:
            self._start()
        states: dict[str, int] = status["states"]
        total = int(status["total"])
        done = total - sum(states.get(s, 0) for s in PENDING_STATES)
        detail = " ".join(f"{k}:{v}" for k, v in states.items())
        self.bar.update(self.task, total=total, completed=done, detail=detail)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- care staff -------------------------------------------------------------------------------


@app.command("history")
@cli_errors
def history(
    msisdn: Annotated[str | None, typer.Option(parser=fits("contact_point.value"),
                                               help="Phone number, any usual form.")] = None,
    email: Annotated[str | None, typer.Option(parser=fits("contact_point.value"), help="E-mail address.")] = None,
    account: Annotated[str | None, typer.Option(parser=fits("account.account_ref"),
                                                help="The operator's account id (any case).")] = None,
    reference: Annotated[str | None, typer.Option(help="The code the subscriber quotes, e.g. CB-12-3456.")] = None,
    actor: Annotated[str | None, typer.Option(parser=fits("audit_log.actor"),
                                              help="Who is looking (recorded in the audit log).")] = None,
    as_json: JsonOption = False,
) -> None:
    """What was sent to a subscriber, when, and whether it arrived. Every lookup is audited."""
    from notifier.audit import default_actor
    from notifier.db import session_scope
    from notifier.history import find_history, history_cards

    with session_scope(_settings().database_url) as session:
        found = find_history(session, msisdn=msisdn, email=email, account=account, reference=reference,
                             actor=actor or default_actor())
    if as_json:
        _print_json(found.rows)
        return
    if not found.rows:
        out.print(f"no notifications for {found.target}", markup=False, highlight=False)
        return
    out.print(f"{len(found.rows)} notification(s)", markup=False, highlight=False)
    for block in history_cards(found.rows, _settings().timezone):
        out.print(block, markup=False, highlight=False)


@app.command("audit")
@cli_errors
def audit(
    since: Annotated[str | None, typer.Option(help="From a local date (2026-11-01) or a span back (7d, 12h).")] = None,
    actor: Annotated[str | None, typer.Option(parser=fits("audit_log.actor"),
                                              help="Only the lookups of this actor.")] = None,
    viewer: Annotated[str | None, typer.Option(parser=fits("audit_log.actor"),
                                               help="Who is reading the audit (recorded; default: OS user).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Who looked up whose data, when (oldest first). Reading the audit is audited too."""
    from notifier.audit import audit_table_rows, default_actor, list_audit, parse_since
    from notifier.db import session_scope

    settings = _settings()
    start = parse_since(since, zone=settings.timezone) if since else None
    with session_scope(settings.database_url) as session:
        rows = list_audit(session, viewer=viewer or default_actor(), since=start, actor=actor)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no audit records", markup=False, highlight=False)
        return
    out.print(_table(f"{len(rows)} audit record(s)", audit_table_rows(rows)))


# --- processes --------------------------------------------------------------------------------


@app.command("worker")
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
    run_worker(_settings(), stop, channels=parse_channels(channels), threads=threads)


@app.command("demo")
@cli_errors
def demo(
    subscribers: Annotated[int, typer.Option(min=1, help="How many subscribers to generate.")] = 300,
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


@peers_app.command("smsc")
@cli_errors
def peers_smsc(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (default: smpp.port).")] = None,
    log: Annotated[Path, typer.Option(help="Where each submit_sm received is logged, one JSON line each.")]
        = Path("var/peers/smsc-submits.jsonl"),
) -> None:
    """Run the loopback SMSC (SMPP 3.4) in the foreground until Ctrl-C / SIGTERM. Test only."""
    from notifier.peers.smsc import serve_foreground

    serve_foreground(port=port or _settings().smpp.port, log_path=log, announce=_announce)


@peers_app.command("smtp")
@cli_errors
def peers_smtp(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (default: smtp.port).")] = None,
    store: Annotated[Path, typer.Option(help="Where each message's headers are logged, one JSON line each.")]
        = Path("var/peers/mail-received.jsonl"),
) -> None:
    """Run the loopback mail relay (SMTP) in the foreground until Ctrl-C / SIGTERM. Test only."""
    from notifier.peers.smtp_sink import serve_foreground

    serve_foreground(port=port or _settings().smtp.port, store_path=store, announce=_announce)


def _announce(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)
    sys.stderr.flush()


def _table(title: str, rows: list[dict[str, Any]], *, zone: str | None = None) -> Table:
    """A table for people. Rule: every column named `*_at` (`seen_at`, `created_at`…), `at`,
    `first_seen` or `last_seen` holds a time and is shown in local time, `18/11/2026 08:24` in
    the `timezone` setting (Asia/Ho_Chi_Minh), whether the row has a datetime or an ISO string
    (`notifier.timefmt.is_time_column`); so a new listing only has to name its time columns that
    way. Such columns never wrap. `--json` output keeps ISO 8601 UTC with the offset instead."""
    from notifier.timefmt import is_time_column

    zone = zone or _settings().timezone
    table = Table(title=title, title_justify="left")
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    for column in columns:
        table.add_column(column, no_wrap=is_time_column(column), overflow="fold")  # a time cut in two reads as two values
    for row in rows:  # Text, not markup: a name or a reason with "[…]" is shown as written
        table.add_row(*(Text(_cell(c, row.get(c), zone)) for c in columns))
    return table


def _fields_table(title: str, fields: dict[str, Any]) -> Table:
    """One record as field/value rows; the same time rule applies to each field's name."""
    zone = _settings().timezone
    return _table(title, [{"field": k, "value": _cell(k, v, zone)} for k, v in fields.items()], zone=zone)


def _cell(column: str, value: Any, zone: str) -> str:
    from datetime import datetime

    from notifier.timefmt import is_time_column, local_display

    if value is None:
        return ""
    if is_time_column(column) and isinstance(value, (str, datetime)):
        try:
            return local_display(value, zone)
        except ValueError:  # not a time after all: show it as it is rather than hide it
            return str(value)
    return str(value)



# --- templates: the content library -------------------------------------------------------------

templates_app = typer.Typer(help="The content library: check every template, preview one.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")


@templates_app.command("check")
@cli_errors
def templates_check(
    sms_parts_ucs2: Annotated[int, typer.Option(min=1, help="SMS budget with diacritics, in UCS-2 parts.")] = 3,
    sms_parts_gsm7: Annotated[int, typer.Option(min=1, help="SMS budget without diacritics, in GSM-7 parts.")] = 2,
    templates_dir: Annotated[Path | None, typer.Option(help="Templates to check (default: the configured ones).")]
        = None,
    as_json: JsonOption = False,
) -> None:
    """Render every template × language × channel with edge data; exit 2 on any broken rule."""
    from notifier.template_check import Budget, check_templates

    settings = _settings()
    report = check_templates(templates_dir or settings.templates_dir, operator=settings.operator.model_dump(),
                             source_names=settings.source_names, timezone_name=settings.timezone,
                             budget=Budget(ucs2_parts=sms_parts_ucs2, gsm7_parts=sms_parts_gsm7))
    if as_json:
        _print_json({"problems": [str(problem) for problem in report.problems], "templates": report.rows,
                     "renders": report.renders})
    elif report.problems:
        for problem in report.problems:
            out.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(_table(f"{len(report.rows)} template × language, {report.renders} renders: all rules hold",
                         report.rows))
    if report.problems:
        _fail(f"{len(report.problems)} problem(s) in the templates")


@templates_app.command("preview")
@cli_errors
def templates_preview(
    name: Annotated[str, typer.Argument(help="Template name, e.g. infected_device.")],
    channel: Annotated[str, typer.Option(help="sms, sms-plain (no diacritics), email, voice or billing.")] = "sms",
    language: Annotated[str, typer.Option(help="vi or en.")] = "vi",
    account: Annotated[str | None, typer.Option(parser=fits("account.account_ref"),
                                                help="Render with this account's real data (audited).")] = None,
    feed: Annotated[int | None, id_option("With --account: the feed whose events to use (default: the latest).")]
        = None,
    actor: Annotated[str | None, typer.Option(parser=fits("audit_log.actor"),
                                              help="Who is looking (recorded in the audit log).")] = None,
    html: Annotated[bool, typer.Option("--html", help="For e-mail, print the HTML part too.")] = False,
) -> None:
    """Print one template as a subscriber gets it; an SMS with its encoding and part count."""
    from notifier.rendering import Renderer
    from notifier.template_catalog import load_catalog
    from notifier.template_check import render_preview, sample_for_kinds

    settings = _settings()
    renderer = Renderer(settings.templates_dir, timezone=settings.timezone,
                        default_language=settings.default_language)
    renderer.check_template(name)
    if feed is not None and account is None:
        _fail("--feed needs --account (sample data has no feed)")
    if account is None:
        context = sample_for_kinds(load_catalog(settings.templates_dir).kinds_of(name),
                                   settings.operator.model_dump(), settings.source_names)
    else:
        context = _preview_account_context(settings, account, feed, name, actor)
    preview = render_preview(renderer, name, channel, language=language, context=context)
    if preview.sms is not None:
        out.print(f"{preview.sms.encoding}, {preview.sms.parts} part(s), {preview.sms.chars} characters",
                  markup=False, highlight=False)
    if preview.subject is not None:
        out.print(f"Subject: {preview.subject}\n", markup=False, highlight=False)
    out.print(preview.body, markup=False, highlight=False, soft_wrap=True)
    if html and preview.html is not None:
        out.print(f"\n{preview.html}", markup=False, highlight=False, soft_wrap=True)


def _preview_account_context(settings: Settings, account: str, feed: int | None, template: str,
                             actor: str | None) -> dict[str, Any]:
    """The account's real context (audited, committed even when no account is found)."""
    from notifier.audit import default_actor
    from notifier.db import session_scope
    from notifier.template_check import SAMPLE_REFERENCE, account_context

    with session_scope(settings.database_url) as session:
        found = account_context(session, settings, account_ref=account, feed_id=feed, template=template,
                                actor=actor or default_actor())
    if found is None:
        _fail(f"account {account} not found")
    feed_text = f"feed {found.feed_id}" if found.feed_id is not None else "no feed"
    err.print(f"account {found.account_ref}, {feed_text}, {found.events} event(s); reference shown as "
              f"{SAMPLE_REFERENCE}; this lookup is audited", markup=False, highlight=False)
    return found.context



@app.command("web")
@cli_errors
def web(
    host: Annotated[str, typer.Option(help="Address to listen on (a proxy in front gives Twilio https).")]
        = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve Twilio's status callbacks and the TwiML of warning calls until Ctrl-C / SIGTERM."""
    from notifier.web import serve

    serve(_settings(), host=host, port=port)

# --- billing-statement inserts ------------------------------------------------------------------

billing_app = typer.Typer(help="Billing-statement inserts: batches for the bill-print system, and its answers.",
                          no_args_is_help=True)
app.add_typer(billing_app, name="billing")


@billing_app.command("export")
@cli_errors
def billing_export(
    cycle: Annotated[str, typer.Option("--cycle", help="The billing month, YYYY-MM (e.g. 2026-12).")],
    billing_day: Annotated[int, typer.Option("--billing-day", help="The accounts' billing day, 1-28.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for the batch files "
                                                           "(default: billing.output_dir).")] = None,
    again: Annotated[bool, typer.Option("--again", help="Write the files of the cycle's exported batches "
                                                        "again; nothing is exported or changes state.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the cycle's batch of waiting inserts (CSV, JSON, PDF proof); they become `sent`."""
    from notifier.billing import BillingCycle, export_cycle, rewrite_cycle

    settings = _settings()
    chosen = BillingCycle.parse(cycle, billing_day)
    summary = (rewrite_cycle if again else export_cycle)(settings, chosen, out_dir=out)
    if as_json:
        _print_json(summary.as_json())
    else:
        err.print(summary.line(), markup=False, highlight=False)


@billing_app.command("ack")
@cli_errors
def billing_ack(
    file: Annotated[Path, typer.Argument(help="CSV batch_id,account_id,status,at[,reason]; status printed, "
                                              "sent or failed.")],
    as_json: JsonOption = False,
) -> None:
    """Apply the bill-print system's answers: printed/sent → delivered, failed → failed."""
    from notifier.billing import ack_json, apply_acks, summary_line

    result = apply_acks(_settings(), file)
    if as_json:
        _print_json(ack_json(result))
        return
    err.print(summary_line(result), markup=False, highlight=False)
    for error in result.errors[:50]:
        err.print(f"  line {error['line']}: {error['reason']}", markup=False, highlight=False)
    if result.rejected > 50:
        err.print(f"  … {result.rejected - 50} more (use --json)")


# --- bounces: DSNs and non-delivery messages for e-mails we sent -----------------------------------

bounces_app = typer.Typer(help="Returned e-mails (DSNs): mark the warnings they name undelivered.",
                          no_args_is_help=True)
app.add_typer(bounces_app, name="bounces")


@bounces_app.command("import")
@cli_errors
def bounces_import(
    path: Annotated[Path, typer.Argument(help="A maildir (its new/ and cur/), a folder of .eml files, or one "
                                              "message file.")],
    as_json: JsonOption = False,
) -> None:
    """Read returned messages and apply them: a failure makes the e-mail `undelivered`, a delay is an event.

    Safe to run again on the same mailbox: reports already imported are counted, not stored twice.
    """
    from notifier.bounce_intake import import_mailbox

    settings = _settings()
    summary = import_mailbox(settings.database_url, path, sender=settings.smtp.sender)
    if as_json:
        _print_json(summary.as_json())
        return
    err.print(summary.line(), markup=False, highlight=False)
    for problem in summary.problems[:50]:
        err.print(f"  {problem['message']}: {problem['reason']}", markup=False, highlight=False)
    if len(summary.problems) > 50:
        err.print(f"  … {len(summary.problems) - 50} more (use --json)")


if __name__ == "__main__":
    app()
