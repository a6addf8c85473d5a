"""The whole path in one process: feed → match → plan → SMS over SMPP and e-mail over SMTP → receipts
→ history. Real SMPP and SMTP peers on loopback; SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from notifier.campaigns import campaign_status, create_campaign
from notifier.db import session_scope
from notifier.dispatch.loops import run_campaign
from notifier.history import lookup_history
from notifier.importing import import_assignments, import_feed, import_subscribers
from notifier.models import AuditLog, Notification
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.sms import decode_parts
from tests.conftest import make_settings
from tests.factories import write_csv

SUBSCRIBERS = [
    ["HN1", "Nguyễn Văn Ánh", "0912345678", "anh.nguyen@example.vn", "ftth", "active", "0", "0"],
    ["HN2", "Trần Thị Bích Ngọc", "0987654321", "ngoc.tran@example.vn", "ftth", "active", "1", "0"],
    ["HN3", "Lê Quốc Đạt", "0901234599", "", "ftth", "active", "0", "0"],
    ["HN4", "Phạm Minh Châu", "0933333333", "chau.pham@example.vn", "ftth", "terminated", "0", "0"],
]


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    subscribers = write_csv(tmp_path / "subscribers.csv",
                            ["account_id", "full_name", "msisdn", "email", "service", "status",
                             "sms_opt_out", "email_opt_out"], SUBSCRIBERS)
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "2026-11-20 08:00:00"],
        ["HN2", "14.160.1.3", "2026-11-19 08:00:00", ""],
        ["HN3", "14.160.1.4", "2026-11-19 08:00:00", ""],
        ["HN4", "14.160.1.5", "2026-11-19 08:00:00", ""],
        ["HN3", "14.160.1.2", "2026-11-20 08:00:00", ""],  # the address moved on to HN3 (local time)
    ])
    feed = write_csv(tmp_path / "2026-11-20-event4_sinkhole_http-vietnam-geo_asn.csv",
                     ["timestamp", "src_ip", "src_port", "infection", "family", "tag"], [
        ["2026-11-19 21:14:05Z", "14.160.1.2", "51234", "mirai-http", "mirai", ""],   # 04:14 local: HN1
        ["2026-11-19 22:00:00Z", "14.160.1.2", "51235", "mirai-http", "mirai", ""],   # HN1 again: one warning
        ["2026-11-20 02:00:00Z", "14.160.1.3", "40000", "mozi", "mozi", ""],          # HN2 (SMS opt-out)
        ["2026-11-20 03:00:00Z", "14.160.1.4", "40001", "gafgyt", "gafgyt", ""],      # HN3, number ends 99
        ["2026-11-20 03:00:00Z", "14.160.1.5", "40002", "mirai", "mirai", ""],        # HN4 terminated
        ["2026-11-20 03:00:00Z", "203.0.113.9", "40003", "mirai", "mirai", ""],       # nobody's
        ["2026-11-20 03:00:00Z", "14.160.999.1", "40004", "mirai", "mirai", ""],      # bad address
    ])
    return subscribers, sessions, feed


def test_infected_device_campaign_end_to_end(database_url: str, tmp_path: Path, smsc: SmscPeer,
                                             smtp: SmtpSink) -> None:
    settings = make_settings(database_url, smsc=smsc, smtp=smtp)
    subscribers, sessions, feed = _inputs(tmp_path)
    with session_scope(database_url) as session:
        assert import_subscribers(session, subscribers, tz=settings.timezone).accepted == 4
        assert import_assignments(session, sessions, fmt="sessions-csv", tz=settings.timezone).accepted == 5
        result = import_feed(session, feed, fmt="shadowserver")
    assert (result.accepted, result.rejected) == (6, 1)
    assert result.errors[0]["line"] == 8
    assert result.counts == {"matched": 5, "unmatched": 1, "ambiguous": 0}

    with session_scope(database_url) as session:
        plan = create_campaign(session, feed_id=result.id, template="infected_device", channels=["sms", "email"])
    assert plan.accounts == 4
    status = run_campaign(settings, plan.campaign_id)

    by_channel = status["by_channel"]
    assert by_channel["sms"] == {"delivered": 1, "undelivered": 1, "suppressed": 2}
    assert by_channel["email"] == {"delivered": 2, "suppressed": 2}
    assert status["state"] == "done"

    messages = smsc.messages()
    assert sorted(m["destination"] for m in messages) == ["84901234599", "84912345678"]
    hn1 = next(m for m in messages if m["destination"] == "84912345678")
    assert "Mirai" in hn1["text"] and "14.160.1.2" in hn1["text"] and "05:00 20/11" in hn1["text"]  # last seen, local time
    assert hn1["data_coding"] == 8  # Vietnamese with diacritics: UCS-2

    mails = smtp.wait_for(2, timeout_seconds=10)
    subjects = {mail.message["To"]: str(mail.message["Subject"]) for mail in mails}
    assert set(subjects) == {"anh.nguyen@example.vn", "ngoc.tran@example.vn"}

    with session_scope(database_url) as session:
        rows = session.exec(select(Notification).where(Notification.campaign_id == plan.campaign_id)).all()
        reasons = {(n.channel, n.reason) for n in rows if n.state == "suppressed"}
        assert ("sms", "subscriber opted out of sms") in reasons
        assert ("sms", "account terminated") in reasons
        assert ("email", "no e-mail address on record") in reasons
        history = lookup_history(session, msisdn="0912 345 678", actor="care-agent-7")
    assert sorted(h["channel"] for h in history) == ["email", "sms"]
    sms = next(h for h in history if h["channel"] == "sms")
    assert sms["state"] == "delivered" and sms["delivered_at"]
    moves = [e["to_state"] for e in sms["events"] if e["from_state"] != e["to_state"]]
    assert moves == ["queued", "sending", "sent", "delivered"]
    part_receipts = [e for e in sms["events"] if e["source"] == "sms-receipt"]
    assert len(part_receipts) == 3  # one per part, each kept as proof
    assert sms["text"] == hn1["text"]
    with session_scope(database_url) as session:
        audit = session.exec(select(AuditLog)).all()
    assert [(a.actor, a.action, a.target, a.result_count) for a in audit] == \
        [("care-agent-7", "history.lookup", "+8491****678", 2)]


def test_a_three_part_vietnamese_sms_reassembles_exactly(sqlite_url: str, tmp_path: Path, smsc: SmscPeer,
                                                         smtp: SmtpSink) -> None:
    """The rendered warning is 3 UCS-2 parts; the SMSC gets 3 concatenated parts with one reference."""
    settings = make_settings(sqlite_url, smsc=smsc, smtp=smtp)
    subscribers, sessions, feed = _inputs(tmp_path)
    with session_scope(sqlite_url) as session:
        import_subscribers(session, subscribers, tz=settings.timezone)
        import_assignments(session, sessions, fmt="sessions-csv", tz=settings.timezone)
        feed_id = import_feed(session, feed, fmt="shadowserver").id
        plan = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms"])
    run_campaign(settings, plan.campaign_id)
    submits = [s for s in smsc.submits() if s["destination_addr"] == "84912345678"]
    with session_scope(sqlite_url) as session:
        sent = session.exec(select(Notification).where(Notification.destination == "+84912345678")).one()
    assert sent.parts == len(submits) == 3
    parts = [bytes.fromhex(s["short_message_hex"]) for s in submits]
    assert {p[:4] for p in parts} == {parts[0][:4]} and parts[0][:3] == b"\x05\x00\x03"
    assert sorted(p[5] for p in parts) == [1, 2, 3] and all(p[4] == 3 for p in parts)
    assert all(s["esm_class"] & 0x40 and s["data_coding"] == 8 for s in submits)
    assert decode_parts(parts, 8) == sent.text


def test_campaign_status_counts_per_state_and_channel(database_url: str, tmp_path: Path) -> None:
    subscribers, sessions, feed = _inputs(tmp_path)
    with session_scope(database_url) as session:
        import_subscribers(session, subscribers, tz="Asia/Ho_Chi_Minh")
        import_assignments(session, sessions, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
        feed_id = import_feed(session, feed, fmt="shadowserver").id
        plan = create_campaign(session, feed_id=feed_id, template="infected_device", channels=["sms", "email"])
        status = campaign_status(session, plan.campaign_id)
    assert status["states"] == {"planned": 4, "suppressed": 4}
    assert status["by_channel"] == {"sms": {"planned": 2, "suppressed": 2}, "email": {"planned": 2, "suppressed": 2}}
