"""Record what the provider said about a batch of sends: one transaction, a few statements.

Every outcome keeps the single-row state machine: `sending → sent` (+ `sent → delivered` for an
e-mail whose relay is the recipients' mail server), `sending → unknown` when a submit was written
but not answered (the provider may have it: never re-queued from here), `sending → queued` only
for an explicit, retryable refusal or a route that took nothing, `sending → failed` for a
permanent refusal, exhausted retries, or anything unexpected (its error class is the reason).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session

from channels.base import OutgoingMessage, SendOutcome, SendResult
from notifier.errors import (
    NotifierError, OutcomeUnknownError, PermanentChannelError, RecipientOptedOutError, RouteUnreachableError,
    TransientChannelError,
)
from notifier.identifiers import mask_identifier
from notifier.models import MessagePart, Notification, utcnow
from notifier.dispatch.outbox import RowMove, bulk_insert, transition_rows
from notifier.dispatch.states import DELIVERED, FAILED, QUEUED, SENDING, SENT, SUPPRESSED, UNKNOWN
from notifier.redaction import one_line, redact

log = logging.getLogger(__name__)

MAX_BACKOFF_MS = 300_000


@dataclass(frozen=True)
class Send:
    """One rendered message on its way: what was loaded and rendered, and (once claimed) sent."""

    notification_id: int
    campaign_id: int
    channel: str
    attempt: int
    message: OutgoingMessage
    parts: int


@dataclass
class BatchReport:
    """What a batch did, per row (for logs and tests), and which ids go back to the broker when."""

    outcomes: dict[int, str] = field(default_factory=dict)
    retry: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # delay ms -> ids

    def note(self, ids: Sequence[int], outcome: str) -> None:
        for notification_id in ids:
            self.outcomes[notification_id] = outcome

    def retry_later(self, ids: Sequence[int], delay_ms: int, outcome: str = "retry") -> None:
        if ids:
            self.retry[delay_ms].extend(ids)
            self.note(ids, outcome)


@dataclass
class _Moves:
    """The batch's outcomes sorted into the moves they cause."""

    sent: list[RowMove] = field(default_factory=list)
    parts: list[dict[str, object]] = field(default_factory=list)
    delivered: list[RowMove] = field(default_factory=list)
    unknown: list[RowMove] = field(default_factory=list)
    failed: list[RowMove] = field(default_factory=list)
    suppressed: list[RowMove] = field(default_factory=list)  # the subscriber opted out at the provider
    queued: list[RowMove] = field(default_factory=list)
    route_down: list[RowMove] = field(default_factory=list)
    backoff: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))


def unexpected_reason(exc: BaseException) -> str:
    """The `reason` of a row ended by something nobody planned for: the error class first."""
    return f"unexpected {type(exc).__name__}: {one_line(redact(str(exc)))}"[:300]


def log_unexpected(ids: Sequence[int], exc: BaseException, stage: str) -> None:
    """One line per unexpected error (not per row), masked, with the traceback at debug."""
    log.error("[notification:%s] %s failed: unexpected %s: %s", ",".join(map(str, ids[:10])) +
              ("…" if len(ids) > 10 else ""), stage, type(exc).__name__, one_line(redact(str(exc))))
    log.debug("traceback", exc_info=exc)


def record_outcomes(session: Session, sends: Sequence[Send], outcomes: Sequence[SendOutcome], *,
                    max_attempts: int, route_down_ms: int, email_accepted_is_delivery: bool,
                    report: BatchReport) -> None:
    """Apply every outcome of a sent batch in `session` (the caller's one transaction)."""
    moves = _Moves()
    for send, outcome in zip(sends, outcomes, strict=True):
        _sort(send, outcome, moves, max_attempts=max_attempts,
              accepted_is_delivery=email_accepted_is_delivery and send.channel == "email")
    moved_sent = transition_rows(session, moves.sent, expected=SENDING, to_state=SENT, source="worker",
                                 values={"sent_at": utcnow(), "claimed_by": None})
    _check_moved(moves.sent, moved_sent, "accepted by the provider")
    if moves.parts:
        bulk_insert(session, MessagePart.__table__, [{"updated_at": utcnow(), **row} for row in moves.parts])
    if moves.delivered:
        transition_rows(session, [m for m in moves.delivered if m.notification_id in set(moved_sent)],
                        expected=SENT, to_state=DELIVERED, source="smtp", values={"delivered_at": utcnow()})
    transition_rows(session, moves.unknown, expected=SENDING, to_state=UNKNOWN, source="worker",
                    values={"claimed_by": None})
    transition_rows(session, moves.failed, expected=SENDING, to_state=FAILED, source="worker",
                    values={"claimed_by": None})
    transition_rows(session, moves.suppressed, expected=SENDING, to_state=SUPPRESSED, source="worker",
                    values={"claimed_by": None})
    transition_rows(session, moves.queued, expected=SENDING, to_state=QUEUED, source="worker",
                    values={"claimed_by": None})
    # A route that took nothing is not the message's fault: the attempt is given back, and the
    # re-drive hands the row over as soon as the route answers (redrive.let_go).
    transition_rows(session, moves.route_down, expected=SENDING, to_state=QUEUED, source="worker",
                    values={"claimed_by": None, "attempts": Notification.__table__.c.attempts - 1,
                            "enqueued_at": None})
    report.note(moved_sent, "sent")
    report.note([m.notification_id for m in moves.unknown], "unknown")
    report.note([m.notification_id for m in moves.failed], "failed")
    report.note([m.notification_id for m in moves.suppressed], "suppressed")
    report.retry_later([m.notification_id for m in moves.route_down], route_down_ms, "waiting")
    for delay_ms, ids in moves.backoff.items():
        report.retry_later(ids, delay_ms)


