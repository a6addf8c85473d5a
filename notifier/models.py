"""SQLModel tables: the database is the source of truth (an outbox); the broker only carries ids.

Times are stored as UTC (`UtcDateTime` gives aware datetimes back on SQLite too). Strings are
bounded. The shape leaves room for the roadmap: a campaign's `channels` is an ordered chain, a
notification has a `step` in that chain, each SMS part has its own receipt row (`MessagePart`), and
one notification aggregates many feed items (`NotificationItem`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from notifier.dispatch.states import IN_FLIGHT_STATES


# `covers_until` of an interval that has no end yet: far enough for any event, and still a valid
# datetime in every zone we print (9999-12-31 would overflow at +07:00).
OPEN_END = datetime(9000, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Store aware datetimes as UTC; return them aware, whatever the backend keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_column(*, nullable: bool = True, index: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(UtcDateTime(), nullable=nullable, index=index)


# --- subscribers ------------------------------------------------------------------------------


class Account(SQLModel, table=True):
    """One operator account / contract (the subscriber)."""

    __tablename__ = "account"
    # Care staff type the operator's id in any case (`hn-000123`): lookups compare lower(account_ref).
    __table_args__ = (sa.Index("ix_account_account_ref_lower", sa.func.lower(sa.column("account_ref"))),)

    id: int | None = Field(default=None, primary_key=True)
    account_ref: str = Field(max_length=64, unique=True, index=True)  # the operator's account id
    full_name: str = Field(max_length=200)
    service: str | None = Field(default=None, max_length=32)
    billing_day: int | None = None
    language: str = Field(default="vi", max_length=8)
    status: str = Field(default="active", max_length=16)
    sms_opt_out: bool = False
    email_opt_out: bool = False
    voice_opt_out: bool = False
    address: str | None = Field(default=None, max_length=300)
    province: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class ContactPoint(SQLModel, table=True):
    """A phone number, e-mail address or RADIUS username of an account, normalised.

    `value_sha256` lets a partner's hashed list match without the clear value.
    """

    __tablename__ = "contact_point"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "kind", "value", name="uq_contact_point"),
        sa.Index("ix_contact_point_lookup", "kind", "value"),
        sa.Index("ix_contact_point_hash", "kind", "value_sha256"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    kind: str = Field(max_length=16)  # msisdn | email | username
    value: str = Field(max_length=254)
    value_sha256: str | None = Field(default=None, max_length=64)
    opted_out: bool = False  # this one address refused (a STOP reply, a bounce policy)
    position: int = 0  # order in the subscriber record: the first is the primary contact


SINGLE_ADDRESS = 128  # prefix length of one address in `ip_key` space
# Assignments of a network rather than one address (static prefixes, delegated IPv6): few rows, and
# the only ones `ix_ip_assignment_prefix` holds. A literal, so both planners can prove the index applies.
NETWORK_ROWS = sa.text(f"prefix_len <> {SINGLE_ADDRESS}")


class IpAssignment(SQLModel, table=True):
    """Which account used which address (or prefix) when.

    `range_start`/`range_end` are `identifiers.ip_key` strings, so one index serves IPv4, IPv6
    and prefixes alike; a single address has start == end and `prefix_len` 128. Matching computes,
    for each prefix length in use, the network that would hold an address and looks it up by
    equality on `range_start`: a few indexed lookups, not a scan. `ended_at` NULL = still open.
    """

    __tablename__ = "ip_assignment"
    __table_args__ = (
        # Covering (migration 0007): matching reads started_at, prefix_len and account_id from the
        # index itself, never the table row (2.6x less CPU per probe on SQLite). The importer also
        # finds through it the rows a file repeats: (range_start, started_at, account_id) is kept
        # unique by `identity.assignments`, not by a second index each row would pay for (0010).
        sa.Index("ix_ip_assignment_cover", "range_start", "covers_until", "started_at", "prefix_len", "account_id"),
        # Only rows with a session id (RADIUS): the other sources have none to look up (0010).
        sa.Index("ix_ip_assignment_session_ref", "session_ref", postgresql_where=sa.text("session_ref IS NOT NULL"),
                 sqlite_where=sa.text("session_ref IS NOT NULL")),
        # Which prefix lengths matching must probe, without reading the cover index (migration 0014).
        sa.Index("ix_ip_assignment_prefix", "prefix_len", postgresql_where=NETWORK_ROWS, sqlite_where=NETWORK_ROWS),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No foreign key (migration 0011): written only by the importer, from `account` in the same
    # transaction, and accounts are never deleted; the check cost more than the row itself.
    account_id: int
    network: str = Field(max_length=64)  # as given: "14.160.1.2" or "2402:800::/56"
    range_start: str = Field(max_length=32)
    range_end: str = Field(max_length=32)
    prefix_len: int = SINGLE_ADDRESS  # in ip_key space: 128 = one address, 120 = an IPv4 /24, 56 = an IPv6 /56
    started_at: datetime = Field(sa_column=_utc_column(nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=_utc_column())
    source: str = Field(default="sessions-csv", max_length=32)
    username: str | None = Field(default=None, max_length=128)
    # An open session (`ended_at` NULL) counts until `open_until` when its source bounds it (a
    # RADIUS session without a Stop, `assignments.max_session_hours`); NULL = until a later session
    # on the same address closes it.
    open_until: datetime | None = Field(default=None, sa_column=_utc_column())
    # The source's own session id (RADIUS Acct-Unique-Session-Id or Acct-Session-Id): a Stop in a
    # later file closes the row its Start opened.
    session_ref: str | None = Field(default=None, max_length=64)
    # Where the interval ends for matching: `ended_at`, else `open_until`, else OPEN_END. Kept by
    # the importer whenever those change, so the lookup index (range_start, covers_until) reads
    # only intervals that end after the event (events are recent; history is long).
    covers_until: datetime = Field(sa_column=_utc_column(nullable=False))


class NatBlock(SQLModel, table=True):
    """A carrier-grade NAT port block: `public_ip` ports `port_start`–`port_end` were translated
    for `private_ip` from `allocated_at` until `released_at` (NULL = not released yet).

    A feed event's public address + source port + time finds the private address here, and the
    private address finds the account through `IpAssignment` at the same time.
    """

    __tablename__ = "nat_block"
    __table_args__ = (
        sa.UniqueConstraint("public_key", "port_start", "allocated_at", name="uq_nat_block"),
        sa.Index("ix_nat_block_cover", "public_key", "covers_until"),
    )

    id: int | None = Field(default=None, primary_key=True)
    public_ip: str = Field(max_length=64)
    public_key: str = Field(max_length=32)  # identifiers.ip_key(public_ip)
    port_start: int
    port_end: int
    private_ip: str = Field(max_length=64)
    private_key: str = Field(max_length=32)
    allocated_at: datetime = Field(sa_column=_utc_column(nullable=False))
    released_at: datetime | None = Field(default=None, sa_column=_utc_column())
    open_until: datetime | None = Field(default=None, sa_column=_utc_column())
    covers_until: datetime = Field(sa_column=_utc_column(nullable=False))  # as on IpAssignment


# --- feeds ------------------------------------------------------------------------------------


class Feed(SQLModel, table=True):
    """One imported security feed file (or Authority request)."""

    __tablename__ = "feed"

    id: int | None = Field(default=None, primary_key=True)
    format: str = Field(max_length=32)
    source: str | None = Field(default=None, max_length=100)
    report_type: str | None = Field(default=None, max_length=64)
    filename: str = Field(max_length=300)
    file_sha256: str = Field(max_length=64, index=True)
    # An Authority request's `request_id`: the same request twice is one feed (and one campaign).
    request_id: str | None = Field(default=None, max_length=64, unique=True)
    details: str | None = Field(default=None, sa_column=sa.Column(sa.Text))  # JSON: the request's reference, deadline, threat, segment
    kind: str = Field(default="infected_device", max_length=32)
    imported_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    accepted: int = 0
    rejected: int = 0
    matched: int = 0
    unmatched: int = 0
    ambiguous: int = 0


class FeedItem(SQLModel, table=True):
    """One event of a feed (or one rejected line), with its matching outcome."""

    __tablename__ = "feed_item"
    # (feed_id, id) of pending items only: matching pages through a feed's pending items by id,
    # reading each once, and a written outcome leaves the index instead of adding an entry (0009).
    __table_args__ = (sa.Index("ix_feed_item_feed_line", "feed_id", "line"),
                      sa.Index("ix_feed_item_pending", "feed_id", "id", postgresql_where=sa.text("status = 'pending'"),
                               sqlite_where=sa.text("status = 'pending'")))

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int = Field(foreign_key="feed.id")
    line: int
    status: str = Field(max_length=16)  # pending | matched | unmatched | ambiguous | rejected
    reason: str | None = Field(default=None, max_length=500)
    kind: str | None = Field(default=None, max_length=32)  # infected_device | data_leak
    identifier_kind: str | None = Field(default=None, max_length=16)
    identifier: str | None = Field(default=None, max_length=254)
    port: int | None = None
    seen_at: datetime | None = Field(default=None, sa_column=_utc_column())
    # "date" when the feed gave only a day (a leak list's `leaked_at` of 2026-11-02): `seen_at` is then
    # that day's local midnight, and notices print the date alone, never a made-up "00:00".
    seen_precision: str | None = Field(default=None, max_length=8)
    threat: str | None = Field(default=None, max_length=100)
    category: str | None = Field(default=None, max_length=64)
    data_classes: str | None = Field(default=None, max_length=300)  # ";"-separated
    source: str | None = Field(default=None, max_length=100)
    raw: str | None = Field(default=None, max_length=2000)
    # No foreign key (migration 0011): set only by matching, from `account` ids, never deleted.
    account_id: int | None = Field(default=None, index=True)


# --- campaigns and the outbox ------------------------------------------------------------------


class Campaign(SQLModel, table=True):
    """A decision to warn the accounts matched by a feed, through an ordered chain of channels."""

    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int | None = Field(default=None, foreign_key="feed.id", index=True)
    name: str = Field(max_length=200)
    template: str = Field(max_length=64)
    channels: str = Field(max_length=100)  # ordered chain, ","-separated: "sms,email"
    state: str = Field(default="planned", max_length=16)  # planned | running | paused | done | cancelled
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=_utc_column())
    finished_at: datetime | None = Field(default=None, sa_column=_utc_column())
    # Optional: past this time a route outage is no longer waited out (`campaign run` stops, rows
    # stay queued). None: `dispatch.route_outage_max_seconds` alone bounds the wait.
    ends_at: datetime | None = Field(default=None, sa_column=_utc_column())

    @property
    def channel_list(self) -> list[str]:
        return [name for name in self.channels.split(",") if name]


# ix_notification_in_flight's condition (PostgreSQL): the states maintenance looks for in every campaign.
IN_FLIGHT_ROWS = sa.text("state IN ({})".format(", ".join(f"'{state}'" for state in IN_FLIGHT_STATES)))


class Notification(SQLModel, table=True):
    """One message to one account on one channel step: the outbox row.

    `state` only moves by compare-and-set (`notifier.dispatch.outbox.transition`), each move recorded as a
    `DeliveryEvent`, so a redelivered broker message never sends twice. `claimed_by` names the
    process that is sending it, so a crashed sender's rows can be recognised.
    """

    __tablename__ = "notification"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "account_id", "channel", name="uq_notification_step"),
        sa.Index("ix_notification_campaign_state", "campaign_id", "state"),
        # What maintenance looks for every second in every process (`queued` not handed over,
        # `sending` whose sender died, `unknown` due for a resend), across all campaigns: without it
        # each pass read the whole table, every campaign ever sent. PostgreSQL indexes only those
        # rows (the queries write the state as a literal: `outbox.in_flight`); SQLite, whose planner
        # cannot match `state = 'x'` to `state IN (…)`, indexes every row (0013).
        sa.Index("ix_notification_in_flight", "state", "id", postgresql_where=IN_FLIGHT_ROWS),
        sa.Index("ix_notification_destination", "destination"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    account_id: int = Field(foreign_key="account.id", index=True)
    channel: str = Field(max_length=16)
    step: int = 0  # position in the campaign's channel chain
    destination: str | None = Field(default=None, max_length=254)
    state: str = Field(default="planned", max_length=16)
    reason: str | None = Field(default=None, max_length=300)  # why suppressed / failed
    threat: str | None = Field(default=None, max_length=100)
    context: str = Field(default="{}", sa_column=sa.Column(sa.Text, nullable=False))  # JSON
    subject: str | None = Field(default=None, max_length=300)
    text: str | None = Field(default=None, sa_column=sa.Column(sa.Text))  # as sent
    parts: int | None = None
    encoding: str | None = Field(default=None, max_length=16)
    attempts: int = 0
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_at: datetime | None = Field(default=None, sa_column=_utc_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    queued_at: datetime | None = Field(default=None, sa_column=_utc_column())
    # When the row's id was last handed to the broker: a row still `queued` long after it is
    # handed over again by maintenance (its message may have died with Redis).
    enqueued_at: datetime | None = Field(default=None, sa_column=_utc_column())
    sent_at: datetime | None = Field(default=None, sa_column=_utc_column())
    delivered_at: datetime | None = Field(default=None, sa_column=_utc_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class NotificationItem(SQLModel, table=True):
    """Which feed items a notification warns about (many events aggregate into one warning)."""

    __tablename__ = "notification_item"
    # The way back, item → warnings (migration 0015): a follow-up campaign (`--untold`) asks of every
    # matched item whether a warning tells or holds it yet.
    __table_args__ = (sa.Index("ix_notification_item_feed_item", "feed_item_id"),)

    notification_id: int = Field(foreign_key="notification.id", primary_key=True)
    feed_item_id: int = Field(foreign_key="feed_item.id", primary_key=True)


class MessagePart(SQLModel, table=True):
    """One provider unit of a notification (an SMS part, an e-mail) and its own receipt."""

    __tablename__ = "message_part"
    __table_args__ = (
        sa.UniqueConstraint("notification_id", "part_no", name="uq_message_part"),
        sa.Index("ix_message_part_provider_id", "channel", "provider_message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id")
    part_no: int
    channel: str = Field(max_length=16)
    provider_message_id: str = Field(max_length=100)
    state: str = Field(default="sent", max_length=16)  # sent | delivered | undelivered | expired | failed
    error_code: str | None = Field(default=None, max_length=32)
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


RESENT_EVENT = sa.text("from_state = 'unknown' AND to_state = 'queued'")  # a row sent again after `unknown`


class DeliveryEvent(SQLModel, table=True):
    """One state transition of a notification, or one receipt: the proof of delivery."""

    __tablename__ = "delivery_event"
    # Resends after `unknown` (rare) have their own small index: the campaign status counts them on
    # every poll, which joined all of a campaign's events before (0012).
    __table_args__ = (sa.Index("ix_delivery_event_resent", "notification_id", postgresql_where=RESENT_EVENT,
                               sqlite_where=RESENT_EVENT),)

    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=16)
    source: str = Field(max_length=32)  # planner | worker | smpp-dlr | recovery | operator
    provider_status: str | None = Field(default=None, max_length=100)
    detail: str | None = Field(default=None, max_length=500)


class AuditLog(SQLModel, table=True):
    """Who looked up which subscriber's data, when: every care-staff lookup leaves one row."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False, index=True))
    actor: str = Field(max_length=100)
    action: str = Field(max_length=64)
    target_kind: str = Field(max_length=32)
    target: str = Field(max_length=254)  # masked
    result_count: int = 0
    detail: str | None = Field(default=None, max_length=500)


