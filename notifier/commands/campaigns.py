"""`notifier campaign …`: plan a campaign on a feed, run it, follow it, and decide what is left."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.text import Text

from notifier.commands.common import (IdArgument, JsonOption, cli_errors, err, fits, id_option, json_value, out,
                                      print_json, table)
from notifier.settings import get_settings

campaign_app = typer.Typer(help="Plan, run and follow warning campaigns.", no_args_is_help=True)


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
    untold: Annotated[bool, typer.Option("--untold", help="Only the feed's matched events no warning tells yet "
                                         "(matched later by `feed match`, or a story an earlier campaign left "
                                         "out); may follow earlier campaigns on the same channels.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Plan a campaign: one notification per matched account and channel (an advisory feed: per
    account of its segment). An account already warned of the same threats within the cooldown
    gets no new one: its new events are attached to the earlier warning. With `--template auto`
    (the default) each account is told the story of its own events: an infected device before a
    leak when it has both (the leak is then left out and counted as untold)."""
    from notifier.campaigns import check_campaign_templates, create_campaign, parse_channels
    from notifier.db import session_scope

    settings = get_settings()
    catalog = check_campaign_templates(settings.templates_dir, template)
    with session_scope(settings.database_url) as session:
        plan = create_campaign(session, feed_id=feed, template=template, channels=parse_channels(channels),
                               name=name, again=again, untold=untold, catalog=catalog)
    if as_json:
        print_json({"id": plan.campaign_id, "accounts": plan.accounts, "planned": plan.planned,
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
                  f"warning does not tell (left unlinked: `campaign create --feed {feed} --untold` warns of them "
                  "later)",
                  markup=False, highlight=False)


@campaign_app.command("run")
@cli_errors
def campaign_run(campaign_id: IdArgument, as_json: JsonOption = False) -> None:
    """Send a campaign and follow it until every notification is settled."""
    from notifier.dispatch.loops import run_campaign

    settings = get_settings()
    with _progress(enabled=not as_json) as on_progress:
        status = run_campaign(settings, campaign_id, on_progress=on_progress)
    if as_json:
        print_json(status)
    else:
        _print_status(status)


@campaign_app.command("pause")
@cli_errors
def campaign_pause(campaign_id: IdArgument) -> None:
    """Hold a campaign; `campaign run ID` resumes it."""
    from notifier.campaigns import pause_campaign
    from notifier.db import session_scope

    with session_scope(get_settings().database_url) as session:
        pause_campaign(session, campaign_id)
    err.print(f"campaign {campaign_id} paused; `notifier campaign run {campaign_id}` resumes it")


@campaign_app.command("cancel")
@cli_errors
def campaign_cancel(campaign_id: IdArgument) -> None:
    """Stop a campaign for good; what was not yet sent is cancelled."""
    from notifier.campaigns import cancel_campaign
    from notifier.db import session_scope

    with session_scope(get_settings().database_url) as session:
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
    with session_scope(get_settings().database_url) as session:
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
    with session_scope(get_settings().database_url) as session:
        get_campaign(session, campaign_id)
        rows = unknown_notifications(session, campaign_id)
        decided = (decide_unknown(session, campaign_id, resend=resend, actor=actor or default_actor())
                   if resend or mark_failed else [])
    shown = rows  # destinations come masked from unknown_notifications
    if as_json:
        print_json({"campaign_id": campaign_id, "unknown": shown, "decided": decided,
                     "decision": "resend" if resend else "mark-failed" if mark_failed else None})
        return
    if shown:
        out.print(table(f"{len(shown)} unknown notification(s)", shown))
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
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second (less often for a campaign "
                                        "that takes long to count) until it is settled (Ctrl-C stops): counts, "
                                        "the rate over the last 10 s and an ETA; with --json, one JSON line per "
                                        "refresh.")] = False,
) -> None:
    """Counts per state and per channel; --watch follows a running campaign."""
    from notifier.campaigns import campaign_status
    from notifier.db import session_scope

    if watch:
        _watch_status(campaign_id, as_json=as_json)
        return
    with session_scope(get_settings().database_url) as session:
        status = campaign_status(session, campaign_id)
    if as_json:
        print_json(status)
    else:
        _print_status(status)


