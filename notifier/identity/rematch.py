"""Match a stored feed again, once the data that was missing has arrived.

A feed often lands before the logs of its day: the Authority reports yesterday's sightings in the
morning, the RADIUS detail files of the night come in at noon, a leaked number belongs to a
subscriber the next customer export adds. Its items then stay `unmatched` although the operator
now knows who held the address. Importing the file again would make a second feed and warn
everyone in it twice (`import_feed` refuses it), so the stored items are decided again instead:

- `unmatched` and `ambiguous` items (and any left `pending`) go back to `pending` and through
  `match_feed`, the matcher every import uses, against the assignments and subscribers stored now.
  An ambiguous item can become certain when a later log ends one of the two sessions.
- `matched` items keep their account: a warning may already name them, and a subscriber told
  about an event is never re-assigned behind the warning's back. `rejected` lines stay as they
  are (the line itself was bad).

The feed row's counts follow. Newly matched accounts are warned by a campaign that plans only the
items no warning tells yet (`create_campaign(..., untold=True)`, `campaign create --untold`).
After a nightly log import, `feeds_to_match_again` names the recent feeds worth it (from the
counts on their rows, without reading their items), so a scheduled job can match them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.db import session_scope
from notifier.errors import NotFoundError
from notifier.identity.matching import MatchCounts, feed_match_counts, match_feed
from notifier.models import Feed, FeedItem, utcnow

# The outcomes that new assignments or subscribers can change; `matched` and `rejected` are final.
UNDECIDED_STATUSES = ("pending", "unmatched", "ambiguous")
# How far back an assignment or subscriber import looks for feeds it may complete (a hint only):
# the Authority's reports are about the last days, and logs arrive within a day or two.
RECENT_FEED_DAYS = 7


@dataclass(frozen=True)
class Rematch:
    """What matching a feed again changed: how many items were decided again, how many of them are
    now matched, and the feed's totals afterwards."""

    feed_id: int
    decided_again: int
    newly_matched: int
    totals: MatchCounts

    def as_json(self) -> dict[str, int]:
        """The `feed match --json` document of one feed."""
        return {"id": self.feed_id, "decided_again": self.decided_again, "newly_matched": self.newly_matched,
                "matched": self.totals.matched, "unmatched": self.totals.unmatched,
                "ambiguous": self.totals.ambiguous}


def match_feed_again(session: Session, feed_id: int, *, skew_seconds: float | None = None) -> Rematch:
    """Decide the feed's unmatched and ambiguous items again (module docstring); NotFoundError for
    an unknown feed. One UPDATE sets them pending, then `match_feed` decides them a batch at a
    time, as an import does."""
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFoundError("feed", feed_id)
    items = FeedItem.__table__
    matched_before = session.execute(sa.select(sa.func.count()).select_from(items).where(
        items.c.feed_id == feed_id, items.c.status == "matched")).scalar_one()
    decided_again = session.execute(
        sa.update(items).where(items.c.feed_id == feed_id, items.c.status.in_(UNDECIDED_STATUSES))
        .values(status="pending", account_id=None, reason=None)).rowcount
    totals = (match_feed(session, feed_id, skew_seconds=skew_seconds) if decided_again
              else feed_match_counts(session, feed_id))
    feed.matched, feed.unmatched, feed.ambiguous = totals.matched, totals.unmatched, totals.ambiguous
    session.add(feed)
    return Rematch(feed_id, decided_again, totals.matched - matched_before, totals)


def feeds_to_match_again(session: Session, *, days: int = RECENT_FEED_DAYS, now: datetime | None = None) -> list[int]:
    """Feeds imported in the last `days` days that still have unmatched or ambiguous events, oldest
    first (read from the feed rows' counts, which every import and `match_feed_again` keep)."""
    since = (now or utcnow()) - timedelta(days=days)
    return list(session.exec(select(Feed.id).where(
        Feed.imported_at >= since, sa.or_(Feed.unmatched > 0, Feed.ambiguous > 0)).order_by(Feed.id)).all())


def match_recent_feeds_again(database_url: str, *, days: int) -> list[Rematch]:
    """`match_feed_again` for each of `feeds_to_match_again`, a transaction per feed: a large feed
    does not hold the others back, and what is done stays done if a later one fails."""
    with session_scope(database_url) as session:
        feed_ids = feeds_to_match_again(session, days=days)
    results = []
    for feed_id in feed_ids:
        with session_scope(database_url) as session:
            results.append(match_feed_again(session, feed_id))
    return results
