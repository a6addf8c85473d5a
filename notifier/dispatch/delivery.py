"""Send notifications in batches: load and render in memory, claim, send through the channel's
window at the route's pace (message by message), record the answers — each a fixed number of
statements per batch.

This is the whole job of the `send_notifications` actor, as a plain function. The row says
exactly what is known after a crash: `queued` (nothing happened), `sending` (the provider may
have it: the recovery makes it `unknown`), `sent` (the provider accepted it). A claim is one
`UPDATE … RETURNING` on the rows still `queued` in campaigns not held, so two workers given the
same batch send each row once. Anything unexpected for a row (a template that overflows a date,
a bug) ends that row `failed` with the error class as its reason; the batch's other rows carry on.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import zip_longest
from typing import Any

import sqlalchemy as sa

from channels.base import OutgoingMessage, SendOutcome, send_all
from notifier.db import session_scope
from notifier.errors import InputError, NotifierError, RouteUnreachableError
from notifier.models import Account, Campaign, Notification, utcnow
from notifier.dispatch.outbox import RowMove, among, transition_rows
from notifier.dispatch.states import FAILED, QUEUED, SENDING, UNKNOWN
from notifier.dispatch.ratelimit import Paced, is_throttling
from notifier.dispatch.redrive import keep_in_hand, let_go
from notifier.dispatch.recording import (
    BatchReport, Send, log_sent, log_unexpected, record_outcomes, unexpected_reason,
)
from notifier.rendering import RenderedMessage, parse_moment
from notifier.dispatch.runtime import Runtime, route_rate
from notifier.sms import count_parts, sms_encoding
from notifier.threat_categories import notification_template

log = logging.getLogger(__name__)

HELD_CAMPAIGN_STATES = frozenset({"paused", "cancelled"})
__all__ = ["BatchReport", "HELD_CAMPAIGN_STATES", "RetryLater", "Send", "deliver", "deliver_batch"]


class RetryLater(NotifierError):
    """Raised by `deliver` when the row went back to `queued` and the broker should retry it."""

    def __init__(self, message: str, *, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms


def deliver(runtime: Runtime, notification_id: int) -> str:
    """Send one notification at most once (a batch of one); returns what happened."""
    report = deliver_batch(runtime, [notification_id])
    for delay_ms, ids in report.retry.items():
        if notification_id in ids:
            raise RetryLater(f"notification {notification_id} queued again", delay_ms=delay_ms)
    return report.outcomes.get(notification_id, "skipped")


def deliver_batch(runtime: Runtime, notification_ids: Iterable[int]) -> BatchReport:
    """Send every still-`queued` row of the batch once; the report says what became of each id
    and which ids go back to the broker, after which delay."""
    report = BatchReport()
    ids = sorted(set(notification_ids))
    if not ids:
        return report
    sends = _prepare(runtime, ids, report)
    by_channel: dict[str, list[Send]] = {}
    for send in sends:
        by_channel.setdefault(send.channel, []).append(send)
    # The channels' chunks take turns: each route has its own pace, so an e-mail chunk need not
    # wait behind every SMS chunk of the batch (that made e-mails a tail after the SMS).
    per_channel = [[(channel, chunk) for chunk in _paced_chunks(runtime, channel, group)]
                   for channel, group in by_channel.items()]
    chunks = [turn for turns in zip_longest(*per_channel) for turn in turns if turn is not None]
    for index, (channel, chunk) in enumerate(chunks):
        if index:  # the first chunk was just read: no need to look again
            chunk = _still_in_hand(runtime, chunk, [send for _, later in chunks[index:] for send in later], report)
        if chunk:
            _send_chunk(runtime, channel, chunk, report)
    return report


def _still_in_hand(runtime: Runtime, chunk: list[Send], unsent: list[Send], report: BatchReport) -> list[Send]:
    """The chunk's rows still `queued` in a running campaign (a duplicate message may have sent
    them, an operator paused the campaign); every row of the batch not sent yet is marked as held
    by a live worker, so the re-drive does not hand it to the broker again (`keep_in_hand`)."""
    with session_scope(runtime.settings.database_url) as session:
        kept = set(keep_in_hand(session, [send.notification_id for send in unsent]))
    report.note([send.notification_id for send in chunk if send.notification_id not in kept], "skipped")
    return [send for send in chunk if send.notification_id in kept]


# -- load and render ---------------------------------------------------------------------------

_N, _C, _A = Notification.__table__.c, Campaign.__table__.c, Account.__table__.c


def _prepare(runtime: Runtime, ids: list[int], report: BatchReport) -> list[Send]:
    """One SELECT for the batch, rendering in memory; rows that cannot be rendered fail at once."""
    with session_scope(runtime.settings.database_url) as session:
        rows = session.execute(
            sa.select(_N.id, _N.campaign_id, _N.channel, _N.destination, _N.state, _N.context, _N.attempts,
                      _C.template, _C.state.label("campaign_state"), _A.language)
            .join(Campaign.__table__, _C.id == _N.campaign_id).join(Account.__table__, _A.id == _N.account_id)
            .where(among(session, _N.id, ids))
        ).all()
    report.note(ids, "missing")
    sends: list[Send] = []
    broken: list[tuple[int, BaseException]] = []
    for row in rows:
        if row.state != QUEUED:
            report.note([row.id], "skipped")
        elif row.campaign_state in HELD_CAMPAIGN_STATES:
            report.note([row.id], "held")
        else:
            try:
                sends.append(_render_send(runtime, row))
            except Exception as exc:  # noqa: BLE001 - this row fails alone, the batch carries on
                broken.append((row.id, exc))
    if broken:
        _fail_queued(runtime, broken, report, stage="rendering")
    return sends


def _render_send(runtime: Runtime, row: Any) -> Send:
    context = template_context(row, runtime)
    rendered = runtime.renderer.render(
        notification_template(context, row.template), row.channel,
        language=row.language or runtime.settings.default_language,
        context=context, strip_sms_diacritics=not runtime.settings.dispatch.sms_diacritics,
    )
    message = OutgoingMessage(notification_id=row.id, destination=row.destination or "", body=rendered.body,
                              subject=rendered.subject, html=rendered.html, reference=f"notification-{row.id}")
    parts = count_parts(rendered.body) if row.channel == "sms" else 1
    return Send(row.id, row.campaign_id, row.channel, row.attempts + 1, message, parts)


def _fail_queued(runtime: Runtime, broken: Sequence[tuple[int, BaseException]], report: BatchReport,
                 *, stage: str) -> None:
    """queued → failed for rows that cannot be sent: a template error says so, anything else
    names its error class (and is logged once)."""
    moves = []
    unexpected = [(nid, exc) for nid, exc in broken if not isinstance(exc, NotifierError)]
    for nid, exc in broken:
        if isinstance(exc, NotifierError):
            moves.append(RowMove(nid, {"reason": f"template error: {exc}"[:300]}, detail=f"cannot render: {exc}"))
        else:
            reason = unexpected_reason(exc)
            moves.append(RowMove(nid, {"reason": reason}, detail=f"{stage}: {reason}"))
    for exc_type in {type(exc) for _, exc in unexpected}:
        first = next(exc for _, exc in unexpected if type(exc) is exc_type)
        log_unexpected([nid for nid, exc in unexpected if type(exc) is exc_type], first, stage)
    with session_scope(runtime.settings.database_url) as session:
        moved = transition_rows(session, moves, expected=QUEUED, to_state=FAILED, source="worker")
    report.note(moved, "failed")


# -- claim, send paced, record -----------------------------------------------------------------

# How a route is paced. An SMSC counts our rate in a sliding second on its own clock, so parts
# paid for together and written together show it a burst: a chunk of k parts granted at once can
# put k more than the agreed rate into one second at the SMSC. So a route is paced message by
# message — each message's parts acquired just before its write (`Paced`) — whenever a message's
# turn on its clock is long enough for this host to keep (`PACE_RESOLUTION_SECONDS`: rates up to
# 500 parts/s, every agreed rate we know of). Faster routes ("limits off") cannot show any
# provider a different rate that way and would pay a Redis round trip per message: they pay for
# a chunk at once, before its rows are claimed.
#
# Pacing after the claim means a claimed row waits in `sending` for its turn, and a message
# written but not yet recorded when the process dies becomes `unknown`, settled by its receipt
# (only routes whose provider reports on every message are paced this way, `_paced_per_message`). What is claimed
# at once is CLAIM_SECONDS of the rate per sending thread (at least one message), recorded as soon
# as it is written: long enough that a thread is not idle between claims (one message per claim
# reached 73% of 200 parts/s with two workers), short enough that a pause or a route outage
# stops submits within a fraction of a second. The batch's other rows wait `queued` (not claimed)
# in chunks of about HAND_SECONDS of the thread's share, between which the batch is looked at
# again (`_still_in_hand`).
PACE_RESOLUTION_SECONDS = 0.002
CLAIM_SECONDS = 0.25
HAND_SECONDS = 1.0




def _paced_per_message(runtime: Runtime, channel: str) -> bool:
    """True when the route's messages are paced one by one after the claim (see above): only when
    its provider reports on every message (`Channel.reports_each_message`: SMPP receipts, Twilio
    callbacks), so a message written but not recorded when a process dies is settled by its
    report, never sent again blindly. An e-mail has no such report: an `unknown` e-mail could only
    be resent, so e-mail keeps the chunk-wide pacing before the claim (rows wait `queued`, a chunk
    is written at once) — pacing each e-mail after its claim made kill -9 tests see duplicates."""
    return (_per_second(runtime, channel) * PACE_RESOLUTION_SECONDS <= 1.0
            and runtime.channel(channel).reports_each_message)


def _paced_chunks(runtime: Runtime, channel: str, sends: list[Send]) -> Iterable[list[Send]]:
    """The batch in chunks, each claimed and sent by `_send_chunk`: paced message by message,
    about HAND_SECONDS of this thread's share of the route (the thread's sends are claimed a few
    at a time inside it); paced before the claim, about one second of the rate. With limits off
    (huge rates) the whole batch is one chunk."""
    return _split(sends, _chunk_budget(runtime, channel, HAND_SECONDS) if _paced_per_message(runtime, channel)
                  else max(1, int(_per_second(runtime, channel))))


def _chunk_budget(runtime: Runtime, channel: str, seconds: float) -> int:
    """Parts one sending thread of this process handles in `seconds` of the route's rate (≥ 1)."""
    threads = max(1, runtime.settings.dispatch.worker_threads)
    return max(1, int(_per_second(runtime, channel) * seconds / threads))


