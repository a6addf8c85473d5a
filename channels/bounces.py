"""Bounces: what a returned message says about an e-mail we sent, as `Receipt`s.

A relay that accepted a warning may still fail to deliver it and then mails a report back to our
envelope sender (`smtp.sender`): a DSN (RFC 3464, `multipart/report; report-type=delivery-status`,
as Postfix, Exim, Exchange and Gmail send), or, from older MTAs (qmail, some appliances), a plain
"non-delivery" text that quotes the original headers. `read_bounce` turns one such message into
receipts for the receipt applier, which treats them as it treats SMPP receipts
(`notifier.dispatch.receipt_batch`). Nothing here touches the database.

Which e-mail it is about — the Message-ID we sent (`MessagePart.provider_message_id`: the id
without `<>`, `notification-42@example.vn`), looked for in this order:
1. the returned headers (`text/rfc822-headers`, or the `message/rfc822` original): `Message-ID`,
   else `X-Notifier-Reference` (our own header) turned back into the id we derive from it;
2. `Original-Message-ID` (the report's own header or its per-message fields; Gmail writes
   `X-Original-Message-ID`), then `In-Reply-To` and `References` of the report (Exchange sets them);
3. only when none of those exist: a `Message-ID:` (or `X-Notifier-Reference:`) line of headers
   quoted in the text, at our sender's domain.
Every candidate goes into the receipt (`provider_message_id`, then `alternative_ids`): the
applier matches whichever was ours.

What it says — per recipient of the DSN (`Action`, else the class of `Status`):

| DSN | receipt | the notification |
| --- | --- | --- |
| Action: failed (any status), or status 5.x.x | undelivered | `undelivered`, reason: status + diagnostic |
| Action: delayed, or status 4.x.x without failed | pending | unchanged: an event only |
| Action: delivered (status 2.x.x) | delivered | `sent` → `delivered` |
| Action: relayed / expanded | pending | unchanged: the next MTA sends no DSN, so nothing is proven |

A non-delivery text is undelivered unless it only reports a delay. A message that is neither (an
auto-reply, a subscriber's answer, a read receipt) is "not a bounce" and gives no receipt: a reply
quoting our Message-ID in `In-Reply-To` must never mark a warning undelivered.

Receipts carry no address in their texts: the diagnostic is stored without the e-mail addresses
it quotes (the notification already names its destination).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import parsedate_to_datetime

from channels.base import RECEIPT_DELIVERED, RECEIPT_PENDING, RECEIPT_UNDELIVERED, Receipt
from channels.email_mime import message_id_for

__all__ = ["BOUNCE", "DSN", "NOT_A_BOUNCE", "BounceReading", "read_bounce"]

CHANNEL = "email"
DSN, BOUNCE, NOT_A_BOUNCE = "dsn", "non-delivery", "not a bounce"
MAX_ID = 100  # InboundReceipt.provider_message_id
MAX_ALTERNATIVES = 300  # InboundReceipt.alternative_ids, ","-joined
MAX_RAW_STATUS = 32
MAX_ERROR_CODE = 32
MAX_TEXT_SCANNED = 256 * 1024  # a non-delivery text is read this far for a quoted Message-ID

_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([45])\d\d\b")
_ANGLE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_ADDRESS = re.compile(r"<?[^\s<>:;,()\"']+@[^\s<>:;,()\"']+>?:?")
_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
# Subjects of the non-delivery messages MTAs send (English, and Vietnamese relays' own).
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|not (been )?delivered|delivery (status notification|failure|has failed|failed|problem)"
    r"|failure notice|returned mail|mail delivery (failed|system|subsystem)|non-?delivery|could not be delivered"
    r"|delivery report|delayed mail|warning: could not send|không (thể )?gửi được|thư (bị )?trả lại",
    re.IGNORECASE)
_DELAY_WORDS = re.compile(r"\bdelay(ed)?\b|will (be )?retr(y|ied)|still (being )?retr|could not send message for past"
                          r"|has not yet been delivered", re.IGNORECASE)
_PERMANENT_WORDS = re.compile(r"permanent|given up|gave up|failed permanently|does not exist|user unknown"
                              r"|no such user|mailbox unavailable|rejected", re.IGNORECASE)


@dataclass(frozen=True)
class BounceReading:
    """What one returned message said: its kind, its receipts, and why it gave none (if so)."""

    kind: str  # DSN, BOUNCE or NOT_A_BOUNCE
    receipts: list[Receipt] = field(default_factory=list)
    problem: str | None = None  # a bounce that names no Message-ID we could find

    @property
    def is_bounce(self) -> bool:
        return self.kind != NOT_A_BOUNCE


@dataclass(frozen=True)
class _Recipient:
    """One per-recipient block of a DSN, reduced to what a receipt needs."""

    status: str
    raw_status: str
    error_code: str | None
    address: str | None
    done_at: datetime | None


def read_bounce(raw: bytes, *, sender: str) -> BounceReading:
    """Read one returned message (the bytes as the mailbox holds them). `sender` is our
    `smtp.sender`: its domain tells our Message-IDs from others quoted in a text."""
    message = message_from_bytes(raw, policy=policy.compat32)
    domain = sender.rpartition("@")[2].lower()
    report = _delivery_status(message)
    if report is not None:
        return _read_dsn(message, report, sender=sender, domain=domain)
    if _looks_like_non_delivery(message):
        return _read_non_delivery(message, sender=sender, domain=domain)
    return BounceReading(NOT_A_BOUNCE)


# -- DSN ---------------------------------------------------------------------------------------


def _delivery_status(message: Message) -> list[Message] | None:
    """The field blocks of a DSN's `message/delivery-status` part (per-message first), or None
    when the message is not a delivery-status report."""
    if message.get_content_type() != "multipart/report":
        return None
    if (message.get_param("report-type") or "").lower() != "delivery-status":
        return None
    for part in message.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            payload = part.get_payload()
            if isinstance(payload, list):
                return [block for block in payload if isinstance(block, Message)]
            return _blocks_from_text(part)
    return []


def _blocks_from_text(part: Message) -> list[Message]:
    """Field blocks of a delivery-status part the parser left as text (an encoded one)."""
    text = _text_of(part)
    return [HeaderParser().parsestr(block.strip() + "\n") for block in re.split(r"\r?\n\s*\r?\n", text)
            if block.strip()]


def _read_dsn(message: Message, blocks: list[Message], *, sender: str, domain: str) -> BounceReading:
    per_message = blocks[0] if blocks else Message()
    recipients = [block for block in blocks if block.get("Action") or block.get("Final-Recipient")
                  or block.get("Status")]
    if per_message in recipients:  # a report that put its first recipient's fields in the first block
        per_message = Message()
    ids = _message_ids(message, per_message, sender=sender, domain=domain)
    if not ids:
        return BounceReading(DSN, problem="no Message-ID found in the report or its returned headers")
    arrival = _date(per_message.get("Arrival-Date")) or _date(message.get("Date"))
    readings = [_dsn_recipient(block, arrival) for block in recipients] or [
        _Recipient(RECEIPT_UNDELIVERED, "failed", None, None, arrival)]  # a report with no recipient fields
    own = _ours(ids[0], domain)
    return BounceReading(DSN, [_receipt(ids, reading, with_destination=own) for reading in readings])


def _dsn_recipient(block: Message, arrival: datetime | None) -> _Recipient:
    action = _unfold(block.get("Action", "")).lower().split(" ")[0]
    found = _STATUS_CODE.search(_unfold(block.get("Status", "")))
    code = found.group(0) if found else ""
    status_class = code[:1]
    if action == "failed" or (not action and status_class == "5"):
        status = RECEIPT_UNDELIVERED
    elif action == "delivered" or (not action and status_class == "2"):
        status = RECEIPT_DELIVERED
    else:  # delayed, relayed, expanded, or only a 4.x.x: not a final word
        status = RECEIPT_PENDING
    shown = action or {"5": "failed", "4": "delayed", "2": "delivered"}.get(status_class, "report")
    diagnostic = _condensed(_unfold(block.get("Diagnostic-Code", "")), code)
    address = _address(block.get("Original-Recipient")) or _address(block.get("Final-Recipient"))
    done_at = _date(block.get("Last-Attempt-Date")) or arrival
    return _Recipient(status, f"{shown} {code}".strip(), diagnostic or code or None, address, done_at)


# -- non-delivery texts ------------------------------------------------------------------------


def _looks_like_non_delivery(message: Message) -> bool:
    """From a mailer daemon, naming failed recipients, or titled as MTAs title bounces."""
    sender_local = _address(message.get("From") or "", any_type=True) or ""
    if sender_local.partition("@")[0] in _DAEMONS:
        return True
    if message.get("X-Failed-Recipients"):
        return True
    return bool(_BOUNCE_SUBJECT.search(_unfold(message.get("Subject", ""))))


def _read_non_delivery(message: Message, *, sender: str, domain: str) -> BounceReading:
    text = "\n".join(_text_of(part) for part in message.walk() if part.get_content_maintype() == "text")
    text = text[:MAX_TEXT_SCANNED]
    ids = _message_ids(message, Message(), sender=sender, domain=domain, text=text)
    if not ids:
        return BounceReading(BOUNCE, problem="no Message-ID of ours found in the non-delivery message")
    found = _STATUS_CODE.search(text)
    code = found.group(0) if found else ""
    subject = _unfold(message.get("Subject", ""))
    delayed = (code.startswith("4") or (not code and _DELAY_WORDS.search(f"{subject}\n{text}") is not None)) \
        and not _PERMANENT_WORDS.search(subject)
    status = RECEIPT_PENDING if delayed else RECEIPT_UNDELIVERED
    reply = _REPLY_CODE.search(text)
    shown = f"{'delayed' if delayed else 'bounce'} {code}".strip()
    failed = message.get("X-Failed-Recipients")
    reading = _Recipient(status, shown, code or (reply.group(0) if reply else None),
                         _address(failed) if failed else None, _date(message.get("Date")))
    return BounceReading(BOUNCE, [_receipt(ids, reading, with_destination=_ours(ids[0], domain))])


# -- finding our Message-ID --------------------------------------------------------------------


def _message_ids(message: Message, per_message: Message, *, sender: str, domain: str,
                 text: str | None = None) -> list[str]:
    """Candidate ids, most specific first, without duplicates and never the report's own id."""
    own = set(_ids_in(message.get("Message-ID")))
    found: list[str] = []
    for headers in _returned_headers(message):
        found += _ids_in(headers.get("Message-ID"))
        reference = _unfold(headers.get("X-Notifier-Reference", ""))
        if reference:
            found.append(message_id_for(reference, sender).strip("<>"))
    for value in (message.get("Original-Message-ID"), per_message.get("Original-Message-ID"),
                  per_message.get("X-Original-Message-ID"), message.get("In-Reply-To"), message.get("References")):
        found += _ids_in(value)
    if not found:
        found += [candidate for candidate in _quoted_ids(text if text is not None else _all_text(message), sender)
                  if _ours(candidate, domain)]
    return [candidate for candidate in dict.fromkeys(found) if candidate not in own and len(candidate) <= MAX_ID]


