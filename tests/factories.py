"""Small builders for database rows and input files used across tests (no behaviour of their own)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from notifier.models import Account, Campaign, ContactPoint, Notification
from notifier.settings import Settings


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def add_account(session: Session, ref: str, *, msisdn: str | None = "+84912345678",
                email: str | None = None, name: str = "Nguyễn Văn Ánh") -> Account:
    account = Account(account_ref=ref, full_name=name)
    session.add(account)
    session.flush()
    if msisdn:
        session.add(ContactPoint(account_id=account.id, kind="msisdn", value=msisdn))
    if email:
        session.add(ContactPoint(account_id=account.id, kind="email", value=email))
    session.flush()
    return account


def add_notification(session: Session, account: Account, *, channel: str = "sms", state: str = "queued",
                     destination: str | None = None, template: str = "infected_device") -> Notification:
    campaign = Campaign(name="test", template=template, channels=channel, state="running")
    session.add(campaign)
    session.flush()
    context = {
        "subscriber": {"full_name": account.full_name, "account_id": account.account_ref},
        "threat": {"name": "Mirai", "category": "botnet", "description": None},
        "events": [{"identifier": "14.160.1.2", "port": 51234, "seen_at": "2026-11-19T21:14:05+00:00",
                    "threat": "Mirai"}],
        "event_count": 1, "first_seen": "2026-11-19T21:14:05+00:00", "last_seen": "2026-11-19T21:14:05+00:00",
        "ip": "14.160.1.2", "data_classes": [], "leaked_identifier": None, "leak_source": None,
        "advice_url": None,
    }
    notification = Notification(campaign_id=campaign.id, account_id=account.id, channel=channel, state=state,
                                destination=destination or ("+84912345678" if channel == "sms" else "a@example.vn"),
                                context=json.dumps(context), threat="Mirai")
    session.add(notification)
    session.flush()
    return notification


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess these settings."""
    return {
        "NOTIFIER_DATABASE_URL": settings.database_url,
        "NOTIFIER_SMPP__PORT": str(settings.smpp.port),
        "NOTIFIER_SMPP__SYSTEM_ID": settings.smpp.system_id,
        "NOTIFIER_SMPP__RECEIPT_REDELIVERY_SECONDS": str(settings.smpp.receipt_redelivery_seconds),
        "NOTIFIER_SMTP__PORT": str(settings.smtp.port),
        "NOTIFIER_DISPATCH__RECEIPT_WAIT_SECONDS": str(settings.dispatch.receipt_wait_seconds),
        "NOTIFIER_DISPATCH__UNKNOWN_RESEND_AFTER_SECONDS": str(settings.dispatch.unknown_resend_after_seconds),
        "NOTIFIER_DISPATCH__REQUEUE_AFTER_SECONDS": str(settings.dispatch.requeue_after_seconds),
        "NOTIFIER_DISPATCH__SMS_PER_SECOND": str(settings.dispatch.sms_per_second),
        "NOTIFIER_DISPATCH__EMAIL_PER_SECOND": str(settings.dispatch.email_per_second),
        "NOTIFIER_DISPATCH__WORKER_THREADS": str(settings.dispatch.worker_threads),
        **({"NOTIFIER_BROKER_URL": settings.broker_url} if settings.broker_url else {}),
        "NOTIFIER_BROKER_NAMESPACE": settings.broker_namespace,
    }


UTC_NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
