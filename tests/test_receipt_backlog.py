"""Receipts no message of ours matches (another system's on a shared SMSC account, an earlier
attempt's parts) wait a day before they become orphans. They must neither hide the receipts behind
them from the appliers' bounded passes nor be read again on every pass."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from channels.base import Receipt
from notifier.db import session_scope
from notifier.dispatch.outbox import bulk_insert
from notifier.dispatch.receipt_batch import MAX_PAGES, PENDING_BATCH, RETRY_MAX_SECONDS, RETRY_MIN_SECONDS
from notifier.dispatch.receipts import apply_pending_receipts, record_receipt
from notifier.models import InboundReceipt, MessagePart, Notification, utcnow
from tests.factories import add_account, add_notification

BACKLOG = MAX_PAGES * PENDING_BATCH + 1  # more than one pass reads


def _stray_receipts(session, count: int, *, seconds_ago: float) -> None:  # type: ignore[no-untyped-def]
    """`count` stored receipts naming ids no part has, `seconds_ago` old."""
    received = utcnow() - timedelta(seconds=seconds_ago)
    bulk_insert(session, InboundReceipt.__table__, [
        {"channel": "sms", "provider_message_id": f"stray-{n}", "status": "delivered", "raw_status": "DELIVRD",
         "received_at": received} for n in range(count)])


def _sent_notification(session) -> Notification:  # type: ignore[no-untyped-def]
    notification = add_notification(session, add_account(session, "A1"), state="sent")
    notification.parts = 1
    session.add(MessagePart(notification_id=notification.id, part_no=1, channel="sms", provider_message_id="ours-1"))
    session.flush()
    return notification


def _pass(session) -> int:  # type: ignore[no-untyped-def]
    """An applier's pass (as ReceiptApplier and maintenance call it)."""
    return apply_pending_receipts(session, destination_match=False, received_before=utcnow())


def test_a_backlog_of_stray_receipts_does_not_hide_the_receipts_behind_it(database_url: str) -> None:
    with session_scope(database_url) as session:
        _stray_receipts(session, BACKLOG, seconds_ago=60)
        notification = _sent_notification(session)
        ours = record_receipt(session, Receipt(channel="sms", provider_message_id="ours-1", status="delivered",
                                               raw_status="DELIVRD"))
        ours.received_at = utcnow() - timedelta(seconds=30)  # behind the backlog in every order
    with session_scope(database_url) as session:
        assert _pass(session) == 0  # the first pass reads MAX_PAGES pages of strays
    with session_scope(database_url) as session:
        assert _pass(session) == 1  # the strays it read wait now: the next pass gets to ours
        assert session.get(Notification, notification.id).state == "delivered"


def _receipt_before_its_record(session, message_id: str, *, seconds_ago: float):  # type: ignore[no-untyped-def]
    """A `sent` notification whose part is not recorded yet, and the receipt that beat it."""
    notification = add_notification(session, add_account(session, "A1"), state="sent")
    notification.parts = 1
    receipt = record_receipt(session, Receipt(channel="sms", provider_message_id=message_id, status="delivered",
                                              raw_status="DELIVRD"))
    receipt.received_at = utcnow() - timedelta(seconds=seconds_ago)
    return notification, receipt


def _record_part(session, notification: Notification, message_id: str) -> None:  # type: ignore[no-untyped-def]
    session.add(MessagePart(notification_id=notification.id, part_no=1, channel="sms", provider_message_id=message_id))


def test_a_receipt_tried_too_early_waits_half_its_age_then_is_applied(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification, receipt = _receipt_before_its_record(session, "late-1", seconds_ago=40)
    with session_scope(database_url) as session:
        assert _pass(session) == 0  # its send is not recorded yet
        retry_at = session.get(InboundReceipt, receipt.id).retry_at
        assert retry_at is not None and retry_at - utcnow() > timedelta(seconds=15)  # ~20 s: half of 40
        _record_part(session, notification, "late-1")
    with session_scope(database_url) as session:
        assert _pass(session) == 0  # recorded now, but not due yet: not read
        assert apply_pending_receipts(session, destination_match=False) == 1  # on demand: every pending one
        assert session.get(Notification, notification.id).state == "delivered"


def test_a_waiting_receipt_is_read_again_once_due(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification, receipt = _receipt_before_its_record(session, "late-2", seconds_ago=3)
    with session_scope(database_url) as session:
        assert _pass(session) == 0
        _record_part(session, notification, "late-2")
        session.execute(sa.update(InboundReceipt).where(InboundReceipt.id == receipt.id)
                        .values(retry_at=utcnow() - timedelta(seconds=1)))  # its time has come
    with session_scope(database_url) as session:
        assert _pass(session) == 1
        assert session.get(Notification, notification.id).state == "delivered"


def test_the_wait_stays_within_its_bounds(database_url: str) -> None:
    with session_scope(database_url) as session:
        _stray_receipts(session, 1, seconds_ago=0)
        _stray_receipts(session, 1, seconds_ago=20 * 3600)  # young enough to stay pending, old enough to hit the cap
    with session_scope(database_url) as session:
        before = utcnow()
        assert _pass(session) == 0
        waits = sorted((row.retry_at - before).total_seconds() for row in session.execute(
            sa.select(InboundReceipt.retry_at)).all())
    assert RETRY_MIN_SECONDS <= waits[0] < 1
    assert RETRY_MAX_SECONDS <= waits[1] < RETRY_MAX_SECONDS + 5


def test_the_receipt_applier_resolves_an_unknown_row_by_destination(database_url: str) -> None:
    """A receipt for a send that was never recorded (the sender died after writing it) settles the
    `unknown` row sent to that number. The applier thread makes that full try itself: a receipt it
    tried waits for its retry time, so leaving the destination to maintenance left it unresolved."""
    from notifier.dispatch.runtime import ReceiptApplier

    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="unknown")
        notification.parts = 1
        notification.claimed_at = utcnow() - timedelta(seconds=60)
        receipt = record_receipt(session, Receipt(channel="sms", provider_message_id="never-recorded",
                                                  status="delivered", raw_status="DELIVRD",
                                                  destination=notification.destination))
        receipt.received_at = utcnow() - timedelta(seconds=30)  # past the id grace
        receipt.retry_at = utcnow() - timedelta(seconds=1)  # tried before, due again
    applier = ReceiptApplier(database_url)
    applier.start()
    try:
        state = "unknown"
        for _ in range(200):  # up to ~20 s on a loaded machine; usually the first pass
            with session_scope(database_url) as session:
                state = session.get(Notification, notification.id).state
            if state != "unknown":
                break
            applier.wake()
            threading.Event().wait(0.1)
    finally:
        applier.stop()
    assert state == "delivered"