def _split(sends: Sequence[Send], budget: int) -> Iterable[list[Send]]:
    """Consecutive groups of at most `budget` parts (a message larger than that goes alone)."""
    chunk: list[Send] = []
    parts = 0
    for send in sends:
        if chunk and parts + send.parts > budget:
            yield chunk
            chunk, parts = [], 0
        chunk.append(send)
        parts += send.parts
    if chunk:
        yield chunk


def _send_chunk(runtime: Runtime, channel: str, sends: list[Send], report: BatchReport) -> None:
    """Route check (rows still `queued`), then claim, send and record: paced before the claim in
    one grant, or — paced message by message — a few messages claimed, paced and recorded at a
    time (`CLAIM_SECONDS`), the route checked before each claim."""
    delay_ms = max(1000, int(runtime.settings.dispatch.route_down_seconds * 1000))
    per_message = _paced_per_message(runtime, channel)
    groups = list(_split(sends, _chunk_budget(runtime, channel, CLAIM_SECONDS))) if per_message else [sends]
    for index, group in enumerate(groups):
        try:
            adapter = runtime.channel(channel)
            adapter.check()  # cheap while the route works
            limiter = runtime.limiter(channel)
            if not per_message:
                limiter.acquire(sum(send.parts for send in group))  # before the claim: rows wait `queued`
        except RouteUnreachableError as exc:
            # The rows stay `queued`, untouched; the broker keeps them until the route is back. Logged
            # at debug: `campaign run` / the worker report the outage once.
            rest = [send for later in groups[index:] for send in later]
            log.debug("[channel:%s] route unreachable (%s); %d message(s) back to the broker for %d ms",
                      channel, exc.reason, len(rest), delay_ms)
            report.retry_later([send.notification_id for send in rest], delay_ms, "waiting")
            with session_scope(runtime.settings.database_url) as session:
                let_go(session, [send.notification_id for send in rest])
            return
        except Exception as exc:  # noqa: BLE001 - a rate of 0, an unknown channel, a bug: fail, never hang
            rest = [send for later in groups[index:] for send in later]
            _fail_queued(runtime, [(send.notification_id, exc) for send in rest], report, stage="pacing")
            return
        _claim_send_record(runtime, channel, adapter, limiter if per_message else None, group, report,
                           route_down_ms=delay_ms)


