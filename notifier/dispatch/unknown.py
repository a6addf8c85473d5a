"""Deciding `unknown` rows once: a submit the provider may have taken is never simply sent again.

An `unknown` row (the sender died, or the SMSC did not answer a submit in time) is settled by:
- its receipt (`receipt_batch` resolves it by destination; a long SMS needs one for every part:
  an SMSC that died between the parts took only the first ones), or
- an operator (`notifier campaign reconcile ID --resend | --mark-failed`), or
- `requeue_stale_unknown`, after `dispatch.unknown_resend_after_seconds`, and only when the
  receipts had their chance: no receipt stored for that destination since the row was claimed
  is still unapplied, and (for SMS) some SMPP session heard its SMSC at least
  `SESSION_SETTLE_SECONDS` after the row became unknown — an SMSC hands the receipts it kept for
  a dead session to the next bind, and a frozen SMSC sends nothing, so before that a missing
  receipt proves nothing.
A resend sends the whole message again (under a fresh concatenation reference, so a handset
never joins old and new parts); the parts recorded for the old attempt are dropped.
Every resend is recorded as a DeliveryEvent `unknown → queued` whose detail starts with
"resent after unknown", and counted in `campaign status`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from notifier.dispatch.outbox import among, drop_parts, in_flight, transition
from notifier.dispatch.states import FAILED, QUEUED, UNKNOWN
from notifier.dispatch.receipt_batch import ID_MATCH_GRACE_SECONDS, from_earlier_attempt
from notifier.dispatch.receipts import latest_session_alive
from notifier.identifiers import mask_identifier
from notifier.models import RESENT_EVENT, Campaign, DeliveryEvent, InboundReceipt, Notification, utcnow

log = logging.getLogger(__name__)

SESSION_SETTLE_SECONDS = ID_MATCH_GRACE_SECONDS + 1
RESENT_DETAIL = "resent after unknown"
_CHUNK = 500


def requeue_stale_unknown(session: Session, *, after_seconds: int, smsc_hold_seconds: float = 0.0) -> list[int]:
    """`unknown` rows whose receipts had their chance and none came → `queued` again (in campaigns
    still running). Returns the ids to hand to the broker once this transaction commits.

    An SMS's receipts had their chance once a session has heard the SMSC `smsc_hold_seconds`
    (`smpp.receipt_redelivery_seconds`, at least SESSION_SETTLE_SECONDS) after the row became
    unknown: a receipt the SMSC sent to the session that died is offered to another bind only when
    the SMSC's response timer gives up on the dead one, and resending before that sent the message
    twice (a test SMSC that waits 10 s for a killed worker's answer, against a 5 s resend wait)."""
    after_seconds = max(after_seconds, ID_MATCH_GRACE_SECONDS + 1)
    settle = timedelta(seconds=max(SESSION_SETTLE_SECONDS, smsc_hold_seconds))
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    heard = latest_session_alive(session)
    rows, campaigns = Notification.__table__.c, Campaign.__table__.c  # type: ignore[attr-defined]
    stale = session.execute(  # Core columns: this runs every second in every process, usually finding none
        sa.select(rows.id, rows.channel, rows.destination, rows.claimed_at, rows.updated_at)
        .join(Campaign.__table__, campaigns.id == rows.campaign_id)
        .where(in_flight(UNKNOWN), rows.updated_at <= cutoff, campaigns.state.notin_(("paused", "cancelled")))
        .order_by(rows.id)).all()
    waiting = _latest_pending_receipts(session, [(row.channel, row.destination) for row in stale])
    requeued = []
    for nid, channel, destination, claimed_at, since in stale:
        if channel == "sms" and (heard is None or heard < since + settle):
            continue  # no SMSC has talked to us since: its receipts may still be on their way
        latest = waiting.get((channel, destination))
        if latest is not None and not from_earlier_attempt(latest, claimed_at):
            continue  # a receipt stored since the claim is not applied yet: it may settle the row
        if transition(session, nid, expected=UNKNOWN, to_state=QUEUED, source="recovery",
                      detail=f"{RESENT_DETAIL}: no receipt within {after_seconds}s although the SMSC could "
                             f"hand them over; the provider most likely never took it",
                      values={"queued_at": utcnow(), "claimed_by": None}):
            requeued.append(nid)
    drop_parts(session, requeued)  # a long SMS some of whose parts were taken goes again whole
    if requeued:
        log.warning("%d unknown notification(s) resent after %ds without a receipt", len(requeued), after_seconds)
    return requeued


def _latest_pending_receipts(session: Session, keys: list[tuple[str, str | None]]) -> dict[tuple[str, str], datetime]:
    """(channel, destination) → when its newest unapplied receipt came, for these rows' addresses.
    Compared with each row's claim in Python: an earlier attempt's receipt waits as an orphan
    (`receipt_batch.from_earlier_attempt`)."""
    found: dict[tuple[str, str], datetime] = {}
    wanted = sorted({(channel, destination) for channel, destination in keys if destination})
    for start in range(0, len(wanted), _CHUNK):
        chunk = set(wanted[start:start + _CHUNK])
        rows = session.execute(
            sa.select(InboundReceipt.channel, InboundReceipt.destination, sa.func.max(InboundReceipt.received_at))
            .where(InboundReceipt.applied_at.is_(None),
                   among(session, InboundReceipt.destination, sorted({d for _, d in chunk})))
            .group_by(InboundReceipt.channel, InboundReceipt.destination))
        found.update({(channel, destination): latest for channel, destination, latest in rows
                      if (channel, destination) in chunk})
    return found


def unknown_notifications(session: Session, campaign_id: int) -> list[dict[str, object]]:
    """The campaign's `unknown` rows, oldest first: what `campaign reconcile` lists."""
    rows = session.execute(
        sa.select(Notification.id, Notification.channel, Notification.destination, Notification.claimed_at,
                  Notification.updated_at)
        .where(Notification.campaign_id == campaign_id, Notification.state == UNKNOWN)
        .order_by(Notification.updated_at, Notification.id)).all()
    return [{"id": nid, "channel": channel, "destination": _masked(channel, destination), "claimed_at": claimed_at,
             "unknown_at": since} for nid, channel, destination, claimed_at, since in rows]


def _masked(channel: str, destination: str | None) -> str:
    """Destinations leave this module masked: the list is printed to operators and stored nowhere."""
    return mask_identifier("email" if channel == "email" else "msisdn", destination or "")


def decide_unknown(session: Session, campaign_id: int, *, resend: bool, actor: str) -> list[int]:
    """An operator's decision on every `unknown` row of the campaign: queue it again (`resend`)
    or mark it `failed`. Each move is a compare-and-set: a row a receipt settled meanwhile stays."""
    ids = [int(row["id"]) for row in unknown_notifications(session, campaign_id)]  # type: ignore[call-overload]
    to_state = QUEUED if resend else FAILED
    detail = (f"{RESENT_DETAIL}: decided by {actor}" if resend
              else f"marked failed by {actor}: the provider's answer was never known")
    values = {"queued_at": utcnow(), "claimed_by": None} if resend else {"reason": "unknown; marked failed by operator"}
    moved = [nid for nid in ids if transition(session, nid, expected=UNKNOWN, to_state=to_state, source="operator",
                                              detail=detail[:500], values=values)]
    if resend:
        drop_parts(session, moved)
    return moved


def resent_after_unknown(session: Session, campaign_id: int) -> int:
    """How many times the campaign's rows were sent again after being `unknown`: counted from the
    partial index of such events (`ix_delivery_event_resent`), whose own condition is the WHERE
    (`models.RESENT_EVENT`, states as literals): with bound states a prepared (generic) plan could
    not use it and would join every event of the campaign on every status poll."""
    return int(session.execute(
        sa.select(sa.func.count()).select_from(DeliveryEvent)
        .join(Notification, Notification.id == DeliveryEvent.notification_id)
        .where(Notification.campaign_id == campaign_id, RESENT_EVENT)).scalar() or 0)
