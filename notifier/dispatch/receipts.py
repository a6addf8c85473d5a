"""Store provider receipts as they arrive, and apply them to notifications.

The SMPP channel's writer thread (never its reader) hands each batch of receipts to
`ReceiptStore.store`, which applies in the same transaction every receipt whose message is
recorded and stores the batch in one INSERT, already applied (`store_applied`). A receipt that
cannot be applied yet is stored pending and applied afterwards (`apply_pending_receipts`, in
`notifier.dispatch.receipt_batch`): on a fast SMSC the receipt often arrives before the sender has
recorded the message id, and after a crash it may name a message whose send was never recorded at
all. Twilio callbacks and bounces are stored pending (`store_receipts`) and applied the same way.
Each part of a long SMS has its own receipt: the notification is delivered only when every part
is, and undelivered as soon as one part fails (Kannel and Jasmin decide on one part only; we do
not).

`ReceiptStore` is the sink a channel is given: it stores receipts in batches and records which
SMPP sessions are alive, so an `unknown` SMS is resent only after the SMSC could hand over the
receipts it kept (`notifier.dispatch.unknown`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from channels.base import Receipt
from notifier.db import plan_each_execution, session_scope
from notifier.dispatch.receipt_batch import (
    ID_MATCH_GRACE_SECONDS, ORPHAN_AFTER_SECONDS, PENDING_BATCH, PROVIDER_CLOCK_SKEW_SECONDS,
    apply_pending_receipts, apply_rows, delivered_time, store_applied,
)
from notifier.dispatch.outbox import bulk_insert
from notifier.models import InboundReceipt, MessagePart, Notification, SmppSession, utcnow

__all__ = [
    "ID_MATCH_GRACE_SECONDS", "ORPHAN_AFTER_SECONDS", "PENDING_BATCH", "PROVIDER_CLOCK_SKEW_SECONDS",
    "ReceiptStore", "apply_pending_receipts", "apply_receipt", "delivered_time", "latest_session_alive",
    "record_receipt", "record_session_alive", "store_receipts",
]

log = logging.getLogger(__name__)


def _receipt_values(receipt: Receipt, received_at: datetime) -> dict[str, object]:
    return {
        "channel": receipt.channel, "provider_message_id": receipt.provider_message_id[:100],
        "alternative_ids": ",".join(receipt.alternative_ids)[:300] or None, "status": receipt.status,
        "raw_status": receipt.raw_status[:32], "error_code": receipt.error_code, "done_at": receipt.done_at,
        "destination": receipt.destination, "received_at": received_at,
    }


def store_receipts(session: Session, receipts: Sequence[Receipt]) -> int:
    """Store receipts as they arrived, in one executemany INSERT; nothing is matched yet."""
    if not receipts:
        return 0
    now = utcnow()
    bulk_insert(session, InboundReceipt.__table__, [_receipt_values(receipt, now) for receipt in receipts])
    return len(receipts)


def record_receipt(session: Session, receipt: Receipt) -> InboundReceipt:
    """Store one receipt as an ORM row (tests and one-off callers; the channel stores batches)."""
    row = InboundReceipt(**_receipt_values(receipt, utcnow()))  # type: ignore[arg-type]
    session.add(row)
    session.flush()
    return row


def apply_receipt(session: Session, row: InboundReceipt, *, allow_destination_match: bool) -> bool:
    """Apply one stored receipt (the batch path with one row); False when it cannot be placed yet."""
    session.flush()
    applied = apply_rows(session, [row.id or 0], destination_match=allow_destination_match, grace_seconds=0)
    for obj in list(session.identity_map.values()):  # the batch wrote through Core: reload them
        if isinstance(obj, (Notification, MessagePart, InboundReceipt)):
            session.refresh(obj)
    return applied == 1


def record_session_alive(session: Session, *, owner: str, system_id: str, bound_at: datetime,
                         alive_at: datetime | None = None) -> None:
    """Note that the SMPP session `owner` (bound at `bound_at`) last heard its SMSC at `alive_at`
    (now by default): a frozen SMSC sends nothing, so its session does not count as alive."""
    now = utcnow()
    alive = alive_at or now
    moved = session.execute(sa.update(SmppSession).where(SmppSession.owner == owner)
                            .values(alive_at=alive)).rowcount
    if not moved:
        session.execute(sa.insert(SmppSession).values(owner=owner[:100], system_id=system_id[:32],
                                                      bound_at=bound_at, alive_at=alive))
    stale = now - timedelta(days=7)  # keep the table small: only recent sessions matter
    session.execute(sa.delete(SmppSession).where(SmppSession.alive_at < stale))


def latest_session_alive(session: Session) -> datetime | None:
    """The last time any process's SMPP session was bound and reading, if ever."""
    return session.execute(sa.select(sa.func.max(SmppSession.__table__.c.alive_at))).scalar()  # type: ignore[attr-defined]


class ReceiptStore:
    """The sink a channel writes to: batches of receipts, and its sessions' liveness.

    Thread-safe (each call is its own unit of work). Raising means nothing was stored: the
    channel then answers the SMSC with a temporary error so that it keeps and resends them.
    """

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url

    def __call__(self, receipt: Receipt) -> None:
        self.store([receipt])

    def store(self, receipts: Sequence[Receipt]) -> None:
        """Store the batch, applying at once every receipt whose message is recorded (`store_applied`)."""
        now = utcnow()
        with session_scope(self._database_url) as session:
            plan_each_execution(session)
            store_applied(session, [_receipt_values(receipt, now) for receipt in receipts])

    def session_alive(self, owner: str, system_id: str, bound_at: datetime, alive_at: datetime) -> None:
        with session_scope(self._database_url) as session:
            record_session_alive(session, owner=owner, system_id=system_id, bound_at=bound_at, alive_at=alive_at)
