"""`notifier billing …` and `notifier bounces …`: the answers that come back from outside.

The bill-print system takes batches of inserts and answers per account; the mail relay returns
the e-mails it could not deliver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from notifier.commands.common import JsonOption, cli_errors, err, print_json, print_lines
from notifier.settings import get_settings

# --- billing-statement inserts ------------------------------------------------------------------

billing_app = typer.Typer(help="Billing-statement inserts: batches for the bill-print system, and its answers.",
                          no_args_is_help=True)


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

    settings = get_settings()
    chosen = BillingCycle.parse(cycle, billing_day)
    summary = (rewrite_cycle if again else export_cycle)(settings, chosen, out_dir=out)
    if as_json:
        print_json(summary.as_json())
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

    result = apply_acks(get_settings(), file)
    if as_json:
        print_json(ack_json(result))
        return
    err.print(summary_line(result), markup=False, highlight=False)
    print_lines([f"line {e['line']}: {e['reason']}" for e in result.errors], result.rejected, "use --json")


# --- bounces: DSNs and non-delivery messages for e-mails we sent -----------------------------------

bounces_app = typer.Typer(help="Returned e-mails (DSNs): mark the warnings they name undelivered.",
                          no_args_is_help=True)


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

    settings = get_settings()
    summary = import_mailbox(settings.database_url, path, sender=settings.smtp.sender)
    if as_json:
        print_json(summary.as_json())
        return
    err.print(summary.line(), markup=False, highlight=False)
    print_lines([f"{p['message']}: {p['reason']}" for p in summary.problems], len(summary.problems), "use --json")
