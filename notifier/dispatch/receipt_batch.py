"""Apply stored receipts in batches, from any number of processes at once, without deadlocks.

One pass: take a page of pending receipts (`FOR UPDATE SKIP LOCKED`: another applier's receipts
are left to it), find their parts in one query by provider id, lock the notifications they name
in id order with `FOR NO KEY UPDATE SKIP LOCKED` (a notification another applier or a sender
holds is left for the next pass, with its receipts — nobody ever waits, so no cycle can form;
NO KEY keeps foreign-key inserts of events and parts by senders from blocking on us), then update
parts, notifications, events and receipts with one executemany each. The state machine is that of
one receipt at a time: receipts are replayed in id order against the locked rows in memory.

On PostgreSQL the lookup is planned for the values at hand (`db.plan_each_execution`: `plan_cache_mode =
force_custom_plan` for the transaction): psycopg prepares a statement after 5 executions and a
generic plan costed while `message_part` was empty would read every part forever after.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from channels.base import RECEIPT_DELIVERED, RECEIPT_EXPIRED, RECEIPT_FAILED, RECEIPT_PENDING, RECEIPT_UNDELIVERED
from notifier.db import plan_each_execution
from notifier.dispatch.outbox import among, among_param, among_value, bulk_insert, bulk_update, dialect_name
from notifier.dispatch.states import DELIVERED, EXPIRED, SENT, UNDELIVERED, UNKNOWN
from notifier.models import DeliveryEvent, InboundReceipt, MessagePart, Notification, utcnow

log = logging.getLogger(__name__)

# How long a receipt may wait for its message id to be recorded before we try to resolve an
# `unknown` notification by destination instead (a normal race resolves in milliseconds).
ID_MATCH_GRACE_SECONDS = 2
ORPHAN_AFTER_SECONDS = 24 * 3600
# How far the clocks of the host that claimed a row and the host that stored a receipt may differ.
# A resend after a refusal waits at least 2 s, after `unknown` much longer: an earlier attempt's
# receipts are older than the new claim by more than this.
_CLAIM_CLOCK_TOLERANCE = timedelta(seconds=1)
PENDING_BATCH = 500
MAX_PAGES = 20  # per call: bounds one transaction; the next pass goes on
# A receipt tried and not placed is not read again for half its age, within these bounds: a
# receipt that beat its send's record by a moment is tried again a moment later, one no message
# of ours will ever match (another system's on a shared SMSC account) about 20 times in the
# ORPHAN_AFTER_SECONDS it waits, instead of on every pass — where ten thousand of them kept a pass
# from ever reaching the receipts behind them.
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 0.05, 600.0
# How far an SMSC's clock may run ahead of ours before its done time is not believed.
PROVIDER_CLOCK_SKEW_SECONDS = 120

_FAILED_STATES = {RECEIPT_UNDELIVERED: UNDELIVERED, RECEIPT_EXPIRED: EXPIRED, RECEIPT_FAILED: UNDELIVERED}
_OPEN_STATES = (SENT, UNKNOWN)
# An e-mail is `delivered` as soon as the relay accepted it (`smtp.accepted_means_delivered`); a
# bounce that comes later knows better and still makes it `undelivered` (channels/bounces.py).
_RETRACTABLE = frozenset({("email", DELIVERED)})
_LOOKUP_CHUNK = 500
# Core tables, for executemany (the ORM would try to synchronise a session's objects row by row)
# and for the lookups (selecting ORM attributes runs every statement and row through the ORM's
# loading: two thirds of finding a batch's parts).
_PARTS, _NOTIFICATIONS = MessagePart.__table__, Notification.__table__  # type: ignore[attr-defined]
_EVENTS, _RECEIPTS = DeliveryEvent.__table__, InboundReceipt.__table__  # type: ignore[attr-defined]
_DUE = sa.func.coalesce(_RECEIPTS.c.retry_at, _RECEIPTS.c.received_at)  # ix_inbound_receipt_due's expression
# What finding a stored receipt's part and replaying it read (not when or how it was applied).
_REPLAYED = [_RECEIPTS.c[name] for name in ("id", "channel", "provider_message_id", "alternative_ids", "status",
                                            "raw_status", "error_code", "done_at", "destination", "received_at")]


# The pass's statements, built once (per dialect where `among_param` differs): building and keying
# a statement cost more than SQLite takes to run it.
_PENDING_PAGE = (sa.select(_RECEIPTS.c.id).where(_RECEIPTS.c.applied_at.is_(None), _DUE < sa.bindparam("due_before"))
                 .order_by(_DUE, _RECEIPTS.c.id).limit(PENDING_BATCH).with_for_update(skip_locked=True))


@dataclass(frozen=True)
class _Statements:
    replayed: sa.Select[Any]
    parts_by_provider_id: sa.Select[Any]
    lock_notifications: sa.Select[Any]
    parts_of_notifications: sa.Select[Any]


@functools.cache
def _statements(dialect: str) -> _Statements:
    return _Statements(
        replayed=sa.select(*_REPLAYED).where(among_param(_RECEIPTS.c.id, "ids", dialect)).order_by(_RECEIPTS.c.id),
        parts_by_provider_id=sa.select(_PARTS.c.provider_message_id, _PARTS.c.id, _PARTS.c.notification_id).where(
            _PARTS.c.channel == sa.bindparam("channel"), among_param(_PARTS.c.provider_message_id, "ids", dialect)),
        lock_notifications=sa.select(_NOTIFICATIONS.c.id, _NOTIFICATIONS.c.state, _NOTIFICATIONS.c.parts,
                                     _NOTIFICATIONS.c.sent_at)
        .where(among_param(_NOTIFICATIONS.c.id, "ids", dialect)).order_by(_NOTIFICATIONS.c.id)
        .with_for_update(key_share=True, skip_locked=True),
        parts_of_notifications=sa.select(_PARTS.c.id, _PARTS.c.notification_id, _PARTS.c.part_no, _PARTS.c.state,
                                         _PARTS.c.error_code).where(among_param(_PARTS.c.notification_id, "ids", dialect)),
    )


@dataclass
class _Part:
    id: int
    notification_id: int
    part_no: int
    state: str
    error_code: str | None = None
    changed: bool = False


@dataclass
class _Notice:
    """A locked notification as the replay sees it."""

    id: int
    state: str
    parts: int
    sent_at: datetime | None
    original: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    own_parts: list[_Part] = field(default_factory=list)  # its recorded parts, as the replay changes them


def apply_pending_receipts(session: Session, *, destination_match: bool = True,
                           received_before: datetime | None = None) -> int:
    """Apply stored receipts not yet applied; old unplaceable ones become orphans. Returns how
    many were applied. `destination_match` lets receipts past the grace resolve `unknown` rows;
    `received_before` leaves younger receipts to the appliers that take them as they come, and
    receipts tried before to their retry time; a call without it (on demand) looks at them all.

    Pages are read soonest due first (`ix_inbound_receipt_due`). Every receipt a page reads leaves
    the pass's range — applied, orphaned, or given a retry time — so the next page reads others,
    and a backlog that cannot be placed never hides the receipts behind it."""
    plan_each_execution(session)
    due_before = received_before or utcnow() + timedelta(seconds=RETRY_MAX_SECONDS + 1)
    applied, seen = 0, set()
    for _ in range(MAX_PAGES):
        ids = list(session.execute(_PENDING_PAGE, {"due_before": due_before}).scalars())
        fresh = [receipt_id for receipt_id in ids if receipt_id not in seen]
        if not fresh:
            break
        seen.update(fresh)
        applied += apply_rows(session, fresh, destination_match=destination_match, grace_seconds=ID_MATCH_GRACE_SECONDS)
        if len(ids) < PENDING_BATCH:
            break
    return applied


def apply_rows(session: Session, receipt_ids: list[int], *, destination_match: bool, grace_seconds: float) -> int:
    """Apply these stored receipts (already locked by the caller, or single-process)."""
    now = utcnow()
    dialect = dialect_name(session)
    result = session.execute(_statements(dialect).replayed, {"ids": among_value(dialect, receipt_ids)})
    keys = (*result.keys(), "outcome")
    receipts = [dict(zip(keys, (*row, None))) for row in result.all()]
    placed = _find_parts(session, receipts)
    if destination_match:
        waiting = [receipt for receipt in receipts if receipt["id"] not in placed and receipt["destination"]
                   and now - receipt["received_at"] > timedelta(seconds=grace_seconds)]
        open_to = _destinations_with_open_rows(session, waiting)
        for receipt in waiting:
            if (receipt["channel"], receipt["destination"]) in open_to:
                resolved = _resolve_unknown_by_destination(session, receipt)
                if resolved is not None:
                    placed[receipt["id"]] = resolved
    settled = _apply_placed(session, [r for r in receipts if r["id"] in placed], placed, now)
    bulk_update(session, _RECEIPTS, [{"b_id": rid, "b_at": now, "b_outcome": outcome, "b_nid": nid}
                                     for rid, (outcome, nid) in settled.items()],
                match={"id": "b_id"}, assign={"applied_at": "b_at", "outcome": "b_outcome", "notification_id": "b_nid"})
    unsettled = [r for r in receipts if r["id"] not in settled]  # unplaced, or its notification held elsewhere
    _mark_orphans(session, [r for r in unsettled if r["id"] not in placed], now)
    _retry_later(session, [r for r in unsettled if r["id"] in placed or not _orphaned(r, now)], now)
    return len(settled)


def store_applied(session: Session, rows: list[dict[str, Any]]) -> int:
    """Receipts that just arrived (`InboundReceipt` column values): each one whose part is
    recorded and whose notification no one else holds is applied at once and stored already
    applied, in the same transaction; the others are stored pending, for the applier (the usual
    race: the receipt beat its send's recording). One INSERT either way — a receipt row is written
    once, not inserted and then updated. Returns how many were applied."""
    if not rows:
        return 0
    now = utcnow()
    receipts = [{**row, "id": position, "outcome": None} for position, row in enumerate(rows)]
    placed = _find_parts(session, receipts)
    settled = _apply_placed(session, [r for r in receipts if r["id"] in placed], placed, now)
    bulk_insert(session, _RECEIPTS, [
        {**row, "applied_at": now if position in settled else None,
         "outcome": settled[position][0] if position in settled else None,
         "notification_id": settled[position][1] if position in settled else None}
        for position, row in enumerate(rows)])
    return len(settled)


def _ids_of(receipt: dict[str, Any]) -> list[str]:
    return [receipt["provider_message_id"], *filter(None, (receipt["alternative_ids"] or "").split(","))]


def _find_parts(session: Session, receipts: list[dict[str, Any]]) -> dict[int, tuple[int, int]]:
    """receipt id → (part, its notification): the newest part with any reading of the receipt's id."""
    by_channel: dict[str, set[str]] = defaultdict(set)
    for receipt in receipts:
        by_channel[receipt["channel"]].update(_ids_of(receipt))
    newest: dict[tuple[str, str], tuple[int, int]] = {}
    dialect = dialect_name(session)
    for channel, ids in by_channel.items():
        ordered = sorted(ids)
        for start in range(0, len(ordered), _LOOKUP_CHUNK):
            rows = session.execute(_statements(dialect).parts_by_provider_id, {
                "channel": channel, "ids": among_value(dialect, ordered[start:start + _LOOKUP_CHUNK])}).all()
            for provider_id, part_id, notification_id in rows:
                key = (channel, provider_id)
                if part_id > newest.get(key, (0, 0))[0]:
                    newest[key] = (part_id, notification_id)
    placed: dict[int, tuple[int, int]] = {}
    for receipt in receipts:
        found = [newest[(receipt["channel"], pid)] for pid in _ids_of(receipt) if (receipt["channel"], pid) in newest]
        if found:
            placed[receipt["id"]] = max(found)
    return placed


def _open_by_destination() -> sa.ColumnElement[bool]:
    """A row a receipt naming an unrecorded message id may belong to: `unknown` (a long SMS stays
    `unknown` until a receipt accounts for each of its parts, see `_resolve_unknown_by_destination`)."""
    return Notification.state == UNKNOWN


def from_earlier_attempt(received_at: datetime, claimed_at: datetime | None) -> bool:
    """A receipt that came before the row's current attempt was claimed (beyond the clocks'
    tolerance) is for an earlier attempt — the first parts of a long SMS whose later part a
    throttling SMSC refused, or that an SMSC took before it died — and must not settle, nor hold
    back, the attempt being sent now. `_claimed_before` is the same rule in SQL."""
    return claimed_at is not None and claimed_at > received_at + _CLAIM_CLOCK_TOLERANCE


def _claimed_before(received_at: datetime) -> sa.ColumnElement[bool]:
    """`not from_earlier_attempt(received_at, notification.claimed_at)`, as a condition on rows."""
    return sa.or_(Notification.claimed_at.is_(None),
                  Notification.claimed_at <= received_at + _CLAIM_CLOCK_TOLERANCE)


def _destinations_with_open_rows(session: Session, receipts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(channel, destination) of the receipts that have such a row, one query per chunk: a receipt
    that merely beat its send's recording (a loaded host: seconds) costs no query of its own on
    every pass. Resolving one receipt only changes rows of its own destination, so the set holds."""
    found: set[tuple[str, str]] = set()
    wanted = sorted({(r["channel"], r["destination"]) for r in receipts})
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = set(wanted[start:start + _LOOKUP_CHUNK])
        rows = session.execute(
            sa.select(Notification.channel, Notification.destination).distinct()
            .where(among(session, Notification.destination, sorted({d for _, d in chunk})), _open_by_destination()))
        found.update((channel, destination) for channel, destination in rows if (channel, destination) in chunk)
    return found


def _resolve_unknown_by_destination(session: Session, receipt: dict[str, Any]) -> tuple[int, int] | None:
    """A receipt for a message we never recorded belongs to the row sent to that address whose
    send was not recorded (`unknown`).

    The row becomes `sent` only once receipts account for every part: an SMSC that died between
    the parts of a long SMS took the first ones and never the rest, and a row made `sent` by the
    first receipt would wait for ever for the others. Until then it stays `unknown` (its wait
    restarting with each receipt), so `unknown.requeue_stale_unknown` sends the whole message
    again once the receipts had their chance. Returns (the part created for it, its notification)."""
    from notifier.dispatch.outbox import transition

    part_count = (sa.select(sa.func.count()).select_from(MessagePart)
                  .where(MessagePart.notification_id == Notification.id).scalar_subquery())
    candidate = session.execute(
        sa.select(Notification.id, Notification.claimed_at, Notification.parts, part_count)
        .where(Notification.channel == receipt["channel"], Notification.destination == receipt["destination"],
               _open_by_destination(), _claimed_before(receipt["received_at"]))
        .order_by(Notification.claimed_at.desc(), Notification.id.desc()).limit(1)
        .with_for_update(key_share=True, skip_locked=True)).first()
    if candidate is None:
        return None
    notification_id, claimed_at, parts, known_parts = candidate
    now = utcnow()
    part_id = session.execute(sa.insert(MessagePart).values(
        notification_id=notification_id, part_no=known_parts + 1, channel=receipt["channel"],
        provider_message_id=receipt["provider_message_id"], state="sent", updated_at=now)
        .returning(MessagePart.id)).scalar_one()
    receipt["outcome"] = "resolved_unknown"
    if known_parts + 1 < (parts or 1):
        session.execute(sa.update(_NOTIFICATIONS).where(_NOTIFICATIONS.c.id == notification_id)
                        .values(updated_at=now))
        return int(part_id), notification_id
    transition(session, notification_id, expected=UNKNOWN, to_state=SENT, source="recovery",
               provider_status=receipt["raw_status"],
               detail=f"a receipt for {receipt['provider_message_id']} proves the provider took it"
                      + (f" (with {known_parts} earlier one(s): all {parts} parts)" if known_parts else ""),
               values={"sent_at": claimed_at or now, "claimed_by": None})
    return int(part_id), notification_id


def _lock_notifications(session: Session, ids: set[int]) -> dict[int, _Notice]:
    """Lock in id order, skipping rows someone else holds (their receipts wait for the next pass)."""
    locked: dict[int, _Notice] = {}
    ordered = sorted(ids)
    dialect = dialect_name(session)
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        rows = session.execute(_statements(dialect).lock_notifications,
                               {"ids": among_value(dialect, ordered[start:start + _LOOKUP_CHUNK])}).all()
        for nid, state, parts, sent_at in rows:
            locked[nid] = _Notice(id=nid, state=state, parts=parts or 1, sent_at=sent_at, original=state)
    return locked


def _load_parts(session: Session, notification_ids: list[int]) -> dict[int, _Part]:
    parts: dict[int, _Part] = {}
    dialect = dialect_name(session)
    for start in range(0, len(notification_ids), _LOOKUP_CHUNK):
        rows = session.execute(_statements(dialect).parts_of_notifications,
                               {"ids": among_value(dialect, notification_ids[start:start + _LOOKUP_CHUNK])}).all()
        for pid, nid, part_no, state, error_code in rows:
            parts[pid] = _Part(pid, nid, part_no, state, error_code)
    return parts


def _apply_placed(session: Session, receipts: list[dict[str, Any]], placed: dict[int, tuple[int, int]],
                  now: datetime) -> dict[int, tuple[str, int]]:
    """Replay the placed receipts and write what they change; returns receipt id → (outcome,
    notification) for those applied (a receipt whose notification another process holds waits)."""
    if not receipts:
        return {}
    notices = _lock_notifications(session, {placed[r["id"]][1] for r in receipts})
    parts = _load_parts(session, sorted(notices))
    for loaded in parts.values():
        notices[loaded.notification_id].own_parts.append(loaded)
    events: list[dict[str, Any]] = []
    settled: dict[int, tuple[str, int]] = {}
    for receipt in receipts:
        part = parts.get(placed[receipt["id"]][0])
        if part is None or part.notification_id not in notices:
            continue  # its notification is held by another process: next pass
        events.append(_replay(receipt, part, notices[part.notification_id], now))
        settled[receipt["id"]] = (receipt["outcome"] or "applied", part.notification_id)
    _write(session, parts, notices, events, now)
    return settled


def _replay(receipt: dict[str, Any], part: _Part, notice: _Notice, now: datetime) -> dict[str, Any]:
    """One receipt against the in-memory rows, exactly as the one-row state machine decides;
    returns the event it records (a transition, or a note that the state stays)."""
    status = receipt["status"]
    if part.state == "sent" or status != RECEIPT_PENDING:
        part.state = status if status != RECEIPT_PENDING else part.state
        part.error_code, part.changed = receipt["error_code"], True
    source = f"{receipt['channel']}-receipt"
    label = f"part {part.part_no}/{notice.parts}: {receipt['raw_status']}"
    event = {"notification_id": notice.id, "at": now, "from_state": notice.state, "to_state": notice.state,
             "source": source[:32], "provider_status": (receipt["raw_status"] or "")[:100], "detail": label[:500]}
    if status in _FAILED_STATES and (notice.state in _OPEN_STATES
                                     or (receipt["channel"], notice.state) in _RETRACTABLE):
        reason = f"{label} err:{receipt['error_code']}"
        notice.state = _FAILED_STATES[status]
        notice.values = {"reason": reason}
        event.update(to_state=notice.state, detail=reason[:500])
    elif status == RECEIPT_DELIVERED and notice.state in _OPEN_STATES and _all_delivered(notice):
        shown = delivered_time(done_at=receipt["done_at"], received_at=receipt["received_at"], sent_at=notice.sent_at)
        detail = f"{label}; SMSC done {receipt['done_at'].isoformat()}" if receipt["done_at"] else label
        notice.state = DELIVERED
        notice.values = {"delivered_at": shown}
        event.update(to_state=DELIVERED, detail=detail[:500])
    return event


def _all_delivered(notice: _Notice) -> bool:
    """Its own parts only: looking through the whole batch's parts made a batch quadratic."""
    delivered = sum(1 for p in notice.own_parts if p.state == RECEIPT_DELIVERED)
    return delivered >= notice.parts


def _write(session: Session, parts: dict[int, _Part], notices: dict[int, _Notice], events: list[dict[str, Any]],
           now: datetime) -> None:
    """One executemany per table; notifications by compare-and-set on the state read under lock."""
    changed_parts = [{"b_id": p.id, "b_state": p.state, "b_err": p.error_code, "b_at": now}
                     for p in parts.values() if p.changed]
    bulk_update(session, _PARTS, changed_parts, match={"id": "b_id"},
                assign={"state": "b_state", "error_code": "b_err", "updated_at": "b_at"})
    for column in ("delivered_at", "reason"):
        moved = [{"b_id": n.id, "b_from": n.original, "b_state": n.state, "b_at": now, "b_value": n.values[column]}
                 for n in notices.values() if n.state != n.original and column in n.values]
        bulk_update(session, _NOTIFICATIONS, moved, match={"id": "b_id", "state": "b_from"},
                    assign={"state": "b_state", "updated_at": "b_at", column: "b_value"})
    retracted = [{"b_id": n.id, "b_none": None} for n in notices.values()
                 if n.original == DELIVERED and n.state != DELIVERED]  # a bounce after the relay's 250
    bulk_update(session, _NOTIFICATIONS, retracted, match={"id": "b_id"}, assign={"delivered_at": "b_none"})
    if events:
        bulk_insert(session, _EVENTS, events)


def _orphaned(receipt: dict[str, Any], now: datetime) -> bool:
    return now - receipt["received_at"] > timedelta(seconds=ORPHAN_AFTER_SECONDS)


def _retry_later(session: Session, receipts: list[dict[str, Any]], now: datetime) -> None:
    """Not applied this time: due again after half the receipt's age (RETRY_MIN/MAX_SECONDS)."""
    bulk_update(session, _RECEIPTS, [
        {"b_id": r["id"], "b_at": now + timedelta(seconds=min(max((now - r["received_at"]).total_seconds() / 2,
                                                                  RETRY_MIN_SECONDS), RETRY_MAX_SECONDS))}
        for r in receipts], match={"id": "b_id"}, assign={"retry_at": "b_at"})


def _mark_orphans(session: Session, receipts: list[dict[str, Any]], now: datetime) -> None:
    old = [r for r in receipts if _orphaned(r, now)]
    if not old:
        return
    session.execute(sa.update(_RECEIPTS).where(_RECEIPTS.c.id.in_([r["id"] for r in old]))
                    .values(applied_at=now, outcome="orphan"))
    for receipt in old:
        log.warning("[receipt:%s] no message matches id %s: kept as orphan", receipt["id"],
                    receipt["provider_message_id"])


def delivered_time(*, done_at: datetime | None, received_at: datetime | None,
                   sent_at: datetime | None) -> datetime:
    """The delivery time people see: the provider's, unless it would read as before we sent it.

    Both stay on record (`InboundReceipt.done_at` is the SMSC's, `received_at` ours). Many SMSCs
    write `done date` to the minute, so a message sent at 08:24:40 and delivered a second later
    reads 08:24:00 — before it was sent (a wrong `smpp.timezone` does the same by hours). Then
    the time we recorded the receipt is shown, never earlier than the time we sent it. A done
    time well after the receipt reached us (a zone set the other way round) is not shown either.
    """
    ours = max((t for t in (received_at, sent_at) if t is not None), default=None) or utcnow()
    if done_at is None or (sent_at is not None and done_at < sent_at):
        return ours
    if received_at is not None and done_at > received_at + timedelta(seconds=PROVIDER_CLOCK_SKEW_SECONDS):
        return ours
    return done_at
