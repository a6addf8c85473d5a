"""Identity resolution: which account does each feed item point at?

Phones and e-mails match the account's contact points (clear or SHA-256); an IP address matches
the account that held it at the time the event was seen. One account → matched; none →
unmatched; several → ambiguous (never guessed). Items are kept whatever the outcome.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.batching import chunks
from notifier.errors import MatchError
from notifier.identifiers import ip_key, key_network_start
from notifier.models import ContactPoint, FeedItem, IpAssignment

MATCH_BATCH = 500
_NO_IP_HOLDER = "no account held this IP address at that time"

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


def prefix_lengths(session: Session) -> list[int]:
    """The prefix lengths assignments use (128 for single addresses): few, so each is one lookup."""
    return sorted(session.exec(select(IpAssignment.prefix_len).distinct()).all(), reverse=True)


def accounts_for_ip(session: Session, ip: str, seen_at: datetime, *, lengths: list[int] | None = None) -> list[int]:
    """Accounts whose assignment covered `ip` at `seen_at` (interval closed at start, open at end)."""
    return accounts_for_ips(session, [(ip, seen_at)], lengths=lengths)[0]


def accounts_for_ips(
    session: Session, sightings: list[tuple[str, datetime]], *, lengths: list[int] | None = None
) -> list[list[int]]:
    """`accounts_for_ip` for many sightings with one query: for every prefix length in use, the
    network that would hold each address is looked up by equality on `range_start`."""
    lengths = prefix_lengths(session) if lengths is None else lengths
    keys = [ip_key(ip) for ip, _ in sightings]
    starts = {key_network_start(key, length) for key in keys for length in lengths}
    table = IpAssignment.__table__
    by_start: dict[str, list[sa.Row]] = defaultdict(list)  # type: ignore[type-arg]
    for start_chunk in chunks(sorted(starts), MATCH_BATCH):
        for row in session.execute(sa.select(table.c.account_id, table.c.range_start, table.c.range_end,
                                             table.c.started_at, table.c.ended_at)
                                   .where(table.c.range_start.in_(start_chunk))):
            by_start[row.range_start].append(row)
    results = []
    for key, (_, seen_at) in zip(keys, sightings):
        accounts = {row.account_id for length in lengths for row in by_start.get(key_network_start(key, length), ())
                    if row.range_end >= key and row.started_at <= seen_at
                    and (row.ended_at is None or row.ended_at > seen_at)}
        results.append(sorted(accounts))
    return results


def resolve(session: Session, item: FeedItem | sa.Row, *, lengths: list[int] | None = None  # type: ignore[type-arg]
            ) -> tuple[str, int | None, str | None]:
    """(status, account_id, reason) for one feed item."""
    if item.identifier is None or item.identifier_kind is None:
        return "unmatched", None, "no identifier"
    if item.identifier_kind == "ip":
        if item.seen_at is None:
            return "unmatched", None, "an IP address without a time cannot be matched"
        return _outcome(accounts_for_ip(session, item.identifier, item.seen_at, lengths=lengths), _NO_IP_HOLDER)
    return _outcome(accounts_for_contact(session, item.identifier_kind, item.identifier),
                    _no_contact_reason(item.identifier_kind))


def match_feed(session: Session, feed_id: int | None) -> MatchCounts:
    """Resolve every pending item of a feed, a batch at a time; returns the totals over the feed.

    Phones, e-mails and hashes are looked up with one query per batch and kind, IP addresses with
    one query per batch (`accounts_for_ips`).
    """
    table = FeedItem.__table__
    lengths = prefix_lengths(session)
    last_id = 0
    while True:
        items = session.execute(
            sa.select(table.c.id, table.c.identifier_kind, table.c.identifier, table.c.seen_at)
            .where(table.c.feed_id == feed_id, table.c.status == "pending", table.c.id > last_id)
            .order_by(table.c.id).limit(MATCH_BATCH)
        ).all()
        if not items:
            break
        contacts = _contact_accounts(session, items)
        sighted = [i for i in items if i.identifier_kind == "ip" and i.identifier and i.seen_at]
        by_ip = dict(zip((i.id for i in sighted), accounts_for_ips(
            session, [(i.identifier, i.seen_at) for i in sighted], lengths=lengths)))
        outcomes = []
        for item in items:
            if item.identifier_kind in _CONTACT_COLUMNS and item.identifier is not None:
                accounts = sorted(contacts.get((item.identifier_kind, item.identifier), ()))
                status, account_id, reason = _outcome(accounts, _no_contact_reason(item.identifier_kind))
            elif item.id in by_ip:
                status, account_id, reason = _outcome(by_ip[item.id], _NO_IP_HOLDER)
            else:
                status, account_id, reason = resolve(session, item, lengths=lengths)
            outcomes.append({"b_id": item.id, "status": status, "account_id": account_id, "reason": reason})
        session.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id"))
                        .values(status=sa.bindparam("status"), account_id=sa.bindparam("account_id"),
                                reason=sa.bindparam("reason")), outcomes)
        last_id = items[-1].id
    return feed_match_counts(session, feed_id)


def _contact_accounts(session: Session, items: list[sa.Row]) -> dict[tuple[str, str], set[int]]:  # type: ignore[type-arg]
    """(identifier kind, identifier) → accounts listing it, for every contact identifier in a batch."""
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    for identifier_kind, (kind, column) in _CONTACT_COLUMNS.items():
        values = {i.identifier for i in items if i.identifier_kind == identifier_kind and i.identifier}
        if not values:
            continue
        for account_id, value in session.execute(
            sa.select(ContactPoint.account_id, column).where(ContactPoint.kind == kind, column.in_(values))
        ):
            found[(identifier_kind, value)].add(account_id)
    return found


def _outcome(accounts: list[int], none_reason: str) -> tuple[str, int | None, str | None]:
    if not accounts:
        return "unmatched", None, none_reason
    if len(accounts) > 1:
        return "ambiguous", None, f"{len(accounts)} accounts match; not guessed"
    return "matched", accounts[0], None


def _no_contact_reason(identifier_kind: str) -> str:
    return f"no account has this {identifier_kind.replace('_', ' ')}"


def feed_match_counts(session: Session, feed_id: int | None) -> MatchCounts:
    rows = session.exec(
        select(FeedItem.status, sa.func.count()).where(FeedItem.feed_id == feed_id).group_by(FeedItem.status)
    ).all()
    by_status = dict(rows)
    return MatchCounts(matched=by_status.get("matched", 0), unmatched=by_status.get("unmatched", 0),
                       ambiguous=by_status.get("ambiguous", 0))