def _claim_send_record(runtime: Runtime, channel: str, adapter: Any, limiter: Any, sends: list[Send],
                       report: BatchReport, *, route_down_ms: int) -> None:
    """Claim the sends, write them (each paced on its turn when `limiter` is given), record the answers."""
    claimed = claim_batch(runtime, sends)
    owned = {send.notification_id for send in claimed}
    report.note([send.notification_id for send in sends if send.notification_id not in owned], "skipped")
    if not claimed:
        return
    if limiter is not None:
        outcomes = _send_all(adapter, lambda: _paced(limiter, claimed), len(claimed))
    else:
        outcomes = _send_all(adapter, lambda: [send.message for send in claimed], len(claimed))
    if any(is_throttling(getattr(outcome, "provider_status", None)) for outcome in outcomes):
        runtime.limiter(channel).throttled()  # every worker on the route slows down (ratelimit.py)
    _record(runtime, claimed, outcomes, report, route_down_ms=route_down_ms)
    log_sent(claimed, report)


def _paced(limiter: Any, sends: list[Send]) -> Sequence[OutgoingMessage]:
    """The claimed messages as the channel iterates them: each one's parts acquired just before
    it is written (`Paced`), so two workers' messages interleave on the route's clock."""
    return Paced(limiter, [send.message for send in sends], [send.parts for send in sends])


