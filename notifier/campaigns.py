"""Plan a campaign: one outbox row per matched account and channel step, and report its progress.

Planning decides *whether* and *where* each account is warned (terminated accounts, opt-outs,
missing contacts become `suppressed` rows with a reason, so the report says why). Many events for
one account aggregate into one notification whose context carries them all.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.batching import chunks
from notifier.errors import InputError, NotFoundError
from notifier.identifiers import mask_identifier
from notifier.models import (
    Account, Campaign, ContactPoint, Feed, FeedItem, Notification, NotificationItem, utcnow,
)
from notifier.outbox import ALL_STATES, CANCELLED, PLANNED, QUEUED, SCHEDULED, SUPPRESSED, transition_many

KNOWN_CHANNELS = ("sms", "email")
MAX_EVENTS_IN_CONTEXT = 10
PLAN_BATCH = 500
_CHANNEL_CONTACT = {"sms": "msisdn", "email": "email"}


@dataclass(frozen=True)
class PlanSummary:
    campaign_id: int
    accounts: int
    planned: int
    suppressed: int


def parse_channels(text: str) -> list[str]:
    """'sms,email' → ['sms', 'email'], refusing unknown or repeated names."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN_CHANNELS]
    if not names or unknown:
        raise InputError(f"unknown channel(s): {', '.join(unknown) or '(none given)'} "
                         f"(known: {', '.join(KNOWN_CHANNELS)})")
    if len(set(names)) != len(names):
        raise InputError(f"channel named twice in '{text}'")
    return names


def create_campaign(
    session: Session, *, feed_id: int, template: str, channels: list[str], name: str | None = None,
    again: bool = False,
) -> PlanSummary:
    """Create a campaign for a feed's matched accounts and plan its notifications.

    A second campaign for the same feed on a channel an earlier one (not cancelled) already uses
    is refused unless `again`: it would warn the same subscribers twice on that channel.
    """
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFoundError("feed", feed_id)
    earlier = next((c for c in session.exec(select(Campaign).where(
        Campaign.feed_id == feed_id, Campaign.state != "cancelled")) if set(c.channel_list) & set(channels)), None)
    if earlier is not None and not again:
        raise InputError(f"feed {feed_id} already has campaign {earlier.id} on {earlier.channels} "
                         "(use --again for a second one)")
    campaign = Campaign(feed_id=feed_id, template=template, channels=",".join(channels),
                        name=name or f"{template} – feed {feed_id} ({feed.filename})")
    session.add(campaign)
    session.flush()
    account_ids = session.exec(select(FeedItem.account_id).where(
        FeedItem.feed_id == feed_id, FeedItem.status == "matched").distinct().order_by(FeedItem.account_id)).all()
    planned = suppressed = 0
    for batch in chunks(account_ids, PLAN_BATCH):  # memory holds one batch of accounts, not the feed
        items_by_account = _matched_items(session, feed_id, batch)
        accounts = {a.id: a for a in session.exec(select(Account).where(Account.id.in_(batch)))}
        contacts = _contacts(session, batch)
        rows, items_per_row = [], []
        for account_id in batch:
            account, items = accounts[account_id], items_by_account[account_id]
            context = json.dumps(build_context(account, items), ensure_ascii=False)
            for step, channel in enumerate(channels):
                destination, reason = choose_destination(account, channel, contacts.get(account_id, []))
                rows.append({"campaign_id": campaign.id, "account_id": account_id, "channel": channel, "step": step,
                             "destination": destination, "state": SUPPRESSED if reason else PLANNED,
                             "reason": reason, "threat": _main_threat(items), "context": context,
                             "attempts": 0, "created_at": utcnow(), "updated_at": utcnow()})
                items_per_row.append(items)
                planned, suppressed = (planned, suppressed + 1) if reason else (planned + 1, suppressed)
        ids = session.execute(sa.insert(Notification).returning(Notification.id, sort_by_parameter_order=True),
                              rows).scalars().all()
        session.execute(sa.insert(NotificationItem), [
            {"notification_id": nid, "feed_item_id": item.id} for nid, items in zip(ids, items_per_row) for item in items])
        session.expunge_all()
    return PlanSummary(campaign.id or 0, len(account_ids), planned, suppressed)


def _matched_items(session: Session, feed_id: int, account_ids: list[int]) -> dict[int, list[FeedItem]]:
    grouped: dict[int, list[FeedItem]] = defaultdict(list)
    for item in session.exec(
        select(FeedItem).where(FeedItem.feed_id == feed_id, FeedItem.status == "matched",
                               FeedItem.account_id.in_(account_ids)).order_by(FeedItem.id)
    ):
        grouped[item.account_id or 0].append(item)
    return dict(grouped)


def _contacts(session: Session, account_ids: list[int]) -> dict[int, list[ContactPoint]]:
    grouped: dict[int, list[ContactPoint]] = defaultdict(list)
    for contact in session.exec(
        select(ContactPoint).where(ContactPoint.account_id.in_(account_ids)).order_by(ContactPoint.position)
    ):
        grouped[contact.account_id].append(contact)
    return grouped


