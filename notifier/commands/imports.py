"""`notifier subscribers|assignments|feed …`: bring the operator's data and the security feeds in.

Each import reports "N accepted, M rejected" and every bad line as `line N: reason`; the rest goes in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from notifier.commands.common import (IdArgument, JsonOption, TzOption, cli_errors, err, fields_table, fits,
                                      json_value, optional_id_argument, out, print_import, print_json, table)
from notifier.settings import get_settings

subscribers_app = typer.Typer(help="The operator's customer export.", no_args_is_help=True)
assignments_app = typer.Typer(help="Which account used which IP address when.", no_args_is_help=True)
feed_app = typer.Typer(help="Security feeds: infected hosts, leaked data.", no_args_is_help=True)

# --- subscribers and assignments ----------------------------------------------------------------


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

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        mapping = load_column_map(column_map) if column_map else settings.subscribers.columns or None
        result = import_subscribers(session, file, tz=tz or settings.timezone, column_map=mapping)
    print_import(result, as_json, "subscribers")
    if not as_json and result.accepted:
        _hint_feeds_to_match(settings.database_url)


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

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        result = import_assignments(session, file, fmt=fmt, tz=tz or settings.timezone, settings=settings)
    print_import(result, as_json, "assignments")
    if not as_json and result.accepted:
        _hint_feeds_to_match(settings.database_url)


def _hint_feeds_to_match(database_url: str) -> None:
    """After new assignments or subscribers: the recent feeds they may complete, and the command
    (`feed match` decides their unmatched lines again; nothing does it unasked)."""
    from notifier.db import session_scope
    from notifier.identity.rematch import RECENT_FEED_DAYS, feeds_to_match_again

    with session_scope(database_url) as session:
        waiting = feeds_to_match_again(session)
    if waiting:
        err.print(f"{len(waiting)} feed(s) of the last {RECENT_FEED_DAYS} days still have unmatched or ambiguous "
                  f"events; match them again with `notifier feed match --recent-days {RECENT_FEED_DAYS}`",
                  markup=False, highlight=False)


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

    settings = get_settings()
    cutoff = purge_cutoff(now=utcnow(), retention_days=settings.identity.retention_days, tz=settings.timezone,
                          before=before, older_than_days=older_than_days)
    with session_scope(settings.database_url) as session:
        deleted = purge_assignments(session, before=cutoff)
    if as_json:
        print_json({"before": cutoff.isoformat(), "deleted": deleted})
        return
    err.print(f"deleted {deleted['ip_assignment']} IP assignment(s) and {deleted['nat_block']} NAT block(s) "
              f"that ended before {cutoff.isoformat()}")


# --- feeds ------------------------------------------------------------------------------------------


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

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        result = import_feed(session, file, fmt=fmt, tz=tz, source=source, report_type=report_type, again=again)
    if as_json:
        print_json(result.as_json())
        return
    if result.already_imported:
        err.print(f"already imported: this request is feed {result.id} (nothing imported again)")
        return
    print_import(result, False, f"feed {result.id}")
    err.print("matched {matched}, unmatched {unmatched}, ambiguous {ambiguous}".format(**result.counts))


@feed_app.command("match")
@cli_errors
def feed_match(
    feed_id: Annotated[int | None, optional_id_argument("The feed (or --recent-days).")] = None,
    recent_days: Annotated[int | None, typer.Option(
        "--recent-days", min=1, help="Every feed imported in the last N days that still has unmatched or "
                                     "ambiguous events (after a nightly log import).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Match a stored feed's unmatched and ambiguous events again, against the assignments and
    subscribers stored now (logs or customers that arrived after the feed). Matched events keep
    their account; warn the newly matched with `campaign create --feed ID --untold`."""
    from notifier.db import session_scope
    from notifier.identity.rematch import match_feed_again, match_recent_feeds_again

    if (feed_id is None) == (recent_days is None):
        raise typer.BadParameter("give a feed id or --recent-days N", param_hint="'FEED_ID'")
    database_url = get_settings().database_url
    if feed_id is not None:
        with session_scope(database_url) as session:
            results = [match_feed_again(session, feed_id)]
    else:
        results = match_recent_feeds_again(database_url, days=recent_days or 0)
    if as_json:
        print_json(results[0].as_json() if feed_id is not None else [result.as_json() for result in results])
        return
    for result in results:
        totals = result.totals
        err.print(f"feed {result.feed_id}: {result.decided_again} unmatched or ambiguous event(s) matched again, "
                  f"{result.newly_matched} of them now matched; the feed now has matched {totals.matched}, "
                  f"unmatched {totals.unmatched}, ambiguous {totals.ambiguous}", markup=False, highlight=False)
        if result.newly_matched:
            err.print(f"warn the newly matched accounts with `notifier campaign create --feed {result.feed_id} "
                      "--untold`", markup=False, highlight=False)
    if not results:
        err.print(f"no feed imported in the last {recent_days} day(s) has unmatched or ambiguous events",
                  markup=False, highlight=False)


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
    with session_scope(get_settings().database_url) as session:
        summary = feed_summary(session, feed_id)
        if items and (as_json or as_csv):
            write = _write_items_csv if as_csv else _write_json_list
            write(iter_feed_items(session, feed_id, status=status))
            return
        listed = list(iter_feed_items(session, feed_id, status=status)) if items else []
    if as_json:
        print_json(summary)
        return
    out.print(fields_table("feed", summary))
    if items:
        out.print(table("items", [_item_row(r) for r in listed]))


def _write_json_list(rows: Iterator[dict[str, Any]]) -> None:
    """A JSON array written one element at a time, so its size is not bounded by memory."""
    sys.stdout.write("[")
    for index, row in enumerate(rows):
        sys.stdout.write(("," if index else "") + "\n  " + json.dumps(row, ensure_ascii=False, default=json_value))
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
        row["seen_at"] = local_display(item["seen_at"], get_settings().timezone, precision=DATE_PRECISION)
    return row


@feed_app.command("list")
@cli_errors
def feed_list(as_json: JsonOption = False) -> None:
    """Every feed, newest first: counts per outcome and the campaigns planned on it."""
    from notifier.db import session_scope
    from notifier.reports import list_feeds

    with session_scope(get_settings().database_url) as session:
        feeds = list_feeds(session)
    if as_json:
        print_json(feeds)
        return
    if not feeds:
        err.print("no feeds yet (import one with `notifier feed import FILE --format F`)", markup=False,
                  highlight=False)
        return
    rows = [{**feed, "campaigns": ", ".join(str(c) for c in feed["campaigns"])} for feed in feeds]
    out.print(table(f"{len(feeds)} feed(s), newest first", rows))
