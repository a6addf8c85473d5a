"""A receipt that beats the record of its send (a fast SMSC answers and reports before the sender
has recorded the batch) is applied by that record, in its transaction: no applier pass has to
read it again and again until the record commits (notifier/dispatch/receipt_batch.py,
`apply_receipts_that_came_first`)."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlmodel import select

from channels.base import OutgoingMessage, Receipt, SendResult
from notifier.db import get_engine, plan_each_execution, session_scope
from notifier.dispatch.receipt_batch import _statements
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


def _record(database_url: str, ids: list[int], message_ids: list[list[str]]) -> BatchReport:
    sends = [Send(nid, 0, "sms", 1, OutgoingMessage(notification_id=nid, destination="+84912345670", body="x"),
                  len(parts)) for nid, parts in zip(ids, message_ids)]
    outcomes = [SendResult(provider_message_ids=parts, parts=len(parts)) for parts in message_ids]
    report = BatchReport()
    with session_scope(database_url) as session:
        record_outcomes(session, sends, outcomes, max_attempts=6, route_down_ms=1000,
                        email_accepted_is_delivery=False, report=report)
    return report


def _receipts(database_url: str) -> dict[str, tuple[bool, str | None, int | None]]:
    with session_scope(database_url) as session:
        return {r.provider_message_id: (r.applied_at is not None, r.outcome, r.notification_id)
                for r in session.exec(select(InboundReceipt))}


def test_the_record_of_a_send_applies_the_receipts_that_beat_it(database_url: str) -> None:
    long_sms, short_sms, later = _sending(database_url, 3)
    # The receipts arrive first: the SMPP writer stores them pending, as no part is recorded yet.
    ReceiptStore(database_url).store([_receipt("m1"), _receipt("m2"), _receipt("m3", "undelivered", "UNDELIV")])
    assert {applied for applied, _, _ in _receipts(database_url).values()} == {False}

    _record(database_url, [long_sms, short_sms, later], [["m1", "m2"], ["m3"], ["m4"]])

    with session_scope(database_url) as session:
        states = {nid: session.get(Notification, nid).state for nid in (long_sms, short_sms, later)}
        moves = [(e.notification_id, e.from_state, e.to_state) for e in session.exec(
            select(DeliveryEvent).where(DeliveryEvent.to_state != DeliveryEvent.from_state).order_by(DeliveryEvent.id))]
        delivered_at = session.get(Notification, long_sms).delivered_at
    assert states == {long_sms: "delivered", short_sms: "undelivered", later: "sent"}  # m4's receipt is not in yet
    assert (long_sms, "sent", "delivered") in moves and (short_sms, "sent", "undelivered") in moves
    assert moves.index((long_sms, "sending", "sent")) < moves.index((long_sms, "sent", "delivered"))
    assert delivered_at is not None
    assert _receipts(database_url) == {"m1": (True, "applied", long_sms), "m2": (True, "applied", long_sms),
                                       "m3": (True, "applied", short_sms)}

    # One that comes after the record is applied as it is stored, as before.
    ReceiptStore(database_url).store([_receipt("m4")])
    with session_scope(database_url) as session:
        assert session.get(Notification, later).state == "delivered"
        assert apply_pending_receipts(session, received_before=utcnow()) == 0  # nothing left for an applier


def test_a_receipt_an_applier_holds_is_left_to_it_without_waiting(postgres_url: str) -> None:
    """Several processes: an applier that holds a receipt (FOR UPDATE SKIP LOCKED, in its own
    transaction) keeps it; the record neither waits for that applier nor applies the receipt twice."""
    [nid] = _sending(postgres_url, 1)
    ReceiptStore(postgres_url).store([_receipt("h1")])
    with get_engine(postgres_url).connect() as applier:
        held = applier.execute(sa.text("SELECT id FROM inbound_receipt WHERE provider_message_id = 'h1' "
                                       "FOR UPDATE SKIP LOCKED")).scalar_one()
        recording = threading.Thread(target=_record, args=(postgres_url, [nid], [["h1"]]))
        recording.start()
        recording.join(timeout=30)
        blocked = recording.is_alive()  # waiting for the applier's lock
        applier.rollback()
        recording.join()
    assert not blocked
    assert _receipts(postgres_url)["h1"] == (False, None, None)
    with session_scope(postgres_url) as session:
        assert session.get(Notification, nid).state == "sent"
        assert apply_pending_receipts(session, received_before=utcnow()) == 1  # the applier's next pass
    with session_scope(postgres_url) as session:
        assert session.get(Notification, nid).state == "delivered"
        assert session.get(InboundReceipt, held).outcome == "applied"


def test_the_lookup_reads_only_pending_receipts_by_their_id(database_url: str) -> None:
    """Among many applied receipts, the record finds the pending ones through the partial index
    `ix_inbound_receipt_pending_message`, not by reading the table."""
    with session_scope(database_url) as session:
        connection = session.connection()
        postgres = connection.dialect.name == "postgresql"
        numbers = ("SELECT g AS x FROM generate_series(1, 20000) g" if postgres else
                   "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000) SELECT x FROM n")
        connection.execute(sa.text(
            "INSERT INTO inbound_receipt (channel, provider_message_id, status, raw_status, received_at, applied_at) "
            f"SELECT 'sms', 'old-' || x, 'delivered', 'DELIVRD', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM ({numbers}) s"))
        connection.execute(sa.text("ANALYZE"))
        statement = str(_statements(connection.dialect.name).pending_naming.compile(dialect=connection.dialect))
        if postgres:
            plan_each_execution(session)  # as the record does: planned for the ids at hand
            literal = statement.replace("%(ids)s", "ARRAY['m1', 'm2']").replace("%(channel)s", "'sms'")
            plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {literal}").scalars())
        else:
            plan = "\n".join(row[3] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", ('["m1", "m2"]', "sms")))
    assert "ix_inbound_receipt_pending_message" in plan, plan
