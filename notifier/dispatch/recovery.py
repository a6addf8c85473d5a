"""Maintenance that keeps the outbox honest after crashes: safe to run often, from any process.

- A `sending` row whose sender is gone becomes `unknown`: the provider may or may not have it.
- Stored receipts are applied; one that names a message we never recorded resolves an `unknown`
  row by its destination (the SMSC keeps receipts for a session that died and hands them over
  when we bind again).
- An `unknown` row that no receipt resolved within `unknown_resend_after_seconds` is queued
  again: the provider most likely never took it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session

from notifier.db import session_scope
from notifier.models import Notification, utcnow
from notifier.dispatch.outbox import in_flight, transition
from notifier.dispatch.states import SENDING, UNKNOWN
from notifier.dispatch.receipts import ID_MATCH_GRACE_SECONDS, apply_pending_receipts
from notifier.dispatch.redrive import Availability, broker_errors, hand_over, outage_errors, redrive_stale
from notifier.dispatch.runtime import host_name
from notifier.settings import Settings

_N = Notification.__table__.c  # type: ignore[attr-defined]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class MaintenanceReport:
    orphaned: int = 0
    receipts_applied: int = 0
    requeued: list[int] | None = None
    redriven: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # steps that met a database/broker outage


def run_maintenance(settings: Settings, enqueue: Callable[[list[int]], object] | None = None, *,
                    skip_channels: Collection[str] = (), database: Availability | None = None,
                    broker: Availability | None = None) -> MaintenanceReport:
    """One pass of every recovery step; `enqueue` sends the ids of re-queued rows to the broker,
    after the transaction that re-queued them committed.

    A database or broker outage does not end the calling process (a worker, `campaign run`): the
    step that met it is skipped, logged once through `database` / `broker` when given, and the
    next pass tries again. `skip_channels`: routes known to be down, whose rows are not re-driven.
    """
    report = MaintenanceReport()
    url = settings.database_url
    report.orphaned = _guarded(report, database, "orphans", 0, lambda: _in_session(
        url, lambda session: mark_orphans_unknown(session, lease_seconds=settings.dispatch.send_lease_seconds)))
    report.receipts_applied = _guarded(report, database, "receipts", 0, lambda: _in_session(
        url, _apply_waiting_receipts))
    report.requeued = _guarded(report, database, "unknown", [], lambda: _in_session(
        url, lambda session: requeue_stale_unknown(
            session, after_seconds=settings.dispatch.unknown_resend_after_seconds,
            smsc_hold_seconds=settings.smpp.receipt_redelivery_seconds)))
    report.redriven = _guarded(report, database, "redrive", [], lambda: _in_session(
        url, lambda session: redrive_stale(session, after_seconds=settings.dispatch.requeue_after_seconds,
                                           skip_channels=skip_channels)))
    if enqueue:
        for ids, marked in ((report.requeued or [], False), (report.redriven, True)):
            _guarded(report, database, "enqueue", 0,
                     lambda ids=ids, marked=marked: hand_over(url, enqueue, ids, marked=marked, broker=broker))
    return report


def _apply_waiting_receipts(session: Session) -> int:
    """Receipts stored more than ID_MATCH_GRACE_SECONDS ago and still not applied: their send was
    not recorded (an `unknown` row, resolved by destination) or they are orphans. Younger ones are
    the receipt appliers' (`ReceiptApplier`, in every process that holds a channel or serves
    callbacks): read here too, every process's maintenance read every receipt waiting for its send
    to be recorded, each second, a tenth of a worker's CPU at full speed."""
    return apply_pending_receipts(session, received_before=utcnow() - timedelta(seconds=ID_MATCH_GRACE_SECONDS))


def _in_session(database_url: str, step: Callable[[Session], T]) -> T:
    with session_scope(database_url) as session:
        return step(session)


def _guarded(report: MaintenanceReport, database: Availability | None, name: str, default: T,
             step: Callable[[], T]) -> T:
    """Run one maintenance step; a database or broker outage skips it (logged once), and the
    database answering again is noted. Anything else is a bug and propagates."""
    try:
        result = step()
    except outage_errors() as exc:
        report.errors.append(name)
        if database is not None and not isinstance(exc, broker_errors()):
            database.failed(exc)
        elif database is None:
            log.warning("maintenance step %s skipped: %s", name, type(exc).__name__)
        return default
    if database is not None:
        database.ok()
    return result


def mark_orphans_unknown(session: Session, *, lease_seconds: int) -> int:
    """`sending` rows whose owner process is dead (or silent past the lease) → `unknown`."""
    lease_start = utcnow() - timedelta(seconds=lease_seconds)
    moved = 0
    # Only the columns the decision needs, as Core columns: loading whole rows (text, context) as ORM
    # objects every second cost a worker ~7% of its CPU at 1,000 notifications/s, and ORM attributes
    # still ran each row through the ORM's loading (a pass over 400 rows: 1.42 → 1.22 ms).
    owner_gone = functools.cache(_owner_gone)  # hundreds of rows in `sending`, a few owners: ask once each
    for notification in session.execute(sa.select(_N.id, _N.campaign_id, _N.claimed_by, _N.claimed_at)
                                        .where(in_flight(SENDING))).all():
        if not owner_gone(notification.claimed_by) and (notification.claimed_at or utcnow()) > lease_start:
            continue
        if transition(session, notification.id or 0, expected=SENDING, to_state=UNKNOWN, source="recovery",
                      detail=f"sender {notification.claimed_by} stopped before recording the provider's answer"):
            moved += 1
            log.warning("[campaign:%s] [notification:%s] sender gone mid-send: state unknown until a receipt "
                        "or the resend delay", notification.campaign_id, notification.id)
    return moved


def requeue_stale_unknown(session: Session, *, after_seconds: int, smsc_hold_seconds: float = 0.0) -> list[int]:
    """`unknown` rows no receipt resolved in time → `queued` again, once their receipts had their
    chance (see `notifier.dispatch.unknown`: stored receipts applied first, an SMSC heard since)."""
    from notifier.dispatch.unknown import requeue_stale_unknown as decide

    return decide(session, after_seconds=after_seconds, smsc_hold_seconds=smsc_hold_seconds)


def _owner_gone(owner: str | None) -> bool:
    """True when `owner` (`host:pid`) is a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, pid_text = owner.rpartition(":")
    if host != host_name() or not pid_text.isdigit():
        return False  # another machine's worker: only its lease can tell
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
