"""Apply provider receipts to notifications.

A receipt is stored first (`record_receipt`) and applied afterwards (`apply_receipt`), because
on a fast SMSC the receipt often arrives before the sender has recorded the message id, and after
a crash it may name a message whose send was never recorded at all. Each part of a long SMS has
its own receipt: the notification is delivered only when every part is, and undelivered as soon
as one part fails (Kannel and Jasmin decide on one part only; we do not).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from channels.base import (
    RECEIPT_DELIVERED, RECEIPT_EXPIRED, RECEIPT_FAILED, RECEIPT_PENDING, RECEIPT_UNDELIVERED, Receipt,
)
from notifier.models import InboundReceipt, MessagePart, Notification, utcnow
from notifier.dispatch.outbox import DELIVERED, EXPIRED, SENT, UNDELIVERED, UNKNOWN, transition

log = logging.getLogger(__name__)

# How long a receipt may wait for its message id to be recorded before we try to resolve an
# `unknown` notification by destination instead (a normal race resolves in milliseconds).
ID_MATCH_GRACE_SECONDS = 2
ORPHAN_AFTER_SECONDS = 24 * 3600
PENDING_BATCH = 500
# How far an SMSC's clock may run ahead of ours before its done time is not believed.
PROVIDER_CLOCK_SKEW_SECONDS = 120

_FAILED_STATES = {RECEIPT_UNDELIVERED: UNDELIVERED, RECEIPT_EXPIRED: EXPIRED, RECEIPT_FAILED: UNDELIVERED}
_OPEN_STATES = (SENT, UNKNOWN)


def record_receipt(session: Session, receipt: Receipt) -> InboundReceipt:
    """Store a receipt as it arrived; nothing is matched yet."""
    row = InboundReceipt(
        channel=receipt.channel, provider_message_id=receipt.provider_message_id[:100],
        alternative_ids=",".join(receipt.alternative_ids)[:300] or None, status=receipt.status,
        raw_status=receipt.raw_status[:32], error_code=receipt.error_code, done_at=receipt.done_at,
        destination=receipt.destination,
    )
    session.add(row)
    session.flush()
    return row


def apply_receipt(session: Session, row: InboundReceipt, *, allow_destination_match: bool) -> bool:
    """Apply one stored receipt; returns False when it cannot be placed yet."""
    part = _find_part(session, row)
    if part is None and allow_destination_match:
        part = _resolve_unknown_by_destination(session, row)
    if part is None:
        return False
    if part.state == "sent" or row.status != RECEIPT_PENDING:
        part.state = row.status if row.status != RECEIPT_PENDING else part.state
        part.error_code = row.error_code
        part.updated_at = utcnow()
    session.flush()
    _settle_notification(session, part.notification_id, row, part)
    row.applied_at, row.outcome, row.notification_id = utcnow(), row.outcome or "applied", part.notification_id
    return True


def apply_pending_receipts(session: Session, *, destination_match: bool = True) -> int:
    """Apply stored receipts not yet applied; old ones become orphans. Returns how many applied.

    Rows are locked (`SKIP LOCKED` on PostgreSQL) so several workers never apply one receipt twice.
    `destination_match` allows resolving `unknown` rows by address for receipts past the grace.
    """
    now = utcnow()
    applied = 0
    rows = session.exec(
        select(InboundReceipt).where(InboundReceipt.applied_at.is_(None))
        .order_by(InboundReceipt.id).limit(PENDING_BATCH).with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        age = now - row.received_at
        by_destination = destination_match and age > timedelta(seconds=ID_MATCH_GRACE_SECONDS)
        if apply_receipt(session, row, allow_destination_match=by_destination):
            applied += 1
        elif age > timedelta(seconds=ORPHAN_AFTER_SECONDS):
            row.applied_at, row.outcome = now, "orphan"
            log.warning("[receipt:%s] no message matches id %s: kept as orphan", row.id, row.provider_message_id)
    return applied


def _find_part(session: Session, row: InboundReceipt) -> MessagePart | None:
    ids = [row.provider_message_id, *filter(None, (row.alternative_ids or "").split(","))]
    return session.exec(
        select(MessagePart)
        .where(MessagePart.channel == row.channel, MessagePart.provider_message_id.in_(ids))
        .order_by(MessagePart.id.desc())
    ).first()


def _resolve_unknown_by_destination(session: Session, row: InboundReceipt) -> MessagePart | None:
    """A receipt for a message we never recorded: it belongs to the row sent to that address whose
    send was not recorded (`unknown`), or that such a receipt already resolved but whose other
    parts are still unaccounted for."""
    if not row.destination:
        return None
    part_count = (
        select(sa.func.count()).select_from(MessagePart)
        .where(MessagePart.notification_id == Notification.id).scalar_subquery()
    )
    candidate = session.exec(
        select(Notification, part_count)
        .where(Notification.channel == row.channel, Notification.destination == row.destination,
               sa.or_(Notification.state == UNKNOWN,
                      sa.and_(Notification.state == SENT, part_count < sa.func.coalesce(Notification.parts, 1))))
        .order_by(Notification.claimed_at.desc(), Notification.id.desc())
    ).first()
    if candidate is None:
        return None
    notification, known_parts = candidate
    part = MessagePart(notification_id=notification.id or 0, part_no=known_parts + 1, channel=row.channel,
                       provider_message_id=row.provider_message_id)
    session.add(part)
    transition(session, notification.id or 0, expected=UNKNOWN, to_state=SENT, source="recovery",
               provider_status=row.raw_status,
               detail=f"a receipt for {row.provider_message_id} proves the provider took it",
               values={"sent_at": notification.claimed_at or utcnow(), "claimed_by": None})
    row.outcome = "resolved_unknown"
    return part


def _settle_notification(session: Session, notification_id: int, row: InboundReceipt, part: MessagePart) -> None:
    # Lock the row: two processes applying receipts for two parts of one message at once would
    # each count only its own part as delivered, and neither would settle the message.
    notification = session.exec(
        select(Notification).where(Notification.id == notification_id).with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if notification is None:
        return
    source = f"{row.channel}-receipt"
    label = f"part {part.part_no}/{notification.parts or 1}: {row.raw_status}"
    if row.status in _FAILED_STATES:
        if transition(session, notification_id, expected=_OPEN_STATES, to_state=_FAILED_STATES[row.status],
                      source=source, provider_status=row.raw_status,
                      detail=f"{label} err:{row.error_code}", values={"reason": f"{label} err:{row.error_code}"}):
            return
    elif row.status == RECEIPT_DELIVERED and _all_parts_delivered(session, notification):
        shown = delivered_time(done_at=row.done_at, received_at=row.received_at, sent_at=notification.sent_at)
        detail = f"{label}; SMSC done {row.done_at.isoformat()}" if row.done_at else label
        if transition(session, notification_id, expected=_OPEN_STATES, to_state=DELIVERED, source=source,
                      provider_status=row.raw_status, detail=detail[:500], values={"delivered_at": shown}):
            return
    _note(session, notification, source, row.raw_status, label)


def delivered_time(*, done_at: datetime | None, received_at: datetime | None,
                   sent_at: datetime | None) -> datetime:
    """The delivery time people see: the provider's, unless it would read as before we sent it.

    Both stay on record (`InboundReceipt.done_at` is the SMSC's, `received_at` ours). Many SMSCs
    write `done date` to the minute, so a message sent at 08:24:40 and delivered a second later
    reads 08:24:00 — before it was sent (a wrong `smpp.timezone` does the same by hours). Then
    the time we recorded the receipt is shown, never earlier than the time we sent it. A done
    time well after the receipt reached us (a zone set the other way round) is not shown either.
    """
    ours = max((t for t in (received_at, sent_at) if t is not None), default=None) or utcnow()
    if done_at is None or (sent_at is not None and done_at < sent_at):
        return ours
    if received_at is not None and done_at > received_at + timedelta(seconds=PROVIDER_CLOCK_SKEW_SECONDS):
        return ours
    return done_at


def _all_parts_delivered(session: Session, notification: Notification) -> bool:
    delivered = session.exec(
        select(sa.func.count()).select_from(MessagePart)
        .where(MessagePart.notification_id == notification.id, MessagePart.state == RECEIPT_DELIVERED)
    ).one()
    return delivered >= (notification.parts or 1)


def _note(session: Session, notification: Notification, source: str, raw_status: str, detail: str) -> None:
    """Record a receipt that does not change the state (one part of several, ENROUTE…)."""
    from notifier.models import DeliveryEvent

    session.add(DeliveryEvent(notification_id=notification.id or 0, from_state=notification.state,
                              to_state=notification.state, source=source, provider_status=raw_status,
                              detail=detail))
