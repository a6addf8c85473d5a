"""Subscribers' SMS replies (MO deliver_sm) over a real SMPP peer: decoded, joined, stored against the
subscriber, a stop word opts the number out, and care staff see them in `notifier history`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from channels.smpp import SmppChannel
from channels.smpp_replies import Reassembler, Reply, ReplyPart, decode_reply
from cli import app
from notifier.db import session_scope
from notifier.dispatch.delivery import reference_code
from notifier.models import ContactPoint, InboundMessage
from notifier.peers.smsc import SmscPeer
from notifier.replies import ReplyStore, is_stop_word, store_replies
from notifier.settings import SmppSettings
from tests.factories import add_account, add_notification
from tests.waiting import wait_until

SUBSCRIBER = "+84912345678"
SYSTEM_ID = "notifier-mo"
LONG_REPLY = ("Tôi đã nhận được cảnh báo về thiết bị nhiễm mã độc Mirai, xin hướng dẫn cách đổi mật khẩu "
              "modem và camera. Cảm ơn nhà mạng!")
runner = CliRunner()


class Replies:
    """An in-memory reply sink that can fail its first `failures` calls (a database outage)."""

    def __init__(self, failures: int = 0) -> None:
        self._lock = threading.Lock()
        self.stored: list[Reply] = []
        self.failures = failures
        self.refused = 0

    def store(self, replies: list[Reply]) -> None:
        with self._lock:
            if self.failures:
                self.failures -= 1
                self.refused += len(replies)
                raise RuntimeError("database is down")
            self.stored.extend(replies)

    def texts(self) -> list[str]:
        with self._lock:
            return [reply.text for reply in self.stored]


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[SmscPeer]:
    with SmscPeer(tmp_path / "smsc.jsonl") as started:
        yield started


@pytest.fixture
def open_channel() -> Iterator[Callable[..., SmppChannel]]:
    opened: list[SmppChannel] = []

    def open_(peer: SmscPeer, replies: object, **settings: object) -> SmppChannel:
        options: dict[str, object] = {"port": peer.port, "system_id": SYSTEM_ID, "connect_timeout_seconds": 2.0,
                                      "submit_timeout_seconds": 5.0, **settings}
        channel = SmppChannel(SmppSettings(**options), on_reply=replies)  # type: ignore[arg-type]
        opened.append(channel)
        channel.start()
        wait_until(lambda: channel.is_bound, "the bind")
        return channel

    yield open_
    for channel in opened:
        channel.close()


# --- decoding and joining, no network --------------------------------------------------------


def _part(text: bytes, *, coding: int = 8, concat: tuple[int, int, int] | None = None,
          source: str = "84912345678") -> ReplyPart:
    udh = b""
    if concat is not None:
        ref, total, seq = concat
        udh = bytes([6, 8, 4, ref >> 8, ref & 0xFF, total, seq]) if ref > 0xFF else bytes([5, 0, 3, ref, total, seq])
    return ReplyPart(source=source, destination="8088", data_coding=coding, short_message=udh + text,
                     concat=concat, received_at=datetime.now(UTC))


def test_parts_out_of_order_join_with_16_bit_and_8_bit_references() -> None:
    reassembler = Reassembler(timeout=60)
    text = "Hủy đăng ký nhận tin"
    data = text.encode("utf-16-be")
    assert reassembler.add(_part(data[20:], concat=(0x1234, 2, 2))) == []
    assert reassembler.add(_part(data[:20], concat=(0x12, 2, 2))) == []  # another reply (8-bit ref 0x12)
    [joined] = reassembler.add(_part(data[:20], concat=(0x1234, 2, 1)))
    assert (joined.text, joined.parts, joined.parts_expected, joined.source) == (text, 2, 2, "84912345678")
    assert len(reassembler) == 1


def test_an_incomplete_reply_is_given_up_after_the_timeout_and_memory_stays_bounded() -> None:
    now = [0.0]
    reassembler = Reassembler(timeout=10, capacity=2, clock=lambda: now[0])
    reassembler.add(_part("Xin chào".encode("utf-16-be"), concat=(1, 3, 1)))
    now[0] = 5.0
    reassembler.add(_part(b"ab", coding=3, concat=(2, 2, 1)))
    now[0] = 10.0
    [expired] = reassembler.expired()
    assert (expired.text, expired.parts, expired.parts_expected) == ("Xin chào", 1, 3)
    reassembler.add(_part(b"cd", concat=(3, 2, 1)))
    [pushed_out] = reassembler.add(_part(b"ef", concat=(4, 2, 1)))  # a third waiting reply: oldest goes
    assert (pushed_out.text, pushed_out.parts, pushed_out.parts_expected) == ("ab", 1, 2)
    assert len(reassembler) == 2


@pytest.mark.parametrize(("payload", "coding", "text"), [
    (bytes([0x53, 0x54, 0x4F, 0x50, 0x20, 0x1B, 0x65]), 0, "STOP €"),  # GSM-7 septets, an escape
    ("Từ chối".encode("utf-16-be"), 8, "Từ chối"),
    ("Café".encode("latin-1"), 3, "Café"),
    ("Hủy".encode("utf-16-be")[:-1], 8, "Hủ\N{REPLACEMENT CHARACTER}"),  # broken UCS-2 is kept, marked
])
def test_replies_decode_by_data_coding(payload: bytes, coding: int, text: str) -> None:
    assert decode_reply([_part(payload, coding=coding)]) == text


@pytest.mark.parametrize(("text", "stop"), [
    ("STOP", True), ("stop", True), (" Hủy ", True), ("HUỶ", True), ("huy.", True), ("Từ chối", True),
    ("TU  CHOI!", True), ("tu choi", True), ("không hủy", False), ("stop calling me", False), ("Hi", False),
])
def test_stop_words_ignore_case_diacritics_and_punctuation(text: str, stop: bool) -> None:
    assert is_stop_word(text) is stop


# --- over the wire -----------------------------------------------------------------------------


def test_a_two_part_ucs2_reply_arriving_out_of_order_is_joined_exactly(peer, open_channel) -> None:
    replies = Replies()
    open_channel(peer, replies)

    assert peer.send_reply("84912345678", LONG_REPLY, system_id=SYSTEM_ID, parts=2, order=[2, 1]) == 2
    assert peer.send_reply("84912345679", "Tu choi", system_id=SYSTEM_ID) == 1

    wait_until(lambda: len(replies.texts()) == 2, "two replies")
    by_source = {reply.source: reply for reply in replies.stored}
    long_reply = by_source["84912345678"]
    assert (long_reply.text, long_reply.parts, long_reply.parts_expected, long_reply.data_coding) == (
        LONG_REPLY, 2, 2, 8)
    assert long_reply.destination == "8088"
    assert (by_source["84912345679"].text, by_source["84912345679"].data_coding) == ("Tu choi", 0)


def test_a_reply_missing_a_part_is_stored_with_what_arrived(peer, open_channel) -> None:
    replies = Replies()
    open_channel(peer, replies, reply_timeout_seconds=0.5)

    peer.send_reply("84912345678", LONG_REPLY, system_id=SYSTEM_ID, parts=2, only=[1], reference=0x1234,
                    reference_16bit=True)

    wait_until(lambda: len(replies.texts()) == 1, "the incomplete reply")
    [reply] = replies.stored
    assert (reply.parts, reply.parts_expected) == (1, 2)
    assert LONG_REPLY.startswith(reply.text) and reply.text


def test_a_reply_the_store_refused_is_delivered_again_and_stored(tmp_path: Path, open_channel) -> None:
    replies = Replies(failures=1)
    with SmscPeer(tmp_path / "smsc.jsonl", receipt_retry=0.3) as peer:
        open_channel(peer, replies)
        peer.send_reply("84912345678", LONG_REPLY, system_id=SYSTEM_ID, parts=2)

        wait_until(lambda: len(replies.texts()) == 1, "the reply, stored on the second delivery")
    assert replies.refused == 1
    assert replies.texts() == [LONG_REPLY]


def test_replies_sent_while_nobody_was_bound_arrive_with_the_next_bind(peer, open_channel) -> None:
    peer.send_reply("84912345678", "HUY", system_id=SYSTEM_ID)  # the SMSC keeps it
    replies = Replies()
    open_channel(peer, replies)
    wait_until(lambda: replies.texts() == ["HUY"], "the kept reply")


# --- stored against the subscriber, shown to care staff -----------------------------------------


def test_a_stop_reply_is_stored_against_the_subscriber_and_opts_the_number_out(database_url, peer,
                                                                               open_channel) -> None:
    with session_scope(database_url) as session:
        account = add_account(session, "HN-000123")
        warning = add_notification(session, account, state="delivered")
        warning.text, warning.sent_at = "Canh bao: thiet bi nhiem ma doc Mirai", datetime.now(UTC)
        add_account(session, "HN-000999", msisdn="+84912000999")
        account_id, notification_id = account.id, warning.id
    open_channel(peer, ReplyStore(database_url))

    peer.send_reply("84912345678", "Hủy", system_id=SYSTEM_ID)
    peer.send_reply("84912000999", LONG_REPLY, system_id=SYSTEM_ID, parts=2, order=[2, 1])

    def stored() -> list[InboundMessage]:
        with session_scope(database_url) as session:
            rows = list(session.exec(select(InboundMessage).order_by(InboundMessage.source)))
            session.expunge_all()
            return rows

    wait_until(lambda: len(stored()) == 2, "two stored replies")
    other, stop = stored()
    assert (stop.source, stop.text, stop.opt_out, stop.account_id, stop.notification_id) == (
        SUBSCRIBER, "Hủy", True, account_id, notification_id)
    assert stop.received_at.tzinfo is not None
    assert (other.source, other.text, other.opt_out, other.parts, other.notification_id) == (
        "+84912000999", LONG_REPLY, False, 2, None)
    assert other.account_id is not None and other.account_id != account_id
    with session_scope(database_url) as session:
        flags = dict(session.exec(select(ContactPoint.value, ContactPoint.opted_out)).all())
    assert flags == {SUBSCRIBER: True, "+84912000999": False}


def test_history_shows_replies_with_the_notification_they_answer(cli_db) -> None:
    with session_scope(cli_db) as session:
        account = add_account(session, "HN-000123")
        warning = add_notification(session, account, state="delivered")
        warning.sent_at = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
        code = reference_code(warning.campaign_id, warning.id)
        session.flush()
        store_replies(session, [Reply(source="84912345678", destination="8088", text="Từ chối", data_coding=8,
                                      parts=1, parts_expected=1, received_at=datetime(2026, 12, 2, 2, 15, tzinfo=UTC))])

    for lookup in (["--msisdn", "0912 345 678"], ["--account", "hn-000123"], ["--reference", code]):
        result = runner.invoke(app, ["history", *lookup, "--json"])
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.stdout)
        [reply] = row["replies"]
        assert reply == {"received_at": "2026-12-02T02:15:00+00:00", "from": "+8491****678", "to": "8088", "text": "Từ chối",
                         "parts": 1, "parts_expected": 1, "opt_out": True, "notification_id": warning.id}

    text = runner.invoke(app, ["history", "--msisdn", "0912345678"])
    assert text.exit_code == 0, text.output
    assert "reply from +8491****678 · 02/12/2026 09:15 · opted out: Từ chối" in text.stdout
    assert "84912345678" not in text.stdout
