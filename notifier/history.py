"""What was sent to a subscriber, when, and whether it arrived: the care-staff lookup.

Care staff search by what the subscriber can tell them: a phone number, an e-mail, the operator's
account id, or the reference code quoted from the message (`CB-<campaign>-<notification>`).
Every lookup writes an audit row (`notifier.audit.record_access`: who, what was looked up —
masked —, how many results, and whose accounts they were) in the same transaction as the read,
so a lookup without its audit record cannot happen.

Subscribers' SMS replies (`InboundMessage`) are shown with the notification they answer (the
latest SMS sent to that number before the reply): `replies` in each row of `--json`, a "reply"
line in the text view, the number masked and the time local. A reply linked to no listed
notification is shown with the newest one (its `notification_id` says so).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.audit import record_access
from notifier.dispatch.delivery import parse_reference_code, reference_code
from notifier.errors import InputError
from notifier.identifiers import mask_identifier, normalise_email, normalise_msisdn
from notifier.models import Account, ContactPoint, DeliveryEvent, InboundMessage, Notification
from notifier.timefmt import iso_utc, local_display

ACTION_HISTORY_LOOKUP = "history.lookup"
TEXT_PREVIEW_CHARS = 60  # the first line of a message in a table: enough to recognise it
CARD_TEXT_CHARS = 480  # in a history block the whole SMS (or an e-mail's first line) is shown


@dataclass(frozen=True)
class HistoryLookup:
    """One lookup's outcome: the masked target (for "no notifications for …") and the rows."""

    target: str
    rows: list[dict[str, object]]


def find_history(
    session: Session, *, msisdn: str | None = None, email: str | None = None,
    account: str | None = None, reference: str | None = None, actor: str,
) -> HistoryLookup:
    """Notifications for one subscriber (or the one a reference code names), newest first, audited."""
    kind, value = _target(msisdn, email, account, reference)
    found = _notifications(session, kind, value)
    notifications = [notification for notification, _, _ in found]
    events = _events(session, [n.id for n in notifications if n.id is not None])
    target = _masked_target(kind, value)
    record_access(session, actor=actor, action=ACTION_HISTORY_LOOKUP, target_kind=kind, target=target,
                  result_count=len(found), account_refs=[ref for _, ref, _ in found])
    rows = [_as_json(n, ref, name, events.get(n.id or 0, [])) for n, ref, name in found]
    _attach_replies(rows, _replies(session, kind, value))
    return HistoryLookup(target=target, rows=rows)


def lookup_history(
    session: Session, *, msisdn: str | None = None, email: str | None = None,
    account: str | None = None, reference: str | None = None, actor: str,
) -> list[dict[str, object]]:
    """The rows of `find_history`: the `history --json` document."""
    return find_history(session, msisdn=msisdn, email=email, account=account, reference=reference,
                        actor=actor).rows


def history_table_rows(rows: list[dict[str, object]], *,
                       preview_chars: int = TEXT_PREVIEW_CHARS) -> list[dict[str, object]]:
    """What a care agent reads: whose, which channel, how it ended and why, when, which message.

    Times stay under their `*_at` names so the CLI table shows them in local time.
    """
    return [{
        "reference": row["reference"], "account": row["account_id"], "name": row["name"],
        "channel": row["channel"], "destination": row["destination"], "state": _state_with_reason(row),
        "created_at": row["created_at"], "sent_at": row["sent_at"], "delivered_at": row["delivered_at"],
        "text": first_line(row.get("text") or row.get("subject"), preview_chars),
        "replies": row.get("replies") or [],
    } for row in rows]


def history_cards(rows: list[dict[str, object]], zone: str) -> list[str]:
    """The same facts as `history_table_rows`, as a block of short lines per notification.

    A care agent's terminal is often 80 columns: a nine-column table would cut every cell to "…",
    while a block reads at any width and a long reason wraps instead of disappearing.
    """
    blocks = []
    for row in history_table_rows(rows, preview_chars=CARD_TEXT_CHARS):
        times = " · ".join(f"{label} {local_display(row[key], zone)}" for label, key in (
            ("created", "created_at"), ("sent", "sent_at"), ("delivered", "delivered_at")) if row[key])
        to = f" to {row['destination']}" if row.get("destination") else ""
        lines = [f"{row['reference']}  {row['account']}  {row['name']}",
                 f"  {row['channel']}{to} · {row['state']}", f"  {times}"]
        if row["text"]:
            lines.append(f"  {row['text']}")
        lines += [reply_line(reply, zone) for reply in row["replies"]]  # type: ignore[attr-defined]
        blocks.append("\n".join(lines))
    return blocks


def reply_line(reply: dict[str, object], zone: str) -> str:
    """`  reply from +8491****678 · 02/12/2026 09:15 · opted out: Hủy` (masked, local time)."""
    notes = [f"reply from {reply['from']}", local_display(reply["received_at"], zone)]  # type: ignore[arg-type]
    if reply["parts"] != reply["parts_expected"]:
        notes.append(f"{reply['parts']} of {reply['parts_expected']} parts arrived")
    if reply["opt_out"]:
        notes.append("opted out")
    return f"  {' · '.join(notes)}: {first_line(reply['text'], CARD_TEXT_CHARS)}"


def first_line(text: object, width: int = TEXT_PREVIEW_CHARS) -> str:
    """The first non-empty line, cut to `width` characters with "…" so a table stays readable."""
    line = next((part.strip() for part in str(text or "").splitlines() if part.strip()), "")
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def _state_with_reason(row: dict[str, object]) -> str:
    return f"{row['state']}: {row['reason']}" if row.get("reason") else str(row["state"])