class InboundReceipt(SQLModel, table=True):
    """A provider receipt, stored the moment it arrives and applied afterwards.

    Storing first means a receipt that races ahead of the sender's own record (common on a fast
    SMSC), or that names a message sent by a process that crashed, is never lost: maintenance
    applies it once the part it names is known, or resolves an `unknown` notification with it.
    """

    __tablename__ = "inbound_receipt"
    # The pending receipts by when an applier should look at them (migration 0016): only those,
    # so a backlog that cannot be placed yet is not read again on every pass.
    __table_args__ = (sa.Index("ix_inbound_receipt_due", sa.func.coalesce(sa.column("retry_at"), sa.column("received_at")),
                               sqlite_where=sa.text("applied_at IS NULL"),
                               postgresql_where=sa.text("applied_at IS NULL")),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    provider_message_id: str = Field(max_length=100)
    alternative_ids: str | None = Field(default=None, max_length=300)  # ","-separated
    status: str = Field(max_length=16)
    raw_status: str = Field(max_length=32)
    error_code: str | None = Field(default=None, max_length=32)
    done_at: datetime | None = Field(default=None, sa_column=_utc_column())
    destination: str | None = Field(default=None, max_length=254)
    received_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    applied_at: datetime | None = Field(default=None, sa_column=_utc_column())
    outcome: str | None = Field(default=None, max_length=32)  # applied | resolved_unknown | orphan
    notification_id: int | None = Field(default=None, foreign_key="notification.id")
    # Tried and not placeable yet: not looked at again before this time (NULL: due when it came).
    retry_at: datetime | None = Field(default=None, sa_column=_utc_column())


class SmppSession(SQLModel, table=True):
    """An SMPP bind some process holds, and when its reader last ran.

    An SMSC keeps the receipts of a session that died and hands them to the next bind; an
    `unknown` SMS is sent again only after a session was alive (reading) some time after the row
    became unknown, so those receipts had their chance (`notifier.dispatch.unknown`).
    """

    __tablename__ = "smpp_session"

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=100)  # host:pid:n of the process and its bind
    system_id: str = Field(max_length=32)
    bound_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    alive_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False, index=True))


class InboundMessage(SQLModel, table=True):
    """A subscriber's reply by SMS (an MO deliver_sm), whole or as much of it as arrived.

    `account_id` is the account holding the number as a contact point (the one the latest
    notification to it went to, when several do), `notification_id` the latest SMS notification
    sent to that number before the reply, if any: care staff see the reply next to it in
    `notifier history`. `opt_out` is set when the text is a stop word (`notifier.replies`).
    """

    __tablename__ = "inbound_message"
    __table_args__ = (sa.Index("ix_inbound_message_source", "source", "received_at"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(default="sms", max_length=16)
    source: str = Field(max_length=32)  # E.164, as the SMSC gave it
    destination: str = Field(max_length=32)  # our number / short code the subscriber wrote to
    text: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    data_coding: int = 0
    parts: int = 1  # how many parts arrived
    parts_expected: int = 1  # fewer arrived: stored after the reassembly timeout
    opt_out: bool = False
    received_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    account_id: int | None = Field(default=None, foreign_key="account.id", index=True)
    notification_id: int | None = Field(default=None, foreign_key="notification.id", index=True)