def _returned_headers(message: Message) -> list[Message]:
    """The original's headers a report returns: `text/rfc822-headers` or `message/rfc822`."""
    found: list[Message] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("text/rfc822-headers", "message/rfc822-headers", "text/global-headers"):
            found.append(HeaderParser().parsestr(_text_of(part)))
        elif kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(payload[0])
    return found


def _quoted_ids(text: str, sender: str) -> Iterable[str]:
    """Ids on the `Message-ID:` (or our `X-Notifier-Reference:`) lines of headers quoted in a text.
    Not any `<…@…>`: the quoted headers hold addresses at our domain too (From, Return-Path)."""
    for line in re.finditer(r"^[ \t>]*Message-ID:\s*(<[^>\r\n]+>)", text, re.IGNORECASE | re.MULTILINE):
        yield from _ids_in(line.group(1))
    for line in re.finditer(r"^[ \t>]*X-Notifier-Reference:[ \t]*(\S+)", text, re.IGNORECASE | re.MULTILINE):
        yield message_id_for(line.group(1), sender).strip("<>")


def _ids_in(value: object) -> list[str]:
    if not value:
        return []
    text = _unfold(str(value))
    ids = _ANGLE_ID.findall(text)
    if ids:
        return ids
    bare = text.strip()
    return [bare] if "@" in bare and " " not in bare else []


