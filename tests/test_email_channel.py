"""EmailChannel against a real aiosmtpd relay on loopback (notifier.peers.smtp_sink), no mocks.

What matters to subscribers: the Vietnamese subject, sender name and body arrive intact, a resend
is recognisable by its Message-ID, and relay refusals are classified so the dispatcher retries only
what can succeed.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest

from channels.base import Channel, OutgoingMessage, SendOutcome, SendResult
from channels.email import EmailChannel, mask_address, message_id_for
from channels.email_mime import MessageComposer, body_base64, dot_stuffed
from notifier.errors import (
    OutcomeUnknownError, PermanentChannelError, RouteUnreachableError, TransientChannelError,
)
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


# --- the message bytes (channels.email_mime): what the standard library reads back ----------------

LONG_SUBJECT = ("Cảnh báo khẩn: thiết bị của Quý khách có dấu hiệu nhiễm mã độc Mirai, Mozi và Gafgyt; "
                "dữ liệu cá nhân (số CCCD, mật khẩu) có thể đã bị lộ — vui lòng làm theo hướng dẫn")


def composed(message: OutgoingMessage, sender_name: str = SENDER_NAME, sender: str = SENDER) -> bytes:
    return MessageComposer(sender, sender_name).compose(message).data


def parsed(data: bytes) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(data, policy=policy.default))


def assert_well_formed(data: bytes) -> None:
    """CRLF only, 7-bit, no line over 76 characters, nothing a relay would have to dot-stuff."""
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert data.isascii()
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 76, max(lines, key=len)
    assert not any(line.startswith(b".") for line in lines)


@pytest.mark.parametrize("subject", [SUBJECT, LONG_SUBJECT, LONG_SUBJECT * 3, "Short ASCII subject",
                                     "A plain ASCII subject that is long enough to be folded over more than one "
                                     "line of the header, at its spaces", "  spaced  out  ", "looks =?like?= a word",
                                     "Tab\tinside", ""])
def test_subjects_read_back_exactly(subject: str) -> None:
    data = composed(OutgoingMessage(notification_id=1, destination="a@example.vn", body=BODY, subject=subject,
                                    html=HTML))

    assert_well_formed(data)
    assert parsed(data)["Subject"] == subject


@pytest.mark.parametrize("name", [SENDER_NAME, "Nhà mạng, Trung tâm An ninh mạng \"Cảnh báo\"",
                                  'VNPT, Security "Team"', "VNPT Security", "Nhà mạng", "",
                                  "Trung tâm Giám sát an toàn không gian mạng quốc gia - Bộ Thông tin và Truyền thông"])
def test_sender_name_and_address_read_back_exactly(name: str) -> None:
    data = composed(warning(), sender_name=name)

    assert_well_formed(data)
    (sender,) = parsed(data)["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (name, SENDER)


def test_a_sender_name_too_long_for_one_encoded_word_still_decodes_per_rfc_2047() -> None:
    """A run of Vietnamese words longer than one encoded-word is split; RFC 2047 readers join the
    halves (the standard library's address parser would add a space between them)."""
    name = "Nhàmạngviễnthôngquốcgiatrungtâmcảnhbáoantoànthôngtinmạngchosốthuêbao"
    data = composed(warning(), sender_name=name)

    assert_well_formed(data)
    raw_from = data.split(b"\r\nTo:")[0].split(b"From: ", 1)[1].decode("ascii")
    decoded = str(make_header(decode_header(raw_from.replace("\r\n", ""))))
    assert decoded == f"{name} <{SENDER}>"


@pytest.mark.parametrize("body", [BODY, "one line, no newline", "", "windows\r\nline\r\nends\r\n",
                                  "old mac\rline ends", "a very long line " * 40, ".leading dot\n..two\n"])
def test_text_and_html_bodies_read_back_exactly(body: str) -> None:
    html = f"<p>{body}</p>" * 3
    data = composed(OutgoingMessage(notification_id=1, destination="a@example.vn", body=body, subject=SUBJECT,
                                    html=html))

    assert_well_formed(data)
    message = parsed(data)
    text_part, html_part = message.iter_parts()
    # An empty text travels as one empty line, as the standard library writes it.
    assert text_part.get_content().splitlines() == (body.splitlines() or [""])
    assert html_part.get_content().splitlines() == html.splitlines()


def test_the_same_bytes_as_the_standard_library_for_the_bodies() -> None:
    """Canonical CRLF text, UTF-8, base64 in 76-column lines: what `set_content(cte="base64")` made."""
    legacy = EmailMessage(policy=policy.SMTP)
    legacy.set_content(BODY, charset="utf-8", cte="base64")

    # The model keeps "\n"; flattening with policy.SMTP writes CRLF, as body_base64 does.
    assert body_base64(BODY) == legacy.get_payload().replace("\n", "\r\n").encode("ascii")


def test_dot_stuffing_doubles_only_a_leading_dot() -> None:
    assert dot_stuffed(b".a\r\nb.\r\n..c\r\n") == b"..a\r\nb.\r\n...c\r\n"
    assert dot_stuffed(b"a\r\nb\r\n") == b"a\r\nb\r\n"


def test_date_is_now_in_utc_and_the_message_id_the_reference() -> None:
    message = parsed(composed(warning()))

    sent_at = message["Date"].datetime
    assert sent_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - sent_at) < timedelta(minutes=1)
    assert message["Message-ID"] == "<notification-42@example.vn>"
    assert message["To"] == "nguyen.van.a@example.vn"