def _sort(send: Send, outcome: SendOutcome, moves: _Moves, *, max_attempts: int, accepted_is_delivery: bool) -> None:
    """Which move one outcome causes; the single-row rules of the original `deliver`."""
    nid = send.notification_id
    if isinstance(outcome, SendResult):
        ids = outcome.provider_message_ids
        values = {"parts": outcome.parts} if outcome.parts != send.parts else {}
        moves.sent.append(RowMove(nid, values, outcome.provider_status,
                                  f"{outcome.parts} part(s): {', '.join(ids)}"[:500]))
        moves.parts += [{"notification_id": nid, "part_no": number, "channel": send.channel,
                         "provider_message_id": message_id, "state": "delivered" if accepted_is_delivery else "sent"}
                        for number, message_id in enumerate(ids, start=1)]
        if accepted_is_delivery:
            moves.delivered.append(RowMove(nid, provider_status=outcome.provider_status,
                                           detail="accepted by the recipients' mail server"))
        return
    status = getattr(outcome, "provider_status", None)
    if isinstance(outcome, RouteUnreachableError):
        moves.route_down.append(RowMove(nid, provider_status=status, detail=f"not sent: {outcome}"))
    elif isinstance(outcome, OutcomeUnknownError):
        # The provider may have it: sending again now could deliver it twice. Like a sender that
        # died mid-send, the row is `unknown` until its receipt or the resend delay (recovery).
        moves.unknown.append(RowMove(nid, provider_status=status, detail=f"outcome unknown: {outcome}"))
    elif getattr(outcome, "accepted_ids", None) and (not getattr(outcome, "retryable", False)
                                                     or send.attempt >= max_attempts):
        # Part of a long SMS went out and the rest was refused for good: the row fails, the parts
        # that went out are recorded so their receipts still match.
        accepted = list(outcome.accepted_ids)  # type: ignore[attr-defined]
        _fail(moves, nid, f"only {len(accepted)} part(s) accepted: {outcome}", status)
        moves.parts += [{"notification_id": nid, "part_no": number, "channel": send.channel,
                         "provider_message_id": message_id, "state": "sent"}
                        for number, message_id in enumerate(accepted, start=1)]
    elif isinstance(outcome, TransientChannelError):
        # A temporary refusal — also of a later part of a long SMS (a throttling SMSC at its rate):
        # the whole message goes again after the backoff, under a fresh concatenation reference, so
        # the handset joins only the new parts; the first parts stay an unjoined fragment.
        if send.attempt >= max_attempts:
            _fail(moves, nid, f"gave up after {send.attempt} attempts: {outcome}", status)
        else:
            moves.queued.append(RowMove(nid, provider_status=status, detail=f"temporary error: {outcome}"))
            moves.backoff[min(1000 * 2 ** send.attempt, MAX_BACKOFF_MS)].append(nid)
    elif isinstance(outcome, RecipientOptedOutError):
        moves.suppressed.append(RowMove(nid, {"reason": str(outcome)[:300]}, status, str(outcome)))
    elif isinstance(outcome, (PermanentChannelError, NotifierError)):
        _fail(moves, nid, str(outcome), status)
        log.warning("[campaign:%s] [notification:%s] [channel:%s] refused for good: %s", send.campaign_id, nid,
                    send.channel, status or outcome)
    else:
        log_unexpected([nid], outcome, "sending")
        _fail(moves, nid, unexpected_reason(outcome), None)


def _fail(moves: _Moves, nid: int, reason: str, status: str | None) -> None:
    moves.failed.append(RowMove(nid, {"reason": reason[:300]}, status, reason))


def _check_moved(expected: list[RowMove], moved: list[int], what: str) -> None:
    lost = {m.notification_id for m in expected} - set(moved)
    for nid in sorted(lost):
        log.error("[notification:%s] %s but no longer in 'sending'", nid, what)


def log_sent(sends: Sequence[Send], report: BatchReport) -> None:
    """INFO for each row sent (masked destination): the per-message trail operators grep for.
    Nothing is computed when INFO is off (masking every destination cost ~3% of a send)."""
    if not log.isEnabledFor(logging.INFO):
        return
    for send in sends:
        if report.outcomes.get(send.notification_id) == "sent":
            kind = "email" if send.channel == "email" else "msisdn"
            log.info("[campaign:%s] [notification:%s] [channel:%s] sent to %s in %d part(s)", send.campaign_id,
                     send.notification_id, send.channel, mask_identifier(kind, send.message.destination), send.parts)
