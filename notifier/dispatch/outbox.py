"""Notification states and the one way to change them: a compare-and-set that records an event.

    planned → queued → sending → sent → delivered
    exits: suppressed, cancelled, failed, undelivered, expired, unknown

`unknown` marks a row whose sender died between handing the message to the provider and recording
that it did: a receipt resolves it (`notifier.dispatch.receipts`) or, failing that, it is sent again after
`dispatch.unknown_resend_after_seconds` (`notifier.dispatch.recovery`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.models import DeliveryEvent, Notification, utcnow

PLANNED = "planned"
SCHEDULED = "scheduled"
QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
SUPPRESSED = "suppressed"
CANCELLED = "cancelled"
FAILED = "failed"
UNDELIVERED = "undelivered"
EXPIRED = "expired"
UNKNOWN = "unknown"

ALL_STATES = (
    PLANNED, SCHEDULED, QUEUED, SENDING, SENT, DELIVERED,
    SUPPRESSED, CANCELLED, FAILED, UNDELIVERED, EXPIRED, UNKNOWN,
)
# Rows that still need work from us before the campaign is done.
PENDING_STATES = frozenset({PLANNED, SCHEDULED, QUEUED, SENDING, UNKNOWN})
# Rows the provider accepted: they count as sent in reports.
ACCEPTED_STATES = frozenset({SENT, DELIVERED, UNDELIVERED, EXPIRED})
FINAL_STATES = frozenset({DELIVERED, SUPPRESSED, CANCELLED, FAILED, UNDELIVERED, EXPIRED})


def transition(
    session: Session,
    notification_id: int,
    *,
    expected: str | Collection[str],
    to_state: str,
    source: str,
    provider_status: str | None = None,
    detail: str | None = None,
    values: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> bool:
    """Move one notification to `to_state` if it is in `expected`; record the move.

    Returns False (and changes nothing) when another process moved the row first: the caller
    must then leave the row alone. The UPDATE's WHERE clause names the exact state that was read,
    so two concurrent callers can never both win.
    """
    if isinstance(expected, str):
        current: str | None = expected  # the UPDATE's WHERE checks it: no need to read first
    else:
        current = session.exec(select(Notification.state).where(Notification.id == notification_id)).first()
        if current is None or current not in expected:
            return False
    moment = at or utcnow()
    result = session.execute(
        sa.update(Notification)
        .where(Notification.id == notification_id, Notification.state == current)
        .values(state=to_state, updated_at=moment, **(values or {}))
    )
    if result.rowcount != 1:
        return False
    session.add(
        DeliveryEvent(
            notification_id=notification_id,
            at=moment,
            from_state=current,
            to_state=to_state,
            source=source,
            provider_status=_bounded(provider_status, 100),
            detail=_bounded(detail, 500),
        )
    )
    return True


def transition_many(
    session: Session,
    notification_ids: Iterable[int],
    *,
    expected: str,
    to_state: str,
    source: str,
    detail: str | None = None,
    values: dict[str, Any] | None = None,
) -> list[int]:
    """Bulk form of `transition` for one expected state; returns the ids that moved."""
    moved: list[int] = []
    moment = utcnow()
    ids = list(notification_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        candidates = session.execute(
            sa.update(Notification)
            .where(Notification.id.in_(chunk), Notification.state == expected)
            .values(state=to_state, updated_at=moment, **(values or {}))
            .returning(Notification.id)
        ).scalars().all()
        if not candidates:
            continue
        session.execute(
            sa.insert(DeliveryEvent),
            [
                {"notification_id": nid, "at": moment, "from_state": expected, "to_state": to_state,
                 "source": source, "detail": detail}
                for nid in candidates
            ],
        )
        moved.extend(candidates)
    return moved


def _bounded(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]
