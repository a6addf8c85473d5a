"""The outbox rules: compare-and-set transitions, receipts per part, crash recovery."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from sqlmodel import select

from channels.base import Receipt
from notifier.db import session_scope
from notifier.models import DeliveryEvent, InboundReceipt, MessagePart, Notification, utcnow
from notifier.dispatch import outbox, receipt_batch
from notifier.dispatch.outbox import among, bulk_insert, bulk_update, transition
from notifier.dispatch.receipts import (
    ReceiptStore, apply_pending_receipts, apply_receipt, record_receipt, record_session_alive,
)
from notifier.dispatch.recovery import mark_orphans_unknown, requeue_stale_unknown
from tests.factories import add_account, add_notification


def test_only_one_of_many_concurrent_claims_wins(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification_id = add_notification(session, add_account(session, "A1")).id
    winners: list[bool] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        with session_scope(database_url) as session:
            winners.append(transition(session, notification_id, expected="queued", to_state="sending",
                                      source="test"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners.count(True) == 1
    with session_scope(database_url) as session:
        events = session.exec(select(DeliveryEvent).where(DeliveryEvent.notification_id == notification_id)).all()
        assert [(e.from_state, e.to_state) for e in events] == [("queued", "sending")]


def test_transition_refuses_an_unexpected_state(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="sent")
        assert not transition(session, notification.id, expected="queued", to_state="sending", source="test")
        assert session.get(Notification, notification.id).state == "sent"


def test_bulk_writes_store_times_exactly_as_the_orm_does(database_url: str) -> None:
    """The bulk paths hand SQLite plain tuples (`bulk_insert`, `bulk_update`): a time they write must
    be the text SQLAlchemy writes, or comparisons between the two (a receipt's `received_at` against a
    row's `claimed_at`) would be wrong by the format, not the clock."""
    moment = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)  # no microseconds: the form most easily lost
    local = moment.astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"))
        session.add(DeliveryEvent(notification_id=notification.id, at=moment, from_state="a", to_state="b",
                                  source="orm"))
        bulk_insert(session, DeliveryEvent.__table__, [{"notification_id": notification.id, "at": local,
                                                        "from_state": "a", "to_state": "b", "source": "bulk"}])
        bulk_update(session, Notification.__table__, [{"b_id": notification.id, "b_at": local}],
                    match={"id": "b_id"}, assign={"updated_at": "b_at"})
    with session_scope(database_url) as session:
        stored = session.execute(sa.text("SELECT source, CAST(at AS TEXT) FROM delivery_event ORDER BY id")).all()
        assert stored[0][1] == stored[1][1]
        assert sorted(session.exec(select(DeliveryEvent.source).where(DeliveryEvent.at == moment))) == ["bulk", "orm"]
        assert session.exec(select(Notification.id).where(Notification.updated_at == moment)).all() == [notification.id]
        with pytest.raises((ValueError, sa.exc.StatementError), match="naive datetime"):
            bulk_insert(session, DeliveryEvent.__table__, [{"notification_id": notification.id,
                                                            "at": moment.replace(tzinfo=None), "from_state": "a",
                                                            "to_state": "b", "source": "naive"}])


def test_among_finds_exactly_the_values_given_in_one_statement_text(database_url: str, sqlite_lists: str) -> None:
    """`among` is the IN of every batch statement: ids and any text (quotes, backslashes, accents,
    a blank) find exactly their rows; an empty list finds none; values that are neither
    ids nor text still work. Its SQL is the same for 2 values and for 300, so the driver prepares
    it once."""
    awkward = ["it's", 'say "hi"', "back\\slash", "Quý khách", " ", "12", "\u2013", "a,b", "[1]"]
    with session_scope(database_url) as session:
        account = add_account(session, "A1")
        rows = {value: add_notification(session, account, destination=value).id for value in awkward + ["other"]}
    column = Notification.__table__.c.destination
    with session_scope(database_url) as session:
        def found(values: list) -> set[int]:  # type: ignore[type-arg]
            return set(session.execute(sa.select(Notification.__table__.c.id).where(among(session, column, values))).scalars())

        assert found(awkward) == {rows[value] for value in awkward}
        assert found(["12"]) == {rows["12"]} and found([]) == set()
        ids = Notification.__table__.c.id
        assert set(session.execute(sa.select(ids).where(among(session, ids, [rows["it's"], 2 ** 31 - 1]))).scalars()) == {rows["it's"]}
        assert set(session.execute(sa.select(ids).where(among(session, ids, [float(rows["12"])]))).scalars()) == {rows["12"]}
        sent: list[str] = []

        def spy(_connection, _cursor, statement, *_rest) -> None:  # type: ignore[no-untyped-def]
            sent.append(statement)

        engine = session.get_bind()
        sa.event.listen(engine, "before_cursor_execute", spy)
        try:
            for count in (2, 300):
                session.execute(sa.select(ids).where(among(session, ids, list(range(count))))).all()
        finally:
            sa.event.remove(engine, "before_cursor_execute", spy)
        assert len(sent) == 2 and (sent[0] == sent[1]) == (sqlite_lists == "json_each" or "postgresql" in database_url)