@pytest.mark.parametrize("destination", ["a b@example.vn", "a@example.vn\r\nBcc: x@example.vn", "<a@example.vn>", ""])
def test_an_address_that_cannot_be_written_fails_alone(channel: EmailChannel, sink: SmtpSink,
                                                        destination: str) -> None:
    outcomes = channel.send_many([warning(destination), warning("tb2@example.vn", reference="notification-43")])

    assert isinstance(outcomes[0], PermanentChannelError)
    assert not destination or destination not in str(outcomes[0])  # the address is not echoed
    assert isinstance(outcomes[1], SendResult)
    assert [mail.envelope_to for mail in sink.wait_for(1, WAIT_SECONDS)] == [["tb2@example.vn"]]


def test_a_subject_with_a_line_break_fails_alone(channel: EmailChannel, sink: SmtpSink) -> None:
    broken = OutgoingMessage(notification_id=1, destination="a@example.vn", body=BODY, subject="a\r\nBcc: x@y.vn")

    with pytest.raises(PermanentChannelError):
        channel.send(broken)
    assert sink.messages() == []


# --- batches on one session -------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-command-at-a-time"])
def test_a_batch_goes_out_on_one_session_each_refusal_its_own_outcome(pipelining: bool) -> None:
    destinations = [f"tb{number}@example.vn" for number in range(10)]
    destinations[3], destinations[7] = REFUSED, DEFERRED
    with SmtpSink(fail_recipients={REFUSED}, tempfail_recipients={DEFERRED}, pipelining=pipelining) as relay:
        adapter = EmailChannel(smtp_settings(relay.port))
        try:
            batch = [warning(address, reference=f"notification-{number}")
                     for number, address in enumerate(destinations)]
            outcomes = adapter.send_many(batch)
            again = adapter.send_many([warning("last@example.vn", reference="notification-99")])
        finally:
            adapter.close()
        mails = relay.wait_for(9, WAIT_SECONDS)
        sessions = relay.sessions

    assert isinstance(outcomes[3], PermanentChannelError) and outcomes[3].provider_status.startswith("550")
    assert isinstance(outcomes[7], TransientChannelError) and outcomes[7].provider_status.startswith("451")
    accepted = [outcome for number, outcome in enumerate(outcomes) if number not in (3, 7)]
    assert all(isinstance(outcome, SendResult) for outcome in accepted)
    assert [outcome.provider_message_ids for outcome in accepted] == [  # type: ignore[union-attr]
        [f"notification-{number}@example.vn"] for number in range(10) if number not in (3, 7)]
    assert isinstance(again[0], SendResult)
    assert [mail.envelope_to[0] for mail in mails] == [*(d for d in destinations if d not in (REFUSED, DEFERRED)),
                                                       "last@example.vn"]
    assert len({mail.message["Message-ID"] for mail in mails}) == 9
    assert sessions == 1  # one connection for both batches


