"""A feed that arrived before the logs of its day: its stored events are matched again once the
logs are in (`feed match`), matched events keep their account, and a follow-up campaign
(`campaign create --untold`) warns only the accounts no warning has told yet."""

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
from notifier.errors import InputError
from notifier.identity.rematch import match_feed_again
from notifier.importing import import_assignments, import_feed
from notifier.models import Account, Feed, FeedItem, Notification, NotificationItem, utcnow
from tests.factories import add_account, write_csv

runner = CliRunner()
TZ = "Asia/Ho_Chi_Minh"
SINKHOLE = ["timestamp", "src_ip", "src_port", "infection", "family", "tag"]
LATE_IP, TOLD_IP, NOBODY_IP, SECOND_SIGHTING_IP = "14.160.1.2", "14.160.1.3", "14.160.1.9", "14.160.1.4"


def _feed(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    """A sinkhole report of (UTC time, address) sightings of Mirai."""
    return write_csv(tmp_path / "2026-11-20-event4_sinkhole-vn.csv", SINKHOLE,
                     [[moment, ip, "40000", "sinkhole", "mirai", ""] for moment, ip in rows])


def _sessions(tmp_path: Path, name: str, rows: list[tuple[str, str]]) -> Path:
    """A sessions-csv log in local time (UTC+7): each (account, address) held 18:00–20:00 on the 20th,
    which is 11:00–13:00 UTC."""
    return write_csv(tmp_path / name, ["account_id", "ip", "start", "end"],
                     [[account, ip, "2026-11-20 18:00:00", "2026-11-20 20:00:00"] for account, ip in rows])


def _statuses(session: Session, feed_id: int) -> dict[str, tuple[str, str | None, str | None]]:
    """Each event's address → (status, account ref, reason)."""
    rows = session.execute(sa.select(FeedItem.identifier, FeedItem.status, Account.account_ref, FeedItem.reason)
                           .join(Account, Account.id == FeedItem.account_id, isouter=True)
                           .where(FeedItem.feed_id == feed_id))
    return {ip: (status, ref, reason) for ip, status, ref, reason in rows}


def _feed_before_its_logs(session: Session, tmp_path: Path) -> int:
    """HN2's session log is in when the feed lands; HN1's comes later."""
    add_account(session, "HN1", msisdn="+84912345678")
    add_account(session, "HN2", msisdn="+84912345679")
    import_assignments(session, _sessions(tmp_path, "early.csv", [("HN2", TOLD_IP)]), fmt="sessions-csv", tz=TZ)
    result = import_feed(session, _feed(tmp_path, [("2026-11-20 12:00:00", LATE_IP), ("2026-11-20 12:00:00", TOLD_IP),
                                                   ("2026-11-20 12:00:00", NOBODY_IP)]), fmt="shadowserver")
    assert result.counts == {"matched": 1, "unmatched": 2, "ambiguous": 0}
    return result.id or 0


def _late_logs(session: Session, tmp_path: Path, rows: list[tuple[str, str]]) -> None:
    import_assignments(session, _sessions(tmp_path, "late.csv", rows), fmt="sessions-csv", tz=TZ)


def test_a_feed_matched_again_finds_the_holder_from_logs_that_came_later(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        feed_id = _feed_before_its_logs(session, tmp_path)
        _late_logs(session, tmp_path, [("HN1", LATE_IP)])
        rematch = match_feed_again(session, feed_id)
        assert (rematch.decided_again, rematch.newly_matched) == (2, 1)
        assert (rematch.totals.matched, rematch.totals.unmatched, rematch.totals.ambiguous) == (2, 1, 0)
        assert _statuses(session, feed_id) == {
            LATE_IP: ("matched", "HN1", None),
            TOLD_IP: ("matched", "HN2", None),
            NOBODY_IP: ("unmatched", None, "no account held this IP address at that time"),
        }
    with session_scope(database_url) as session:  # the feed's own counts follow, committed
        feed = session.get(Feed, feed_id)
        assert (feed.matched, feed.unmatched, feed.ambiguous) == (2, 1, 0)
        again = match_feed_again(session, feed_id)  # nothing new: the unmatched one is decided the same
        assert (again.decided_again, again.newly_matched, again.totals.matched) == (1, 0, 2)


def test_a_matched_event_keeps_its_account_and_an_ambiguous_one_is_decided_again(
        database_url: str, tmp_path: Path) -> None:
    """A log claiming a told event's address for someone else does not move the event behind the
    warning's back; an event two later logs both claim becomes ambiguous, never a guess."""
    with session_scope(database_url) as session:
        feed_id = _feed_before_its_logs(session, tmp_path)
        add_account(session, "HN3", msisdn="+84912345670")
        _late_logs(session, tmp_path, [("HN1", LATE_IP), ("HN3", LATE_IP), ("HN1", TOLD_IP)])
        rematch = match_feed_again(session, feed_id)
        assert (rematch.decided_again, rematch.newly_matched) == (2, 0)
        statuses = _statuses(session, feed_id)
        assert statuses[TOLD_IP] == ("matched", "HN2", None)
        status, account, reason = statuses[LATE_IP]
        assert (status, account) == ("ambiguous", None) and "2 accounts" in (reason or "")


def test_an_untold_campaign_warns_only_the_newly_matched(database_url: str, tmp_path: Path) -> None:
    with session_scope(database_url) as session:
        feed_id = _feed_before_its_logs(session, tmp_path)
        first = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
        assert (first.accounts, first.planned) == (1, 1)
        _late_logs(session, tmp_path, [("HN1", LATE_IP)])
        match_feed_again(session, feed_id)
        with pytest.raises(InputError, match="already has campaign"):  # a plain second one would warn HN2 twice
            create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
        with pytest.raises(InputError, match="give one of them"):
            create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"], again=True,
                            untold=True)
        follow_up = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"],
                                    untold=True)
        assert (follow_up.accounts, follow_up.planned, follow_up.attached) == (1, 1, 0)
        [warned] = session.exec(select(Account.account_ref).join(Notification, Notification.account_id == Account.id)
                                .where(Notification.campaign_id == follow_up.campaign_id)).all()
        assert warned == "HN1"
        nothing_left = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"],
                                       untold=True)
        assert (nothing_left.accounts, nothing_left.planned) == (0, 0)


