"""Times people read are Asia/Ho_Chi_Minh; JSON keeps ISO 8601 UTC with its offset; an SMSC's
receipt dates are read in its configured zone and a delivery never shows before its send."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlmodel import select
from rich.console import Console
from typer.testing import CliRunner

from channels.base import Receipt
from channels.smpp_receipts import parse_receipt
from cli import _table, app
from notifier.db import session_scope
from notifier.dispatch.loops import run_campaign
from notifier.models import Campaign, Feed, FeedItem, InboundReceipt, MessagePart, Notification
from notifier.peers.smsc import SmscPeer
from notifier.dispatch.receipts import apply_receipt, record_receipt
from notifier.settings import reset_settings
from notifier.timefmt import iso_utc, local_display
from tests.conftest import make_settings
from tests.factories import add_account, add_notification

runner = CliRunner()

UTC_0124 = datetime(2026, 11, 18, 1, 24, tzinfo=UTC)  # 08:24 in Hà Nội
LOCAL_0824 = "18/11/2026 08:24"


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _feed_with_item(database_url: str) -> int:
    with session_scope(database_url) as session:
        feed = Feed(format="shadowserver", filename="f.csv", file_sha256="0" * 64, imported_at=UTC_0124)
        session.add(feed)
        session.flush()
        session.add(FeedItem(feed_id=feed.id, line=2, status="unmatched", identifier_kind="ip",
                             identifier="14.160.1.2", seen_at=UTC_0124 - timedelta(hours=2)))
        return feed.id or 0


# --- the helper and the table rule ---------------------------------------------------------------


def test_local_display_reads_datetimes_and_iso_strings_in_the_given_zone() -> None:
    assert local_display(UTC_0124) == LOCAL_0824
    assert local_display("2026-11-18T01:24:00+00:00") == LOCAL_0824
    assert local_display("2026-11-18T08:24:00+07:00") == LOCAL_0824
    assert local_display("2026-11-18T01:24:00") == LOCAL_0824  # no offset: stored times are UTC
    assert local_display(datetime(2026, 11, 17, 18, 30, tzinfo=UTC)) == "18/11/2026 01:30"  # next local day
    assert local_display(UTC_0124, "UTC") == "18/11/2026 01:24"
    assert local_display(None) == "" and local_display("") == ""
    assert iso_utc(UTC_0124) == "2026-11-18T01:24:00+00:00"
    assert iso_utc("2026-11-18T08:24:00+07:00") == "2026-11-18T01:24:00+00:00"


def test_the_table_localises_every_time_column_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    reset_settings()
    rows = [{"id": 1, "threat": "[mirai]", "at": UTC_0124, "created_at": UTC_0124, "seen_at": "2026-11-18T01:24:00+00:00",
             "first_seen": UTC_0124, "last_seen": None, "note": "2026-11-18T01:24:00+00:00",
             "updated_at": "not a time"}]
    table = _table("t", rows)
    cells = {column.header: str(list(column.cells)[0]) for column in table.columns}
    assert cells["at"] == cells["created_at"] == cells["seen_at"] == cells["first_seen"] == LOCAL_0824
    assert cells["last_seen"] == ""
    rendered = Console(width=200, record=True, file=io.StringIO())
    rendered.print(table)
    assert "[mirai]" in rendered.export_text()  # cells are text, not rich markup
    assert cells["note"] == "2026-11-18T01:24:00+00:00"  # not a time column: left as it is
    assert cells["updated_at"] == "not a time"
    monkeypatch.setenv("NOTIFIER_TIMEZONE", "UTC")  # the `timezone` setting decides
    reset_settings()
    cells = {column.header: str(list(column.cells)[0]) for column in _table("t", rows).columns}
    assert cells["created_at"] == "18/11/2026 01:24"
    reset_settings()


# --- commands ------------------------------------------------------------------------------------


def test_feed_show_prints_local_times_and_json_keeps_utc_offsets(cli_db: str) -> None:
    feed_id = _feed_with_item(cli_db)
    table = _run("feed", "show", str(feed_id), "--items")
    assert LOCAL_0824 in table  # imported_at
    assert "18/11/2026 06:24" in table  # the item's seen_at: 23:24 UTC the day before
    assert "01:24" not in table and "2026-11-18T" not in table
    summary = json.loads(_run("feed", "show", str(feed_id), "--json"))
    assert summary["imported_at"] == "2026-11-18T01:24:00+00:00"
    items = json.loads(_run("feed", "show", str(feed_id), "--items", "--json"))
    assert items[0]["seen_at"] == "2026-11-17T23:24:00+00:00"


def test_feed_show_prints_a_day_only_time_as_that_day(cli_db: str) -> None:
    """A leak list that gave `2026-11-02` is stored as that local midnight: no 00:00 on screen."""
    feed_id = _feed_with_item(cli_db)
    with session_scope(cli_db) as session:
        session.add(FeedItem(feed_id=feed_id, line=3, status="unmatched", identifier_kind="email",
                             identifier="a@example.vn", seen_at=datetime(2026, 11, 1, 17, 0, tzinfo=UTC),
                             seen_precision="date"))
    table = _run("feed", "show", str(feed_id), "--items")
    assert "02/11/2026" in table and "02/11/2026 00:00" not in table
    items = json.loads(_run("feed", "show", str(feed_id), "--items", "--json"))
    assert (items[1]["seen_at"], items[1]["seen_precision"]) == ("2026-11-01T17:00:00+00:00", "date")


def test_campaign_status_prints_local_times(cli_db: str) -> None:
    with session_scope(cli_db) as session:
        campaign = Campaign(name="đợt 1", template="infected_device", channels="sms", state="done",
                            created_at=UTC_0124, started_at=UTC_0124 + timedelta(minutes=1),
                            finished_at=UTC_0124 + timedelta(minutes=30))
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    text = _run("campaign", "status", str(campaign_id))
    assert "created 18/11/2026 08:24, started 18/11/2026 08:25, finished 18/11/2026 08:54" in text
    document = json.loads(_run("campaign", "status", str(campaign_id), "--json"))
    assert document["created_at"] == "2026-11-18T01:24:00+00:00"
    assert document["finished_at"] == "2026-11-18T01:54:00+00:00"


def test_history_prints_local_times_and_json_keeps_utc_offsets(cli_db: str) -> None:
    with session_scope(cli_db) as session:
        notification = add_notification(session, add_account(session, "HN-1"), state="delivered")
        notification.created_at = UTC_0124 - timedelta(minutes=10)
        notification.sent_at = UTC_0124
        notification.delivered_at = UTC_0124 + timedelta(minutes=1)
    table = _run("history", "--account", "HN-1", "--actor", "care-1")
    for local in ("18/11/2026 08:14", LOCAL_0824, "18/11/2026 08:25"):
        assert local in table
    assert "01:24" not in table
    rows = json.loads(_run("history", "--account", "HN-1", "--json", "--actor", "care-1"))
    assert (rows[0]["created_at"], rows[0]["sent_at"], rows[0]["delivered_at"]) == (
        "2026-11-18T01:14:00+00:00", "2026-11-18T01:24:00+00:00", "2026-11-18T01:25:00+00:00")
    assert all(event["at"].endswith("+00:00") for event in rows[0]["events"])


# --- SMSC receipt dates --------------------------------------------------------------------------


def _receipt_pdu(text: str) -> SimpleNamespace:
    return SimpleNamespace(short_message=text.encode("ascii"), receipted_message_id=None, message_state=None,
                           source_addr=b"84912345678")


@pytest.mark.parametrize("zone, done, expected", [
    ("Asia/Ho_Chi_Minh", "2611180824", datetime(2026, 11, 18, 1, 24, tzinfo=UTC)),
    ("Asia/Ho_Chi_Minh", "261118082459", datetime(2026, 11, 18, 1, 24, 59, tzinfo=UTC)),
    ("Asia/Ho_Chi_Minh", "2611180324", datetime(2026, 11, 17, 20, 24, tzinfo=UTC)),  # the day before in UTC
    ("UTC", "2611180824", datetime(2026, 11, 18, 8, 24, tzinfo=UTC)),
    ("Asia/Ho_Chi_Minh", "26111808", None),  # neither 10 nor 12 digits: no time rather than a wrong one
])
def test_receipt_dates_are_read_in_the_smscs_zone(zone: str, done: str, expected: datetime | None) -> None:
    receipt = parse_receipt(_receipt_pdu(f"id:1a2b sub:001 dlvrd:001 submit date:{done} done date:{done} "
                                         "stat:DELIVRD err:000 text:"), zone=zone)
    assert receipt is not None and receipt.done_at == expected


def _sent_notification(session, sent_at: datetime) -> Notification:  # type: ignore[no-untyped-def]
    notification = add_notification(session, add_account(session, "HN-7"), state="sent")
    notification.sent_at, notification.parts = sent_at, 1
    session.add(MessagePart(notification_id=notification.id or 0, part_no=1, channel="sms",
                            provider_message_id="1a2b"))
    session.flush()
    return notification


@pytest.mark.parametrize("done_offset, shown", [
    (timedelta(seconds=-40), "received"),  # minute resolution: 08:24:00 for a send at 08:24:40
    (timedelta(hours=-7), "received"),     # an SMSC zone set wrong: never before the send either
    (timedelta(seconds=30), "done"),       # after the send: the provider's own time
])
def test_a_delivery_never_shows_before_its_send(database_url: str, done_offset: timedelta, shown: str) -> None:
    sent_at = UTC_0124 + timedelta(seconds=40)
    received_at = sent_at + timedelta(seconds=45)
    with session_scope(database_url) as session:
        notification = _sent_notification(session, sent_at)
        row = record_receipt(session, Receipt(channel="sms", provider_message_id="1a2b", status="delivered",
                                              raw_status="DELIVRD", done_at=sent_at + done_offset))
        row.received_at = received_at
        assert apply_receipt(session, row, allow_destination_match=False)
        notification_id = notification.id
    with session_scope(database_url) as session:
        delivered = session.get(Notification, notification_id)
        stored = session.exec(select(InboundReceipt)).one()
        assert delivered is not None and delivered.state == "delivered"
        assert delivered.delivered_at == (received_at if shown == "received" else sent_at + done_offset)
        assert delivered.delivered_at >= delivered.sent_at
        assert stored.done_at == sent_at + done_offset  # the provider's time stays on record
        assert stored.received_at == received_at


def test_loopback_smsc_receipts_land_in_local_time_and_after_the_send(database_url: str, tmp_path: Path,
                                                                     smsc: SmscPeer) -> None:
    """The peer writes its Hà Nội wall clock to the minute, as a Vietnamese SMSC does."""
    settings = make_settings(database_url, smsc=smsc)
    with session_scope(database_url) as session:
        notification = add_notification(session, add_account(session, "HN-9"), state="queued")
        campaign_id, notification_id = notification.campaign_id, notification.id
    status = run_campaign(settings, campaign_id)
    assert status["by_channel"]["sms"] == {"delivered": 1}
    with session_scope(database_url) as session:
        sent = session.get(Notification, notification_id)
        receipts = session.exec(select(InboundReceipt)).all()
        assert sent is not None and sent.delivered_at is not None and sent.sent_at is not None
        assert sent.delivered_at >= sent.sent_at
        assert receipts and all(r.done_at is not None for r in receipts)
        # Read as the SMSC's local time, its done date is within its minute of our clock; read as
        # UTC it would be seven hours off.
        assert all(abs(r.done_at - r.received_at) < timedelta(hours=1) for r in receipts)  # type: ignore[operator]
