"""Identity resolution: which account does each feed item point at?

Phones and e-mails match the account's contact points (clear or SHA-256); an IP address matches
the account that held it at the time the event was seen. One account → matched; none →
unmatched; several → ambiguous (never guessed). Items are kept whatever the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.errors import MatchError
from notifier.identifiers import ip_key
from notifier.models import ContactPoint, FeedItem, IpAssignment

MATCH_BATCH = 500

_CONTACT_COLUMNS = {
    "msisdn": ("msisdn", ContactPoint.value),
    "email": ("email", ContactPoint.value),
    "msisdn_sha256": ("msisdn", ContactPoint.value_sha256),
    "email_sha256": ("email", ContactPoint.value_sha256),
}


@dataclass
class MatchCounts:
    matched: int = 0
    unmatched: int = 0
    ambiguous: int = 0


def accounts_for_contact(session: Session, identifier_kind: str, identifier: str) -> list[int]:
    """Accounts that list this phone / e-mail (or its hash) as a contact point."""
    if identifier_kind not in _CONTACT_COLUMNS:
        raise MatchError(f"cannot match identifier kind '{identifier_kind}'")
    kind, column = _CONTACT_COLUMNS[identifier_kind]
    rows = session.exec(
        select(ContactPoint.account_id).where(ContactPoint.kind == kind, column == identifier).distinct()
    ).all()
    return sorted(rows)


def accounts_for_ip(session: Session, ip: str, seen_at: datetime) -> list[int]:
    """Accounts whose assignment covered `ip` at `seen_at` (interval closed at start, open at end)."""
    key = ip_key(ip)
    rows = session.exec(
        select(IpAssignment.account_id)
        .where(
            IpAssignment.range_start <= key,
            IpAssignment.range_end >= key,
            IpAssignment.started_at <= seen_at,
            sa.or_(IpAssignment.ended_at.is_(None), IpAssignment.ended_at > seen_at),
        )
        .distinct()
    ).all()
    return sorted(rows)


def resolve(session: Session, item: FeedItem) -> tuple[str, int | None, str | None]:
    """(status, account_id, reason) for one feed item."""
    if item.identifier is None or item.identifier_kind is None:
        return "unmatched", None, "no identifier"
    if item.identifier_kind == "ip":
        if item.seen_at is None:
            return "unmatched", None, "an IP address without a time cannot be matched"
        accounts = accounts_for_ip(session, item.identifier, item.seen_at)
        none_reason = "no account held this IP address at that time"
    else:
        accounts = accounts_for_contact(session, item.identifier_kind, item.identifier)
        none_reason = f"no account has this {item.identifier_kind.replace('_', ' ')}"
    if not accounts:
        return "unmatched", None, none_reason
    if len(accounts) > 1:
        return "ambiguous", None, f"{len(accounts)} accounts match; not guessed"
    return "matched", accounts[0], None


def match_feed(session: Session, feed_id: int | None) -> MatchCounts:
    """Resolve every pending item of a feed; returns the totals over the whole feed."""
    last_id = 0
    while True:
        items = session.exec(
            select(FeedItem)
            .where(FeedItem.feed_id == feed_id, FeedItem.status == "pending", FeedItem.id > last_id)
            .order_by(FeedItem.id)
            .limit(MATCH_BATCH)
        ).all()
        if not items:
            break
        for item in items:
            item.status, item.account_id, item.reason = resolve(session, item)
            last_id = item.id or last_id
        session.flush()
    return feed_match_counts(session, feed_id)


def feed_match_counts(session: Session, feed_id: int | None) -> MatchCounts:
    rows = session.exec(
        select(FeedItem.status, sa.func.count()).where(FeedItem.feed_id == feed_id).group_by(FeedItem.status)
    ).all()
    by_status = dict(rows)
    return MatchCounts(matched=by_status.get("matched", 0), unmatched=by_status.get("unmatched", 0),
                       ambiguous=by_status.get("ambiguous", 0))
