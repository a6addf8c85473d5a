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
from notifier.identifiers import LOCAL_TIMEZONE, get_zone, mask_identifier
from notifier.ingest.records import DATE_PRECISION
from notifier.models import (
    Account, Campaign, ContactPoint, Feed, FeedItem, MessagePart, Notification, NotificationItem, utcnow,
)
from notifier.dispatch.outbox import ALL_STATES, CANCELLED, PLANNED, QUEUED, SCHEDULED, SUPPRESSED, transition_many
from notifier.template_catalog import TemplateCatalog, load_catalog

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


def feed_kinds(session: Session, feed: Feed) -> frozenset[str]:
    """The kinds of event a feed holds, read from its accepted lines rather than `Feed.kind`
    (a one-word label that cannot say "mixed"); `Feed.kind` only for a feed with no accepted line."""
    kinds = session.exec(select(FeedItem.kind).where(
        FeedItem.feed_id == feed.id, FeedItem.kind.is_not(None)).distinct()).all()
    return frozenset(kind for kind in kinds if kind) or frozenset({feed.kind})


def create_campaign(
    session: Session, *, feed_id: int, template: str, channels: list[str], name: str | None = None,
    again: bool = False, catalog: TemplateCatalog | None = None,
) -> PlanSummary:
    """Create a campaign for a feed's matched accounts and plan its notifications.

    The template must be written for every kind of event in the feed (`catalog`, default
    `templates/catalog.toml`): a leak warning for infected devices would mislead everyone in it.
    A second campaign for the same feed on a channel an earlier one (not cancelled) already uses
    is refused unless `again`: it would warn the same subscribers twice on that channel.
    """
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFoundError("feed", feed_id)
    (catalog or load_catalog()).check_fits(template, feed_id=feed_id, feed_kinds=feed_kinds(session, feed))
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
    """The threat a notification is filed under (`Notification.threat`, what care staff see): the
    first one its messages name, i.e. the latest sighting's, else the most often seen."""
    names = _threat_names(_sightings(items))
    return names[0] if names else None


def build_context(account: Account, items: list[FeedItem]) -> dict[str, object]:
    """The template context for one account's events (JSON-safe; times as ISO 8601 UTC, a day
    given without a time as its local date `YYYY-MM-DD`).

    One story: the threat named (`threat`) is the latest sighting's, whose IP and time the SMS
    quotes; `threats` names every threat seen, that one first. Counts are of sightings (feed
    lines), so a leak row naming both a phone and an e-mail of the account counts once.
    """
    sightings = _sightings(items)
    quoted = sightings[-1][0] if sightings else None
    dated = [group[0] for group in sightings if group[0].seen_at]
    ips = [group[0].identifier for group in sightings if group[0].identifier_kind == "ip"]
    leak_items = [i for i in items if i.kind == "data_leak"]
    categories = Counter(group[0].category for group in sightings if group[0].category)
    return {
        "subscriber": {"full_name": account.full_name, "account_id": account.account_ref},
        "threat": {"name": quoted.threat if quoted else None,
                   "category": (quoted.category if quoted and quoted.category
                                else categories.most_common(1)[0][0] if categories else None),
                   "description": None},
        "threats": _threat_names(sightings),
        "events": [_event(group) for group in sightings[-MAX_EVENTS_IN_CONTEXT:]],
        "event_count": len(sightings),
        "first_seen": _when(dated[0]) if dated else None,
        "last_seen": _when(dated[-1]) if dated else None,
        "ip": ips[-1] if ips else None,
        "data_classes": sorted({c for i in leak_items for c in (i.data_classes or "").split(";") if c}),
        "leaked_identifier": next((_masked(i) for i in leak_items if i.identifier), None),
        "leak_source": next((i.source for i in leak_items if i.source), None),
        "advice_url": None,
    }


def _sightings(items: list[FeedItem]) -> list[list[FeedItem]]:
    """The items grouped by the feed line they came from, oldest first (undated ones before all).

    A leak row naming a phone and an e-mail is two items, each matched on its own; when both
    reach this account they are still one sighting.
    """
    grouped: dict[tuple[int, int], list[FeedItem]] = {}
    for item in sorted(items, key=_order_key):
        grouped.setdefault((item.feed_id, item.line), []).append(item)
    return sorted(grouped.values(), key=lambda group: _order_key(group[0]))


def _threat_names(sightings: list[list[FeedItem]]) -> list[str]:
    """Every threat named by the sightings, once each (case aside): the latest sighting's first,
    then by how many sightings name them, the more recent first among equals."""
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for group in reversed(sightings):
        name = (group[0].threat or "").strip()
        if name:
            counts[name.casefold()] += 1
            spelling.setdefault(name.casefold(), name)
    quoted = (sightings[-1][0].threat or "").strip().casefold() if sightings else ""
    return [spelling[key] for key in sorted(counts, key=lambda key: (key != quoted, -counts[key]))]


def _event(group: list[FeedItem]) -> dict[str, object]:
    """One sighting for the e-mail's table: every identifier of its line that reached the account."""
    first = group[0]
    shown = [item.identifier if item.identifier_kind == "ip" else _masked(item) for item in group]
    identifier = ", ".join(dict.fromkeys(value for value in shown if value)) or None
    return {"identifier": identifier, "port": first.port, "seen_at": _when(first), "threat": first.threat}


