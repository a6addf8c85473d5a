"""Care staff find a notification by what the subscriber quotes (reference code, account id in any
case, number), every lookup audited with whose accounts it showed; the audit can be listed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select
from typer.testing import CliRunner

from cli import app
from notifier.audit import list_audit, parse_since
from notifier.db import get_engine, session_scope
from notifier.dispatch.delivery import parse_reference_code, reference_code
from notifier.errors import InputError
from notifier.history import account_ref_matches
from notifier.models import Account, AuditLog
from tests.factories import add_account, add_notification

runner = CliRunner()
FIRST_LINE = "Kính gửi Quý khách Nguyễn Văn Ánh, thiết bị trên đường truyền của Quý khách có dấu hiệu nhiễm mã độc Mirai."


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _json(*args: str) -> object:
    return json.loads(_ok(*args, "--json"))


def _audit_rows(database_url: str) -> list[AuditLog]:
    with session_scope(database_url) as session:
        rows = session.exec(select(AuditLog).order_by(AuditLog.id)).all()
        session.expunge_all()
        return list(rows)


def _two_subscribers(database_url: str) -> tuple[str, str]:
    """HN-000123 with a failed SMS and a delivered e-mail; HN-000124 with one SMS. Their codes."""
    with session_scope(database_url) as session:
        anh = add_account(session, "HN-000123", email="anh@example.vn")
        failed = add_notification(session, anh, state="failed")
        failed.reason, failed.text = "part 1/2: UNDELIV err:001", FIRST_LINE + "\nDòng thứ hai."
        add_notification(session, anh, channel="email", state="delivered", destination="anh@example.vn")
        other = add_notification(session, add_account(session, "HN-000124", msisdn="+84912345679",
                                                      name="Trần Thị Bích"), destination="+84912345679")
        return reference_code(failed.campaign_id, failed.id), reference_code(other.campaign_id, other.id)


# --- reference codes -----------------------------------------------------------------------------


def test_reference_codes_parse_back_whatever_the_case_and_spacing() -> None:
    assert parse_reference_code(reference_code(12, 3456)) == (12, 3456)
    for quoted in ("cb-12-3456", " CB 12 3456 ", "Cb - 12 - 3456", "CB12-3456", "CB-12–3456"):
        assert parse_reference_code(quoted) == (12, 3456)
    for malformed in ("CB-12", "12-3456", "CB-12-34-56", "CB-x-3456", "0912345678", ""):
        with pytest.raises(InputError, match="not a reference code"):
            parse_reference_code(malformed)


def test_history_by_reference_finds_that_notification_and_is_audited(cli_db: str) -> None:
    failed_code, other_code = _two_subscribers(cli_db)
    campaign_id, notification_id = parse_reference_code(failed_code)
    rows = _json("history", "--reference", f"  {failed_code.lower().replace('-', ' ')} ", "--actor", "care-7")
    assert [(r["notification_id"], r["reference"], r["account_id"]) for r in rows] == \
        [(notification_id, failed_code, "HN-000123")]
    assert rows[0]["campaign_id"] == campaign_id
    audit = _audit_rows(cli_db)[-1]
    assert (audit.actor, audit.action, audit.target_kind, audit.target, audit.result_count) == \
        ("care-7", "history.lookup", "reference", failed_code, 1)
    assert json.loads(audit.detail or "{}")["accounts"] == ["HN-000123"]
    # the right numbers in the wrong order name nothing: a code is a campaign and its notification
    assert _json("history", "--reference", f"CB-{campaign_id + 100}-{notification_id}", "--actor", "care-7") == []


def test_a_malformed_reference_is_one_line_without_echoing_it(cli_db: str) -> None:
    result = runner.invoke(app, ["history", "--reference", "0912345678"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not a reference code")
    assert "0912345678" not in result.output and "Traceback" not in result.output
    assert _audit_rows(cli_db) == []  # nothing was looked up


# --- account ids and the table -------------------------------------------------------------------


def test_account_lookup_ignores_case_and_the_table_shows_whose_what_and_why(cli_db: str) -> None:
    failed_code, _ = _two_subscribers(cli_db)
    upper = _json("history", "--account", "HN-000123", "--actor", "care-7")
    lower = _json("history", "--account", "  hn-000123", "--actor", "care-7")
    assert [r["notification_id"] for r in lower] == [r["notification_id"] for r in upper]
    assert len(lower) == 2 and {r["account_id"] for r in lower} == {"HN-000123"}
    assert {r["name"] for r in lower} == {"Nguyễn Văn Ánh"}

    table = _ok("history", "--account", "Hn-000123", "--actor", "care-7")
    assert "2 notification(s)" in table
    for expected in (failed_code, "HN-000123", "Nguyễn Văn Ánh", "failed: part 1/2: UNDELIV err:001",
                     "delivered", "Kính gửi Quý khách Nguyễn Văn Ánh, thiết bị trên đường"):
        assert expected in table
    assert FIRST_LINE in table and "Dòng thứ hai" not in table  # the whole first line, not the rest
    assert "+84912345678" not in table and "anh@example.vn" not in table
    assert [a.target for a in _audit_rows(cli_db)] == ["HN-000123", "hn-000123", "Hn-000123"]


def test_the_case_insensitive_account_comparison_uses_an_index(database_url: str) -> None:
    with session_scope(database_url) as session:
        add_account(session, "HN-000123")
        query = select(Account.id).where(account_ref_matches("hn-000123"))
        assert session.exec(query).all() != []
    statement = query.compile(get_engine(database_url), compile_kwargs={"literal_binds": True})
    with get_engine(database_url).connect() as connection:
        if connection.dialect.name == "sqlite":
            plan = " ".join(str(row) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))
        else:
            connection.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: make the choice visible
            plan = " ".join(str(row) for row in connection.exec_driver_sql(f"EXPLAIN {statement}"))
    assert "ix_account_account_ref_lower" in plan


def test_an_empty_result_names_the_masked_target_instead_of_an_empty_table(cli_db: str) -> None:
    _two_subscribers(cli_db)
    assert _ok("history", "--msisdn", "0987 654 321").strip() == "no notifications for +8498****321"
    assert _ok("history", "--email", "Nobody@Example.vn").strip() == "no notifications for n***@example.vn"
    assert _ok("history", "--account", "HN-999").strip() == "no notifications for HN-999"
    assert _json("history", "--msisdn", "0987654321") == []


def test_a_lookup_by_number_records_whose_accounts_it_showed_with_the_number_masked(cli_db: str) -> None:
    _two_subscribers(cli_db)
    _ok("history", "--msisdn", "0912 345 678", "--actor", "care-7")
    audit = _audit_rows(cli_db)[-1]
    assert (audit.target_kind, audit.target, audit.result_count) == ("msisdn", "+8491****678", 2)
    assert json.loads(audit.detail or "{}") == {"accounts": ["HN-000123"]}
    assert "912345678" not in (audit.detail or "") + audit.target


# --- the audit listing ---------------------------------------------------------------------------


def _audit_at(database_url: str, *rows: tuple[datetime, str]) -> None:
    with session_scope(database_url) as session:
        for at, actor in rows:
            session.add(AuditLog(at=at, actor=actor, action="history.lookup", target_kind="msisdn",
                                 target="+8491****678", result_count=1, detail='{"accounts":["HN-000123"]}'))


def test_audit_since_a_date_means_from_local_midnight(cli_db: str) -> None:
    _audit_at(cli_db,
              (datetime(2026, 10, 31, 16, 30, tzinfo=UTC), "care-1"),  # 23:30 on 31/10 in Hà Nội: before
              (datetime(2026, 10, 31, 17, 30, tzinfo=UTC), "care-2"),  # 00:30 on 01/11 in Hà Nội: after
              (datetime(2026, 11, 18, 1, 24, tzinfo=UTC), "care-1"))
    rows = _json("audit", "--since", "2026-11-01")
    assert [(r["actor"], r["at"]) for r in rows] == [("care-2", "2026-10-31T17:30:00+00:00"),
                                                    ("care-1", "2026-11-18T01:24:00+00:00")]
    assert rows[0]["accounts"] == ["HN-000123"] and rows[0]["target"] == "+8491****678"
    assert [r["actor"] for r in _json("audit", "--since", "2026-11-01", "--actor", "care-1")] == ["care-1"]
    table = _ok("audit", "--since", "2026-11-01")
    assert "01/11/2026 00:30" in table and "18/11/2026 08:24" in table and "31/10/2026" not in table


def test_audit_since_a_span_and_listing_the_audit_is_itself_audited(cli_db: str) -> None:
    now = datetime.now(UTC)
    _audit_at(cli_db, (now - timedelta(days=8), "care-old"), (now - timedelta(days=6), "care-new"))
    first = _json("audit", "--since", "7d", "--viewer", "auditor-1")
    assert [r["actor"] for r in first] == ["care-new"]  # the listing does not show itself
    second = _json("audit", "--since", "7d")
    assert [(r["actor"], r["action"]) for r in second] == [("care-new", "history.lookup"),
                                                          ("auditor-1", "audit.list")]
    assert second[1]["target"].startswith("since=") and second[1]["result_count"] == 1


@pytest.mark.parametrize("bad", ["yesterday", "7w", "2026-13-01", "-7d"])
def test_a_bad_since_is_one_line(cli_db: str, bad: str) -> None:
    result = runner.invoke(app, ["audit", "--since", bad])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --since"), result.stderr


def test_parse_since_reads_dates_in_the_configured_zone_and_spans_from_now() -> None:
    now = datetime(2026, 11, 18, 1, 24, tzinfo=UTC)
    assert parse_since("2026-11-01", zone="Asia/Ho_Chi_Minh") == datetime(2026, 10, 31, 17, 0, tzinfo=UTC)
    assert parse_since("2026-11-01", zone="UTC") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("7d", now=now, zone="UTC") == now - timedelta(days=7)
    assert parse_since("12H", now=now, zone="UTC") == now - timedelta(hours=12)


def test_list_audit_keeps_many_account_ids_within_the_detail_column(database_url: str) -> None:
    from notifier.audit import record_access

    refs = [f"HCM-{n:09d}" for n in range(80)]
    with session_scope(database_url) as session:
        record_access(session, actor="care-1", action="history.lookup", target_kind="msisdn",
                      target="+8491****678", result_count=80, account_refs=refs)
    with session_scope(database_url) as session:
        [row] = [r for r in list_audit(session, viewer="auditor") if r["action"] == "history.lookup"]
        stored = session.exec(select(sa.func.length(AuditLog.detail)).where(AuditLog.actor == "care-1")).one()
    assert stored <= 500
    assert len(row["accounts"]) + row["more_accounts"] == 80 and row["accounts"] == refs[: len(row["accounts"])]