def _sent_with_parts(session, parts: int) -> Notification:  # type: ignore[no-untyped-def]
    notification = add_notification(session, add_account(session, "A1"), state="sent")
    notification.parts = parts
    for number in range(1, parts + 1):
        session.add(MessagePart(notification_id=notification.id, part_no=number, channel="sms",
                                provider_message_id=f"a{number}"))
    session.flush()
    return notification


def _receipt(message_id: str, status: str = "delivered", raw: str = "DELIVRD", **extra) -> Receipt:  # type: ignore[no-untyped-def]
    return Receipt(channel="sms", provider_message_id=message_id, status=status, raw_status=raw, **extra)


def _stored_receipt(session, message_id: str, *, seconds_ago: float) -> InboundReceipt:  # type: ignore[no-untyped-def]
    """A delivery receipt for the factory's number, as if it had come `seconds_ago` (past the id grace)."""
    row = record_receipt(session, _receipt(message_id, destination="+84912345678"))
    row.received_at = utcnow() - timedelta(seconds=seconds_ago)
    return row


def test_a_long_sms_is_delivered_only_when_every_part_is(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification = _sent_with_parts(session, 3)
        for message_id in ("a1", "a2"):
            assert apply_receipt(session, record_receipt(session, _receipt(message_id)), allow_destination_match=False)
        assert session.get(Notification, notification.id).state == "sent"
        apply_receipt(session, record_receipt(session, _receipt("a3")), allow_destination_match=False)
        assert session.get(Notification, notification.id).state == "delivered"


def test_one_failed_part_makes_the_message_undelivered(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification = _sent_with_parts(session, 2)
        apply_receipt(session, record_receipt(session, _receipt("a1")), allow_destination_match=False)
        apply_receipt(session, record_receipt(session, _receipt("a2", "undelivered", "UNDELIV")),
                      allow_destination_match=False)
        stored = session.get(Notification, notification.id)
        assert stored.state == "undelivered"
        assert "UNDELIV" in (stored.reason or "")


def test_a_receipt_that_races_ahead_of_the_send_record_is_kept_and_applied_later(database_url: str) -> None:
    with session_scope(database_url) as session:
        early = record_receipt(session, _receipt("2748", alternative_ids=("abc",)))  # 2748 == 0xabc
        assert not apply_receipt(session, early, allow_destination_match=False)
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="sent")
        notification.parts = 1
        session.add(MessagePart(notification_id=notification.id, part_no=1, channel="sms",
                                provider_message_id="abc"))
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 1
        assert session.get(Notification, notification.id).state == "delivered"
        assert session.get(InboundReceipt, early.id).outcome == "applied"


@pytest.fixture(params=["json_each", "in_list"])
def sqlite_lists(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways `among` hands SQLite a batch: one JSON array, or (an SQLite built without
    `json_each`) an IN list; the statements built once are built again for each."""
    if request.param == "in_list":
        monkeypatch.setattr(outbox, "sqlite_has_json_each", lambda: False)
    receipt_batch._statements.cache_clear()
    yield request.param
    receipt_batch._statements.cache_clear()


def test_the_channels_store_applies_receipts_of_recorded_parts_and_keeps_the_rest_pending(
        database_url: str, sqlite_lists: str) -> None:
    with session_scope(database_url) as session:
        notification = _sent_with_parts(session, 2)
    ReceiptStore(database_url).store([_receipt("a1"), _receipt("zz9"), _receipt("a2")])
    with session_scope(database_url) as session:
        stored = {row.provider_message_id: row for row in session.exec(select(InboundReceipt)).all()}
        assert session.get(Notification, notification.id).state == "delivered"
        assert [(stored[k].outcome, stored[k].notification_id) for k in ("a1", "a2")] == [("applied", notification.id)] * 2
        assert stored["a1"].applied_at is not None
        assert (stored["zz9"].outcome, stored["zz9"].applied_at) == (None, None)  # its send is not recorded yet
        events = session.exec(select(DeliveryEvent).where(DeliveryEvent.notification_id == notification.id,
                                                          DeliveryEvent.source == "sms-receipt")).all()
        assert [event.to_state for event in events] == ["sent", "delivered"]
    with session_scope(database_url) as session:
        other = add_notification(session, add_account(session, "A2", msisdn="+84912000999"), state="sent")
        other.parts = 1
        session.add(MessagePart(notification_id=other.id, part_no=1, channel="sms", provider_message_id="zz9"))
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 1
        assert session.get(Notification, other.id).state == "delivered"


def test_a_dead_senders_row_becomes_unknown_and_a_receipt_resolves_it_by_destination(database_url: str) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="sending")
        notification.claimed_by = f"{os.uname().nodename}:{dead.pid}"
        notification.claimed_at = utcnow() - timedelta(seconds=120)
        notification.parts = 1
    with session_scope(database_url) as session:
        assert mark_orphans_unknown(session, lease_seconds=600) == 1
        assert session.get(Notification, notification.id).state == "unknown"
    with session_scope(database_url) as session:
        row = _stored_receipt(session, "ff01", seconds_ago=60)
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 1
        stored = session.get(Notification, notification.id)
        assert stored.state == "delivered"
        assert session.get(InboundReceipt, row.id).outcome == "resolved_unknown"


def test_a_long_sms_stays_unknown_until_a_receipt_accounts_for_every_part(database_url: str) -> None:
    """An SMSC that died between the parts took only the first ones: one receipt must not make the
    row `sent` (it would wait for ever for the others); the row goes again whole, its old parts
    dropped so the new attempt's parts are numbered afresh."""
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="unknown")
        notification.parts = 3
        notification.claimed_at = utcnow() - timedelta(seconds=200)
        notification.updated_at = utcnow() - timedelta(seconds=120)
        record_session_alive(session, owner="test", system_id="t", bound_at=utcnow())
    with session_scope(database_url) as session:
        for provider_id in ("ee01", "ee02"):
            _stored_receipt(session, provider_id, seconds_ago=60)
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 2
        stored = session.get(Notification, notification.id)
        assert stored.state == "unknown"  # two of three parts proved, the third never taken
        assert len(session.exec(select(MessagePart).where(MessagePart.notification_id == notification.id)).all()) == 2
    with session_scope(database_url) as session:
        assert requeue_stale_unknown(session, after_seconds=60) == []  # the receipts just restarted its wait
        session.get(Notification, notification.id).updated_at = utcnow() - timedelta(seconds=120)
    with session_scope(database_url) as session:
        assert requeue_stale_unknown(session, after_seconds=60) == [notification.id]
        assert session.get(Notification, notification.id).state == "queued"
        assert session.exec(select(MessagePart).where(MessagePart.notification_id == notification.id)).all() == []


def test_the_receipt_of_a_long_sms_last_part_makes_it_sent(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="unknown")
        notification.parts = 2
        notification.claimed_at = utcnow() - timedelta(seconds=200)
    with session_scope(database_url) as session:
        for provider_id in ("ef01", "ef02"):
            _stored_receipt(session, provider_id, seconds_ago=60)
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 2
        assert session.get(Notification, notification.id).state == "delivered"
        moves = [(e.from_state, e.to_state) for e in session.exec(
            select(DeliveryEvent).where(DeliveryEvent.notification_id == notification.id).order_by(DeliveryEvent.id))]
        assert ("unknown", "sent") in moves and ("sent", "delivered") in moves


def test_a_receipt_older_than_the_rows_claim_is_for_an_earlier_attempt(database_url: str) -> None:
    """The first parts of a long SMS that a throttling SMSC cut short are not recorded (the whole
    message goes again): their receipts must not settle the new attempt if it becomes unknown."""
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="unknown")
        notification.parts = 1
        notification.claimed_at = utcnow() - timedelta(seconds=30)
        old = _stored_receipt(session, "ab01", seconds_ago=60)
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 0
        assert session.get(Notification, notification.id).state == "unknown"
    with session_scope(database_url) as session:
        _stored_receipt(session, "ab02", seconds_ago=10)
    with session_scope(database_url) as session:
        assert apply_pending_receipts(session) == 1
        assert session.get(Notification, notification.id).state == "delivered"
        assert session.get(InboundReceipt, old.id).applied_at is None  # an orphan once a day old


def test_a_live_senders_row_is_left_alone(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="sending")
        notification.claimed_by = f"{os.uname().nodename}:{os.getpid()}"
        notification.claimed_at = utcnow()
    with session_scope(database_url) as session:
        assert mark_orphans_unknown(session, lease_seconds=600) == 0


def test_an_unknown_row_without_receipt_is_queued_again_after_the_delay(database_url: str) -> None:
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "A1"), state="unknown")
        notification.updated_at = utcnow() - timedelta(seconds=120)
        record_session_alive(session, owner="test", system_id="t", bound_at=utcnow())  # an SMSC was heard since
    with session_scope(database_url) as session:
        assert requeue_stale_unknown(session, after_seconds=600) == []
        assert requeue_stale_unknown(session, after_seconds=60) == [notification.id]
        assert session.get(Notification, notification.id).state == "queued"
