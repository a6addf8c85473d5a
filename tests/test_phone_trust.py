"""The operator's own numbers are trusted: a number of the right shape that phonenumbers does not
know is kept, matched and reported; an impossible one costs only itself. Both warnings are masked.

Function level (import_subscribers, import_feed) and CLI level, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlmodel import Session, select
from typer.testing import CliRunner

from cli import app
from notifier.db import session_scope
from notifier.importing import import_feed, import_subscribers
from notifier.models import Account, ContactPoint, FeedItem
from tests.factories import write_csv

HEADER = ["account_id", "full_name", "msisdn", "email"]
TZ = "Asia/Ho_Chi_Minh"
# 089x: phonenumbers knows 081-088 and 0896-0899; 0891 has the shape of a mobile but no known range.
UNALLOCATED = "0891 123 456"
UNALLOCATED_E164 = "+84891123456"
UNALLOCATED_WARNING = "msisdn +8489****456 is not in a known range; stored as given"

runner = CliRunner()


def _contacts(session: Session, ref: str) -> list[tuple[str, str]]:
    account = session.exec(select(Account).where(Account.account_ref == ref)).one()
    return [(c.kind, c.value) for c in session.exec(
        select(ContactPoint).where(ContactPoint.account_id == account.id).order_by(ContactPoint.position))]


def test_an_unknown_range_keeps_the_account_that_number_and_the_email(database_url: str, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "subs.csv", HEADER, [
        ["HN1", "Nguyễn Văn Ánh", f"0912345678;{UNALLOCATED}", "anh@example.vn"],
    ])
    with session_scope(database_url) as session:
        result = import_subscribers(session, export, tz=TZ)
        assert (result.accepted, result.rejected, result.errors) == (1, 0, [])
        assert result.warnings == [{"line": 2, "reason": UNALLOCATED_WARNING}]
        assert _contacts(session, "HN1") == [("msisdn", "+84912345678"), ("msisdn", UNALLOCATED_E164),
                                             ("email", "anh@example.vn")]
        digest = session.exec(select(ContactPoint.value_sha256).where(ContactPoint.value == UNALLOCATED_E164)).one()
        assert digest == hashlib.sha256(UNALLOCATED_E164[1:].encode()).hexdigest()  # hashed leak lists match too


def test_an_impossible_number_loses_only_that_number(database_url: str, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "subs.csv", HEADER, [
        ["HN2", "Trần Thị Bích", "0912345;0987654321", "bich@example.vn"],  # 7 digits: a typo
        ["HN3", "Lê Văn Cường", "+84 170 123 4567", ""],  # no usable contact: still imported
        ["HN4", "Phạm Thị Dung", "+1 555 0100", "dung@example.vn"],  # foreign: phonenumbers decides
    ])
    with session_scope(database_url) as session:
        result = import_subscribers(session, export, tz=TZ)
        assert (result.accepted, result.rejected) == (3, 0)
        assert result.warnings == [
            {"line": 2, "reason": "msisdn ****345 dropped: wrong length: a mobile number has 10 digits "
                                  "with the leading 0"},
            {"line": 3, "reason": "msisdn +** *** *** *567 dropped: no such number range"},
            {"line": 4, "reason": "msisdn +* *** *100 dropped: no such number range"},
        ]
        assert _contacts(session, "HN2") == [("msisdn", "+84987654321"), ("email", "bich@example.vn")]
        assert _contacts(session, "HN3") == []
        assert _contacts(session, "HN4") == [("email", "dung@example.vn")]


def test_a_leaked_number_in_an_unallocated_range_matches_its_subscriber(database_url: str, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "subs.csv", HEADER, [["HN1", "Nguyễn Văn Ánh", UNALLOCATED, ""]])
    leak = write_csv(tmp_path / "leak.csv", ["msisdn", "msisdn_sha256", "source"], [
        ["0891.123.456", "", "forum-dump-2026"],
        ["+84 891 123 456", "", "forum-dump-2026"],
        ["", hashlib.sha256(b"84891123456").hexdigest(), "forum-dump-2026"],
        ["0891 000 111", "", "forum-dump-2026"],  # same unknown range, nobody's number
        ["0891 123", "", "forum-dump-2026"],  # impossible: rejected as before
    ])
    with session_scope(database_url) as session:
        import_subscribers(session, export, tz=TZ)
        result = import_feed(session, leak, fmt="leak-csv", source="AIS")
        account_id = session.exec(select(Account.id).where(Account.account_ref == "HN1")).one()
        items = {item.line: item for item in session.exec(select(FeedItem).where(FeedItem.feed_id == result.id))}
    assert (result.accepted, result.rejected) == (4, 1)
    assert result.counts == {"matched": 3, "unmatched": 1, "ambiguous": 0}
    assert [(items[n].status, items[n].account_id) for n in (2, 3, 4, 5)] == \
        [("matched", account_id)] * 3 + [("unmatched", None)]
    assert items[6].status == "rejected"


def _invoke(*args: str) -> tuple[str, str]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_cli_reports_masked_warnings_and_the_care_lookup_finds_the_number(cli_db: str, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "subs.csv", HEADER, [
        ["HN1", "Nguyễn Văn Ánh", UNALLOCATED, "anh@example.vn"],
        ["HN2", "Trần Thị Bích", "0912345;0987654321", ""],
    ])
    _, stderr = _invoke("subscribers", "import", str(export))
    assert stderr.splitlines() == [
        "subscribers: 2 accepted, 0 rejected",
        "2 warnings",
        f"  line 2: {UNALLOCATED_WARNING}",
        "  line 3: msisdn ****345 dropped: wrong length: a mobile number has 10 digits with the leading 0",
    ]
    for number in ("891123456", "0912345", "anh@example.vn"):
        assert number not in stderr

    stdout, _ = _invoke("subscribers", "import", str(export), "--json")
    document = json.loads(stdout)
    assert {key: document[key] for key in ("accepted", "rejected", "errors")} == \
        {"accepted": 2, "rejected": 0, "errors": []}
    assert [warning["line"] for warning in document["warnings"]] == [2, 3]

    leak = write_csv(tmp_path / "leak.csv", ["msisdn", "source"], [["0891123456", "forum-dump-2026"]])
    feed = json.loads(_invoke("feed", "import", str(leak), "--format", "leak-csv", "--json")[0])
    assert feed["counts"]["matched"] == 1 and feed["warnings"] == []
    _invoke("campaign", "create", "--feed", str(feed["id"]), "--template", "data_leak", "--channels", "sms")

    history = json.loads(_invoke("history", "--msisdn", "+84 891 123 456", "--actor", "care-agent-7", "--json")[0])
    assert [(row["channel"], row["state"]) for row in history] == [("sms", "planned")]
