"""`notifier templates …`: the content library, checked as a whole and previewed one at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from notifier.commands.common import JsonOption, cli_errors, err, fail, fits, id_option, out, print_json, table
from notifier.settings import Settings, get_settings

templates_app = typer.Typer(help="The content library: check every template, preview one.", no_args_is_help=True)


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

    settings = get_settings()
    report = check_templates(templates_dir or settings.templates_dir, operator=settings.operator.model_dump(),
                             source_names=settings.source_names, timezone_name=settings.timezone,
                             budget=Budget(ucs2_parts=sms_parts_ucs2, gsm7_parts=sms_parts_gsm7))
    if as_json:
        print_json({"problems": [str(problem) for problem in report.problems], "templates": report.rows,
                     "renders": report.renders})
    elif report.problems:
        for problem in report.problems:
            out.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(table(f"{len(report.rows)} template × language, {report.renders} renders: all rules hold",
                         report.rows))
    if report.problems:
        fail(f"{len(report.problems)} problem(s) in the templates")


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

    settings = get_settings()
    renderer = Renderer(settings.templates_dir, timezone=settings.timezone,
                        default_language=settings.default_language)
    renderer.check_template(name)
    if feed is not None and account is None:
        fail("--feed needs --account (sample data has no feed)")
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
        fail(f"account {account} not found")
    feed_text = f"feed {found.feed_id}" if found.feed_id is not None else "no feed"
    err.print(f"account {found.account_ref}, {feed_text}, {found.events} event(s); reference shown as "
              f"{SAMPLE_REFERENCE}; this lookup is audited", markup=False, highlight=False)
    return found.context