def _watch_status(campaign_id: int, *, as_json: bool, interval_seconds: float = 1.0) -> None:
    """`campaign status --watch`: one refresh a second (notifier/dispatch/progress.py) until settled,
    paced like `campaign run` when counting the campaign takes long (`poll_pause`)."""
    import time

    from rich.console import Group
    from rich.live import Live

    from notifier.db import session_scope
    from notifier.dispatch.progress import campaign_progress, describe_eta, describe_rate, poll_pause

    counted_in = 0.0

    def refresh() -> Any:
        nonlocal counted_in
        began = time.monotonic()
        with session_scope(get_settings().database_url) as session:
            progress = campaign_progress(session, campaign_id)
        counted_in = time.monotonic() - began
        return progress

    def pause() -> None:
        time.sleep(poll_pause(interval_seconds, counted_in))

    def view(progress: Any) -> Group:
        status = progress.status
        rows = [{"channel": channel, **counts} for channel, counts in status["by_channel"].items()]
        return Group(Text(f"campaign {status['id']} [{status['state']}] {status['name']}"),
                     table("by channel", rows), Text(describe_rate(progress)), Text(describe_eta(progress)))

    try:
        if as_json:
            while not (progress := refresh()).settled:
                sys.stdout.write(json.dumps(progress.as_json(), ensure_ascii=False, default=json_value) + "\n")
                sys.stdout.flush()
                pause()
            sys.stdout.write(json.dumps(progress.as_json(), ensure_ascii=False, default=json_value) + "\n")
            return
        with Live(console=out, auto_refresh=False) as live:
            while not (progress := refresh()).settled:
                live.update(view(progress), refresh=True)
                pause()
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

    with session_scope(get_settings().database_url) as session:
        campaigns = list_campaigns(session, state=state)
    if as_json:
        print_json(campaigns)
        return
    if not campaigns:
        hint = (f"no campaign is {state.strip().lower()} (`notifier campaign list` shows them all)" if state else
                "no campaigns yet (plan one with `notifier campaign create --feed ID --template T`; "
                "`notifier feed list` shows the feeds)")
        err.print(hint, markup=False, highlight=False)
        return
    out.print(table(f"{len(campaigns)} campaign(s), newest first", _campaign_rows(campaigns)))


CAMPAIGN_LIST_COUNTS = ("planned", "queued", "sent", "delivered", "failed", "suppressed")


def _campaign_rows(campaigns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows: the usual counts always, any other state only when some campaign has it."""
    from notifier.dispatch.states import ALL_STATES

    shown = [s for s in ALL_STATES if s in CAMPAIGN_LIST_COUNTS or any(c["counts"][s] for c in campaigns)]
    return [{"id": c["id"], "feed": c["feed_id"], "template": c["template"], "channels": ",".join(c["channels"]),
             "state": c["state"], "created_at": c["created_at"], "total": c["total"],
             **{s: c["counts"][s] for s in shown}} for c in campaigns]


def _print_status(status: dict[str, Any]) -> None:
    from notifier.timefmt import local_display

    zone = get_settings().timezone
    out.print(f"campaign {status['id']} [{status['state']}] {status['name']}", markup=False, highlight=False)
    times = [f"{label} {local_display(status.get(f'{label}_at'), zone)}"
             for label in ("created", "started", "finished") if status.get(f"{label}_at")]
    if times:
        out.print(", ".join(times), markup=False, highlight=False)
    rows = [{"channel": channel, **counts} for channel, counts in status["by_channel"].items()]
    out.print(table("by channel", rows))
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
        from notifier.dispatch.states import PENDING_STATES

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