def _target(msisdn: str | None, email: str | None, account: str | None,
            reference: str | None = None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("msisdn", msisdn), ("email", email), ("account", account),
                                 ("reference", reference)) if v]
    if len(given) != 1:
        raise InputError("give exactly one of --msisdn, --email, --account, --reference")
    kind, raw = given[0]
    if kind == "reference":
        return kind, reference_code(*parse_reference_code(raw))
    try:
        if kind == "msisdn":
            return kind, normalise_msisdn(raw)
        if kind == "email":
            return kind, normalise_email(raw)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    return kind, raw.strip()


def _masked_target(kind: str, value: str) -> str:
    """Account ids and reference codes are not contact details; numbers and addresses are masked."""
    return value if kind in ("account", "reference") else mask_identifier(kind, value)


def _notifications(session: Session, kind: str, value: str) -> list[tuple[Notification, str, str]]:
    """(notification, account id, name) rows, newest first.

    By number or address: the notifications of every account holding it, plus those sent to it
    (the number may have moved to another account since). By reference: the one it names.
    """
    query = (select(Notification, Account.account_ref, Account.full_name)
             .join(Account, Account.id == Notification.account_id))
    if kind == "reference":
        campaign_id, notification_id = parse_reference_code(value)
        query = query.where(Notification.id == notification_id, Notification.campaign_id == campaign_id)
    else:
        account_ids = _accounts(session, kind, value)
        conditions = [Notification.account_id.in_(account_ids)] if account_ids else []
        if kind != "account":
            conditions.append(Notification.destination == value)
        if not conditions:
            return []
        query = query.where(sa.or_(*conditions))
    return [tuple(row) for row in session.exec(  # type: ignore[misc]
        query.order_by(Notification.created_at.desc(), Notification.id.desc()))]


def _accounts(session: Session, kind: str, value: str) -> list[int]:
    if kind == "account":
        return [i for i in session.exec(select(Account.id).where(account_ref_matches(value))) if i is not None]
    return list(session.exec(select(ContactPoint.account_id).where(
        ContactPoint.kind == kind, ContactPoint.value == value).distinct()))


def account_ref_matches(value: str) -> sa.ColumnElement[bool]:
    """`account_ref` equal to `value` ignoring case (`HN-000123` = `hn-000123`).

    `lower(account_ref) = lower(:value)` on both sides, so SQLite and PostgreSQL fold the same
    way, and both use the expression index `ix_account_account_ref_lower` built on exactly
    `lower(account_ref)` (ILIKE or COLLATE NOCASE could not use a plain index on both).
    """
    return sa.func.lower(Account.account_ref) == sa.func.lower(value.strip())


def _replies(session: Session, kind: str, value: str) -> list[InboundMessage]:
    """The subscriber's replies, oldest first: from the number, or matched to the accounts (or
    the notification a reference names)."""
    if kind == "reference":
        condition = InboundMessage.notification_id == parse_reference_code(value)[1]
    else:
        account_ids = _accounts(session, kind, value)
        conditions = [InboundMessage.account_id.in_(account_ids)] if account_ids else []  # type: ignore[union-attr]
        if kind == "msisdn":
            conditions.append(InboundMessage.source == value)
        if not conditions:
            return []
        condition = sa.or_(*conditions)
    return list(session.exec(select(InboundMessage).where(condition)
                             .order_by(InboundMessage.received_at, InboundMessage.id)))  # type: ignore[arg-type]


def _attach_replies(rows: list[dict[str, object]], replies: list[InboundMessage]) -> None:
    """Each row's `replies`: those matched to it; the others go with the newest row."""
    by_id = {row["notification_id"]: row for row in rows}
    for row in rows:
        row["replies"] = []
    for reply in replies:
        row = by_id.get(reply.notification_id) or (rows[0] if rows else None)
        if row is not None:
            row["replies"].append(_reply_json(reply))  # type: ignore[attr-defined]


def _reply_json(reply: InboundMessage) -> dict[str, object]:
    return {"received_at": iso_utc(reply.received_at), "from": mask_identifier("msisdn", reply.source),
            "to": reply.destination, "text": reply.text, "parts": reply.parts,
            "parts_expected": reply.parts_expected, "opt_out": reply.opt_out,
            "notification_id": reply.notification_id}


def _events(session: Session, notification_ids: list[int]) -> dict[int, list[DeliveryEvent]]:
    grouped: dict[int, list[DeliveryEvent]] = defaultdict(list)
    if notification_ids:
        for event in session.exec(select(DeliveryEvent).where(
                DeliveryEvent.notification_id.in_(notification_ids)).order_by(DeliveryEvent.id)):
            grouped[event.notification_id].append(event)
    return grouped


def _as_json(notification: Notification, account_ref: str, name: str,
             events: list[DeliveryEvent]) -> dict[str, object]:
    return {
        "notification_id": notification.id,
        "campaign_id": notification.campaign_id,
        "reference": reference_code(notification.campaign_id, notification.id),
        "account_id": account_ref,
        "name": name,
        "channel": notification.channel,
        "destination": mask_identifier("email" if notification.channel == "email" else "msisdn",
                                       notification.destination) if notification.destination else None,
        "state": notification.state,
        "reason": notification.reason,
        "threat": notification.threat,
        "subject": notification.subject,
        "text": notification.text,
        "created_at": iso_utc(notification.created_at),
        "sent_at": iso_utc(notification.sent_at),
        "delivered_at": iso_utc(notification.delivered_at),
        "events": [
            {"at": iso_utc(e.at), "from_state": e.from_state, "to_state": e.to_state, "source": e.source,
             "provider_status": e.provider_status, "detail": e.detail}
            for e in events
        ],
    }