def _per_second(runtime: Runtime, channel: str) -> float:
    """The route's agreed rate (SMS parts, e-mails or calls started per second)."""
    return route_rate(channel, runtime.settings)


def claim_batch(runtime: Runtime, sends: Sequence[Send]) -> list[Send]:
    """queued → sending for the rows still queued in campaigns not held, with the text about to
    go out, in one transaction; returns the sends this process now owns."""
    moves = [RowMove(send.notification_id, {
        "attempts": send.attempt, "text": send.message.body, "subject": send.message.subject, "parts": send.parts,
        "encoding": sms_encoding(send.message.body) if send.channel == "sms" else "utf-8",
    }, detail=f"attempt {send.attempt} by {runtime.owner}") for send in sends]
    running = _N.campaign_id.in_(sa.select(_C.id).where(_C.state.notin_(HELD_CAMPAIGN_STATES)))
    with session_scope(runtime.settings.database_url) as session:
        moved = set(transition_rows(session, moves, expected=QUEUED, to_state=SENDING, source="worker",
                                    values={"claimed_by": runtime.owner, "claimed_at": utcnow()},
                                    only_if=running, skip_locked=True))
    return [send for send in sends if send.notification_id in moved]


def _send_all(adapter: Any, batch: Callable[[], Sequence[OutgoingMessage]], count: int) -> list[SendOutcome]:
    """One outcome per claimed message (`batch()` gives them, paced); should pacing or the adapter
    itself blow up, that is every row's outcome: the rows never stay `sending`."""
    try:
        outcomes = send_all(adapter, batch())
        if len(outcomes) != count:
            raise RuntimeError(f"channel returned {len(outcomes)} outcomes for {count} messages")
        return outcomes
    except Exception as exc:  # noqa: BLE001 - recorded per row as an unexpected failure
        return [exc] * count


