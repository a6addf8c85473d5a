"""Plan a campaign: one outbox row per matched account and channel step, and report its progress.

Planning decides *whether* and *where* each account is warned (terminated accounts, opt-outs,
missing contacts become `suppressed` rows with a reason, so the report says why). Many events for
one account aggregate into one notification whose context carries them all.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.batching import chunks
from notifier.db import insert_ignoring_duplicates
from notifier.errors import InputError, NotFoundError
from notifier.identifiers import LOCAL_TIMEZONE, get_zone, mask_identifier
from notifier.ingest.records import DATE_PRECISION
from notifier.models import (
    Account, Campaign, ContactPoint, Feed, FeedItem, Notification, NotificationItem, utcnow,
)
from notifier.dispatch.outbox import drop_parts, transition_many
from notifier.dispatch.states import (
    ALL_STATES, CANCELLED, EXPIRED, FAILED, PLANNED, QUEUED, SCHEDULED, SUPPRESSED, UNDELIVERED,
)
from notifier.ingest.ais import ADVISORY
from notifier.template_catalog import TemplateCatalog, load_catalog
from notifier.threat_categories import AUTO, TEMPLATE_KEY, account_story, advisory_category, split_stories

KNOWN_CHANNELS = ("sms", "email", "billing", "voice")
# Channels no worker sends: their rows wait in `planned` until an export hands them over
# (`notifier billing export`, which marks them `sent`); `campaign run` neither queues nor waits for them.
HANDED_OVER_CHANNELS = frozenset({"billing"})
MAX_EVENTS_IN_CONTEXT = 10
PLAN_BATCH = 500
_CHANNEL_CONTACT = {"sms": "msisdn", "email": "email", "voice": "msisdn"}  # billing: the account's own postal address


@dataclass(frozen=True)
class PlanSummary:
    campaign_id: int
    accounts: int
    planned: int
    suppressed: int
    attached: int = 0  # accounts not warned again: their new events joined an earlier warning (cooldown)
    templates: dict[str, int] = field(default_factory=dict)  # accounts warned with each template
    untold: int = 0  # `auto`: accounts with events of a second story this campaign leaves out


# An earlier warning in one of these states never reached the subscriber, so it does not hold back
# a new one: the cooldown counts every other state (planned or queued ones included: they will go).
NOT_REACHING_STATES = (FAILED, CANCELLED, SUPPRESSED, UNDELIVERED, EXPIRED)


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


def check_campaign_templates(templates_dir: Path, template: str) -> TemplateCatalog:
    """The catalog, after checking that every template the campaign may use exists on disk (the one
    asked for, or with `auto` every template the catalog gives a category): a missing folder is an
    InputError before anything is planned, not a failure of every row at send time."""
    from notifier.rendering import Renderer

    renderer, catalog = Renderer(templates_dir), load_catalog(templates_dir)
    for used in sorted(set(catalog.categories.values())) if template == AUTO else [template]:
        renderer.check_template(used)
    return catalog


def feed_kinds(session: Session, feed: Feed) -> frozenset[str]:
    """The kinds of event a feed holds, read from its accepted lines rather than `Feed.kind`
    (a one-word label that cannot say "mixed"); `Feed.kind` only for a feed with no accepted line
    (an advisory, which has none by nature)."""
    if feed.kind == ADVISORY:
        return frozenset({ADVISORY})
    kinds = session.exec(select(FeedItem.kind).where(
        FeedItem.feed_id == feed.id, FeedItem.kind.is_not(None)).distinct()).all()
    return frozenset(kind for kind in kinds if kind) or frozenset({feed.kind})


def create_campaign(
    session: Session, *, feed_id: int, template: str, channels: list[str], name: str | None = None,
    again: bool = False, untold: bool = False, catalog: TemplateCatalog | None = None,
    cooldown_days: float | None = None, now: datetime | None = None,
) -> PlanSummary:
    """Create a campaign for a feed's matched accounts and plan its notifications.

    The template must be written for every kind of event in the feed (`catalog`, default
    `templates/catalog.toml`): a leak warning for infected devices would mislead everyone in it.
    `template="auto"` picks one per account instead, by its events' threat category (`_auto_story`,
    `notifier/threat_categories.py`), and stores it in each notification's context, which dispatch
    renders with (`threat_categories.notification_template`).
    A second campaign for the same feed on a channel an earlier one (not cancelled) already uses
    is refused unless `again`: it would warn the same subscribers twice on that channel.

    `untold` plans only the feed's matched items that no warning tells or holds yet (`_plannable`):
    items matched after an earlier campaign (`identity.rematch`), a second story an `auto` campaign
    left out, or items whose warnings never reached anyone (suppressed, cancelled, failed). It may follow earlier campaigns on the same channels, since
    it cannot tell an item twice; the cooldown then also counts this feed's own earlier warnings,
    so an account told of a threat hours ago has its newly matched sighting of it attached there.

    Cooldown (`cooldown_days`, default `identity.cooldown_days`; 0 turns it off): an account whose
    new events all name threats it was already warned about, on any channel, by a warning created
    in the last `cooldown_days` (from another feed, and in a state that reaches the subscriber) gets
    no new notification; its new items are attached to that earlier warning instead (`attached`).
    One new threat and the account is warned as usual. An advisory feed plans one notification per
    account of its segment that is not terminated.
    """
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFoundError("feed", feed_id)
    if untold and again:
        raise InputError("--again plans every matched account again, --untold only the events no warning "
                         "tells yet: give one of them")
    if untold and feed.kind == ADVISORY:
        raise InputError(f"feed {feed_id} is an advisory: it has no events to tell later (use --again for a "
                         "second campaign)")
    catalog = catalog or load_catalog()
    if template == AUTO:
        catalog.check_auto(feed_id=feed_id, feed_kinds=feed_kinds(session, feed))
    else:
        catalog.check_fits(template, feed_id=feed_id, feed_kinds=feed_kinds(session, feed))
    earlier = next((c for c in session.exec(select(Campaign).where(
        Campaign.feed_id == feed_id, Campaign.state != "cancelled")) if set(c.channel_list) & set(channels)), None)
    if earlier is not None and not (again or untold):
        raise InputError(f"feed {feed_id} already has campaign {earlier.id} on {earlier.channels} "
                         "(use --again for a second one)")
    default_name = f"{template} – feed {feed_id} ({feed.filename})" + (", events not told before" if untold else "")
    campaign = Campaign(feed_id=feed_id, template=template, channels=",".join(channels), name=name or default_name)
    session.add(campaign)
    session.flush()
    since = _cooldown_start(cooldown_days, now)
    request = _request_details(feed)
    totals: Counter[str] = Counter()
    templates: Counter[str] = Counter()
    for batch in _account_batches(session, feed, untold):  # memory holds one batch of accounts, not the feed
        items_by_account = {} if feed.kind == ADVISORY else _matched_items(session, feed_id, batch, untold)
        warned = (_recent_warnings(session, batch, None if untold else feed_id, since)
                  if since and items_by_account else {})
        accounts = {a.id: a for a in session.exec(select(Account).where(Account.id.in_(batch)))}
        contacts = _contacts(session, batch)
        rows, items_per_row, attachments = [], [], []
        for account_id in batch:
            account, items = accounts[account_id], items_by_account.get(account_id, [])
            joined, story = _story(template, catalog, items, warned.get(account_id), request)
            attachments += joined
            if story is None:
                totals["attached"] += 1
                continue
            items, chosen = story.items, story.template
            totals["untold"] += bool(story.untold)
            templates[chosen] += 1
            context = build_context(account, items)
            if request:
                context = with_request(context, request)
            if template == AUTO:
                context[TEMPLATE_KEY] = chosen
            threat = _main_threat(items) or _request_threat(request)
            for step, channel in enumerate(channels):
                destination, reason = choose_destination(account, channel, contacts.get(account_id, []))
                rows.append({"campaign_id": campaign.id, "account_id": account_id, "channel": channel, "step": step,
                             "destination": destination, "state": SUPPRESSED if reason else PLANNED,
                             "reason": reason, "threat": threat,
                             "context": json.dumps(context, ensure_ascii=False),
                             "attempts": 0, "created_at": utcnow(), "updated_at": utcnow()})
                items_per_row.append(items)
                totals["suppressed" if reason else "planned"] += 1
        totals["accounts"] += len(batch)
        _insert_plan(session, rows, items_per_row, attachments)
        session.expunge_all()
    return PlanSummary(campaign.id or 0, totals["accounts"], totals["planned"], totals["suppressed"],
                       totals["attached"], dict(sorted(templates.items())), totals["untold"])


@dataclass(frozen=True)
class _Told:
    """One account's notification: the template it is rendered with, the items it tells (linked
    to it), and the items of another story it leaves out (not linked: never claimed as told)."""

    template: str
    items: list[FeedItem]
    untold: list[FeedItem]


def _story(template: str, catalog: TemplateCatalog, items: list[FeedItem], warned: dict[ThreatKey, int] | None,
           request: dict[str, Any]) -> tuple[list[dict[str, int]], _Told | None]:
    """The items that join an earlier warning (cooldown), and what the account's new notification
    tells (None: nothing new). An explicit template tells all the items, as it always did."""
    if template == AUTO:
        return _auto_story(catalog, items, warned, request)
    joined = _cooldown_attachments(items, warned)
    return joined, None if joined else _Told(template, items, [])


def _auto_story(catalog: TemplateCatalog, items: list[FeedItem], warned: dict[ThreatKey, int] | None,
                request: dict[str, Any]) -> tuple[list[dict[str, int]], _Told | None]:
    """`auto`: the cooldown links and the story one account is told (None: nothing new to tell).

    The cooldown is decided per story: a device whose threats were all warned about recently joins
    that warning, and the account's leak, if new, is then the story told. The story told is
    `account_story`'s (the device before a leak); an advisory's comes from its request.
    """
    if not items:  # an advisory: no events, one story per request
        return [], _Told(catalog.template_for(advisory_category(request)), [], [])
    joined: list[dict[str, int]] = []
    new: list[FeedItem] = []
    for story_items in split_stories(items):
        links = _cooldown_attachments(story_items, warned)
        joined += links
        new += [] if links else story_items
    if not new:
        return joined, None
    story = account_story(new)
    return joined, _Told(catalog.template_for(story.category), story.items, story.untold)


def _insert_plan(session: Session, rows: list[dict[str, object]], items_per_row: list[list[FeedItem]],
                 attachments: list[dict[str, int]]) -> None:
    """One batch's notifications, the items each warns about, and the items joining earlier warnings."""
    links = list(attachments)
    if rows:
        ids = session.execute(sa.insert(Notification).returning(Notification.id, sort_by_parameter_order=True),
                              rows).scalars().all()
        links += [{"notification_id": nid, "feed_item_id": item.id or 0}
                  for nid, items in zip(ids, items_per_row, strict=True) for item in items]
    if links:  # an item already joined to that warning (a second campaign on the feed) stays once
        session.execute(insert_ignoring_duplicates(session, NotificationItem.__table__), links)


