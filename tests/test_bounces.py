"""Bounces (issue 8, item 4): DSNs as Postfix, Exchange and Gmail write them, a delayed DSN, an old
non-DSN "failure notice", a DSN for a Message-ID that is not ours, replies that are not bounces;
stored as receipts and applied like SMPP receipts; `notifier bounces import` over a maildir and
`POST /bounces/dsn` on `notifier web` with and without its token; and the whole path once: a
warning sent over STARTTLS with AUTH, bounced with the headers the relay received."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from sqlmodel import Session, select
from typer.testing import CliRunner

from channels.base import RECEIPT_DELIVERED, RECEIPT_PENDING, RECEIPT_UNDELIVERED
from channels.bounces import BOUNCE, DSN, NOT_A_BOUNCE, read_bounce
from cli import app
from notifier.bounce_intake import take_bounces
from notifier.db import get_engine, session_scope
from notifier.dispatch.loops import run_campaign
from notifier.dispatch.receipts import apply_pending_receipts
from notifier.models import DeliveryEvent, InboundReceipt, MessagePart, Notification
from notifier.peers import LOOPBACK, free_port, wait_for_port
from notifier.peers.smtp_sink import SmtpSink, make_test_certificate
from notifier.settings import Settings, SmtpSettings, TwilioSettings
from notifier.web import create_app
from tests.conftest import make_settings
from tests.factories import add_account, add_notification

SENDER = "canhbao@example.vn"
TOKEN = "bounce-token-5d1e0c7a"

# --- samples, written as the MTAs write them (@@ID@@: the reference of the e-mail that bounced) ---

POSTFIX_FAILED = """\
Return-Path: <>
Delivered-To: canhbao@example.vn
Received: by mail.example.vn (Postfix)
\tid 4F2B81A0C3; Tue,  3 Mar 2026 09:15:02 +0700 (ICT)
Date: Tue,  3 Mar 2026 09:15:02 +0700 (ICT)
From: MAILER-DAEMON@mail.example.vn (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: canhbao@example.vn
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4F2B81A0C3.1772504102/mail.example.vn"
Content-Transfer-Encoding: 8bit
Message-Id: <20260303021502.4F2B81A0C3@mail.example.vn>

This is a MIME-encapsulated message.

--4F2B81A0C3.1772504102/mail.example.vn
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mail.example.vn.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nguyen.van.a@khachhang.vn>: host mx.khachhang.vn[203.0.113.25] said: 550
    5.1.1 <nguyen.van.a@khachhang.vn>: Recipient address rejected: User unknown
    in virtual mailbox table (in reply to RCPT TO command)

--4F2B81A0C3.1772504102/mail.example.vn
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.vn
X-Postfix-Queue-ID: 4F2B81A0C3
X-Postfix-Sender: rfc822; canhbao@example.vn
Arrival-Date: Tue,  3 Mar 2026 09:14:58 +0700 (ICT)

Final-Recipient: rfc822; nguyen.van.a@khachhang.vn
Original-Recipient: rfc822;Nguyen.Van.A@khachhang.vn
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.khachhang.vn
Diagnostic-Code: smtp; 550 5.1.1 <nguyen.van.a@khachhang.vn>: Recipient address
    rejected: User unknown in virtual mailbox table

--4F2B81A0C3.1772504102/mail.example.vn
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <canhbao@example.vn>
Received: from notifier.example.vn (notifier.example.vn [10.0.0.5])
\tby mail.example.vn (Postfix) with ESMTPS id 4F2B81A0C3
\tfor <nguyen.van.a@khachhang.vn>; Tue,  3 Mar 2026 09:14:58 +0700 (ICT)
Subject: =?utf-8?b?Q+G6o25oIGLDoW8gYW4gdG/DoG4gdGjDtG5nIHRpbg==?=
From: =?utf-8?b?TmjDoCBt4bqhbmc=?= <canhbao@example.vn>
To: nguyen.van.a@khachhang.vn
Date: Tue, 03 Mar 2026 02:14:58 +0000
Message-ID: <@@ID@@@example.vn>
Auto-Submitted: auto-generated
X-Notifier-Reference: @@ID@@

--4F2B81A0C3.1772504102/mail.example.vn--
"""

POSTFIX_DELAYED = """\
Return-Path: <>
Date: Tue,  3 Mar 2026 13:15:02 +0700 (ICT)
From: MAILER-DAEMON@mail.example.vn (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: canhbao@example.vn
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="7A11C1A0D4.1772518502/mail.example.vn"
Message-Id: <20260303061502.7A11C1A0D4@mail.example.vn>

This is a MIME-encapsulated message.

--7A11C1A0D4.1772518502/mail.example.vn
Content-Description: Notification
Content-Type: text/plain; charset=utf-8

This is the mail system at host mail.example.vn.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

--7A11C1A0D4.1772518502/mail.example.vn
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.vn
X-Postfix-Queue-ID: 7A11C1A0D4
X-Postfix-Sender: rfc822; canhbao@example.vn
Arrival-Date: Tue,  3 Mar 2026 09:14:58 +0700 (ICT)

Final-Recipient: rfc822; nguyen.van.a@khachhang.vn
Original-Recipient: rfc822;nguyen.van.a@khachhang.vn
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.khachhang.vn[203.0.113.25]:25: Connection
    timed out
Will-Retry-Until: Sun,  8 Mar 2026 09:14:58 +0700 (ICT)

--7A11C1A0D4.1772518502/mail.example.vn
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: =?utf-8?b?TmjDoCBt4bqhbmc=?= <canhbao@example.vn>
To: nguyen.van.a@khachhang.vn
Message-ID: <@@ID@@@example.vn>

--7A11C1A0D4.1772518502/mail.example.vn--
"""

# Exchange: the original comes back as message/rfc822 (here its headers), and the NDR itself
# names the original in In-Reply-To / References.
EXCHANGE_FAILED = """\
Received: from EX01.khachhang.local (10.1.1.10) by EX01.khachhang.local id 15.2.1118.40
From: postmaster@khachhang.vn
To: canhbao@example.vn
Date: Tue, 3 Mar 2026 02:20:11 +0000
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="66aee50c-1d33-4b4c-9b65-4f7c0e5b5a11"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <e2c0b9d8-5c1f-4f0e-9d7a-3f1a2b3c4d5e@EX01.khachhang.local>
In-Reply-To: <@@ID@@@example.vn>
References: <@@ID@@@example.vn>
Thread-Topic: =?utf-8?B?Q+G6o25oIGLDoW8gYW4gdG/DoG4gdGjDtG5nIHRpbg==?=
Subject: Undeliverable: =?utf-8?B?Q+G6o25oIGLDoW8gYW4gdG/DoG4gdGjDtG5nIHRpbg==?=
Auto-Submitted: auto-replied
MIME-Version: 1.0

--66aee50c-1d33-4b4c-9b65-4f7c0e5b5a11
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="0b6f2a3e-8c4d-4e8f-a1b2-c3d4e5f6a7b8"

--0b6f2a3e-8c4d-4e8f-a1b2-c3d4e5f6a7b8
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Delivery has failed to these recipients or groups:

tran.thi.b@khachhang.vn<mailto:tran.thi.b@khachhang.vn>
The recipient's mailbox is full and can't accept messages now. Please try r=
esending your message later, or contact the recipient directly.

--0b6f2a3e-8c4d-4e8f-a1b2-c3d4e5f6a7b8
Content-Type: text/html; charset="us-ascii"

<html><body><p>Delivery has failed to these recipients or groups:</p></body></html>

--0b6f2a3e-8c4d-4e8f-a1b2-c3d4e5f6a7b8--

--66aee50c-1d33-4b4c-9b65-4f7c0e5b5a11
Content-Type: message/delivery-status

Reporting-MTA: dns;EX01.khachhang.local
Received-From-MTA: dns;mail.example.vn
Arrival-Date: Tue, 3 Mar 2026 02:20:09 +0000

Original-Recipient: rfc822;tran.thi.b@khachhang.vn
Final-Recipient: rfc822;tran.thi.b@khachhang.vn
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp;554 5.2.2 mailbox full;STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded; Failed to process message due to a permanent exception
X-Display-Name: Tran Thi B

--66aee50c-1d33-4b4c-9b65-4f7c0e5b5a11
Content-Type: message/rfc822

Received: from mail.example.vn (203.0.113.5) by EX01.khachhang.local
From: =?utf-8?b?TmjDoCBt4bqhbmc=?= <canhbao@example.vn>
To: <tran.thi.b@khachhang.vn>
Subject: =?utf-8?B?Q+G6o25oIGLDoW8gYW4gdG/DoG4gdGjDtG5nIHRpbg==?=
Date: Tue, 3 Mar 2026 02:20:08 +0000
Message-ID: <@@ID@@@example.vn>
Content-Type: text/plain; charset="utf-8"
MIME-Version: 1.0


--66aee50c-1d33-4b4c-9b65-4f7c0e5b5a11--
"""

# Gmail: text in multipart/related, the report, then the whole original as message/rfc822.
GMAIL_FAILED = """\
Delivered-To: canhbao@example.vn
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: canhbao@example.vn
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
X-Failed-Recipients: le.van.c@gmail.com
Message-ID: <65e3d0f1.050a0220.abcd.1234.GMR@mx.google.com>
Date: Mon, 02 Mar 2026 19:31:29 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000b1c2d3"; report-type=delivery-status

--000000000000b1c2d3
Content-Type: multipart/related; boundary="000000000000b1c2e4"

--000000000000b1c2e4
Content-Type: multipart/alternative; boundary="000000000000b1c2f5"

--000000000000b1c2f5
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to le.van.c@gmail.com because the address couldn't be found, or is unable to receive mail.

--000000000000b1c2f5
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Address not found</h2></body></html>

--000000000000b1c2f5--
--000000000000b1c2e4--
--000000000000b1c2d3
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mail.example.vn
Arrival-Date: Mon, 02 Mar 2026 19:31:28 -0800 (PST)
X-Original-Message-ID: <@@ID@@@example.vn>

Final-Recipient: rfc822; le.van.c@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0:4864:20::32b, the server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try
 550-5.1.1 double-checking the recipient's email address for typos or
 550-5.1.1 unnecessary spaces. For more information, go to
 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser d2e1a72fcca58-6e4b5f0a1c2si1234b3a.123 - gsmtp
Last-Attempt-Date: Mon, 02 Mar 2026 19:31:29 -0800 (PST)

--000000000000b1c2d3
Content-Type: message/rfc822

@@ORIGINAL@@
--000000000000b1c2d3--
"""

ORIGINAL = """\
Subject: =?utf-8?b?Q+G6o25oIGLDoW8gYW4gdG/DoG4gdGjDtG5nIHRpbg==?=
From: =?utf-8?b?TmjDoCBt4bqhbmc=?= <canhbao@example.vn>
To: le.van.c@gmail.com
Date: Tue, 03 Mar 2026 03:31:27 +0000
Message-ID: <@@ID@@@example.vn>
Auto-Submitted: auto-generated
X-Notifier-Reference: @@ID@@
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: base64

S8OtbmggZ+G7rWkgUXXDvSBraMOhY2gu
"""

# An MTA from before DSNs: the original's headers quoted in the text.
QMAIL_FAILURE_NOTICE = """\
Return-Path: <>
Date: 3 Mar 2026 02:30:00 -0000
From: MAILER-DAEMON@mx.oldisp.vn
To: canhbao@example.vn
Subject: failure notice

Hi. This is the qmail-send program at mx.oldisp.vn.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<pham.d@oldisp.vn>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <canhbao@example.vn>
Received: (qmail 12345 invoked from network); 3 Mar 2026 02:29:59 -0000
Message-ID: <@@ID@@@example.vn>
From: canhbao@example.vn
To: pham.d@oldisp.vn
Subject: =?utf-8?b?Q+G6o25oIGLDoW8=?=
"""

AUTO_REPLY = """\
Return-Path: <>
From: =?utf-8?b?TmfDoCBOZ3V54buFbg==?= <nguyen.van.a@khachhang.vn>
To: canhbao@example.vn
Subject: =?utf-8?b?VOG7sSDEkeG7mW5nIHRy4bqjIGzhu51pOiBD4bqjbmggYsOhbw==?=
Auto-Submitted: auto-replied
In-Reply-To: <@@ID@@@example.vn>
References: <@@ID@@@example.vn>
Message-ID: <auto.123@khachhang.vn>
Date: Tue, 3 Mar 2026 02:16:00 +0000
Content-Type: text/plain; charset="utf-8"

Tôi đang nghỉ phép đến ngày 10/3.
"""

SUBSCRIBER_REPLY = """\
From: nguyen.van.a@khachhang.vn
To: canhbao@example.vn
Subject: Re: Canh bao an toan thong tin
In-Reply-To: <@@ID@@@example.vn>
Message-ID: <reply.456@khachhang.vn>
Date: Tue, 3 Mar 2026 02:40:00 +0000
Content-Type: text/plain; charset="utf-8"

Day co phai tin nhan that khong? Toi khong nhan duoc thu, Mailbox full?
"""

POSTFIX_DELIVERED = POSTFIX_FAILED.replace("Undelivered Mail Returned to Sender", "Successful Mail Delivery Report") \
    .replace("Action: failed", "Action: delivered").replace("Status: 5.1.1", "Status: 2.0.0") \
    .replace("Diagnostic-Code: smtp; 550 5.1.1 <nguyen.van.a@khachhang.vn>: Recipient address\n"
             "    rejected: User unknown in virtual mailbox table", "Diagnostic-Code: smtp; 250 2.0.0 Ok: queued")


def sample(template: str, reference: str) -> bytes:
    return template.replace("@@ORIGINAL@@", ORIGINAL).replace("@@ID@@", reference).encode("utf-8")


# --- reading --------------------------------------------------------------------------------------


def test_postfix_dsn_names_our_message_and_why() -> None:
    reading = read_bounce(sample(POSTFIX_FAILED, "notification-42"), sender=SENDER)
    assert reading.kind == DSN and reading.problem is None
    (receipt,) = reading.receipts
    assert receipt.channel == "email" and receipt.provider_message_id == "notification-42@example.vn"
    assert receipt.status == RECEIPT_UNDELIVERED and receipt.raw_status == "failed 5.1.1"
    assert receipt.error_code == "550 User unknown in virtual mai…"  # no address, fits its 32-character column
    assert receipt.destination == "nguyen.van.a@khachhang.vn"  # Original-Recipient, lower-cased
    assert receipt.done_at == datetime(2026, 3, 3, 2, 14, 58, tzinfo=UTC)  # Arrival-Date, in UTC


def test_exchange_ndr_and_gmail_bounce() -> None:
    (exchange,) = read_bounce(sample(EXCHANGE_FAILED, "notification-43"), sender=SENDER).receipts
    assert exchange.provider_message_id == "notification-43@example.vn"
    assert (exchange.status, exchange.raw_status) == (RECEIPT_UNDELIVERED, "failed 5.2.2")
    assert exchange.error_code is not None and exchange.error_code.startswith("554 ")
    assert exchange.destination == "tran.thi.b@khachhang.vn"

    reading = read_bounce(sample(GMAIL_FAILED, "notification-44"), sender=SENDER)
    (gmail,) = reading.receipts
    assert reading.kind == DSN
    assert gmail.provider_message_id == "notification-44@example.vn"  # from the returned original
    assert gmail.raw_status == "failed 5.1.1" and gmail.error_code == "550 The email account that you…"
    assert gmail.done_at == datetime(2026, 3, 3, 3, 31, 29, tzinfo=UTC)  # Last-Attempt-Date, -0800 → UTC
    assert "support.google" not in (gmail.error_code or "")


def test_a_delayed_dsn_is_only_an_event() -> None:
    (receipt,) = read_bounce(sample(POSTFIX_DELAYED, "notification-42"), sender=SENDER).receipts
    assert receipt.status == RECEIPT_PENDING
    assert receipt.raw_status == "delayed 4.4.1" and receipt.error_code == "Connection timed out"


def test_a_non_dsn_failure_notice_is_read_from_its_text() -> None:
    reading = read_bounce(sample(QMAIL_FAILURE_NOTICE, "notification-45"), sender=SENDER)
    assert reading.kind == BOUNCE
    (receipt,) = reading.receipts
    assert receipt.provider_message_id == "notification-45@example.vn"
    assert (receipt.status, receipt.raw_status, receipt.error_code) == (RECEIPT_UNDELIVERED, "bounce 5.1.1", "5.1.1")


def test_replies_are_not_bounces_even_when_they_name_our_message() -> None:
    for template in (AUTO_REPLY, SUBSCRIBER_REPLY):
        reading = read_bounce(sample(template, "notification-42"), sender=SENDER)
        assert reading.kind == NOT_A_BOUNCE and reading.receipts == []


def test_a_dsn_without_any_message_id_is_a_problem_not_a_crash() -> None:
    stripped = POSTFIX_FAILED.replace("Message-ID: <@@ID@@@example.vn>\n", "").replace(
        "X-Notifier-Reference: @@ID@@\n", "")
    reading = read_bounce(stripped.encode(), sender=SENDER)
    assert reading.kind == DSN and reading.receipts == [] and "no Message-ID" in (reading.problem or "")


def test_our_reference_header_alone_finds_the_message() -> None:
    only_reference = POSTFIX_FAILED.replace("Message-ID: <@@ID@@@example.vn>\n", "")
    (receipt,) = read_bounce(sample(only_reference, "notification-7"), sender=SENDER).receipts
    assert receipt.provider_message_id == "notification-7@example.vn"


# --- applying -------------------------------------------------------------------------------------


def sent_email(session: Session, ref: str, *, state: str) -> Notification:
    """An e-mail recorded as the worker records one: the notification and its part with the Message-ID."""
    account = add_account(session, ref, email=f"{ref.lower()}@khachhang.vn")
    notification = add_notification(session, account, channel="email", state=state,
                                    destination=f"{ref.lower()}@khachhang.vn")
    now = datetime.now(UTC)
    notification.sent_at = now
    notification.delivered_at = now if state == "delivered" else None
    session.add(MessagePart(notification_id=notification.id or 0, part_no=1, channel="email",
                            provider_message_id=f"notification-{notification.id}@example.vn",
                            state="delivered" if state == "delivered" else "sent"))
    session.flush()
    return notification


def take(database_url: str, *messages: bytes) -> dict[str, object]:
    with session_scope(database_url) as session:
        summary = take_bounces(session, [(f"m{n}", raw) for n, raw in enumerate(messages)], sender=SENDER)
    with session_scope(database_url) as session:
        apply_pending_receipts(session)
    return summary.as_json()


def reload(database_url: str, notification_id: int) -> tuple[Notification, list[DeliveryEvent]]:
    with Session(get_engine(database_url)) as session:
        notification = session.get(Notification, notification_id)
        events = list(session.exec(select(DeliveryEvent).where(DeliveryEvent.notification_id == notification_id)
                                   .order_by(DeliveryEvent.id)))
        assert notification is not None
        session.expunge_all()
        return notification, events


def test_a_bounce_after_the_relays_250_makes_the_email_undelivered(database_url: str) -> None:
    """`accepted_means_delivered`: the relay's 250 made it `delivered`; the DSN knows better."""
    with session_scope(database_url) as session:
        nid = sent_email(session, "HN1", state="delivered").id or 0
    counts = take(database_url, sample(POSTFIX_FAILED, f"notification-{nid}"))
    assert counts["undelivered"] == 1 and counts["orphans"] == 0 and counts["problems"] == 0
    notification, events = reload(database_url, nid)
    assert notification.state == "undelivered" and notification.delivered_at is None
    assert notification.reason == "part 1/1: failed 5.1.1 err:550 User unknown in virtual mai…"
    assert (events[-1].from_state, events[-1].to_state, events[-1].source) == ("delivered", "undelivered",
                                                                                "email-receipt")


def test_a_delayed_dsn_changes_nothing_but_is_recorded(database_url: str) -> None:
    with session_scope(database_url) as session:
        nid = sent_email(session, "HN2", state="sent").id or 0
    counts = take(database_url, sample(POSTFIX_DELAYED, f"notification-{nid}"))
    assert counts["delayed"] == 1 and counts["undelivered"] == 0
    notification, events = reload(database_url, nid)
    assert notification.state == "sent"
    assert events[-1].to_state == "sent" and events[-1].provider_status == "delayed 4.4.1"
    # the definite failure that follows days later still fails it
    take(database_url, sample(POSTFIX_FAILED, f"notification-{nid}"))
    assert reload(database_url, nid)[0].state == "undelivered"


def test_a_positive_dsn_delivers_a_sent_email(database_url: str) -> None:
    """With `accepted_means_delivered = false` e-mails stay `sent`; a success DSN delivers them."""
    with session_scope(database_url) as session:
        nid = sent_email(session, "HN3", state="sent").id or 0
    (receipt,) = read_bounce(sample(POSTFIX_DELIVERED, f"notification-{nid}"), sender=SENDER).receipts
    assert (receipt.status, receipt.raw_status) == (RECEIPT_DELIVERED, "delivered 2.0.0")
    assert take(database_url, sample(POSTFIX_DELIVERED, f"notification-{nid}"))["delivered"] == 1
    notification, _ = reload(database_url, nid)
    assert notification.state == "delivered" and notification.delivered_at is not None


def test_exchange_gmail_and_qmail_bounces_each_fail_their_email(database_url: str) -> None:
    with session_scope(database_url) as session:
        ids = [sent_email(session, ref, state="delivered").id or 0 for ref in ("EX1", "GM1", "QM1")]
    counts = take(database_url, *(sample(template, f"notification-{nid}") for template, nid in
                                  zip((EXCHANGE_FAILED, GMAIL_FAILED, QMAIL_FAILURE_NOTICE), ids)))
    assert counts["undelivered"] == 3 and counts["orphans"] == 0
    assert [reload(database_url, nid)[0].state for nid in ids] == ["undelivered"] * 3


def test_a_dsn_for_an_unknown_message_is_an_orphan_not_an_error(database_url: str) -> None:
    with session_scope(database_url) as session:
        nid = sent_email(session, "HN4", state="delivered").id or 0
    counts = take(database_url, sample(POSTFIX_FAILED, "someone-else-20260301"),
                  sample(AUTO_REPLY, f"notification-{nid}"))
    assert counts["orphans"] == 1 and counts["not_bounces"] == 1 and counts["problems"] == 0
    assert reload(database_url, nid)[0].state == "delivered"  # the auto-reply changed nothing
    with Session(get_engine(database_url)) as session:
        stored = session.exec(select(InboundReceipt)).all()
    assert [(r.provider_message_id, r.applied_at) for r in stored] == [("someone-else-20260301@example.vn", None)]


def test_importing_the_same_bounce_twice_stores_it_once(database_url: str) -> None:
    with session_scope(database_url) as session:
        nid = sent_email(session, "HN5", state="delivered").id or 0
    raw = sample(POSTFIX_FAILED, f"notification-{nid}")
    take(database_url, raw)
    again = take(database_url, raw)
    assert again["duplicates"] == 1 and again["stored"] == 0
    with Session(get_engine(database_url)) as session:
        assert session.execute(sa.select(sa.func.count()).select_from(InboundReceipt)).scalar() == 1
    assert len([e for e in reload(database_url, nid)[1] if e.source == "email-receipt"]) == 1


# --- notifier bounces import ---------------------------------------------------------------------


def test_cli_imports_a_maildir(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        failed = sent_email(session, "HN6", state="delivered").id
        delayed = sent_email(session, "HN7", state="sent").id
    maildir = tmp_path / "Maildir"
    for folder in ("new", "cur", "tmp"):
        (maildir / folder).mkdir(parents=True)
    (maildir / "new" / "1772504102.M1P1.mail").write_bytes(sample(POSTFIX_FAILED, f"notification-{failed}"))
    (maildir / "cur" / "1772518502.M2P1.mail:2,S").write_bytes(sample(POSTFIX_DELAYED, f"notification-{delayed}"))
    (maildir / "cur" / "1772519000.M3P1.mail:2,S").write_bytes(sample(SUBSCRIBER_REPLY, f"notification-{failed}"))
    (maildir / "tmp" / "partial").write_bytes(b"being written")  # tmp/ is never read

    result = CliRunner().invoke(app, ["bounces", "import", str(maildir), "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["messages"], counts["undelivered"], counts["delayed"], counts["not_bounces"]) == (3, 1, 1, 1)
    assert reload(cli_db, failed or 0)[0].state == "undelivered"
    assert reload(cli_db, delayed or 0)[0].state == "sent"

    text = CliRunner().invoke(app, ["bounces", "import", str(maildir)])
    assert text.exit_code == 0 and "2 already imported" in text.stderr and "1 not a bounce" in text.stderr

    missing = CliRunner().invoke(app, ["bounces", "import", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1


# --- POST /bounces/dsn ----------------------------------------------------------------------------


@pytest.fixture
def web(database_url: str) -> Iterator[str]:
    """`notifier web`'s app served by uvicorn on a free loopback port, in this process."""
    settings = Settings(database_url=database_url, twilio=TwilioSettings(auth_token="twilio-token"),
                        smtp=SmtpSettings(bounce_token=TOKEN))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=LOOPBACK, port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    try:
        wait_for_port(port, timeout_seconds=20)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "message/rfc822", **({"X-Notifier-Token": token} if token is not None else {})}
    request = urllib.request.Request(f"{url}/bounces/dsn", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_web_takes_a_dsn_only_with_the_token(web: str, database_url: str) -> None:
    with session_scope(database_url) as session:
        nid = sent_email(session, "HN8", state="delivered").id or 0
    raw = sample(POSTFIX_FAILED, f"notification-{nid}")
    assert post(web, raw, None)[0] == 403
    assert post(web, raw, "wrong-token")[0] == 403
    with Session(get_engine(database_url)) as session:
        assert session.exec(select(InboundReceipt)).all() == []  # a refused post stores nothing

    status, counts = post(web, raw, TOKEN)
    assert status == 200 and counts["undelivered"] == 1
    deadline = time.monotonic() + 20  # the app's receipt applier applies it
    while reload(database_url, nid)[0].state != "undelivered" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reload(database_url, nid)[0].state == "undelivered"
    assert post(web, sample(AUTO_REPLY, f"notification-{nid}"), TOKEN) == (200, {**counts, "undelivered": 0,
                                                                               "stored": 0, "not_bounces": 1})


def test_web_refuses_everything_while_no_token_is_set(database_url: str) -> None:
    from notifier.web import _bounce_token_ok

    settings = Settings(database_url=database_url)
    assert not _bounce_token_ok(settings, "")
    assert not _bounce_token_ok(settings, None)
    assert _bounce_token_ok(Settings(smtp=SmtpSettings(bounce_token=TOKEN)), TOKEN)


# --- the whole path -------------------------------------------------------------------------------


def test_a_warning_sent_over_starttls_then_bounced_ends_undelivered(database_url: str, tmp_path: Path) -> None:
    """Sent by `campaign run` over STARTTLS with AUTH; the relay's Postfix returns the headers it
    received in its DSN; the import finds the e-mail by the Message-ID we sent."""
    certificate = make_test_certificate(tmp_path / "tls")
    with SmtpSink(security="starttls", certificate=certificate, credentials={"notifier": "s3cret-relay"}) as relay:
        settings = make_settings(database_url, smtp=relay)
        settings.smtp = SmtpSettings(port=relay.port, security="starttls", ca_file=certificate[0],
                                     username="notifier", password="s3cret-relay", timeout_seconds=5)
        with session_scope(database_url) as session:
            account = add_account(session, "HN9", email="hn9@khachhang.vn")
            notification = add_notification(session, account, channel="email", state="planned",
                                            destination="hn9@khachhang.vn")
            nid, campaign_id = notification.id or 0, notification.campaign_id
        run_campaign(settings, campaign_id)
        (mail,) = relay.wait_for(1)
    assert reload(database_url, nid)[0].state == "delivered"
    returned_headers = mail.raw.split(b"\r\n\r\n", 1)[0].decode("utf-8").replace("\r\n", "\n")
    dsn = POSTFIX_FAILED.split("Return-Path: <canhbao@example.vn>")[0] + returned_headers + \
        "\n\n--4F2B81A0C3.1772504102/mail.example.vn--\n"
    with session_scope(database_url) as session:
        summary = take_bounces(session, [("dsn", dsn.encode("utf-8"))], sender=settings.smtp.sender)
    with session_scope(database_url) as session:
        apply_pending_receipts(session)
    assert summary.undelivered == 1 and summary.orphans == 0
    assert reload(database_url, nid)[0].state == "undelivered"
