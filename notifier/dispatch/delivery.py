"""Send one notification: claim the row, render, pace, hand to the channel, record the answer.

This is the whole job of the `send_notification` actor, as a plain function. Each step that
changes state is its own short transaction, so that a crash leaves the row in a state that says
exactly what is known: `queued` (nothing happened), `sending` (the provider may have it: the
recovery makes it `unknown`), `sent` (the provider accepted it).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlmodel import select

from channels.base import OutgoingMessage, SendResult
from notifier.db import session_scope
from notifier.errors import (
    InputError, NotifierError, OutcomeUnknownError, PermanentChannelError, RouteUnreachableError,
    TransientChannelError,
)
from notifier.identifiers import mask_identifier
from notifier.models import Account, Campaign, MessagePart, Notification, utcnow
from notifier.dispatch.outbox import DELIVERED, FAILED, QUEUED, SENDING, SENT, UNKNOWN, transition
from notifier.rendering import RenderedMessage, parse_moment
from notifier.dispatch.runtime import Runtime
from notifier.sms import count_parts, sms_encoding

log = logging.getLogger(__name__)

HELD_CAMPAIGN_STATES = frozenset({"paused", "cancelled"})


class RetryLater(NotifierError):
    """Raised when a transient channel error put the row back to `queued`: the broker retries it."""

    def __init__(self, message: str, *, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms


@dataclass(frozen=True)
class Send:
    """One rendered message on its way: what `prepare` built and `claim` committed to send."""

    notification_id: int
    campaign_id: int
    channel: str
    attempt: int
    message: OutgoingMessage
    parts: int


def deliver(runtime: Runtime, notification_id: int) -> str:
    """Send notification `notification_id` at most once; returns what happened, for logs and tests."""
    prepared = prepare(runtime, notification_id)
    if isinstance(prepared, str):
        return prepared
    try:
        runtime.channel(prepared.channel).check()  # cheap while the route works
    except RouteUnreachableError as exc:
        raise _route_down(runtime, exc) from None  # the row stays `queued`, untouched
    # Pace before claiming: a row waits for its turn in `queued`, never in `sending`, so a slow
    # route cannot make a live sender look dead to the recovery.
    runtime.limiter(prepared.channel).acquire(prepared.parts)
    claimed = claim(runtime, prepared)
    if claimed is None:
        return "skipped"
    tag = f"[campaign:{claimed.campaign_id}] [notification:{notification_id}] [channel:{claimed.channel}]"
    try:
        result = runtime.channel(claimed.channel).send(claimed.message)
    except TransientChannelError as exc:
        return _after_transient_error(runtime, claimed, exc, tag)
    except PermanentChannelError as exc:
        _record_failure(runtime, claimed, str(exc), exc.provider_status)
        log.warning("%s refused for good: %s", tag, exc.provider_status or exc)
        return "failed"
    record_sent(runtime, claimed, result)
    log.info("%s sent to %s in %d part(s)", tag,
             mask_identifier(_identifier_kind(claimed.channel), claimed.message.destination), result.parts)
    return "sent"


def prepare(runtime: Runtime, notification_id: int) -> Send | str:
    """Render a queued notification (nothing changes yet), or say why it is not to be sent."""
    with session_scope(runtime.settings.database_url) as session:
        found = session.exec(
            select(Notification, Campaign, Account)
            .join(Campaign, Campaign.id == Notification.campaign_id)
            .join(Account, Account.id == Notification.account_id)
            .where(Notification.id == notification_id)
        ).first()
        if found is None:
            return "missing"
        notification, campaign, account = found
        if notification.state != QUEUED:
            return "skipped"
        if campaign.state in HELD_CAMPAIGN_STATES:
            return "held"
        try:
            rendered = render_notification(runtime, notification, campaign, account)
        except NotifierError as exc:
            transition(session, notification_id, expected=QUEUED, to_state=FAILED, source="worker",
                       detail=f"cannot render: {exc}", values={"reason": f"template error: {exc}"[:300]})
            return "failed"
        message = OutgoingMessage(
            notification_id=notification_id, destination=notification.destination or "",
            body=rendered.body, subject=rendered.subject, html=rendered.html,
            reference=f"notification-{notification_id}",
        )
        parts = count_parts(rendered.body) if notification.channel == "sms" else 1
        return Send(notification_id, notification.campaign_id, notification.channel,
                       notification.attempts + 1, message, parts)


def claim(runtime: Runtime, prepared: Send) -> Send | None:
    """Move the row queued → sending with the text about to go out; None if another took it."""
    message = prepared.message
    with session_scope(runtime.settings.database_url) as session:
        moved = transition(
            session, prepared.notification_id, expected=QUEUED, to_state=SENDING, source="worker",
            detail=f"attempt {prepared.attempt} by {runtime.owner}",
            values={"claimed_by": runtime.owner, "claimed_at": utcnow(), "attempts": prepared.attempt,
                    "text": message.body, "subject": message.subject, "parts": prepared.parts,
                    "encoding": sms_encoding(message.body) if prepared.channel == "sms" else "utf-8"},
        )
    return prepared if moved else None


def render_notification(
    runtime: Runtime, notification: Notification, campaign: Campaign, account: Account
) -> RenderedMessage:
    context = template_context(notification, runtime)
    return runtime.renderer.render(
        campaign.template, notification.channel,
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


def record_sent(runtime: Runtime, claimed: Send, result: SendResult) -> None:
    with session_scope(runtime.settings.database_url) as session:
        moved = transition(
            session, claimed.notification_id, expected=SENDING, to_state=SENT, source="worker",
            provider_status=result.provider_status,
            detail=f"{result.parts} part(s): {', '.join(result.provider_message_ids)}"[:500],
            values={"sent_at": utcnow(), "parts": result.parts, "claimed_by": None},
        )
        if not moved:
            log.error("[notification:%s] accepted by the provider but no longer in 'sending'",
                      claimed.notification_id)
        for part_no, message_id in enumerate(result.provider_message_ids, start=1):
            session.add(MessagePart(notification_id=claimed.notification_id, part_no=part_no,
                                    channel=claimed.channel, provider_message_id=message_id,
                                    state="delivered" if _accepted_is_delivery(runtime, claimed) else "sent"))
        if moved and _accepted_is_delivery(runtime, claimed):
            transition(session, claimed.notification_id, expected=SENT, to_state=DELIVERED, source="smtp",
                       provider_status=result.provider_status,
                       detail="accepted by the recipients' mail server", values={"delivered_at": utcnow()})


def _accepted_is_delivery(runtime: Runtime, claimed: Send) -> bool:
    return claimed.channel == "email" and runtime.settings.smtp.accepted_means_delivered


def _after_transient_error(runtime: Runtime, claimed: Send, exc: TransientChannelError, tag: str) -> str:
    if isinstance(exc, RouteUnreachableError):
        # Nothing left here: the route is down, not the message. The attempt is given back, so an
        # outage never fails a row; `campaign run` / the worker deal with the outage itself.
        with session_scope(runtime.settings.database_url) as session:
            transition(session, claimed.notification_id, expected=SENDING, to_state=QUEUED, source="worker",
                       provider_status=exc.provider_status, detail=f"not sent: {exc}",
                       values={"claimed_by": None, "attempts": claimed.attempt - 1})
        raise _route_down(runtime, exc)
    if isinstance(exc, OutcomeUnknownError):
        # The provider may have it: sending again now could deliver it twice. Like a sender that
        # died mid-send, the row is `unknown` until its receipt or the resend delay (recovery).
        with session_scope(runtime.settings.database_url) as session:
            transition(session, claimed.notification_id, expected=SENDING, to_state=UNKNOWN, source="worker",
                       provider_status=exc.provider_status, detail=f"outcome unknown: {exc}",
                       values={"claimed_by": None})
        log.info("%s outcome unknown (%s): waiting for a receipt or the resend delay", tag, exc)
        return "unknown"
    accepted = getattr(exc, "accepted_ids", None)
    if accepted:
        # Part of a long SMS went out: sending it all again would duplicate those parts.
        _record_failure(runtime, claimed, f"only {len(accepted)} part(s) accepted: {exc}",
                        exc.provider_status, accepted_ids=list(accepted))
        return "failed"
    max_attempts = runtime.settings.dispatch.max_retries + 1
    if claimed.attempt >= max_attempts:
        _record_failure(runtime, claimed, f"gave up after {claimed.attempt} attempts: {exc}", exc.provider_status)
        return "failed"
    with session_scope(runtime.settings.database_url) as session:
        transition(session, claimed.notification_id, expected=SENDING, to_state=QUEUED, source="worker",
                   provider_status=exc.provider_status, detail=f"temporary error: {exc}",
                   values={"claimed_by": None})
    delay_ms = min(1000 * 2 ** claimed.attempt, 300_000)
    log.info("%s temporary error (%s); retry in %d ms", tag, exc, delay_ms)
    raise RetryLater(str(exc), delay_ms=delay_ms)


def _route_down(runtime: Runtime, exc: RouteUnreachableError) -> RetryLater:
    """The broker keeps the message for `route_down_seconds`: by then the route is back (and the
    run re-queues what waits) or `campaign run` has stopped. Logged at debug: once per message
    would be hundreds of lines for one outage."""
    delay_ms = max(1000, int(runtime.settings.dispatch.route_down_seconds * 1000))
    log.debug("[channel:%s] route unreachable (%s); message back to the broker for %d ms",
              exc.channel, exc.reason, delay_ms)
    return RetryLater(str(exc), delay_ms=delay_ms)


def _record_failure(
    runtime: Runtime, claimed: Send, reason: str, provider_status: str | None,
    accepted_ids: list[str] | None = None,
) -> None:
    with session_scope(runtime.settings.database_url) as session:
        transition(session, claimed.notification_id, expected=SENDING, to_state=FAILED, source="worker",
                   provider_status=provider_status, detail=reason,
                   values={"reason": reason[:300], "claimed_by": None})
        for part_no, message_id in enumerate(accepted_ids or [], start=1):
            session.add(MessagePart(notification_id=claimed.notification_id, part_no=part_no,
                                    channel=claimed.channel, provider_message_id=message_id))


def _identifier_kind(channel: str) -> str:
    return "email" if channel == "email" else "msisdn"