def test_a_batch_to_a_relay_that_is_down_is_route_unreachable_for_every_message(
    channel: EmailChannel, sink: SmtpSink
) -> None:
    sink.stop()

    outcomes = channel.send_many([warning(f"tb{number}@example.vn") for number in range(5)])

    assert all(isinstance(outcome, RouteUnreachableError) for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 5  # one exception object per message


def test_international_address_goes_out_with_smtputf8(channel: EmailChannel, sink: SmtpSink) -> None:
    result = channel.send(warning("người.dùng@ví-dụ.vn"))

    mail = only_mail(sink)
    assert mail.envelope_to == ["người.dùng@ví-dụ.vn"]
    assert mail.message["To"] == "người.dùng@ví-dụ.vn"
    assert mail.message["Message-ID"] == f"<{result.provider_message_ids[0]}>"


# --- a relay that loses its answers -----------------------------------------------------------------


class _AnswerLosingRelay:
    """A minimal SMTP server (PIPELINING) that takes each message's data and then closes the
    connection without answering it, or answers 421 to MAIL once: the two ways a relay can hang up."""

    def __init__(self, *, close_after_data: bool) -> None:
        self._close_after_data = close_after_data
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.05)  # so the serving thread sees `close()` promptly
        self.port = self._listener.getsockname()[1]
        self.received: list[bytes] = []
        self.connections = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(WAIT_SECONDS)
        self._listener.close()
        assert not self._thread.is_alive()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(WAIT_SECONDS)
            self.connections += 1
            with connection, connection.makefile("rb") as reader:
                self._session(connection, reader, first=self.connections == 1)

    def _session(self, connection: socket.socket, reader: Any, *, first: bool) -> None:
        connection.sendall(b"220 relay\r\n")
        for line in reader:
            verb = line[:4].upper()
            if verb == b"EHLO":
                connection.sendall(b"250-relay\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL" and first and not self._close_after_data:
                connection.sendall(b"421 4.3.2 shutting down\r\n")
                return
            elif verb == b"DATA":
                connection.sendall(b"354 go ahead\r\n")
                data = b"".join(iter(lambda: reader.readline(), b".\r\n"))
                self.received.append(data)
                if self._close_after_data:
                    return
                connection.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                connection.sendall(b"221 bye\r\n")
                return
            else:
                connection.sendall(b"250 ok\r\n")


def _send_two_through(relay: _AnswerLosingRelay) -> list[SendOutcome]:
    """Two warnings in one batch through `relay`; the adapter and the relay are closed after."""
    adapter = EmailChannel(smtp_settings(relay.port))
    try:
        return adapter.send_many([warning("a@example.vn", reference="notification-1"),
                                  warning("b@example.vn", reference="notification-2")])
    finally:
        adapter.close()
        relay.close()


def test_data_written_but_not_answered_is_outcome_unknown_never_resent_at_once() -> None:
    relay = _AnswerLosingRelay(close_after_data=True)

    outcomes = _send_two_through(relay)

    assert all(isinstance(outcome, OutcomeUnknownError) for outcome in outcomes)
    assert len(relay.received) == 2  # each message's data reached the relay once: no resend
    assert [b"Message-ID: <notification-1@example.vn>" in data for data in relay.received] == [True, False]


def test_421_before_the_data_is_tried_again_on_a_fresh_connection() -> None:
    relay = _AnswerLosingRelay(close_after_data=False)

    outcomes = _send_two_through(relay)

    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert relay.connections == 2 and len(relay.received) == 2


# --- the relay peer itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"Subject: x\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",
                                     b".\r\n..\r\n", b"Subject: empty body\r\n\r\n", b"no final line end"])
def test_peer_unstuffs_dots_and_keeps_the_bytes(sink: SmtpSink, content: bytes) -> None:
    with smtplib.SMTP(LOOPBACK, sink.port, timeout=WAIT_SECONDS) as client:
        client.sendmail(SENDER, ["a@example.vn"], content)  # smtplib stuffs the dots and ends the last line

    assert only_mail(sink).raw == (content if content.endswith(b"\r\n") else content + b"\r\n")


def test_peer_answers_pipelined_commands_in_order(sink: SmtpSink) -> None:
    with socket.create_connection((LOOPBACK, sink.port), timeout=WAIT_SECONDS) as connection, \
            connection.makefile("rb") as replies:
        replies.readline()
        connection.sendall(b"EHLO client\r\n")
        assert b"PIPELINING" in b"".join(_reply(replies))
        message = b"Subject: one\r\n\r\nbody\r\n.\r\n"
        connection.sendall(b"MAIL FROM:<a@example.vn>\r\nRCPT TO:<b@example.vn>\r\nDATA\r\n")
        codes = [_reply(replies)[-1][:3] for _ in range(3)]
        connection.sendall(message + b"MAIL FROM:<a@example.vn>\r\nRCPT TO:<c@example.vn>\r\nDATA\r\n")
        codes += [_reply(replies)[-1][:3] for _ in range(4)]
        connection.sendall(b".\r\nMAIL FROM:<a@example.vn>\r\nRCPT TO:<d@example.vn>\r\nDATA\r\n")  # empty data
        codes += [_reply(replies)[-1][:3] for _ in range(4)]
        connection.sendall(message + b"QUIT\r\n")
        codes += [_reply(replies)[-1][:3] for _ in range(2)]

    assert codes == [b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"354",
                     b"250", b"221"]
    mails = sink.wait_for(3, WAIT_SECONDS)
    assert [mail.envelope_to for mail in mails] == [["b@example.vn"], ["c@example.vn"], ["d@example.vn"]]
    assert [mail.raw for mail in mails] == [b"Subject: one\r\n\r\nbody\r\n", b"", b"Subject: one\r\n\r\nbody\r\n"]


def test_peer_refuses_a_line_longer_than_rfc_5321_allows(sink: SmtpSink) -> None:
    with smtplib.SMTP(LOOPBACK, sink.port, timeout=WAIT_SECONDS) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail(SENDER, ["a@example.vn"], b"Subject: x\r\n\r\n" + b"x" * 1200 + b"\r\n")
        client.sendmail(SENDER, ["b@example.vn"], b"Subject: fine\r\n\r\nok\r\n")

    assert caught.value.smtp_code == 500
    assert only_mail(sink).envelope_to == ["b@example.vn"]


def _reply(replies: Any) -> list[bytes]:
    """One (possibly multi-line) SMTP reply."""
    lines = [replies.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(replies.readline())
    return lines
