"""Twilio SMS (channel `sms` with `sms_provider = "twilio"`) against the loopback Twilio peer, with
`notifier web` receiving the peer's signed status callbacks: real HTTP both ways, real databases.

What matters: a delivered callback makes the notification delivered the way an SMPP receipt does;
each Twilio error lands where the dispatcher can act on it (never retry an invalid number, retry
a throttled one, fail nothing when Twilio is unreachable); an opted-out number is remembered.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlmodel import Session
from twilio.request_validator import RequestValidator

from channels.base import OutgoingMessage
from channels.twilio_sms import TwilioSmsChannel
from notifier.campaigns import choose_destination
from notifier.db import get_engine
from notifier.dispatch.ratelimit import is_throttling
from notifier.dispatch.runtime import build_channel
from notifier.errors import (
    ConfigError, OutcomeUnknownError, PermanentChannelError, RouteUnreachableError, TransientChannelError,
)
from notifier.models import Account, ContactPoint, DeliveryEvent, InboundReceipt, MessagePart
from notifier.peers import free_port
from notifier.peers.twilio import TwilioPeer
from notifier.settings import Settings, TwilioSettings
from tests import twilio_support
from tests.twilio_support import (
    ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, WebProcess, deliver, queued_notification, signed_post, twilio_settings,
    wait_for_state, wait_until,
)

peer, web_port, web = twilio_support.peer, twilio_support.web_port, twilio_support.web  # fixtures, found by name

SUBSCRIBER = "+84912345678"


@pytest.fixture
def settings(database_url: str, peer: TwilioPeer, web_port: int) -> Settings:
    return twilio_settings(database_url, api_base_url=peer.base_url, web_port=web_port)


def queued_sms(database_url: str, destination: str = SUBSCRIBER) -> int:
    return queued_notification(database_url, "sms", destination)


def message(destination: str = SUBSCRIBER) -> OutgoingMessage:
    return OutgoingMessage(notification_id=7, destination=destination, body="Cảnh báo: thiết bị nhiễm mã độc. CB-1-7",
                           reference="notification-7")


@pytest.fixture
def channel(peer: TwilioPeer) -> Iterator[TwilioSmsChannel]:
    adapter = TwilioSmsChannel(TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
                                              api_base_url=peer.base_url, public_base_url="http://127.0.0.1:9",
                                              timeout_seconds=5))
    try:
        yield adapter
    finally:
        adapter.close()


# -- success and receipts ----------------------------------------------------------------------


def test_sms_is_delivered_through_a_signed_status_callback(
        settings: Settings, peer: TwilioPeer, web: WebProcess, database_url: str) -> None:
    nid = queued_sms(database_url)

    assert deliver(settings, nid) == {nid: "sent"}

    row = wait_for_state(database_url, nid, "delivered")
    assert row.delivered_at is not None and row.sent_at is not None
    (created,) = peer.events("sms")
    assert created["to"] == SUBSCRIBER and created["from"] == FROM_NUMBER
    assert created["body"] == row.text and f"CB-{row.campaign_id}-{nid}" in created["body"]
    assert created["status_callback"] == f"{web.base_url}/twilio/messages/status"
    with Session(get_engine(database_url)) as session:
        part = session.execute(sa.select(MessagePart).where(MessagePart.notification_id == nid)).scalar_one()
        assert part.provider_message_id == created["sid"] and part.state == "delivered"
        receipts = session.execute(sa.select(InboundReceipt.raw_status, InboundReceipt.outcome)
                                   .order_by(InboundReceipt.id)).all()
        assert receipts == [("sent", "applied"), ("delivered", "applied")]
        sources = session.execute(sa.select(DeliveryEvent.source).where(DeliveryEvent.notification_id == nid)).scalars()
        assert "sms-receipt" in set(sources)
    assert [event["status"] for event in peer.events("callback")] == [204, 204]


def test_undelivered_callback_makes_the_notification_undelivered_with_twilios_code(
        settings: Settings, peer: TwilioPeer, web: WebProcess, database_url: str) -> None:
    nid = queued_sms(database_url)
    peer.set_scenario(SUBSCRIBER, sms="undelivered", error_code=30005)

    deliver(settings, nid)

    row = wait_for_state(database_url, nid, "undelivered")
    assert "30005" in (row.reason or "")


def test_messaging_service_is_used_instead_of_a_from_number(peer: TwilioPeer) -> None:
    adapter = TwilioSmsChannel(TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                              messaging_service_sid="MG" + "2a" * 16, api_base_url=peer.base_url))
    try:
        result = adapter.send(message())
    finally:
        adapter.close()
    (created,) = peer.events("sms")
    assert created["messaging_service_sid"] == "MG" + "2a" * 16 and not created["from"]
    assert result.provider_status == "accepted" and result.provider_message_ids == [created["sid"]]


# -- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "expected", "throttling"), [
    (400, 21211, PermanentChannelError, False),  # invalid 'To' number
    (400, 21614, PermanentChannelError, False),  # not a mobile number
    (400, 21408, PermanentChannelError, False),  # region not enabled
    (429, 20429, TransientChannelError, True),   # too many requests
    (503, 20503, TransientChannelError, False),  # Twilio unavailable
    (500, 20500, TransientChannelError, False),
])
def test_twilio_error_codes_are_mapped(channel: TwilioSmsChannel, peer: TwilioPeer, status: int, code: int,
                                       expected: type[Exception], throttling: bool) -> None:
    peer.set_scenario(SUBSCRIBER, error={"status": status, "code": code, "message": "refused by the test"})

    with pytest.raises(expected) as caught:
        channel.send(message())

    assert type(caught.value) is expected  # not a subclass such as RouteUnreachableError
    assert is_throttling(caught.value.provider_status) is throttling
    assert caught.value.provider_status == ("twilio:20429" if throttling else f"twilio:{code}")


def test_a_malformed_number_is_refused_by_twilio_for_good(channel: TwilioSmsChannel) -> None:
    with pytest.raises(PermanentChannelError, match="21211"):
        channel.send(message("0912345678"))  # not E.164: the peer answers as Twilio does


def test_opted_out_number_is_suppressed_with_reason_and_its_contact_point_is_marked(
        settings: Settings, peer: TwilioPeer, database_url: str) -> None:
    nid = queued_sms(database_url)
    peer.set_scenario(SUBSCRIBER, error={"status": 400, "code": 21610,
                                         "message": "Attempt to send to unsubscribed recipient"})

    assert deliver(settings, nid) == {nid: "suppressed"}

    row = wait_for_state(database_url, nid, "suppressed")
    assert row.reason == "opted out"
    with Session(get_engine(database_url)) as session:
        contact = session.execute(sa.select(ContactPoint).where(ContactPoint.value == SUBSCRIBER)).scalar_one()
        assert contact.opted_out is True
        account = session.get(Account, contact.account_id)
        assert account is not None
        assert choose_destination(account, "sms", [contact]) == (None, "no phone number on record")


def test_throttled_message_goes_back_to_the_queue(settings: Settings, peer: TwilioPeer, database_url: str) -> None:
    nid = queued_sms(database_url)
    peer.set_scenario(SUBSCRIBER, error={"status": 429, "code": 20429, "message": "Too Many Requests"})

    assert deliver(settings, nid) == {nid: "retry"}

    row = wait_for_state(database_url, nid, "queued")
    assert row.attempts == 1


def test_unreachable_twilio_is_a_route_outage_and_fails_nothing(database_url: str) -> None:
    nowhere = free_port()  # nothing listens there
    settings = twilio_settings(database_url, api_base_url=f"http://127.0.0.1:{nowhere}", web_port=free_port())
    nid = queued_sms(database_url)
    adapter = build_channel("sms", settings)
    try:
        with pytest.raises(RouteUnreachableError) as caught:
            adapter.check()
        assert caught.value.reason == "connection refused" and caught.value.address == f"127.0.0.1:{nowhere}"
        with pytest.raises(RouteUnreachableError):
            adapter.send(message())
    finally:
        adapter.close()

    assert deliver(settings, nid) == {nid: "waiting"}
    row = wait_for_state(database_url, nid, "queued")
    assert row.attempts == 0  # the outage is not the message's fault


def test_wrong_credentials_make_the_route_unusable_not_the_message(peer: TwilioPeer) -> None:
    adapter = TwilioSmsChannel(TwilioSettings(account_sid=ACCOUNT_SID, auth_token="not-the-token",
                                              from_number=FROM_NUMBER, api_base_url=peer.base_url))
    try:
        with pytest.raises(RouteUnreachableError, match="credentials"):
            adapter.check()
        with pytest.raises(RouteUnreachableError):
            adapter.send(message())
    finally:
        adapter.close()
    assert peer.events("sms") == []


def test_an_answer_lost_after_the_request_left_is_unknown(channel: TwilioSmsChannel, peer: TwilioPeer) -> None:
    peer.set_scenario(SUBSCRIBER, drop=True)

    with pytest.raises(OutcomeUnknownError):
        channel.send(message())


def test_check_proves_address_and_credentials(channel: TwilioSmsChannel) -> None:
    channel.check()  # GET /Accounts/{sid}.json with Basic auth


def test_send_many_keeps_the_order_and_each_outcome(channel: TwilioSmsChannel, peer: TwilioPeer) -> None:
    refused = "+84912000001"
    peer.set_scenario(refused, error={"status": 400, "code": 21211, "message": "invalid"})
    numbers = ["+84912000000", refused, "+84912000002", "+84912000003"]

    outcomes = channel.send_many([message(number) for number in numbers])

    assert [type(outcome).__name__ for outcome in outcomes] == [
        "SendResult", "PermanentChannelError", "SendResult", "SendResult"]
    sids = {event["to"]: event["sid"] for event in peer.events("sms")}
    assert [outcome.provider_message_ids for outcome in outcomes if not isinstance(outcome, Exception)] == [
        [sids[number]] for number in numbers if number != refused]


def test_twilio_needs_its_settings() -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_TWILIO__AUTH_TOKEN"):
        TwilioSmsChannel(TwilioSettings(account_sid=ACCOUNT_SID, from_number=FROM_NUMBER))
    with pytest.raises(ConfigError, match="FROM_NUMBER"):
        TwilioSmsChannel(TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN))


def test_environment_region_does_not_redirect_the_client(
        channel: TwilioSmsChannel, peer: TwilioPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    channel.api._local.__dict__.clear()  # a client built now reads the environment

    channel.send(message())

    assert len(peer.events("sms")) == 1


# -- forged callbacks --------------------------------------------------------------------------


def test_forged_callbacks_are_refused_and_change_nothing(
        settings: Settings, peer: TwilioPeer, web: WebProcess, database_url: str) -> None:
    nid = queued_sms(database_url)
    peer.set_scenario(SUBSCRIBER, sms="sent")  # Twilio never says more: the row stays `sent`
    deliver(settings, nid)
    wait_until("the peer's `sent` callback", lambda: peer.events("callback"))
    sid = peer.events("sms")[0]["sid"]
    url = f"{web.base_url}/twilio/messages/status"
    delivered = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
                 "MessageStatus": "delivered", "SmsStatus": "delivered", "To": SUBSCRIBER, "From": FROM_NUMBER}
    wait_until("the `sent` receipt applied", lambda: _receipts(database_url) == [("sent", "applied")])

    forgeries = {
        "no signature": signed_post(url, delivered, signature=""),
        "another token": signed_post(url, delivered, token="guessed-token"),
        "garbage": signed_post(url, delivered, signature="c2lnbmF0dXJl"),
        "another URL": signed_post(url, delivered, sign_url="https://attacker.example/twilio/messages/status"),
        "tampered status": _tampered(url, delivered),
    }

    assert {name: status for name, (status, _) in forgeries.items()} == {name: 403 for name in forgeries}
    assert _receipts(database_url) == [("sent", "applied")]
    assert wait_for_state(database_url, nid, "sent").delivered_at is None
    # The same callback, signed as Twilio signs it, is taken: the refusals were the signatures'.
    assert signed_post(url, delivered)[0] == 204
    wait_for_state(database_url, nid, "delivered")


def _tampered(url: str, params: dict[str, str]) -> tuple[int, str]:
    """A genuine signature of an `undelivered` callback, sent with `delivered` in the body."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {**params, "MessageStatus": "undelivered",
                                                                "SmsStatus": "undelivered"})
    return signed_post(url, params, signature=signature)


def _receipts(database_url: str) -> list[tuple[str, str | None]]:
    with Session(get_engine(database_url)) as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            sa.select(InboundReceipt.raw_status, InboundReceipt.outcome).order_by(InboundReceipt.id)).all()]
