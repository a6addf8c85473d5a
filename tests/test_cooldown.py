"""Aggregation and cooldown (issue 7, item 5): many events of one account in one feed are one
warning; a new sighting of a threat the account was warned about on any channel within
`identity.cooldown_days` is attached to that warning instead of sent again; a new threat, an
expired cooldown or an earlier warning that never reached the subscriber gives a new warning."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from cli import app
from notifier.campaigns import create_campaign
from notifier.db import session_scope
from notifier.importing import import_assignments, import_feed
from notifier.models import Account, Notification, NotificationItem, utcnow
from tests.factories import add_account, write_csv

runner = CliRunner()


def _leak_feed(session: Session, tmp_path: Path, name: str, rows: list[tuple[str, str]]) -> int:
    """A leak list whose `source` is the threat: [(msisdn, source), …]."""
    path = write_csv(tmp_path / f"{name}.csv", ["msisdn", "leaked_at", "source"],
                     [[msisdn, "2026-11-18", source] for msisdn, source in rows])
    return import_feed(session, path, fmt="leak-csv", again=True).id or 0  # each call is a new sighting


def _campaign(session: Session, feed_id: int, channels: tuple[str, ...] = ("sms",), **options: object):
    return create_campaign(session, feed_id=feed_id, template="data_leak", channels=list(channels), **options)


def _notifications(session: Session, campaign_id: int) -> list[Notification]:
    return list(session.exec(select(Notification).where(Notification.campaign_id == campaign_id)))


def _items_of(session: Session, notification_id: int) -> int:
    return session.exec(select(sa.func.count()).select_from(NotificationItem).where(
        NotificationItem.notification_id == notification_id)).one()


def _age(session: Session, campaign_id: int, days: float) -> None:
    """Make a campaign's warnings `days` old."""
    session.execute(sa.update(Notification).where(Notification.campaign_id == campaign_id)
                    .values(created_at=utcnow() - timedelta(days=days)))


def test_the_same_threat_inside_the_cooldown_is_attached_not_sent(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        add_account(session, "HN2", msisdn="+84912345679")
        first = _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist"),
                                                                        ("0912345679", "combolist")]))
        _age(session, first.campaign_id, 6)
        earlier = {n.account_id: n for n in _notifications(session, first.campaign_id)}
        second = _campaign(session, _leak_feed(session, tmp_path, "b", [("0912345678", "COMBOLIST"),  # case aside
                                                                         ("0912345679", "shop-db-2025")]))
        assert (second.accounts, second.planned, second.attached) == (2, 1, 1)
        [new] = _notifications(session, second.campaign_id)
        hn1 = session.exec(select(Account).where(Account.account_ref == "HN1")).one()
        assert new.account_id != hn1.id  # HN2 has a new threat: warned again, with it
        assert _items_of(session, earlier[hn1.id].id or 0) == 2  # HN1's new sighting joined its warning


def test_after_the_cooldown_the_same_threat_is_sent_again(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        first = _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist")]))
        _age(session, first.campaign_id, 8)
        second = _campaign(session, _leak_feed(session, tmp_path, "b", [("0912345678", "combolist")]))
        assert (second.planned, second.attached) == (1, 0)


def test_the_cooldown_is_a_setting_and_zero_turns_it_off(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        first = _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist")]))
        _age(session, first.campaign_id, 8)
        feed_id = _leak_feed(session, tmp_path, "b", [("0912345678", "combolist")])
        assert _campaign(session, feed_id, cooldown_days=30).attached == 1
        assert _campaign(session, feed_id, cooldown_days=0, channels=("email",)).attached == 0


def test_any_channel_counts_and_a_warning_that_never_arrived_does_not(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678", email="a@example.vn")
        add_account(session, "HN2", msisdn="+84912345679", email="b@example.vn")
        first = _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist"),
                                                                        ("0912345679", "combolist")]))
        failed = next(n for n in _notifications(session, first.campaign_id) if n.destination == "+84912345679")
        failed.state = "failed"
        session.flush()
        second = _campaign(session, _leak_feed(session, tmp_path, "b", [("0912345678", "combolist"),
                                                                         ("0912345679", "combolist")]),
                           channels=("email",))  # warned by SMS before: e-mail does not repeat it
        assert (second.planned, second.attached) == (1, 1)
        [new] = _notifications(session, second.campaign_id)
        assert new.destination == "b@example.vn"  # HN2's SMS failed: warned again


