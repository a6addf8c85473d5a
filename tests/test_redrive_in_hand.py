"""The re-drive tells lost rows from rows a worker holds (`keep_in_hand`) and from rows given back
by a route outage (`let_go`), on both databases."""

from __future__ import annotations

from datetime import timedelta

from notifier.db import session_scope
from notifier.dispatch.redrive import keep_in_hand, let_go, redrive_stale
from notifier.models import Campaign, Notification, utcnow
from tests.factories import add_account, add_notification


def _rows(database_url: str) -> dict[str, int]:
    """Three queued rows handed to the broker a minute ago (one paused), one already sent."""
    with session_scope(database_url) as session:
        account = add_account(session, "A1")
        ids = {name: add_notification(session, account, state=state).id or 0
               for name, state in (("held", "queued"), ("sent", "sent"), ("kept", "queued"), ("bounced", "queued"))}
        session.get(Campaign, session.get(Notification, ids["held"]).campaign_id).state = "paused"  # type: ignore[union-attr]
        for nid in ids.values():
            session.get(Notification, nid).enqueued_at = utcnow() - timedelta(seconds=60)  # type: ignore[union-attr]
    return ids


def test_rows_in_a_workers_hand_are_not_redriven_and_given_back_rows_are_at_once(database_url: str) -> None:
    ids = _rows(database_url)
    with session_scope(database_url) as session:
        kept = keep_in_hand(session, list(ids.values()))
    assert kept == [ids["kept"], ids["bounced"]]  # neither the paused campaign's row nor the sent one
    with session_scope(database_url) as session:
        assert redrive_stale(session, after_seconds=30) == []  # held by a live worker: not lost
        let_go(session, [ids["bounced"], ids["sent"]])
    with session_scope(database_url) as session:
        assert redrive_stale(session, after_seconds=30, skip_channels=["sms"]) == []  # its route is down
        assert redrive_stale(session, after_seconds=30) == [ids["bounced"]]  # route back: handed over now
        assert session.get(Notification, ids["sent"]).enqueued_at is not None  # type: ignore[union-attr]
