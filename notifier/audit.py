"""The audit trail of who looked at whose data: one helper writes it, one function lists it.

Personal-data law (91/2025/QH15) asks us to know who accessed a subscriber's records. A row says
who looked (`actor`), how (`action`), by what (`target_kind` and `target`, contact details masked),
how many results came back and — in `detail`, as JSON — which accounts (`Account.account_ref`)
those results belonged to, so "whose record was viewed" survives even when the lookup was by a
phone number that later moved to another subscriber. The row is written in the caller's
transaction, so a lookup without its audit record cannot be committed.

Listing the audit is audited too (`audit.list`): the list itself names subscribers and care
staff, so reading it is an access to personal data like any other. The listing row is written
after the read, so a listing never shows itself.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlmodel import Session, select

from notifier.errors import InputError
from notifier.models import AuditLog, utcnow
from notifier.timefmt import iso_utc, local_midnight

ACTOR_MAX_LENGTH = 100
TARGET_MAX_LENGTH = 254
DETAIL_MAX_LENGTH = 500
ACTION_AUDIT_LIST = "audit.list"
_SPAN = re.compile(r"([0-9]{1,4})\s*([dh])", re.IGNORECASE)
_SPAN_UNITS = {"d": "days", "h": "hours"}


def default_actor() -> str:
    """The operating-system user: the audit trail names a person even when no --actor is given."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record_access(
    session: Session, *, actor: str, action: str, target_kind: str, target: str,
    result_count: int, account_refs: Iterable[str] = (), extra: dict[str, object] | None = None,
) -> AuditLog:
    """Add one audit row to the caller's transaction. `target` must already be masked."""
    row = AuditLog(actor=actor[:ACTOR_MAX_LENGTH], action=action, target_kind=target_kind,
                   target=target[:TARGET_MAX_LENGTH], result_count=result_count,
                   detail=_detail(sorted(set(account_refs)), extra or {}))
    session.add(row)
    return row


def _detail(account_refs: list[str], extra: dict[str, object]) -> str | None:
    """JSON within the column's 500 characters: as many account ids as fit, then how many more."""
    if not account_refs and not extra:
        return None
    kept = list(account_refs)
    while True:
        document: dict[str, object] = {"accounts": kept, **extra}
        if len(kept) < len(account_refs):
            document["more_accounts"] = len(account_refs) - len(kept)
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        if len(text) <= DETAIL_MAX_LENGTH or not kept:
            return text[:DETAIL_MAX_LENGTH]
        kept = kept[: max(0, len(kept) * 3 // 4)]


def parse_since(text: str, *, now: datetime | None = None, zone: str) -> datetime:
    """The UTC moment `--since` names: a local date (`2026-11-01` = 00:00 there) or a span (`7d`, `12h`)."""
    value = text.strip()
    span = _SPAN.fullmatch(value)
    if span:
        return (now or utcnow()) - timedelta(**{_SPAN_UNITS[span.group(2).lower()]: int(span.group(1))})
    try:
        return local_midnight(value, zone)
    except ValueError:
        raise InputError(f"--since {value!r}: expected a date like 2026-11-01 or a span like 7d or 12h") from None


def list_audit(
    session: Session, *, viewer: str, since: datetime | None = None, actor: str | None = None,
) -> list[dict[str, object]]:
    """Audit rows, oldest first, filtered by time and actor; the listing itself is recorded."""
    query = select(AuditLog)
    if since is not None:
        query = query.where(AuditLog.at >= since)
    if actor:
        query = query.where(AuditLog.actor == actor)
    rows = [_as_json(row) for row in session.exec(query.order_by(AuditLog.at, AuditLog.id))]
    filters = {"since": iso_utc(since), "actor": actor}
    record_access(session, actor=viewer, action=ACTION_AUDIT_LIST, target_kind="audit",
                  target=" ".join(f"{k}={v}" for k, v in filters.items() if v) or "all",
                  result_count=len(rows))
    return rows


def audit_table_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The listing for people: `at` stays under its name so the CLI shows it in local time."""
    return [{
        "at": row["at"], "actor": row["actor"], "action": row["action"],
        "looked up": f"{row['target_kind']} {row['target']}", "results": row["result_count"],
        "accounts": _accounts_text(row),
    } for row in rows]


def _accounts_text(row: dict[str, object]) -> str:
    accounts = ", ".join(str(ref) for ref in row["accounts"])  # type: ignore[attr-defined]
    more = row.get("more_accounts") or 0
    return f"{accounts} (+{more} more)" if more else accounts


def _as_json(row: AuditLog) -> dict[str, object]:
    detail = _parse_detail(row.detail)
    return {
        "id": row.id, "at": iso_utc(row.at), "actor": row.actor, "action": row.action,
        "target_kind": row.target_kind, "target": row.target, "result_count": row.result_count,
        "accounts": detail.get("accounts", []), "more_accounts": detail.get("more_accounts", 0),
    }


def _parse_detail(detail: str | None) -> dict[str, object]:
    """Rows written before account ids were kept have no (or free-text) detail: show no accounts."""
    if not detail:
        return {}
    try:
        parsed = json.loads(detail)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
