"""The command line as operators and other tools use it: --json contracts, bad input, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sqlmodel import select

from cli import app
from notifier.db import session_scope
from notifier.models import Account, ContactPoint
from tests.factories import write_csv

runner = CliRunner()


def _json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _bad_feed(tmp_path: Path) -> Path:
    path = tmp_path / "2026-11-20-event4_sinkhole-vn.csv"
    good = "2026-11-19 21:14:05Z,14.160.1.2,51234,mirai-http,mirai,\n"
    path.write_bytes(
        b"\xef\xbb\xbf"  # BOM
        + b"timestamp,src_ip,src_port,infection,family,tag\n"
        + good.encode()                                                  # line 2: good
        + b"2026-11-19 21:14:05Z,14.160.1.300,51234,mirai,mirai,\n"      # line 3: bad IP
        + b"yesterday,14.160.1.2,51234,mirai,mirai,\n"                   # line 4: bad time
        + b"2026-11-19 21:14:05Z,14.160.1.2\n"                           # line 5: missing columns
        + "2026-11-19 21:14:05Z,14.160.1.2,1,mirai,mirai,Bùi\n".encode("cp1258")  # line 6: not UTF-8
        + good.replace("51234", "51235").encode()                        # line 7: good
    )
    return path


def test_import_match_plan_and_inspect_with_json(cli_db: str, tmp_path: Path) -> None:
    subscribers = write_csv(tmp_path / "subs.csv", ["account_id", "full_name", "msisdn", "email"], [
        ["HN1", "Nguyễn Văn Ánh", "0912.345.678", "Anh@Example.vn"],
        ["HN2", "Trần Thị Bích", "12345", ""],
    ])
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""],
        ["HN404", "14.160.1.9", "2026-11-19 08:00:00", ""],
    ])
    subs = _json("subscribers", "import", str(subscribers))
    assert subs["accepted"] == 2 and subs["rejected"] == 0 and subs["warnings"][0]["line"] == 3  # number dropped
    again = _json("subscribers", "import", str(subscribers))
    assert again["accepted"] == 2  # re-import: same accounts, nothing duplicated
    assigned = _json("assignments", "import", str(sessions), "--format", "sessions-csv")
    assert assigned["errors"] == [{"line": 3, "reason": "unknown account 'HN404'"}]

    feed = _json("feed", "import", str(_bad_feed(tmp_path)), "--format", "shadowserver")
    assert (feed["accepted"], feed["rejected"]) == (2, 4)
    assert [e["line"] for e in feed["errors"]] == [3, 4, 5, 6]

    items = _json("feed", "show", str(feed["id"]), "--items")
    by_line = {item["line"]: item for item in items}
    assert [by_line[n]["status"] for n in range(2, 8)] == ["matched", "rejected", "rejected", "rejected",
                                                           "rejected", "matched"]
    assert by_line[2]["account_id"] == "HN1"
    assert "14.160.1.300" in by_line[3]["reason"]
    assert "yesterday" in by_line[4]["reason"]
    assert "missing column" in by_line[5]["reason"]
    assert "UTF-8" in by_line[6]["reason"]

    created = _json("campaign", "create", "--feed", str(feed["id"]), "--template", "infected_device",
                    "--channels", "sms,email")
    status = _json("campaign", "status", str(created["id"]))
    assert status["by_channel"] == {"sms": {"planned": 1}, "email": {"planned": 1}}
    twice = runner.invoke(app, ["campaign", "create", "--feed", str(feed["id"]), "--template", "infected_device",
                                "--channels", "email"])
    assert twice.exit_code == 2 and f"already has campaign {created['id']}" in twice.stderr

    history = _json("history", "--email", "ANH@example.vn")
    assert sorted((h["channel"], h["state"], h["threat"]) for h in history) == \
        [("email", "planned", "mirai"), ("sms", "planned", "mirai")]


@pytest.mark.parametrize("args, message", [
    (["feed", "import", "/nonexistent/feed.csv", "--format", "shadowserver"], "/nonexistent/feed.csv"),
    (["feed", "import", "{feed}", "--format", "nosuchformat"], "unknown format 'nosuchformat'"),
    (["assignments", "import", "{feed}", "--format", "radius-typo"], "unknown format 'radius-typo'"),
    (["subscribers", "import", "/nonexistent/subs.csv"], "/nonexistent/subs.csv"),
    (["campaign", "status", "999"], "campaign 999 not found"),
    (["feed", "show", "999"], "feed 999 not found"),
    (["campaign", "create", "--feed", "1", "--template", "nosuch", "--channels", "sms"], "unknown template"),
    (["campaign", "create", "--feed", "1", "--template", "infected_device", "--channels", "fax"], "unknown channel"),
    (["history", "--msisdn", "12"], "not a Vietnamese phone number"),
])
def test_bad_input_is_one_line_and_exit_code_2(cli_db: str, tmp_path: Path, args: list[str], message: str) -> None:
    feed = write_csv(tmp_path / "f.csv", ["timestamp", "src_ip"], [])
    result = runner.invoke(app, [arg.replace("{feed}", str(feed)) for arg in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_the_same_feed_file_twice_is_refused_unless_again(cli_db: str, tmp_path: Path) -> None:
    feed = _bad_feed(tmp_path)
    first = _json("feed", "import", str(feed), "--format", "shadowserver")
    refused = runner.invoke(app, ["feed", "import", str(feed), "--format", "shadowserver"])
    assert refused.exit_code == 2
    assert f"already imported as feed {first['id']}" in refused.stderr
    again = _json("feed", "import", str(feed), "--format", "shadowserver", "--again")
    assert again["id"] != first["id"] and again["accepted"] == first["accepted"]


def test_subscribers_import_renames_the_operators_headers_with_a_column_map(cli_db: str, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "export.csv", ["MA_KH", "TEN_KH", "SO_DT", "EMAIL"],
                       [["HN7", "Lê Quốc Đạt", "0912 345 678", "dat@example.vn"]])
    mapping = Path(__file__).resolve().parent.parent / "config" / "subscriber_columns.example.toml"
    result = _json("subscribers", "import", str(export), "--column-map", str(mapping))
    assert (result["accepted"], result["rejected"]) == (1, 0)
    with session_scope(cli_db) as session:
        account = session.exec(select(Account).where(Account.account_ref == "HN7")).one()
        assert account.full_name == "Lê Quốc Đạt"
        assert sorted(c.value for c in session.exec(select(ContactPoint).where(
            ContactPoint.account_id == account.id))) == ["+84912345678", "dat@example.vn"]

    broken = tmp_path / "broken.toml"
    broken.write_text("[columns\nMA_KH = ", encoding="utf-8")
    refused = runner.invoke(app, ["subscribers", "import", str(export), "--column-map", str(broken)])
    assert refused.exit_code == 2 and "not valid TOML" in refused.stderr
    no_table = tmp_path / "empty.toml"
    no_table.write_text('title = "x"\n', encoding="utf-8")
    refused = runner.invoke(app, ["subscribers", "import", str(export), "--column-map", str(no_table)])
    assert refused.exit_code == 2 and "needs a [columns] table" in refused.stderr
