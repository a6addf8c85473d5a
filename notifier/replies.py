"""Subscribers' SMS replies: stored against the subscriber, and a stop word opts the number out.

The SMPP channel's writer thread hands whole replies here in batches (`ReplyStore.store`); the
reader thread never waits on the database. Each reply is matched to the account holding the number
as a contact point and to the latest SMS notification sent to that number, so care staff see it in
`notifier history` next to the warning it answers.

Stop words: a reply whose whole text — ignoring case, Vietnamese diacritics, punctuation and extra
spaces — is "STOP", "HUY" ("Hủy") or "TU CHOI" ("Từ chối") marks that number's contact points
opted out (the same flag a Twilio STOP sets): later campaigns suppress SMS to that number, with the
reason, while the account's other contact points and channels stay as they are. A longer text
that merely contains such a word ("không hủy", "stop calling") is stored but changes nothing: a
subscriber asking a question must not silently lose security warnings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from notifier.db import session_scope
from notifier.dispatch.outbox import bulk_insert
from notifier.identifiers import normalise_msisdn
from notifier.models import ContactPoint, InboundMessage, Notification

STOP_WORDS = frozenset({"STOP", "HUY", "TU CHOI"})
_NOT_WORD = re.compile(r"[^A-Z0-9]+")
_TEXT_LIMIT = 10_000  # 255 UCS-2 parts are ~17,000 characters; nobody replies that much


def is_stop_word(text: str) -> bool:
    """True when the whole reply is a stop word (case-, diacritics- and punctuation-insensitive)."""
    return _fold(text) in STOP_WORDS


def _fold(text: str) -> str:
    """"  Từ  chối! " → "TU CHOI": no diacritics (đ → d), upper case, words split by one space."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(_NOT_WORD.split(plain.upper())).strip()


def e164_or_raw(address: str) -> str:
    """The reply's source in E.164 when it is a phone number in any usual form, else as given."""
    try:
        return normalise_msisdn(address)
    except ValueError:
        return address[:32]


class ReplyStore:
    """The channel's reply sink: one unit of work per batch. Raising means nothing was stored
    (the channel then answers the SMSC "retry later" for every part of the batch)."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url

    def store(self, replies: Sequence[Any]) -> None:
        with session_scope(self._database_url) as session:
            store_replies(session, replies)


def store_replies(session: Session, replies: Sequence[Any]) -> int:
    """Insert the replies (one statement), matched to account and notification; opt out the
    numbers whose reply is a stop word (one UPDATE). `replies` are `channels.smpp_replies.Reply`."""
    if not replies:
        return 0
    sources = [e164_or_raw(reply.source) for reply in replies]
    latest = _latest_notifications(session, set(sources))
    holders = _holders(session, set(sources) - set(latest))
    rows = []
    for reply, source in zip(replies, sources):
        notification_id, account_id = latest.get(source, (None, holders.get(source)))
        rows.append({
            "channel": "sms", "source": source, "destination": reply.destination[:32],
            "text": reply.text[:_TEXT_LIMIT], "data_coding": reply.data_coding, "parts": reply.parts,
            "parts_expected": reply.parts_expected, "opt_out": is_stop_word(reply.text),
            "received_at": reply.received_at, "account_id": account_id, "notification_id": notification_id,
        })
    bulk_insert(session, InboundMessage.__table__, rows)  # type: ignore[arg-type]
    stopped = sorted({row["source"] for row in rows if row["opt_out"]})
    if stopped:
        session.execute(sa.update(ContactPoint)
                        .where(ContactPoint.kind == "msisdn", ContactPoint.value.in_(stopped))  # type: ignore[attr-defined]
                        .values(opted_out=True))
    return len(rows)


def _latest_notifications(session: Session, sources: set[str]) -> dict[str, tuple[int, int]]:
    """number -> (id, account id) of the latest SMS notification sent to it."""
    if not sources:
        return {}
    latest = (sa.select(sa.func.max(Notification.id))
              .where(Notification.channel == "sms", Notification.destination.in_(sources),  # type: ignore[union-attr]
                     Notification.sent_at.is_not(None))  # type: ignore[union-attr]
              .group_by(Notification.destination))
    found = session.execute(sa.select(Notification.destination, Notification.id, Notification.account_id)
                            .where(Notification.id.in_(latest)))  # type: ignore[union-attr]
    return {destination: (notification_id, account_id) for destination, notification_id, account_id in found}


def _holders(session: Session, sources: set[str]) -> dict[str, int]:
    """number -> the account holding it as a contact point (its primary contact first)."""
    if not sources:
        return {}
    found = session.execute(sa.select(ContactPoint.value, ContactPoint.account_id)
                            .where(ContactPoint.kind == "msisdn", ContactPoint.value.in_(sources))  # type: ignore[attr-defined]
                            .order_by(ContactPoint.position, ContactPoint.account_id))
    holders: dict[str, int] = {}
    for value, account_id in found:
        holders.setdefault(value, account_id)
    return holders
