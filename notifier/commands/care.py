"""`notifier history` and `notifier audit`: what care staff look up, and who looked up what.

Both are top-level commands (no group): `cli.py` registers them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from notifier.commands.common import JsonOption, cli_errors, fits, out, print_json, table
from notifier.settings import get_settings


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

    with session_scope(get_settings().database_url) as session:
        found = find_history(session, msisdn=msisdn, email=email, account=account, reference=reference,
                             actor=actor or default_actor())
    if as_json:
        print_json(found.rows)
        return
    if not found.rows:
        out.print(f"no notifications for {found.target}", markup=False, highlight=False)
        return
    out.print(f"{len(found.rows)} notification(s)", markup=False, highlight=False)
    for block in history_cards(found.rows, get_settings().timezone):
        out.print(block, markup=False, highlight=False)


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

    settings = get_settings()
    start = parse_since(since, zone=settings.timezone) if since else None
    with session_scope(settings.database_url) as session:
        rows = list_audit(session, viewer=viewer or default_actor(), since=start, actor=actor)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no audit records", markup=False, highlight=False)
        return
    out.print(table(f"{len(rows)} audit record(s)", audit_table_rows(rows)))
