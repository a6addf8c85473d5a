"""Maintenance that keeps the outbox honest after crashes: safe to run often, from any process.

- A `sending` row whose sender is gone becomes `unknown`: the provider may or may not have it.
- Stored receipts are applied; one that names a message we never recorded resolves an `unknown`
  row by its destination (the SMSC keeps receipts for a session that died and hands them over
  when we bind again).
- An `unknown` row that no receipt resolved within `unknown_resend_after_seconds` is queued
  again: the provider most likely never took it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, select

from notifier.db import session_scope
from notifier.models import Campaign, Notification, utcnow
from notifier.dispatch.outbox import QUEUED, SENDING, UNKNOWN, transition
from notifier.dispatch.receipts import ID_MATCH_GRACE_SECONDS, apply_pending_receipts
from notifier.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class MaintenanceReport:
    orphaned: int = 0
    receipts_applied: int = 0
    requeued: list[int] | None = None


def run_maintenance(settings: Settings, enqueue: Callable[[list[int]], None] | None = None) -> MaintenanceReport:
    """One pass of every recovery step; `enqueue` sends the ids of re-queued rows to the broker."""
    report = MaintenanceReport()
    with session_scope(settings.database_url) as session:
        report.orphaned = mark_orphans_unknown(session, lease_seconds=settings.dispatch.send_lease_seconds)
    with session_scope(settings.database_url) as session:
        report.receipts_applied = apply_pending_receipts(session)
    with session_scope(settings.database_url) as session:
        report.requeued = requeue_stale_unknown(session, after_seconds=settings.dispatch.unknown_resend_after_seconds)
    if report.requeued and enqueue:
        enqueue(report.requeued)
    return report


def mark_orphans_unknown(session: Session, *, lease_seconds: int) -> int:
    """`sending` rows whose owner process is dead (or silent past the lease) → `unknown`."""
    lease_start = utcnow() - timedelta(seconds=lease_seconds)
    moved = 0
    for notification in session.exec(select(Notification).where(Notification.state == SENDING)):
        if not _owner_gone(notification.claimed_by) and (notification.claimed_at or utcnow()) > lease_start:
            continue
        if transition(session, notification.id or 0, expected=SENDING, to_state=UNKNOWN, source="recovery",
                      detail=f"sender {notification.claimed_by} stopped before recording the provider's answer"):
            moved += 1
            log.warning("[campaign:%s] [notification:%s] sender gone mid-send: state unknown until a receipt "
                        "or the resend delay", notification.campaign_id, notification.id)
    return moved


def requeue_stale_unknown(session: Session, *, after_seconds: int) -> list[int]:
    """`unknown` rows no receipt resolved in time → `queued` again (in campaigns still running).

    Never sooner than a receipt may wait before it is matched by destination: a receipt that
    could still resolve the row must get its chance first, or the subscriber gets it twice.
    """
    after_seconds = max(after_seconds, ID_MATCH_GRACE_SECONDS + 1)
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    stale = session.exec(
        select(Notification.id)
        .join(Campaign, Campaign.id == Notification.campaign_id)
        .where(Notification.state == UNKNOWN, Notification.updated_at <= cutoff,
               Campaign.state.notin_(("paused", "cancelled")))
    ).all()
    requeued = [nid for nid in stale if transition(
        session, nid, expected=UNKNOWN, to_state=QUEUED, source="recovery",
        detail=f"no receipt within {after_seconds}s: the provider most likely never took it; sending again",
        values={"queued_at": utcnow(), "claimed_by": None})]
    return requeued


def _owner_gone(owner: str | None) -> bool:
    """True when `owner` (`host:pid`) is a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
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
