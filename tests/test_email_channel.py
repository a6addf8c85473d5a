"""EmailChannel against a real aiosmtpd relay on loopback (notifier.peers.smtp_sink), no mocks.

What matters to subscribers: the Vietnamese subject, sender name and body arrive intact, a resend
is recognisable by its Message-ID, and relay refusals are classified so the dispatcher retries only
what can succeed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.base import Channel, OutgoingMessage
from channels.email import EmailChannel, mask_address, message_id_for
from notifier.errors import PermanentChannelError, TransientChannelError
from notifier.peers import LOOPBACK
from notifier.peers.smtp_sink import ReceivedMail, SmtpSink
from notifier.settings import SmtpSettings

SUBJECT = "Cảnh báo: thiết bị của Quý khách có dấu hiệu nhiễm mã độc"
BODY = (
    "Kính gửi Quý khách,\n"
    "Thiết bị sử dụng thuê bao của Quý khách có dấu hiệu nhiễm mã độc.\n"
    "Vui lòng gọi 18001091 (miễn phí) để được hỗ trợ.\n"
)
HTML = "<p>Kính gửi Quý khách,</p><p>Thiết bị có dấu hiệu <b>nhiễm mã độc</b>.</p>"
SENDER = "canhbao@example.vn"
SENDER_NAME = "Nhà mạng - Cảnh báo an toàn thông tin"
REFUSED = "khongtontai@example.vn"
DEFERRED = "hopthuday@example.vn"
WAIT_SECONDS = 10.0


@pytest.fixture()
def sink() -> Iterator[SmtpSink]:
    relay = SmtpSink(fail_recipients={REFUSED}, tempfail_recipients={DEFERRED})
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture()
def channel(sink: SmtpSink) -> Iterator[EmailChannel]:
    adapter = EmailChannel(smtp_settings(sink.port))
    try:
        yield adapter
    finally:
        adapter.close()


def smtp_settings(port: int) -> SmtpSettings:
    return SmtpSettings(host=LOOPBACK, port=port, sender=SENDER, sender_name=SENDER_NAME, timeout_seconds=5.0)


def warning(
    destination: str = "nguyen.van.a@example.vn",
    *,
    reference: str = "notification-42",
    html: str | None = HTML,
) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=42,
        destination=destination,
        body=BODY,
        subject=SUBJECT,
        html=html,
        reference=reference,
    )


def only_mail(sink: SmtpSink) -> ReceivedMail:
    (mail,) = sink.wait_for(1, WAIT_SECONDS)
    return mail


def test_implements_the_channel_protocol(channel: EmailChannel) -> None:
    assert isinstance(channel, Channel)
    assert channel.name == "email"


def test_sends_multipart_alternative_with_text_and_html(channel: EmailChannel, sink: SmtpSink) -> None:
    channel.send(warning())

    message = only_mail(sink).message
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    # Text travels in canonical CRLF form (RFC 2046), so compare line by line.
    assert parts[0].get_content().splitlines() == BODY.splitlines()
    assert parts[1].get_content().splitlines() == [HTML]


def test_plain_text_only_when_there_is_no_html(channel: EmailChannel, sink: SmtpSink) -> None:
    channel.send(warning(html=None))

    message = only_mail(sink).message
    assert message.get_content_type() == "text/plain"
    assert message.get_content().splitlines() == BODY.splitlines()


def test_vietnamese_subject_and_body_arrive_intact(channel: EmailChannel, sink: SmtpSink) -> None:
    channel.send(warning())

    mail = only_mail(sink)
    assert mail.message["Subject"] == SUBJECT
    assert b"=?utf-8?" in mail.raw.split(b"\r\n\r\n", 1)[0]  # RFC 2047 on the wire, not raw UTF-8
    text = mail.message.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().splitlines() == BODY.splitlines()


def test_envelope_and_headers(channel: EmailChannel, sink: SmtpSink) -> None:
    channel.send(warning())

    mail = only_mail(sink)
    assert mail.envelope_from == SENDER
    assert mail.envelope_to == ["nguyen.van.a@example.vn"]
    (sender,) = mail.message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (SENDER_NAME, SENDER)
    assert mail.message["To"] == "nguyen.van.a@example.vn"
    assert mail.message["Date"].datetime is not None
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["X-Notifier-Reference"] == "notification-42"


def test_message_id_is_deterministic_from_reference(channel: EmailChannel, sink: SmtpSink) -> None:
    first = channel.send(warning())
    resend = channel.send(warning())

    assert first.provider_message_ids == resend.provider_message_ids == ["notification-42@example.vn"]
    assert (first.provider_status, first.parts, first.encoding) == ("250", 1, "utf-8")
    mails = sink.wait_for(2, WAIT_SECONDS)
    assert [mail.message["Message-ID"] for mail in mails] == ["<notification-42@example.vn>"] * 2


def test_message_id_escapes_what_a_message_id_cannot_carry(channel: EmailChannel, sink: SmtpSink) -> None:
    assert message_id_for("thông báo=1", SENDER) == "<th=C3=B4ng=20b=C3=A1o=3D1@example.vn>"

    result = channel.send(warning(reference="thông báo=1"))

    mail = only_mail(sink)
    assert mail.message["Message-ID"] == f"<{result.provider_message_ids[0]}>"
    assert mail.message["X-Notifier-Reference"] == "thông báo=1"


def test_message_id_without_reference_is_unique(channel: EmailChannel, sink: SmtpSink) -> None:
    ids = {channel.send(warning(reference="")).provider_message_ids[0] for _ in range(2)}

    assert len(ids) == 2
    assert all(message_id.endswith("@example.vn") for message_id in ids)
    assert [mail.message["X-Notifier-Reference"] for mail in sink.wait_for(2, WAIT_SECONDS)] == [None, None]


def test_refused_recipient_is_permanent(channel: EmailChannel, sink: SmtpSink) -> None:
    with pytest.raises(PermanentChannelError) as caught:
        channel.send(warning(REFUSED))

    assert caught.value.provider_status is not None
    assert caught.value.provider_status.startswith("550")


def test_deferred_recipient_is_transient(channel: EmailChannel, sink: SmtpSink) -> None:
    with pytest.raises(TransientChannelError) as caught:
        channel.send(warning(DEFERRED))

    assert caught.value.provider_status is not None
    assert caught.value.provider_status.startswith("451")


def test_channel_keeps_working_after_a_refusal(channel: EmailChannel, sink: SmtpSink) -> None:
    with pytest.raises(PermanentChannelError):
        channel.send(warning(REFUSED))
    channel.send(warning())

    assert only_mail(sink).envelope_to == ["nguyen.van.a@example.vn"]


def test_stopped_relay_is_transient(channel: EmailChannel, sink: SmtpSink) -> None:
    channel.send(warning())
    sink.stop()

    with pytest.raises(TransientChannelError) as caught:
        channel.send(warning())

    assert caught.value.provider_status == "ConnectionRefusedError"


def test_reconnects_once_when_the_relay_dropped_the_connection(channel: EmailChannel, sink: SmtpSink) -> None:
    channel.send(warning())
    sink.stop()  # closes the channel's cached connection from the server side
    with SmtpSink(port=sink.port) as restarted:
        result = channel.send(warning())
        assert only_mail(restarted).message["Message-ID"] == f"<{result.provider_message_ids[0]}>"


def test_concurrent_senders_all_arrive(channel: EmailChannel, sink: SmtpSink) -> None:
    threads, per_thread = 4, 10
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for number in range(per_thread):
                channel.send(warning(f"tb{index}-{number}@example.vn", reference=f"notification-{index}-{number}"))
        except BaseException as exc:  # surfaced by the assertion below, not lost in the thread
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(WAIT_SECONDS)

    assert not any(thread.is_alive() for thread in workers)
    assert failures == []
    mails = sink.wait_for(threads * per_thread, WAIT_SECONDS)
    assert len({mail.message["Message-ID"] for mail in mails}) == threads * per_thread


def test_logs_mask_the_address_and_never_the_body(
    channel: EmailChannel, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="channels.email"):
        channel.send(warning())
        with pytest.raises(PermanentChannelError):
            channel.send(warning(REFUSED))

    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "channels.email")
    assert mask_address("nguyen.van.a@example.vn") in logged
    assert mask_address(REFUSED) in logged
    assert "nguyen.van.a" not in logged and "khongtontai" not in logged
    assert "Kính gửi" not in logged


def test_sink_appends_json_lines(tmp_path: Path) -> None:
    store = tmp_path / "mail" / "received.jsonl"
    with SmtpSink(store_path=store) as relay:
        adapter = EmailChannel(smtp_settings(relay.port))
        try:
            adapter.send(warning())
        finally:
            adapter.close()
        relay.wait_for(1, WAIT_SECONDS)

    (line,) = store.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert record["subject"] == SUBJECT
    assert record["message_id"] == "<notification-42@example.vn>"
    assert record["envelope_to"] == ["nguyen.van.a@example.vn"]
    assert set(record) == {"received_at", "envelope_from", "envelope_to", "message_id", "subject"}


def test_sink_wait_for_times_out_with_a_count(sink: SmtpSink) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        sink.wait_for(1, timeout_seconds=0.1)
