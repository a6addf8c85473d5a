"""What was sent to a subscriber, when, and whether it arrived: the care-staff lookup.

Every lookup writes an `AuditLog` row (who, what was looked up — masked —, how many results),
in the same transaction as the read, so a lookup without its audit record cannot happen.
"""

from __future__ import annotations

import getpass
from collections import defaultdict

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.errors import InputError
from notifier.identifiers import mask_identifier, normalise_email, normalise_msisdn
from notifier.models import Account, AuditLog, ContactPoint, DeliveryEvent, Notification


def default_actor() -> str:
    """The operating-system user: the audit trail names a person even when no --actor is given."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def lookup_history(
    session: Session, *, msisdn: str | None = None, email: str | None = None,
    account: str | None = None, actor: str,
) -> list[dict[str, object]]:
    """Notifications for one subscriber, newest first, each with its delivery events."""
    kind, value = _target(msisdn, email, account)
    account_ids = _accounts(session, kind, value)
    conditions = [Notification.account_id.in_(account_ids)] if account_ids else []
    if kind != "account":
        conditions.append(Notification.destination == value)
    notifications = session.exec(
        select(Notification).where(sa.or_(*conditions)).order_by(Notification.created_at.desc(), Notification.id.desc())
    ).all() if conditions else []
    events = _events(session, [n.id for n in notifications if n.id is not None])
    session.add(AuditLog(actor=actor[:100], action="history.lookup", target_kind=kind,
                         target=mask_identifier(kind, value) if kind != "account" else value,
                         result_count=len(notifications)))
    return [_as_json(n, events.get(n.id or 0, [])) for n in notifications]


def _target(msisdn: str | None, email: str | None, account: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("msisdn", msisdn), ("email", email), ("account", account)) if v]
    if len(given) != 1:
        raise InputError("give exactly one of --msisdn, --email, --account")
    kind, raw = given[0]
    try:
        if kind == "msisdn":
            return kind, normalise_msisdn(raw)
        if kind == "email":
            return kind, normalise_email(raw)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    return kind, raw.strip()


def _accounts(session: Session, kind: str, value: str) -> list[int]:
    if kind == "account":
        return [i for i in session.exec(select(Account.id).where(Account.account_ref == value)) if i is not None]
    return list(session.exec(select(ContactPoint.account_id).where(
        ContactPoint.kind == kind, ContactPoint.value == value).distinct()))


def _events(session: Session, notification_ids: list[int]) -> dict[int, list[DeliveryEvent]]:
    grouped: dict[int, list[DeliveryEvent]] = defaultdict(list)
    if notification_ids:
        for event in session.exec(select(DeliveryEvent).where(
                DeliveryEvent.notification_id.in_(notification_ids)).order_by(DeliveryEvent.id)):
            grouped[event.notification_id].append(event)
    return grouped


def _as_json(notification: Notification, events: list[DeliveryEvent]) -> dict[str, object]:
    return {
        "notification_id": notification.id,
        "campaign_id": notification.campaign_id,
        "channel": notification.channel,
        "destination": mask_identifier("email" if notification.channel == "email" else "msisdn",
                                       notification.destination) if notification.destination else None,
        "state": notification.state,
        "reason": notification.reason,
        "threat": notification.threat,
        "subject": notification.subject,
        "text": notification.text,
        "created_at": _iso(notification.created_at),
        "sent_at": _iso(notification.sent_at),
        "delivered_at": _iso(notification.delivered_at),
        "events": [
            {"at": _iso(e.at), "from_state": e.from_state, "to_state": e.to_state, "source": e.source,
             "provider_status": e.provider_status, "detail": e.detail}
            for e in events
        ],
    }


def _iso(moment) -> str | None:  # type: ignore[no-untyped-def]
    return moment.isoformat() if moment else None