def test_an_event_whose_warning_never_went_out_is_still_untold(database_url: str, tmp_path: Path) -> None:
    """The first campaign was cancelled before it sent anything: its events count as untold."""
    with session_scope(database_url) as session:
        feed_id = _feed_before_its_logs(session, tmp_path)
        first = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
        session.execute(sa.update(Notification).where(Notification.campaign_id == first.campaign_id)
                        .values(state="cancelled"))
        follow_up = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"],
                                    untold=True)
        assert (follow_up.accounts, follow_up.planned) == (1, 1)


def test_a_late_sighting_of_a_threat_already_told_joins_that_warning(database_url: str, tmp_path: Path) -> None:
    """HN2 was warned of Mirai from this feed; its second Mirai sighting, matched only once the log
    of its other address came in, is attached to that warning, not sent again hours later."""
    with session_scope(database_url) as session:
        add_account(session, "HN2", msisdn="+84912345679")
        import_assignments(session, _sessions(tmp_path, "early.csv", [("HN2", TOLD_IP)]), fmt="sessions-csv", tz=TZ)
        feed_id = import_feed(session, _feed(tmp_path, [("2026-11-20 12:00:00", TOLD_IP),
                                                        ("2026-11-20 12:30:00", SECOND_SIGHTING_IP)]),
                              fmt="shadowserver").id or 0
        first = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
        _late_logs(session, tmp_path, [("HN2", SECOND_SIGHTING_IP)])
        assert match_feed_again(session, feed_id).newly_matched == 1
        follow_up = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"],
                                    untold=True)
        assert (follow_up.accounts, follow_up.planned, follow_up.attached) == (1, 0, 1)
        [earlier] = session.exec(select(Notification.id).where(Notification.campaign_id == first.campaign_id)).all()
        linked = session.exec(select(FeedItem.identifier).join(NotificationItem,
                                                               NotificationItem.feed_item_id == FeedItem.id)
                              .where(NotificationItem.notification_id == earlier)).all()
        assert sorted(linked) == [TOLD_IP, SECOND_SIGHTING_IP]


def test_an_advisory_has_nothing_to_tell_later(database_url: str) -> None:
    with session_scope(database_url) as session:
        feed = Feed(format="ais-json", filename="advisory.json", file_sha256="0" * 64, kind="advisory",
                    details=json.dumps({"segment": {"all": True}}))
        session.add(feed)
        session.flush()
        with pytest.raises(InputError, match="is an advisory"):
            create_campaign(session, feed_id=feed.id or 0, template="general_advisory", channels=["sms"], untold=True)


