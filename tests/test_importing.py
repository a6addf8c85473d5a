"""Importing the operator's exports: idempotent, updates in place, keeps opt-outs, reports bad rows."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from notifier.db import session_scope
from notifier.importing import import_assignments, import_subscribers
from notifier.models import Account, ContactPoint, IpAssignment
from tests.factories import write_csv

HEADER = ["account_id", "full_name", "msisdn", "email", "status"]


def _contacts(session, ref: str) -> list[tuple[str, str, bool]]:  # type: ignore[no-untyped-def]
    account = session.exec(select(Account).where(Account.account_ref == ref)).one()
    return [(c.kind, c.value, c.opted_out) for c in session.exec(
        select(ContactPoint).where(ContactPoint.account_id == account.id).order_by(ContactPoint.position))]


def test_reimport_changes_nothing_and_a_newer_export_updates_in_place(database_url: str, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "v1.csv", HEADER, [
        ["HN1", "Nguyễn Văn Ánh", "0912345678;0987654321", "anh@example.vn", "active"],
        ["HN2", "Trần Thị Bích", "01623456789", "", "active"],  # legacy 11-digit Viettel number
    ])
    with session_scope(database_url) as session:
        result = import_subscribers(session, first, tz="Asia/Ho_Chi_Minh")
        assert (result.accepted, result.unchanged) == (2, 0)
        assert _contacts(session, "HN2") == [("msisdn", "+84323456789", False)]
    with session_scope(database_url) as session:
        stamp = session.exec(select(Account.updated_at).where(Account.account_ref == "HN1")).one()
        hn1 = session.exec(select(Account).where(Account.account_ref == "HN1")).one()
        kept = session.exec(select(ContactPoint).where(ContactPoint.account_id == hn1.id,
                                                       ContactPoint.value == "+84987654321")).one()
        kept.opted_out = True  # e.g. the subscriber replied STOP from this number
    with session_scope(database_url) as session:
        again = import_subscribers(session, first, tz="Asia/Ho_Chi_Minh")
        assert (again.accepted, again.unchanged) == (2, 2)
        assert session.exec(select(Account.updated_at).where(Account.account_ref == "HN1")).one() == stamp

    newer = write_csv(tmp_path / "v2.csv", HEADER, [
        ["HN1", "Nguyễn Văn Ánh", "0987654321", "anh.moi@example.vn", "suspended"],
        ["HN2", "Trần Thị Bích", "0323456789", "", "active"],
        ["HN2", "Trần Thị Bích Ngọc", "0323456789", "", "active"],  # a repeated HN2 is refused, not merged
    ])
    with session_scope(database_url) as session:
        updated = import_subscribers(session, newer, tz="Asia/Ho_Chi_Minh")
        assert (updated.accepted, updated.rejected, updated.unchanged) == (2, 1, 1)
        assert updated.errors == [{"line": 4, "reason": "account_id HN2 already on line 3"}]
    with session_scope(database_url) as session:
        accounts = {a.account_ref: a for a in session.exec(select(Account))}
        assert len(accounts) == 2
        assert accounts["HN1"].status == "suspended" and accounts["HN1"].updated_at > stamp
        assert accounts["HN2"].full_name == "Trần Thị Bích"
        assert _contacts(session, "HN1") == [("msisdn", "+84987654321", True), ("email", "anh.moi@example.vn", False)]


def test_sessions_import_is_idempotent_and_learns_the_end_time(database_url: str, tmp_path: Path) -> None:
    subscribers = write_csv(tmp_path / "s.csv", HEADER, [["HN1", "Nguyễn Văn Ánh", "0912345678", "", "active"]])
    open_session = write_csv(tmp_path / "a1.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""],
        ["HN9", "14.160.1.3", "2026-11-19 08:00:00", ""],
        ["HN1", "14.160.1.999", "2026-11-19 08:00:00", ""],
    ])
    closed = write_csv(tmp_path / "a2.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "2026-11-19 20:00:00"],
    ])
    with session_scope(database_url) as session:
        import_subscribers(session, subscribers, tz="Asia/Ho_Chi_Minh")
        result = import_assignments(session, open_session, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
        assert result.accepted == 1
        assert [(e["line"], e["reason"].split(":")[0]) for e in result.errors] == [(3, "unknown account 'HN9'"), (4, "ip")]
    for _ in range(2):
        with session_scope(database_url) as session:
            import_assignments(session, closed, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
    with session_scope(database_url) as session:
        rows = session.exec(select(IpAssignment)).all()
        assert len(rows) == 1
        assert rows[0].started_at.isoformat() == "2026-11-19T01:00:00+00:00"  # local time stored as UTC
        assert rows[0].ended_at.isoformat() == "2026-11-19T13:00:00+00:00"