def _when(item: FeedItem) -> str | None:
    """ISO 8601 UTC, or the local date alone when the feed gave only a day."""
    if item.seen_at is None:
        return None
    if item.seen_precision == DATE_PRECISION:
        return item.seen_at.astimezone(get_zone(LOCAL_TIMEZONE)).date().isoformat()
    return item.seen_at.isoformat()


def _masked(item: FeedItem) -> str | None:
    if item.identifier is None or item.identifier_kind is None:
        return None
    return mask_identifier(item.identifier_kind, item.identifier)


def _order_key(item: FeedItem) -> tuple[datetime, int]:
    """Oldest first, undated before dated, then in file order."""
    return item.seen_at or datetime.min.replace(tzinfo=utcnow().tzinfo), item.id or 0


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
        "resent_after_unknown": _resent_after_unknown(session, campaign_id),
        "created_at": _iso(campaign.created_at), "started_at": _iso(campaign.started_at),
        "finished_at": _iso(campaign.finished_at),
    }


def _resent_after_unknown(session: Session, campaign_id: int) -> int:
    from notifier.dispatch.unknown import resent_after_unknown

    return resent_after_unknown(session, campaign_id)


# --- listing ----------------------------------------------------------------------------------

CAMPAIGN_STATES = ("planned", "running", "paused", "done", "cancelled")


def list_campaigns(session: Session, *, state: str | None = None) -> list[dict[str, object]]:
    """Every campaign (or those in `state`), newest first, with its rows counted per state: the
    `campaign list --json` document. The counts come from one grouped query for all campaigns,
    not one per campaign; `counts` names every state, zeros included, so tools need no defaults."""
    state = state.strip().lower() if state else None
    if state is not None and state not in CAMPAIGN_STATES:
        raise InputError(f"unknown campaign state '{state}' (known: {', '.join(CAMPAIGN_STATES)})")
    query = select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc())
    grouped = (select(Notification.campaign_id, Notification.state, sa.func.count())
               .group_by(Notification.campaign_id, Notification.state))
    if state is not None:
        query = query.where(Campaign.state == state)
        grouped = grouped.join(Campaign, Campaign.id == Notification.campaign_id).where(Campaign.state == state)
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for campaign_id, row_state, count in session.exec(grouped):
        counts[campaign_id][row_state] += count
    return [_campaign_row(campaign, counts[campaign.id or 0]) for campaign in session.exec(query)]


def _campaign_row(campaign: Campaign, counts: Counter[str]) -> dict[str, object]:
    return {
        "id": campaign.id, "name": campaign.name, "feed_id": campaign.feed_id, "template": campaign.template,
        "channels": campaign.channel_list, "state": campaign.state, "created_at": _iso(campaign.created_at),
        "started_at": _iso(campaign.started_at), "finished_at": _iso(campaign.finished_at),
        "total": sum(counts.values()), "counts": {name: counts[name] for name in ALL_STATES},
    }


# --- operator retry -----------------------------------------------------------------------------

RETRYABLE_STATES = ("failed", "undelivered", "expired")


def parse_retry_states(text: str) -> list[str]:
    """"failed,undelivered" → the states an operator may send again; anything else (above all
    `delivered`, `sent`, `unknown`) is refused: a retry never re-sends what arrived or may have."""
    states = [part.strip().lower() for part in text.split(",") if part.strip()]
    wrong = [state for state in states if state not in RETRYABLE_STATES]
    if wrong or not states:
        raise InputError(f"cannot retry state(s) {', '.join(wrong) or '(none)'}: "
                         f"choose among {', '.join(RETRYABLE_STATES)}")
    return list(dict.fromkeys(states))


def retry_campaign(session: Session, campaign_id: int, states: list[str]) -> int:
    """An operator's decision to send again the campaign's rows in `states` (failed, undelivered,
    expired): they go back to `planned` with a fresh attempt count, their old message parts are
    dropped (the events keep the history and the old provider ids), and the next `campaign run`
    sends them. Never a delivered row: only the named final states move. Returns how many."""
    campaign = get_campaign(session, campaign_id)
    if campaign.state == "cancelled":
        raise InputError(f"campaign {campaign_id} is cancelled: nothing to retry")
    states = parse_retry_states(",".join(states))
    moved: list[int] = []
    for state in states:
        for chunk in chunks(session.exec(select(Notification.id).where(
                Notification.campaign_id == campaign_id, Notification.state == state)).all(), PLAN_BATCH):
            moved += transition_many(
                session, chunk, expected=state, to_state=PLANNED, source="operator",
                detail=f"sent again on an operator's request (was {state})",
                values={"attempts": 0, "reason": None, "claimed_by": None, "sent_at": None,
                        "delivered_at": None, "enqueued_at": None})
    for chunk in chunks(moved, PLAN_BATCH):
        session.execute(sa.delete(MessagePart).where(MessagePart.notification_id.in_(chunk)))
    if moved and campaign.state == "done":
        campaign.state, campaign.finished_at = "planned", None
    return len(moved)