def _account_batches(session: Session, feed: Feed, untold: bool) -> Iterator[list[int]]:
    """The accounts to plan for, PLAN_BATCH ids at a time, in id order: a feed's matched accounts,
    or an advisory's segment (read by keyset, so ten million accounts are never one list)."""
    if feed.kind != ADVISORY:
        account_ids = session.exec(select(FeedItem.account_id).where(*_plannable(feed.id or 0, untold))
                                   .distinct().order_by(FeedItem.account_id)).all()
        yield from chunks([account_id for account_id in account_ids if account_id is not None], PLAN_BATCH)
        return
    conditions = segment_conditions(_request_details(feed).get("segment"))
    last = 0
    while True:
        batch = list(session.exec(select(Account.id).where(Account.id > last, *conditions)
                                  .order_by(Account.id).limit(PLAN_BATCH)).all())
        if not batch:
            return
        yield [account_id for account_id in batch if account_id is not None]
        last = batch[-1] or 0


def segment_conditions(segment: object) -> list[sa.ColumnElement[bool]]:
    """SQL conditions selecting an advisory's accounts: never a terminated one; `service` compared
    in lower case as the subscriber import stores it, `province` as written (NFC). An unknown key
    is refused (the import already refused it; a hand-edited row must not widen the audience)."""
    if not isinstance(segment, dict) or not segment:
        raise InputError("this advisory feed names no segment of accounts")
    unknown = sorted(set(segment) - {"service", "province", "all"})
    if unknown:
        raise InputError(f"this advisory feed's segment has unknown key(s) {', '.join(unknown)}")
    conditions: list[sa.ColumnElement[bool]] = [Account.status != "terminated"]
    if "service" in segment:
        conditions.append(Account.service == str(segment["service"]).lower())
    if "province" in segment:
        conditions.append(Account.province == unicodedata.normalize("NFC", str(segment["province"])))
    if "all" not in segment and len(conditions) == 1:
        raise InputError("this advisory feed's segment selects nothing")
    return conditions


