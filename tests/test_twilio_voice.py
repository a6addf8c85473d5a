"""Warning calls (channel `voice`) through the loopback Twilio peer and `notifier web`: the peer starts
the call, fetches our TwiML, "speaks" it, follows the end-of-warning `<Redirect>`, presses keys at
the `<Gather>` and posts signed status callbacks — every request real HTTP, signed as Twilio signs.

Delivered means heard to the end of the warning: answered and hung up half-way is not delivered;
busy / no-answer / failed are receipts too. The TwiML parses back and speaks Vietnamese.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from channels.base import OutgoingMessage
from channels.twilio_voice import TwilioVoiceChannel
from notifier.campaigns import choose_destination, parse_channels
from notifier.db import get_engine, session_scope
from notifier.errors import ConfigError, PermanentChannelError
from notifier.models import ContactPoint, DeliveryEvent, InboundReceipt
from notifier.peers.twilio import TwilioPeer
from notifier.settings import Settings, TwilioSettings, VoiceSettings
from tests import twilio_support
from tests.factories import add_account
from tests.twilio_support import (
    ACCOUNT_SID, AUTH_TOKEN, CARE_NUMBER, FROM_NUMBER, WebProcess, deliver, queued_notification, signed_post,
    twilio_settings, wait_for_state, wait_until, web_process,
)

peer, web_port, web = twilio_support.peer, twilio_support.web_port, twilio_support.web  # fixtures, found by name

SUBSCRIBER = "+84987654321"
VOICE = "Google.vi-VN-Wavenet-A"


@pytest.fixture
def settings(sqlite_url: str, peer: TwilioPeer, web_port: int) -> Settings:
    return twilio_settings(sqlite_url, api_base_url=peer.base_url, web_port=web_port)


def queued_call(database_url: str, destination: str = SUBSCRIBER, *, language: str = "vi") -> int:
    return queued_notification(database_url, "voice", destination, language=language)


def said(peer: TwilioPeer) -> list[str]:
    return [event["text"] for event in peer.events("say")]


def receipts(database_url: str) -> list[tuple[str, str, str | None]]:
    with Session(get_engine(database_url)) as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            sa.select(InboundReceipt.raw_status, InboundReceipt.status, InboundReceipt.error_code)
            .order_by(InboundReceipt.id)).all()]


# -- outcomes ----------------------------------------------------------------------------------


def test_answered_call_heard_to_the_end_is_delivered(
        database_url: str, peer: TwilioPeer, web_port: int, tmp_path: Path) -> None:
    settings = twilio_settings(database_url, api_base_url=peer.base_url, web_port=web_port)
    with web_process(settings, web_port, tmp_path / "web.log"):
        nid = queued_call(database_url)
        assert deliver(settings, nid) == {nid: "sent"}

        row = wait_for_state(database_url, nid, "delivered")
        wait_until("the completed callback", lambda: any(r[0].startswith("completed") for r in receipts(database_url)))

    (started,) = peer.events("call")
    assert started["to"] == SUBSCRIBER and started["from"] == FROM_NUMBER
    assert started["url"] == f"http://127.0.0.1:{web_port}/twilio/voice/{nid}"
    assert {"answered", "completed"} <= set(started["events"])
    script = row.text or ""
    assert said(peer).count(script.strip()) == 2  # the warning, then said again before the menu
    statuses = [status for status, _, _ in receipts(database_url)]
    assert statuses[:4] == ["initiated", "ringing", "in-progress", "heard"] and statuses[4].startswith("completed")
    with Session(get_engine(database_url)) as session:
        details = session.execute(sa.select(DeliveryEvent.to_state, DeliveryEvent.provider_status)
                                  .where(DeliveryEvent.notification_id == nid, DeliveryEvent.source == "voice-receipt")
                                  .order_by(DeliveryEvent.id)).all()
    assert ("delivered", "heard") in details


@pytest.mark.parametrize(("outcome", "status", "error"), [
    ("busy", "undelivered", "486"),
    ("no-answer", "undelivered", "487"),
    ("failed", "failed", "500"),
    ("canceled", "undelivered", "487"),
])
def test_unanswered_calls_are_undelivered(settings: Settings, peer: TwilioPeer, web: WebProcess, sqlite_url: str,
                                          outcome: str, status: str, error: str) -> None:
    nid = queued_call(sqlite_url)
    peer.set_scenario(SUBSCRIBER, call=outcome)

    deliver(settings, nid)

    row = wait_for_state(sqlite_url, nid, "undelivered")
    assert outcome in (row.reason or "") and error in (row.reason or "")
    assert receipts(sqlite_url)[-1] == (outcome, status, error)
    assert peer.events("twiml") == []  # nobody answered: no TwiML was fetched


def test_a_callee_who_hangs_up_during_the_warning_is_not_delivered(
        settings: Settings, peer: TwilioPeer, web: WebProcess, sqlite_url: str) -> None:
    nid = queued_call(sqlite_url)
    peer.set_scenario(SUBSCRIBER, call="hangup")

    deliver(settings, nid)

    row = wait_for_state(sqlite_url, nid, "undelivered")
    assert "not-heard" in (row.reason or "")
    assert [event["url"].rsplit("/", 1)[-1] for event in peer.events("twiml")] == [str(nid)]  # never reached /heard


def test_keys_1_2_9_repeat_give_the_steps_and_connect_to_care(
        settings: Settings, peer: TwilioPeer, web: WebProcess, sqlite_url: str) -> None:
    nid = queued_call(sqlite_url)
    peer.set_scenario(SUBSCRIBER, keys="129")

    deliver(settings, nid)

    wait_until("the call to end", lambda: any(r[0].startswith("completed") for r in receipts(sqlite_url)))
    row = wait_for_state(sqlite_url, nid, "delivered")
    script = (row.text or "").strip()
    assert [event["digits"] for event in peer.events("key")] == ["1", "2", "9"]
    key_documents = [event for event in peer.events("twiml") if event["url"].endswith("/key")]
    assert [event["params"]["Digits"] for event in key_documents] == ["1", "2", "9"]
    assert all(event["status"] == 200 for event in peer.events("twiml"))
    texts = said(peer)
    # heard once, repeated before the menu, once more for key 1; key 2 says the template's own steps
    assert texts.count(script) == 3
    assert any(text.startswith("Sau đây là các bước") and "Bước một: " in text for text in texts)
    assert any("các bước Quý khách cần làm" in text for text in texts)
    assert [event["number"] for event in peer.events("dial")] == [CARE_NUMBER]
    assert any("chăm sóc khách hàng" in text and "giữ máy" in text for text in texts)
    assert [status for status, _, _ in receipts(sqlite_url) if status.startswith("key")] == ["key 1", "key 2", "key 9"]


def test_english_subscribers_hear_an_english_voice(
        settings: Settings, peer: TwilioPeer, web: WebProcess, sqlite_url: str) -> None:
    nid = queued_call(sqlite_url, language="en")

    deliver(settings, nid)

    wait_for_state(sqlite_url, nid, "delivered")
    assert {event["language"] for event in peer.events("say")} == {"en-US"}
    assert any("press 9" in text for text in said(peer))


# -- the TwiML itself, through real signed requests --------------------------------------------


def test_twiml_parses_back_and_speaks_vietnamese(
        settings: Settings, web: WebProcess, sqlite_url: str) -> None:
    nid = queued_call(sqlite_url)
    base = web.base_url
    params = {"AccountSid": ACCOUNT_SID, "CallSid": "CA" + "7" * 32, "CallStatus": "in-progress",
              "To": SUBSCRIBER, "From": FROM_NUMBER, "Direction": "outbound-api"}

    status, body = signed_post(f"{base}/twilio/voice/{nid}", params)
    assert status == 200
    first = ET.fromstring(body)
    assert first.tag == "Response" and [verb.tag for verb in first][-1] == "Redirect"
    assert first[-1].text == f"{base}/twilio/voice/{nid}/heard"
    says = first.findall("Say")
    assert says and all(say.get("language") == "vi-VN" and say.get("voice") == VOICE for say in says)
    assert "cảnh báo an toàn thông tin" in "".join(say.text or "" for say in says)

    status, body = signed_post(f"{base}/twilio/voice/{nid}/heard", params)
    assert status == 200
    second = ET.fromstring(body)
    gather = second.find("Gather")
    assert gather is not None and gather.get("numDigits") == "1"
    assert gather.get("action") == f"{base}/twilio/voice/{nid}/key"
    assert all(say.get("language") == "vi-VN" for say in second.iter("Say"))
    assert "phím 1" in (gather.findtext("Say") or "") and "phím 9" in (gather.findtext("Say") or "")

    status, body = signed_post(f"{base}/twilio/voice/{nid}/key", {**params, "Digits": "9"})
    dial = ET.fromstring(body).find("Dial")
    assert status == 200 and dial is not None and (dial.text or "").strip() == CARE_NUMBER

    status, body = signed_post(f"{base}/twilio/voice/{nid}/key", {**params, "Digits": "5"})
    again = ET.fromstring(body)
    assert status == 200 and again.find("Gather") is not None and again.find("Dial") is None


def test_a_forged_heard_marker_is_refused_and_delivers_nothing(
        settings: Settings, peer: TwilioPeer, web: WebProcess, sqlite_url: str) -> None:
    nid = queued_call(sqlite_url)
    peer.set_scenario(SUBSCRIBER, call="hangup")
    deliver(settings, nid)
    wait_for_state(sqlite_url, nid, "undelivered")
    sid = peer.events("call")[0]["sid"]
    before = receipts(sqlite_url)
    params = {"AccountSid": ACCOUNT_SID, "CallSid": sid, "CallStatus": "in-progress", "To": SUBSCRIBER}

    for forged in (signed_post(f"{web.base_url}/twilio/voice/{nid}/heard", params, token="not-ours"),
                   signed_post(f"{web.base_url}/twilio/voice/{nid}/heard", params, signature=""),
                   signed_post(f"{web.base_url}/twilio/voice/{nid}/key", {**params, "Digits": "9"}, token="x")):
        assert forged[0] == 403 and "<Response" not in forged[1]

    assert receipts(sqlite_url) == before
    assert wait_for_state(sqlite_url, nid, "undelivered")


# -- the adapter -------------------------------------------------------------------------------


def test_invalid_number_is_refused_for_good(peer: TwilioPeer) -> None:
    adapter = TwilioVoiceChannel(TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                                from_number=FROM_NUMBER, api_base_url=peer.base_url), VoiceSettings())
    try:
        with pytest.raises(PermanentChannelError, match="13224"):
            adapter.send(OutgoingMessage(notification_id=3, destination="0987654321", body="script"))
    finally:
        adapter.close()


def test_calls_need_a_caller_id() -> None:
    with pytest.raises(ConfigError, match="FROM_NUMBER"):
        TwilioVoiceChannel(TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN), VoiceSettings())


def test_campaigns_know_the_voice_channel(sqlite_url: str) -> None:
    assert parse_channels("sms,voice") == ["sms", "voice"]
    with session_scope(sqlite_url) as session:
        account = add_account(session, "HN-VOICE", msisdn=SUBSCRIBER)
        points = list(session.execute(sa.select(ContactPoint)).scalars())
        assert choose_destination(account, "voice", points) == (SUBSCRIBER, None)
        account.voice_opt_out = True
        assert choose_destination(account, "voice", points) == (None, "subscriber opted out of voice")
