"""Read-only views of feeds for people and for other tools (`feed show`, `feed list`)."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.errors import NotFoundError
from notifier.models import Account, Campaign, Feed, FeedItem
from notifier.timefmt import iso_utc


def feed_summary(session: Session, feed_id: int) -> dict[str, object]:
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFoundError("feed", feed_id)
    return {
        "id": feed.id, "format": feed.format, "source": feed.source, "report_type": feed.report_type,
        "kind": feed.kind, "filename": feed.filename, "file_sha256": feed.file_sha256,
        "imported_at": iso_utc(feed.imported_at), "accepted": feed.accepted, "rejected": feed.rejected,
        "matched": feed.matched, "unmatched": feed.unmatched, "ambiguous": feed.ambiguous,
    }


ITEM_OUTCOME_COLUMNS = ("line", "status", "account_id", "reason")  # formats.md, `feed show ID --items`
ITEM_STREAM_ROWS = 5000  # rows fetched at a time: a 1,000,000-line feed is never one list


def feed_items(session: Session, feed_id: int, *, status: str | None = None) -> list[dict[str, object]]:
    """Every line of the feed with its outcome: the `feed show ID --items --json` document."""
    return list(iter_feed_items(session, feed_id, status=status))


def iter_feed_items(session: Session, feed_id: int, *, status: str | None = None) -> Iterator[dict[str, object]]:
    """The feed's lines in line order, fetched ITEM_STREAM_ROWS at a time (a server-side cursor on
    PostgreSQL), so `feed show --items --json/--csv` streams a feed of any size. Each row carries
    formats.md's `line, status, account_id` (the operator's account ref), `reason`, then the
    event's identifier kind, threat and time for people reading the table."""
    if session.get(Feed, feed_id) is None:
        raise NotFoundError("feed", feed_id)
    query = (sa.select(FeedItem.line, FeedItem.status, Account.account_ref, FeedItem.reason,
                       FeedItem.identifier_kind, FeedItem.threat, FeedItem.seen_at, FeedItem.seen_precision)
             .join(Account, Account.id == FeedItem.account_id, isouter=True)
             .where(FeedItem.feed_id == feed_id))
    if status:
        query = query.where(FeedItem.status == status)
    query = query.order_by(FeedItem.line, FeedItem.id).execution_options(yield_per=ITEM_STREAM_ROWS)
    for r in session.execute(query):
        yield {"line": r.line, "status": r.status, "account_id": r.account_ref, "reason": r.reason,
               "identifier_kind": r.identifier_kind, "threat": r.threat, "seen_at": iso_utc(r.seen_at),
               "seen_precision": r.seen_precision}


def list_feeds(session: Session) -> list[dict[str, object]]:
    """Every feed, newest first, with its counts and the campaigns planned on it: the `feed list
    --json` document. Two queries whatever the number of feeds (feeds, then their campaigns)."""
    feeds = session.exec(select(Feed).order_by(Feed.imported_at.desc(), Feed.id.desc())).all()
    campaigns: dict[int, list[int]] = {}
    for feed_id, campaign_id in session.exec(
        select(Campaign.feed_id, Campaign.id).where(Campaign.feed_id.is_not(None)).order_by(Campaign.id)
    ):
        campaigns.setdefault(feed_id, []).append(campaign_id)
    return [
        {"id": feed.id, "imported_at": iso_utc(feed.imported_at), "format": feed.format,
         "report_type": feed.report_type, "kind": feed.kind, "source": feed.source, "filename": feed.filename,
         "accepted": feed.accepted, "rejected": feed.rejected, "matched": feed.matched,
         "unmatched": feed.unmatched, "ambiguous": feed.ambiguous, "campaigns": campaigns.get(feed.id or 0, [])}
        for feed in feeds
    ]