def test_feed_match_and_campaign_create_untold_from_the_command_line(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        feed_id = _feed_before_its_logs(session, tmp_path)
    created = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--template", "infected_device",
                                  "--channels", "sms", "--json"])
    assert created.exit_code == 0, created.output
    with session_scope(cli_db) as session:
        _late_logs(session, tmp_path, [("HN1", LATE_IP)])
    matched = runner.invoke(app, ["feed", "match", str(feed_id), "--json"])
    assert matched.exit_code == 0, matched.output
    assert json.loads(matched.stdout) == {"id": feed_id, "decided_again": 2, "newly_matched": 1, "matched": 2,
                                          "unmatched": 1, "ambiguous": 0}
    text = runner.invoke(app, ["feed", "match", str(feed_id)])
    assert text.exit_code == 0 and "1 unmatched or ambiguous event(s) matched again, 0 of them now matched" in text.output
    follow_up = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--template", "infected_device",
                                    "--channels", "sms", "--untold", "--json"])
    assert follow_up.exit_code == 0, follow_up.output
    assert (json.loads(follow_up.stdout)["accounts"], json.loads(follow_up.stdout)["planned"]) == (1, 1)
    both = runner.invoke(app, ["campaign", "create", "--feed", str(feed_id), "--untold", "--again"])
    assert both.exit_code == 2 and both.output.startswith("error: --again plans every matched account again")
    missing = runner.invoke(app, ["feed", "match", "999"])
    assert missing.exit_code == 2 and missing.output.startswith("error:") and "Traceback" not in missing.output


def test_recent_feeds_with_events_left_are_matched_again_in_one_command(cli_db: str, tmp_path: Path) -> None:
    """The nightly job after the log import: every feed of the last days with unmatched or ambiguous
    events is matched again; an older one, and one with nothing left to decide, are not touched."""
    with session_scope(cli_db) as session:
        waiting = _feed_before_its_logs(session, tmp_path)
        settled = import_feed(session, write_csv(tmp_path / "2026-11-21-event4_sinkhole-vn.csv", SINKHOLE, [
            ["2026-11-20 12:00:00", TOLD_IP, "40000", "sinkhole", "mirai", ""]]), fmt="shadowserver").id
        old = import_feed(session, write_csv(tmp_path / "2026-11-10-event4_sinkhole-vn.csv", SINKHOLE, [
            ["2026-11-20 12:00:00", LATE_IP, "40000", "sinkhole", "mirai", ""]]), fmt="shadowserver").id
        session.execute(sa.update(Feed).where(Feed.id == old).values(imported_at=utcnow() - timedelta(days=10)))
        _late_logs(session, tmp_path, [("HN1", LATE_IP)])
    result = runner.invoke(app, ["feed", "match", "--recent-days", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert [(feed["id"], feed["newly_matched"]) for feed in json.loads(result.stdout)] == [(waiting, 1)]
    with session_scope(cli_db) as session:
        assert session.get(Feed, old).unmatched == 1 and session.get(Feed, settled).matched == 1
    again = runner.invoke(app, ["feed", "match", "--recent-days", "3"])  # its one unmatched line is still unmatched
    assert again.exit_code == 0
    assert f"feed {waiting}: 1 unmatched or ambiguous event(s) matched again, 0 of them now matched" in again.output
    assert "--untold" not in again.output
    for args in ([], [str(waiting), "--recent-days", "3"]):
        refused = runner.invoke(app, ["feed", "match", *args])
        assert refused.exit_code == 2 and "give a feed id or --recent-days N" in refused.output


def test_no_recent_feed_left_to_match_is_said_in_one_line(cli_db: str) -> None:
    result = runner.invoke(app, ["feed", "match", "--recent-days", "3"])
    assert result.exit_code == 0
    assert result.output.strip() == "no feed imported in the last 3 day(s) has unmatched or ambiguous events"
    assert json.loads(runner.invoke(app, ["feed", "match", "--recent-days", "3", "--json"]).stdout) == []


def test_an_import_of_logs_or_customers_points_at_the_feeds_waiting_for_them(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        _feed_before_its_logs(session, tmp_path)
    hint = "1 feed(s) of the last 7 days still have unmatched or ambiguous events; match them again with " \
           "`notifier feed match --recent-days 7`"
    logs = runner.invoke(app, ["assignments", "import", str(_sessions(tmp_path, "late.csv", [("HN1", LATE_IP)]))])
    assert logs.exit_code == 0 and hint in logs.output
    customers = write_csv(tmp_path / "customers.csv", ["account_id", "full_name", "msisdn"],
                          [["HN9", "Trần Thị Bình", "0912345600"]])
    imported = runner.invoke(app, ["subscribers", "import", str(customers)])
    assert imported.exit_code == 0 and hint in imported.output
    as_json = runner.invoke(app, ["assignments", "import", str(tmp_path / "late.csv"), "--json"])
    assert as_json.exit_code == 0 and "feed match" not in as_json.output  # one JSON document, nothing else
    assert json.loads(as_json.stdout)["accepted"] == 1
    runner.invoke(app, ["feed", "match", "--recent-days", "7"])  # HN1's line is matched; the nobody line stays
    with session_scope(cli_db) as session:
        session.execute(sa.update(FeedItem).where(FeedItem.status == "unmatched").values(status="rejected"))
        session.execute(sa.update(Feed).values(unmatched=0))
    quiet = runner.invoke(app, ["assignments", "import", str(tmp_path / "late.csv")])
    assert quiet.exit_code == 0 and "feed match" not in quiet.output