def test_a_new_threat_among_known_ones_warns_again_with_all_events(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist")]))
        second = _campaign(session, _leak_feed(session, tmp_path, "b", [("0912345678", "combolist"),
                                                                         ("0912345678", "stealer-logs")]))
        assert (second.planned, second.attached) == (1, 0)
        [new] = _notifications(session, second.campaign_id)
        assert _items_of(session, new.id or 0) == 2
        assert json.loads(new.context)["event_count"] == 2


def test_a_second_campaign_on_the_same_feed_is_not_held_back(database_url: str, tmp_path: Path) -> None:
    """`--again` on the same feed is the operator's own decision; the cooldown is for new feeds."""
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678", email="a@example.vn")
        feed_id = _leak_feed(session, tmp_path, "a", [("0912345678", "combolist")])
        _campaign(session, feed_id)
        again = _campaign(session, feed_id, channels=("email",), again=True)
        assert (again.planned, again.attached) == (1, 0)


def test_campaign_create_prints_how_many_were_attached(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist")]))
        feed_id = _leak_feed(session, tmp_path, "b", [("0912345678", "combolist")])
    result = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--template", "data_leak",
                                 "--channels", "sms", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["attached"] == 1 and json.loads(result.stdout)["planned"] == 0
    with session_scope(cli_db) as session:
        feed_c = _leak_feed(session, tmp_path, "c", [("0912345678", "combolist")])
    text = runner.invoke(app, ["campaign", "create", "--feed", str(feed_c), "--template", "data_leak",
                               "--channels", "sms"])
    assert text.exit_code == 0, text.output
    assert "0 notifications planned, 0 suppressed, 1 attached to an earlier warning (same threat within 7 days)" \
        in text.stderr


# --- aggregation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [("sms",), ("sms", "email")])
def test_many_events_of_one_account_are_one_warning(database_url: str, tmp_path: Path,
                                                      channels: tuple[str, ...]) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678", email="a@example.vn")
        sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"],
                             [["HN1", "14.160.1.2", "2026-11-19 00:00:00", ""]])
        import_assignments(session, sessions, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
        rows = [[f"2026-11-19 {hour:02d}:14:05Z", "14.160.1.2", str(50000 + hour), family, family, ""]
                for hour, family in [(3, "mirai"), (5, "mirai"), (1, "gafgyt"), (7, "mirai"), (4, "qakbot")]]
        feed = write_csv(tmp_path / "2026-11-20-event4_sinkhole-vn.csv",
                         ["timestamp", "src_ip", "src_port", "infection", "family", "tag"], rows)
        feed_id = import_feed(session, feed, fmt="shadowserver").id or 0
        plan = create_campaign(session, feed_id=feed_id, template="infected_device", channels=list(channels))
        assert (plan.accounts, plan.planned) == (1, len(channels))
        for notification in _notifications(session, plan.campaign_id):
            context = json.loads(notification.context)
            assert context["event_count"] == 5
            assert (context["first_seen"], context["last_seen"]) == ("2026-11-19T01:14:05+00:00",
                                                                     "2026-11-19T07:14:05+00:00")
            assert context["threats"] == ["mirai", "qakbot", "gafgyt"]  # the latest first, then by count, recent first
            assert _items_of(session, notification.id or 0) == 5


def test_a_second_campaign_on_a_feed_whose_items_joined_an_earlier_warning(database_url: str, tmp_path: Path) -> None:
    """`--again` on a feed whose every account joined an earlier warning: the items stay joined
    once (no duplicate link), nothing new is planned, and no error."""
    with session_scope(database_url) as session:
        add_account(session, "HN1", msisdn="+84912345678")
        first = _campaign(session, _leak_feed(session, tmp_path, "a", [("0912345678", "combolist")]))
        [earlier] = _notifications(session, first.campaign_id)
        feed_id = _leak_feed(session, tmp_path, "b", [("0912345678", "combolist")])
        again = [_campaign(session, feed_id, again=True) for _ in range(2)]
        assert [(plan.planned, plan.attached) for plan in again] == [(0, 1), (0, 1)]
        assert _items_of(session, earlier.id or 0) == 2