def _record(runtime: Runtime, claimed: list[Send], outcomes: list[SendOutcome], report: BatchReport,
            *, route_down_ms: int) -> None:
    """One transaction for the batch's answers. Should it fail, the rows become `unknown` (the
    provider may have them) rather than stay `sending` until the lease runs out."""
    settings = runtime.settings
    try:
        with session_scope(settings.database_url) as session:
            record_outcomes(session, claimed, outcomes, max_attempts=settings.dispatch.max_retries + 1,
                            route_down_ms=route_down_ms, report=report,
                            email_accepted_is_delivery=settings.smtp.accepted_means_delivered)
    except Exception as exc:
        ids = [send.notification_id for send in claimed]
        log_unexpected(ids, exc, "recording")
        with session_scope(settings.database_url) as session:
            detail = f"answer not recorded ({type(exc).__name__}): outcome unknown"
            moved = transition_rows(session, [RowMove(nid, detail=detail) for nid in ids], expected=SENDING,
                                    to_state=UNKNOWN, source="worker", values={"claimed_by": None})
        report.note(moved, "unknown")


def render_notification(
    runtime: Runtime, notification: Notification, campaign: Campaign, account: Account
) -> RenderedMessage:
    context = template_context(notification, runtime)
    return runtime.renderer.render(
        notification_template(context, campaign.template), notification.channel,
        language=account.language or runtime.settings.default_language,
        context=context,
        strip_sms_diacritics=not runtime.settings.dispatch.sms_diacritics,
    )


def template_context(notification: Notification, runtime: Runtime) -> dict[str, Any]:
    """The stored plan context with times as datetimes (a day given without a time as a date),
    plus operator details, the operator's names for leak sources, and a reference."""
    context: dict[str, Any] = json.loads(notification.context)
    for key in ("first_seen", "last_seen"):
        context[key] = parse_moment(context.get(key))
    for event in context.get("events", []):
        event["seen_at"] = parse_moment(event.get("seen_at"))
    context["operator"] = runtime.settings.operator.model_dump()
    context["source_names"] = dict(runtime.settings.source_names)
    context["reference"] = reference_code(notification.campaign_id, notification.id)
    return context


def reference_code(campaign_id: int, notification_id: int | None) -> str:
    """What the subscriber quotes to care staff: short, and it finds the notification."""
    return f"CB-{campaign_id}-{notification_id}"


# What people actually read out or type: "cb-12-3456", "CB 12 3456", " CB-12 – 3456 " (a phone's
# keyboard turns "-" into a dash). 18 digits at most: every such number fits a BIGINT.
_REFERENCE_SEPARATOR = r"[\s\-\u2010-\u2014]"
_REFERENCE_CODE = re.compile(rf"\s*CB{_REFERENCE_SEPARATOR}*([0-9]{{1,18}}){_REFERENCE_SEPARATOR}+([0-9]{{1,18}})\s*",
                             re.IGNORECASE)


def parse_reference_code(text: str) -> tuple[int, int]:
    """(campaign id, notification id) from a quoted reference code, the inverse of `reference_code`.

    Tolerates case and spaces because subscribers read it aloud or retype it; refuses anything
    else without echoing it, since a care agent may paste a phone number into the wrong field.
    """
    match = _REFERENCE_CODE.fullmatch(text or "")
    if match is None:
        raise InputError("not a reference code: expected CB-<campaign>-<notification>, e.g. CB-12-3456")
    return int(match.group(1)), int(match.group(2))
