"""Per-item outcomes (issue 7, item 6) and the Shadowserver report type: `feed show ID --items`
gives formats.md's `line, status, account_id, reason` as JSON or CSV, streamed, and the report type
read from a file name is stored and shown like one given with --report-type."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sqlmodel import select
from typer.testing import CliRunner

from cli import app
from notifier.db import session_scope
from notifier.importing import import_feed
from notifier.models import Feed
from notifier.reports import ITEM_OUTCOME_COLUMNS, iter_feed_items
from tests.factories import add_account, write_csv

runner = CliRunner()
HEADER = ["timestamp", "src_ip", "src_port", "infection", "family", "tag"]


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _feed(directory: Path) -> Path:
    """Line 2 matched (HN1's leak), 3 unmatched, 4 rejected: as a leak list, so no IP sessions are needed."""
    return write_csv(directory / "leak.csv", ["msisdn", "source"],
                     [["0912345678", "combolist"], ["0987654321", "combolist"], ["12", "combolist"]])


def test_report_type_from_the_file_name_is_stored_and_shown(cli_db: str, tmp_path: Path) -> None:
    named = write_csv(tmp_path / "2026-11-20-event4_sinkhole_http-vn-asn.csv", HEADER,
                      [["2026-11-19 21:14:05Z", "14.160.1.2", "51234", "mirai", "mirai", ""]])
    renamed = write_csv(tmp_path / "export.csv", HEADER,
                        [["2026-11-19 21:14:05Z", "14.160.1.3", "51234", "mirai", "mirai", ""]])
    with session_scope(cli_db) as session:
        from_name = import_feed(session, named, fmt="shadowserver").id
        given = import_feed(session, renamed, fmt="shadowserver", report_type="event6_sinkhole").id
        explicit_wins = import_feed(session, named, fmt="shadowserver", report_type="event4_sinkhole", again=True).id
        types = dict(session.exec(select(Feed.id, Feed.report_type)).all())
    assert (types[from_name], types[given], types[explicit_wins]) == (
        "event4_sinkhole_http", "event6_sinkhole", "event4_sinkhole")
    assert json.loads(_run("feed", "show", str(from_name), "--json"))["report_type"] == "event4_sinkhole_http"
    assert "event4_sinkhole_http" in _run("feed", "show", str(from_name))
    listed = {feed["id"]: feed["report_type"] for feed in json.loads(_run("feed", "list", "--json"))}
    assert listed[from_name] == "event4_sinkhole_http"


def test_items_json_has_the_documented_fields(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        add_account(session, "HN-1", msisdn="+84912345678")
        feed_id = import_feed(session, _feed(tmp_path), fmt="leak-csv").id
    items = json.loads(_run("feed", "show", str(feed_id), "--items", "--json"))
    assert [{key: item[key] for key in ITEM_OUTCOME_COLUMNS} for item in items] == [
        {"line": 2, "status": "matched", "account_id": "HN-1", "reason": None},
        {"line": 3, "status": "unmatched", "account_id": None, "reason": items[1]["reason"]},
        {"line": 4, "status": "rejected", "account_id": None, "reason": items[2]["reason"]},
    ]
    assert items[1]["reason"] and items[2]["reason"].startswith("msisdn: not a Vietnamese phone number")
    only = json.loads(_run("feed", "show", str(feed_id), "--items", "--json", "--status", "rejected"))
    assert [item["line"] for item in only] == [4]


def test_items_csv_writes_the_same_columns(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        add_account(session, "HN-1", msisdn="+84912345678")
        feed_id = import_feed(session, _feed(tmp_path), fmt="leak-csv").id
    text = _run("feed", "show", str(feed_id), "--items", "--csv")
    rows = list(csv.reader(io.StringIO(text)))
    as_json = json.loads(_run("feed", "show", str(feed_id), "--items", "--json"))
    assert rows[0] == list(ITEM_OUTCOME_COLUMNS)
    assert rows[1:] == [[str(i["line"]), i["status"], i["account_id"] or "", i["reason"] or ""] for i in as_json]
    assert rows[1][:3] == ["2", "matched", "HN-1"]


def test_csv_needs_items_and_excludes_json(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        feed_id = import_feed(session, _feed(tmp_path), fmt="leak-csv").id
    for args, message in ((["--csv"], "add --items"), (["--items", "--csv", "--json"], "choose one of --csv and --json")):
        result = runner.invoke(app, ["feed", "show", str(feed_id), *args])
        assert result.exit_code == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_empty_item_list_is_still_a_json_list(cli_db: str, tmp_path: Path) -> None:
    with session_scope(cli_db) as session:
        feed_id = import_feed(session, _feed(tmp_path), fmt="leak-csv").id
    assert json.loads(_run("feed", "show", str(feed_id), "--items", "--json", "--status", "ambiguous")) == []


def test_items_are_streamed_in_line_order(database_url: str, tmp_path: Path) -> None:
    """Across several fetches (more lines than one fetch holds), in file order."""
    lines = 12_001
    path = write_csv(tmp_path / "leak.csv", ["msisdn", "source"],
                     [[f"09{n:08d}" if n % 3 else "x", "combolist"] for n in range(lines)])
    with session_scope(database_url) as session:
        feed_id = import_feed(session, path, fmt="leak-csv").id or 0
        rows = iter_feed_items(session, feed_id)
        first = next(rows)
        assert first["line"] == 2 and first["status"] == "rejected"
        numbers = [first["line"]] + [row["line"] for row in rows]
    assert numbers == list(range(2, lines + 2))
