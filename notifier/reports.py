"""Read-only views of feeds for people and for other tools (`feed show`, `feed list`)."""

from __future__ import annotations

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


def feed_items(session: Session, feed_id: int, *, status: str | None = None) -> list[dict[str, object]]:
    """Every line of the feed with its outcome: the `feed show ID --items --json` document."""
    if session.get(Feed, feed_id) is None:
        raise NotFoundError("feed", feed_id)
    query = (select(FeedItem, Account.account_ref)
             .join(Account, Account.id == FeedItem.account_id, isouter=True)
             .where(FeedItem.feed_id == feed_id))
    if status:
        query = query.where(FeedItem.status == status)
    return [
        {"line": r.line, "status": r.status, "account_id": account_ref,
         "reason": r.reason, "identifier_kind": r.identifier_kind, "threat": r.threat,
         "seen_at": iso_utc(r.seen_at), "seen_precision": r.seen_precision}
        for r, account_ref in session.exec(query.order_by(FeedItem.line, FeedItem.id))
    ]


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
