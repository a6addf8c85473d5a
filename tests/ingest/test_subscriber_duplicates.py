"""An account_id twice in one subscriber export is a data error the operator must fix: the first row
goes in, every later one is rejected naming both lines, never merged silently — across batches too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from cli import app
from notifier.db import session_scope
from notifier.importing import import_subscribers
from notifier.models import Account, ContactPoint
from tests.factories import write_csv

HEADER = ["account_id", "full_name", "msisdn", "email", "status"]
TZ = "Asia/Ho_Chi_Minh"
ROWS = [
    ["A1", "Nguyễn Văn An", "0912345671", "an@example.vn", "active"],  # line 2
    ["A2", "Trần Thị Bình", "0912345672", "", "active"],  # line 3
    ["A123", "Lê Văn Cường", "0912345673", "cuong@example.vn", "active"],  # line 4: goes in
    ["A3", "Phạm Thị Dung", "0912345674", "", "active"],  # line 5
    ["B1", "Hoàng Văn Em", "0912345675", "", "closed"],  # line 6: bad status, rejected on its own
    ["A4", "Vũ Thị Giang", "0912345676", "", "active"],  # line 7
    ["A5", "Đặng Văn Hải", "0912345677", "", "active"],  # line 8
    ["A123", "Lê Văn Cường (mới)", "0987654321", "cuong.moi@example.vn", "terminated"],  # line 9
    ["B1", "Hoàng Văn Em", "0912345675", "", "active"],  # line 10: B1's first good row
    ["A1", "Nguyễn Văn An", "0912345671", "an@example.vn", "active"],  # line 11: identical, still a repeat
]
EXPECTED_ERRORS = [
    {"line": 6, "reason": "status: 'closed' is not one of active, suspended, terminated"},
    {"line": 9, "reason": "account_id A123 already on line 4"},
    {"line": 11, "reason": "account_id A1 already on line 2"},
]


@pytest.fixture(params=[1000, 3], ids=["one-batch", "batches-of-3"])
def batch_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The duplicate rows sit in other batches than their first line when batches hold 3 rows."""
    monkeypatch.setattr("notifier.importing.BATCH_ROWS", request.param)
    return int(request.param)


def test_the_first_row_goes_in_and_later_ones_are_rejected_naming_both_lines(
    database_url: str, tmp_path: Path, batch_rows: int
) -> None:
    export = write_csv(tmp_path / "subs.csv", HEADER, ROWS)
    with session_scope(database_url) as session:
        result = import_subscribers(session, export, tz=TZ)
        assert (result.accepted, result.rejected, result.errors) == (7, 3, EXPECTED_ERRORS)
    with session_scope(database_url) as session:
        accounts = {a.account_ref: a for a in session.exec(select(Account))}
        assert sorted(accounts) == ["A1", "A123", "A2", "A3", "A4", "A5", "B1"]
        first = accounts["A123"]
        assert (first.full_name, first.status) == ("Lê Văn Cường", "active")
        contacts = session.exec(select(ContactPoint.value).where(ContactPoint.account_id == first.id)
                                .order_by(ContactPoint.position)).all()
        assert contacts == ["+84912345673", "cuong@example.vn"]  # nothing of line 9 merged in
    with session_scope(database_url) as session:
        again = import_subscribers(session, export, tz=TZ)
        assert (again.accepted, again.unchanged, again.errors) == (7, 7, EXPECTED_ERRORS)


def test_the_cli_lists_each_repeat_with_both_lines_and_no_contact_data(cli_db: str, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "subs.csv", HEADER, ROWS)
    shown = CliRunner().invoke(app, ["subscribers", "import", str(export)])
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.splitlines() == [
        "subscribers: 7 accepted, 3 rejected",
        *[f"  line {error['line']}: {error['reason']}" for error in EXPECTED_ERRORS],
    ]
    for private in ("0987654321", "987654321", "cuong.moi@example.vn"):
        assert private not in shown.stderr

    as_json = CliRunner().invoke(app, ["subscribers", "import", str(export), "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert (document["accepted"], document["rejected"], document["errors"], document["warnings"]) == \
        (7, 3, EXPECTED_ERRORS, [])
