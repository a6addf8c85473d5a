"""Notification states and the one way to change them: a compare-and-set that records an event.

    planned → queued → sending → sent → delivered
    exits: suppressed, cancelled, failed, undelivered, expired, unknown

`unknown` marks a row whose sender died between handing the message to the provider and recording
that it did: a receipt resolves it (`notifier.dispatch.receipts`) or, failing that, it is sent again after
`dispatch.unknown_resend_after_seconds` (`notifier.dispatch.recovery`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class RowMove:
    """One row's part in a bulk move: its own column values and the words of its DeliveryEvent."""

    notification_id: int
    values: dict[str, Any] = field(default_factory=dict)
    provider_status: str | None = None
    detail: str | None = None


def transition_rows(
    session: Session,
    moves: Sequence[RowMove],
    *,
    expected: str,
    to_state: str,
    source: str,
    values: dict[str, Any] | None = None,
    only_if: sa.ColumnElement[bool] | None = None,
    skip_locked: bool = False,
    at: datetime | None = None,
) -> list[int]:
    """Bulk `transition`: the same compare-and-set and one DeliveryEvent per moved row, in a
    fixed number of statements whatever the batch size.

    One UPDATE … WHERE id IN (SELECT … ORDER BY id FOR UPDATE) RETURNING id moves the rows still
    in `expected` (and matching `only_if`): PostgreSQL locks them in id order, so two batches that
    overlap cannot deadlock; with `skip_locked`, rows another transaction holds are left to it (a
    claim: that one will send them). SQLite has one writer and ignores FOR UPDATE. `values` are
    common to every row (SQL expressions allowed); each move's own `values` follow in one
    executemany; the events go in one INSERT. Returns the ids that moved, ascending.
    """
    if not moves:
        return []
    by_id = {move.notification_id: move for move in moves}
    moment = at or utcnow()
    moved: list[int] = []
    ids = sorted(by_id)
    for start in range(0, len(ids), BULK_CHUNK):
        moved += _move_chunk(session, ids[start : start + BULK_CHUNK], expected=expected, to_state=to_state,
                             values=values, only_if=only_if, skip_locked=skip_locked, moment=moment)
    if not moved:
        return []
    _store_row_values(session, [by_id[nid] for nid in moved])
    session.execute(sa.insert(DeliveryEvent.__table__), [
        {"notification_id": nid, "at": moment, "from_state": expected, "to_state": to_state, "source": source,
         "provider_status": _bounded(by_id[nid].provider_status, 100), "detail": _bounded(by_id[nid].detail, 500)}
        for nid in moved
    ])
    return moved


BULK_CHUNK = 500  # ids per statement: never an unbounded IN list


def _move_chunk(session: Session, ids: list[int], *, expected: str, to_state: str, values: dict[str, Any] | None,
                only_if: sa.ColumnElement[bool] | None, skip_locked: bool, moment: datetime) -> list[int]:
    table = Notification.__table__
    chosen = sa.select(table.c.id).where(table.c.id.in_(ids), table.c.state == expected)
    if only_if is not None:
        chosen = chosen.where(only_if)
    chosen = chosen.order_by(table.c.id).with_for_update(skip_locked=skip_locked)
    result = session.execute(
        sa.update(table).where(table.c.id.in_(chosen.scalar_subquery()), table.c.state == expected)
        .values(state=to_state, updated_at=moment, **(values or {}))
        .returning(table.c.id)
    )
    return sorted(result.scalars().all())


def _store_row_values(session: Session, moves: list[RowMove]) -> None:
    """Each row's own values, one executemany per distinct set of columns (usually one)."""
    table = Notification.__table__
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for move in moves:
        if move.values:
            groups.setdefault(tuple(sorted(move.values)), []).append(
                {"row_id": move.notification_id, **{f"v_{key}": value for key, value in move.values.items()}})
    for columns, rows in groups.items():
        statement = (sa.update(table).where(table.c.id == sa.bindparam("row_id"))
                     .values({column: sa.bindparam(f"v_{column}") for column in columns}))
        session.connection().execute(statement, rows)
