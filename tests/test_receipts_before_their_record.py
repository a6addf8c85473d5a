"""A receipt that beats the record of its send (a fast SMSC answers and reports before the sender
has recorded the batch) ends the same on both backends. On SQLite the record applies it, in its
own transaction, so no applier pass reads it again and again until the record commits; on
PostgreSQL the receipt applier does (notifier/dispatch/receipt_batch.py,
`apply_receipts_that_came_first`)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import select

from channels.base import OutgoingMessage, Receipt, SendResult
from notifier.db import session_scope
from notifier.dispatch import receipt_batch
from notifier.dispatch.receipt_batch import _pending_naming
from notifier.dispatch.receipts import ReceiptStore, apply_pending_receipts
from notifier.dispatch.recording import BatchReport, Send, record_outcomes
from notifier.models import DeliveryEvent, InboundReceipt, Notification, utcnow
from tests.factories import add_account, add_notification


def _sending(database_url: str, count: int) -> list[int]:
    with session_scope(database_url) as session:
        return [add_notification(session, add_account(session, f"R{n}"), state="sending",
                                 destination=f"+8491234567{n}").id for n in range(count)]


def _receipt(message_id: str, status: str = "delivered", raw: str = "DELIVRD") -> Receipt:
    return Receipt(channel="sms", provider_message_id=message_id, status=status, raw_status=raw,
                   error_code=None if status == "delivered" else "001")


def _record(database_url: str, ids: list[int], message_ids: list[list[str]]) -> None:
    sends = [Send(nid, 0, "sms", 1, OutgoingMessage(notification_id=nid, destination="+84912345670", body="x"),
                  len(parts)) for nid, parts in zip(ids, message_ids)]
    outcomes = [SendResult(provider_message_ids=parts, parts=len(parts)) for parts in message_ids]
    with session_scope(database_url) as session:
        record_outcomes(session, sends, outcomes, max_attempts=6, route_down_ms=1000,
                        email_accepted_is_delivery=False, report=BatchReport())


def _receipts(database_url: str) -> dict[str, tuple[bool, str | None, int | None]]:
    with session_scope(database_url) as session:
        return {r.provider_message_id: (r.applied_at is not None, r.outcome, r.notification_id)
                for r in session.exec(select(InboundReceipt))}


def _applier_pass(database_url: str) -> int:
    with session_scope(database_url) as session:
        return apply_pending_receipts(session, received_before=utcnow())


def test_receipts_that_beat_their_record_are_applied_by_it_on_sqlite(database_url: str) -> None:
    long_sms, short_sms, later = _sending(database_url, 3)
    # The receipts arrive first: the SMPP writer stores them pending, as no part is recorded yet.
    ReceiptStore(database_url).store([_receipt("m1"), _receipt("m2"), _receipt("m3", "undelivered", "UNDELIV")])
    assert {applied for applied, _, _ in _receipts(database_url).values()} == {False}

    _record(database_url, [long_sms, short_sms, later], [["m1", "m2"], ["m3"], ["m4"]])

    if database_url.startswith("sqlite"):
        assert _applier_pass(database_url) == 0  # the record applied them: nothing left for an applier
    else:
        assert {applied for applied, _, _ in _receipts(database_url).values()} == {False}
        assert _applier_pass(database_url) == 3
    with session_scope(database_url) as session:
        states = {nid: session.get(Notification, nid).state for nid in (long_sms, short_sms, later)}
        moves = [(e.notification_id, e.from_state, e.to_state) for e in session.exec(
            select(DeliveryEvent).where(DeliveryEvent.to_state != DeliveryEvent.from_state).order_by(DeliveryEvent.id))]
        delivered_at = session.get(Notification, long_sms).delivered_at
    assert states == {long_sms: "delivered", short_sms: "undelivered", later: "sent"}  # m4's receipt is not in yet
    assert moves.index((long_sms, "sending", "sent")) < moves.index((long_sms, "sent", "delivered"))
    assert (short_sms, "sent", "undelivered") in moves
    assert delivered_at is not None
    assert _receipts(database_url) == {"m1": (True, "applied", long_sms), "m2": (True, "applied", long_sms),
                                       "m3": (True, "applied", short_sms)}

    # One that comes after the record is applied as it is stored, on both.
    ReceiptStore(database_url).store([_receipt("m4")])
    with session_scope(database_url) as session:
        assert session.get(Notification, later).state == "delivered"


def test_the_lookup_reads_only_pending_receipts_by_their_id(sqlite_url: str) -> None:
    """Among many applied receipts, the record finds the pending ones through the partial index
    `ix_inbound_receipt_pending_message`, not by reading the table."""
    with session_scope(sqlite_url) as session:
        connection = session.connection()
        connection.execute(sa.text(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000) "
            "INSERT INTO inbound_receipt (channel, provider_message_id, status, raw_status, received_at, applied_at) "
            "SELECT 'sms', 'old-' || x, 'delivered', 'DELIVRD', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM n"))
        connection.execute(sa.text("ANALYZE"))
        statement = str(_pending_naming().compile(dialect=connection.dialect))
        plan = "\n".join(row[3] for row in connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}", ('["m1", "m2"]', "sms")))
    assert "ix_inbound_receipt_pending_message" in plan, plan


def test_a_receipt_that_fails_to_apply_never_costs_the_record_of_its_send(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever goes wrong applying the receipts (a bug, an odd row) the sends are recorded; the
    receipts stay pending, untouched, and the applier applies them once it can."""
    [nid] = _sending(sqlite_url, 1)
    ReceiptStore(sqlite_url).store([_receipt("f1")])

    def broken(*_args: object) -> None:
        raise RuntimeError("replay failed")

    monkeypatch.setattr(receipt_batch, "bulk_insert", broken)  # the events: parts and notification already updated
    _record(sqlite_url, [nid], [["f1"]])
    monkeypatch.undo()
    assert "left to the applier" in caplog.text
    with session_scope(sqlite_url) as session:
        assert session.get(Notification, nid).state == "sent"
    assert _receipts(sqlite_url) == {"f1": (False, None, None)}
    assert _applier_pass(sqlite_url) == 1
    with session_scope(sqlite_url) as session:
        assert session.get(Notification, nid).state == "delivered"