def _request_details(feed: Feed) -> dict[str, Any]:
    """An Authority request's envelope as stored on its feed (`feed.details`), or {}."""
    if not feed.details:
        return {}
    try:
        details = json.loads(feed.details)
    except ValueError:
        return {}
    return details if isinstance(details, dict) else {}


def _request_threat(request: dict[str, Any]) -> str | None:
    threat = request.get("threat") or {}
    return threat.get("name") if isinstance(threat, dict) else None


def with_request(context: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """Complete a notice's context with what the Authority's request says: the threat (name and
    category when the events name none, as in an advisory), its description and advice link, and
    `request` {request_id, reference, deadline} for people who trace a notice back to the request.
    Templates still pass all of it through the safe-label filters before printing."""
    threat = request.get("threat") if isinstance(request.get("threat"), dict) else {}
    named = dict(context.get("threat") or {})
    named["name"] = named.get("name") or threat.get("name")
    named["category"] = named.get("category") or threat.get("category")
    named["description"] = threat.get("description")
    return {
        **context,
        "threat": named,
        "threats": context.get("threats") or ([threat["name"]] if threat.get("name") else []),
        "advice_url": threat.get("advice_url"),
        "request": {key: request.get(key) for key in ("request_id", "reference", "deadline", "kind")},
    }


def _cooldown_start(cooldown_days: float | None, now: datetime | None) -> datetime | None:
    """The creation time from which an earlier warning holds a new one back; None: no cooldown."""
    if cooldown_days is None:
        from notifier.settings import get_settings

        cooldown_days = get_settings().identity.cooldown_days
    if cooldown_days <= 0:
        return None
    return (now or utcnow()) - timedelta(days=cooldown_days)


ThreatKey = tuple[str, str]  # (event kind, case-folded threat name; "" when the feed named none)


def _threat_key(kind: str | None, threat: str | None) -> ThreatKey:
    """Threats compare by kind and case-folded name in Python (SQLite's lower() is ASCII-only, and
    both backends must decide alike)."""
    return kind or "", (threat or "").strip().casefold()


def _recent_warnings(
    session: Session, account_ids: list[int], other_than_feed: int | None, since: datetime
) -> dict[int, dict[ThreatKey, int]]:
    """For each account of the batch, the threats it was warned about since `since` on any channel
    (by a campaign on another feed than `other_than_feed`, when given), each with the latest such
    warning's id. One query per batch."""
    query = (
        sa.select(Notification.account_id, Notification.id, FeedItem.kind, FeedItem.threat)
        .join(NotificationItem, NotificationItem.notification_id == Notification.id)
        .join(FeedItem, FeedItem.id == NotificationItem.feed_item_id)
        .join(Campaign, Campaign.id == Notification.campaign_id)
        .where(Notification.account_id.in_(account_ids), Notification.created_at >= since,
               Notification.state.not_in(NOT_REACHING_STATES),
               sa.true() if other_than_feed is None
               else sa.or_(Campaign.feed_id.is_(None), Campaign.feed_id != other_than_feed))
        .distinct()
        .order_by(Notification.id)
    )
    warned: dict[int, dict[ThreatKey, int]] = defaultdict(dict)
    for account_id, notification_id, kind, threat in session.execute(query):
        warned[account_id][_threat_key(kind, threat)] = notification_id  # ascending ids: the latest wins
    return warned


def _cooldown_attachments(items: list[FeedItem], warned: dict[ThreatKey, int] | None) -> list[dict[str, int]]:
    """The (earlier notification, new item) links when every new item's threat was warned about
    recently; [] when any threat is new (then the account gets a new warning with all its items)."""
    if not items or not warned:
        return []
    links = []
    for item in items:
        notification_id = warned.get(_threat_key(item.kind, item.threat))
        if notification_id is None:
            return []
        links.append({"notification_id": notification_id, "feed_item_id": item.id or 0})
    return links


def _plannable(feed_id: int, untold: bool) -> list[sa.ColumnElement[bool]]:
    """The feed's items a campaign plans for: the matched ones; with `untold` only those no warning
    tells or holds (linked, told or attached by the cooldown) in a state that reaches the
    subscriber: an item whose only warning was suppressed, cancelled or failed is still untold."""
    conditions = [FeedItem.feed_id == feed_id, FeedItem.status == "matched"]
    if untold:
        conditions.append(~sa.exists().where(NotificationItem.feed_item_id == FeedItem.id,
                                             Notification.id == NotificationItem.notification_id,
                                             Notification.state.not_in(NOT_REACHING_STATES)))
    return conditions


def _matched_items(session: Session, feed_id: int, account_ids: list[int], untold: bool) -> dict[int, list[FeedItem]]:
    grouped: dict[int, list[FeedItem]] = defaultdict(list)
    for item in session.exec(
        select(FeedItem).where(*_plannable(feed_id, untold), FeedItem.account_id.in_(account_ids)).order_by(FeedItem.id)
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
    if channel == "billing":
        return _postal_destination(account)
    kind = _CHANNEL_CONTACT[channel]
    usable = [c for c in contacts if c.kind == kind and not c.opted_out]
    if not usable:
        return None, f"no {'phone number' if kind == 'msisdn' else 'e-mail address'} on record"
    return usable[0].value, None


def _postal_destination(account: Account) -> tuple[str | None, str | None]:
    """A billing insert travels with the bill: it needs the address the bill goes to and a billing
    day (the export picks its rows by day); without either it would wait for an export forever."""
    address = " ".join((account.address or "").split())
    if not address:
        return None, "no postal address on record"
    if not account.billing_day:
        return None, "no billing day on record"
    return address[:254], None  # `destination` holds 254; the export prints the account's full address


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
    drop_parts(session, moved)
    if moved and campaign.state == "done":
        campaign.state, campaign.finished_at = "planned", None
    return len(moved)