def choose_destination(
    account: Account, channel: str, contacts: list[ContactPoint]
) -> tuple[str | None, str | None]:
    """(destination, None) when the account can be reached on `channel`, else (None, reason)."""
    if account.status == "terminated":
        return None, "account terminated"
    if getattr(account, f"{channel}_opt_out", False):
        return None, f"subscriber opted out of {channel}"
    kind = _CHANNEL_CONTACT[channel]
    usable = [c for c in contacts if c.kind == kind and not c.opted_out]
    if not usable:
        return None, f"no {'phone number' if kind == 'msisdn' else 'e-mail address'} on record"
    return usable[0].value, None


def _main_threat(items: list[FeedItem]) -> str | None:
    names = Counter(item.threat for item in items if item.threat)
    return names.most_common(1)[0][0] if names else None


def build_context(account: Account, items: list[FeedItem]) -> dict[str, object]:
    """The template context for one account's events (JSON-safe; times as ISO 8601 UTC)."""
    seen = sorted(item.seen_at for item in items if item.seen_at)
    latest_ip = next((i.identifier for i in sorted(items, key=_seen_key, reverse=True)
                      if i.identifier_kind == "ip"), None)
    leak_items = [i for i in items if i.kind == "data_leak"]
    categories = Counter(item.category for item in items if item.category)
    return {
        "subscriber": {"full_name": account.full_name, "account_id": account.account_ref},
        "threat": {"name": _main_threat(items),
                   "category": categories.most_common(1)[0][0] if categories else None,
                   "description": None},
        "events": [_event(item) for item in sorted(items, key=_seen_key)[-MAX_EVENTS_IN_CONTEXT:]],
        "event_count": len(items),
        "first_seen": _iso(seen[0]) if seen else None,
        "last_seen": _iso(seen[-1]) if seen else None,
        "ip": latest_ip,
        "data_classes": sorted({c for i in leak_items for c in (i.data_classes or "").split(";") if c}),
        "leaked_identifier": next((_masked(i) for i in leak_items if i.identifier), None),
        "leak_source": next((i.source for i in leak_items if i.source), None),
        "advice_url": None,
    }


def _event(item: FeedItem) -> dict[str, object]:
    identifier = item.identifier if item.identifier_kind == "ip" else _masked(item)
    return {"identifier": identifier, "port": item.port, "seen_at": _iso(item.seen_at), "threat": item.threat}


def _masked(item: FeedItem) -> str | None:
    if item.identifier is None or item.identifier_kind is None:
        return None
    return mask_identifier(item.identifier_kind, item.identifier)


def _seen_key(item: FeedItem) -> datetime:
    return item.seen_at or datetime.min.replace(tzinfo=utcnow().tzinfo)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --- operator control -------------------------------------------------------------------------


def pause_campaign(session: Session, campaign_id: int) -> Campaign:
    """Hold a campaign: workers leave its queued rows alone until `campaign run` resumes it."""
    campaign = get_campaign(session, campaign_id)
    if campaign.state in ("done", "cancelled"):
        raise InputError(f"campaign {campaign_id} is {campaign.state}: nothing to pause")
    campaign.state = "paused"
    return campaign


def cancel_campaign(session: Session, campaign_id: int) -> int:
    """Stop a campaign for good: rows not yet handed to a provider become `cancelled`."""
    campaign = get_campaign(session, campaign_id)
    if campaign.state in ("done", "cancelled"):
        raise InputError(f"campaign {campaign_id} is {campaign.state}: nothing to cancel")
    campaign.state, campaign.finished_at = "cancelled", utcnow()
    cancelled = 0
    for state in (PLANNED, SCHEDULED, QUEUED):
        ids = session.exec(select(Notification.id).where(
            Notification.campaign_id == campaign_id, Notification.state == state)).all()
        cancelled += len(transition_many(session, ids, expected=state, to_state=CANCELLED, source="operator",
                                         detail="campaign cancelled"))
    return cancelled


# --- progress ---------------------------------------------------------------------------------


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError("campaign", campaign_id)
    return campaign


def campaign_status(session: Session, campaign_id: int) -> dict[str, object]:
    """Counts per state and per channel × state: the `campaign status --json` document."""
    campaign = get_campaign(session, campaign_id)
    rows = session.exec(
        select(Notification.channel, Notification.state, sa.func.count())
        .where(Notification.campaign_id == campaign_id)
        .group_by(Notification.channel, Notification.state)
    ).all()
    states: Counter[str] = Counter()
    channels: dict[str, dict[str, int]] = {name: {} for name in campaign.channel_list}
    for channel, state, count in rows:
        states[state] += count
        channels.setdefault(channel, {})[state] = count
    return {
        "id": campaign.id, "name": campaign.name, "feed_id": campaign.feed_id,
        "template": campaign.template, "channels": campaign.channel_list, "state": campaign.state,
        "total": sum(states.values()),
        "states": {state: states[state] for state in ALL_STATES if states[state]},
        "by_channel": channels,
        "created_at": _iso(campaign.created_at), "started_at": _iso(campaign.started_at),
        "finished_at": _iso(campaign.finished_at),
    }