def _ours(message_id: str, domain: str) -> bool:
    return bool(domain) and message_id.rpartition("@")[2].lower() == domain


# -- small readers -----------------------------------------------------------------------------


def _receipt(ids: list[str], reading: _Recipient, *, with_destination: bool) -> Receipt:
    alternatives: list[str] = []
    room = MAX_ALTERNATIVES
    for candidate in ids[1:]:
        if len(candidate) + 1 > room:
            break
        alternatives.append(candidate)
        room -= len(candidate) + 1
    return Receipt(channel=CHANNEL, provider_message_id=ids[0], status=reading.status,
                   raw_status=reading.raw_status[:MAX_RAW_STATUS], error_code=reading.error_code,
                   done_at=reading.done_at, destination=reading.address if with_destination else None,
                   alternative_ids=tuple(alternatives))


def _condensed(diagnostic: str, code: str) -> str:
    """The diagnostic as a short reason: no `smtp;` type, no addresses, no repeated status code,
    at most 32 characters (the column's size)."""
    text = re.sub(r"^\s*[\w-]+\s*;\s*", "", diagnostic)
    text = _ADDRESS.sub(" ", re.sub(r"\bhttps?://\S+", " ", text))
    if code:
        text = re.sub(rf"(?<![\d.]){re.escape(code)}(?![\d.])", " ", text, count=1)
    reply = re.match(r"\s*(\d{3})(?![\d.])[\s-]*", text)
    rest = text[reply.end():] if reply else text
    # MTAs put the specific words last: "Recipient address rejected: User unknown in …",
    # "RESOLVER.ADR.RecipientNotFound; Recipient not found by …".
    clauses = [clause for clause in (c.strip(" :;,-") for c in re.split(r"[:;]\s", rest)) if clause]
    text = " ".join(filter(None, (reply.group(1) if reply else "", clauses[-1] if clauses else "")))
    text = re.sub(r"\s+", " ", text).strip(" :;,-")
    if len(text) > MAX_ERROR_CODE:
        text = text[:MAX_ERROR_CODE - 1].rstrip() + "…"
    return text


def _address(value: object, *, any_type: bool = False) -> str | None:
    """`rfc822; Someone@Example.VN` (or a From header) → `someone@example.vn`; None if none."""
    if not value:
        return None
    text = _unfold(str(value))
    kind, separator, rest = text.partition(";")
    if separator and not any_type:
        if kind.strip().lower() not in ("rfc822", "utf-8"):
            return None
        text = rest
    found = re.search(r"[^\s<>;,\"']+@[^\s<>;,\"']+", text)
    return found.group(0).lower() if found else None


def _date(value: object) -> datetime | None:
    """An RFC 5322 date as aware UTC; a date without a zone is taken as UTC; None if unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(_unfold(str(value)))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _unfold(value: str) -> str:
    return re.sub(r"\s+", " ", str(value)).strip()


def _text_of(part: Message) -> str:
    """A text part's content, transfer-decoded, in its charset (unknown bytes replaced)."""
    payload = part.get_payload(decode=True)
    if payload is None:
        inner = part.get_payload()
        return inner if isinstance(inner, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _all_text(message: Message) -> str:
    return "\n".join(_text_of(part) for part in message.walk()
                     if part.get_content_maintype() == "text")[:MAX_TEXT_SCANNED]
