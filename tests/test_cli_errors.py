"""Every way the CLI can fail ends as one line `error: …` on stderr, exit code 2, no traceback, and
no phone number, e-mail or password in it (issue 5, item 3).

Each case runs the real `notifier` command group through the CLI runner; where a database is
involved it runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from cli import app
from notifier.db import dispose_engines
from notifier.settings import reset_settings
from tests.factories import write_csv

runner = CliRunner()
NO_SCHEMA = "error: the database has no schema (or is at an older revision): run `notifier db upgrade`"
LONG = "x" * 5000
GOOD_EVENT = "2026-11-19 21:14:05Z,14.160.1.2,51234,mirai,mirai,"


def error_line(result: Result) -> str:
    """The single stderr line of a failed command; fails the test on anything else."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("NOTIFIER_DATABASE_URL", url)
    reset_settings()


@pytest.fixture
def cli_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    use_database(monkeypatch, database_url)
    yield database_url
    reset_settings()


@pytest.fixture
def cli_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    use_database(monkeypatch, sqlite_url)
    yield sqlite_url
    reset_settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database nobody ran `notifier db upgrade` on: an empty SQLite file, an empty PostgreSQL db."""
    if request.param == "sqlite":
        path = tmp_path / "empty.db"
        path.touch()
        use_database(monkeypatch, f"sqlite:///{path}")
        yield f"sqlite:///{path}"
        dispose_engines()
        reset_settings()
        return
    admin = request.getfixturevalue("postgres_server")
    name = f"notifier_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    use_database(monkeypatch, url)
    try:
        yield url
    finally:
        dispose_engines()
        reset_settings()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sinkhole_file(tmp_path: Path, *lines: bytes) -> Path:
    path = tmp_path / "2026-11-20-event4_sinkhole-vn.csv"
    path.write_bytes(b"timestamp,src_ip,src_port,infection,family,tag\n" + b"".join(line + b"\n" for line in lines))
    return path


def imported(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- the database ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["feed", "show", "1"],
    ["campaign", "status", "1"],
    ["history", "--account", "HN1"],
    ["feed", "import", "{feed}", "--format", "shadowserver"],
])
def test_a_database_without_schema_says_to_upgrade(empty_database: str, tmp_path: Path, args: list[str]) -> None:
    feed = sinkhole_file(tmp_path, GOOD_EVENT.encode())
    result = runner.invoke(app, [arg.replace("{feed}", str(feed)) for arg in args])
    assert error_line(result) == NO_SCHEMA


def test_after_db_upgrade_the_same_database_works(empty_database: str) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert error_line(runner.invoke(app, ["campaign", "status", "1"])) == "error: campaign 1 not found"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_postgresql_is_one_line_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    use_database(monkeypatch, f"postgresql+psycopg://notifier:Tr0ub4dor-pw@127.0.0.1:{port}/notifier")
    try:
        for args in (["campaign", "status", "1"], ["db", "upgrade"]):
            result = runner.invoke(app, args)
            line = error_line(result)
            assert line == (f"error: cannot connect to the database postgresql+psycopg://notifier:***@127.0.0.1:{port}"
                            "/notifier: connection refused")
            assert "Tr0ub4dor" not in result.output
    finally:
        dispose_engines()
        reset_settings()


@pytest.mark.parametrize("url, expected", [
    ("not a url at all", "error: database_url is not a database URL (expected e.g. sqlite:///./var/notifier.db "
                         "or postgresql+psycopg://user@host/db)"),
    ("mysql://app:Tr0ub4dor-pw@db.example.vn/notifier",
     "error: database_url: no driver for 'mysql' (use sqlite:///./var/notifier.db or postgresql+psycopg://user@host/db)"),
])
@pytest.mark.parametrize("args", [["campaign", "status", "1"], ["db", "upgrade"]])
def test_an_unusable_database_url_is_one_line(monkeypatch: pytest.MonkeyPatch, url: str, expected: str,
                                              args: list[str]) -> None:
    use_database(monkeypatch, url)
    result = runner.invoke(app, args)
    assert error_line(result) == expected and "Tr0ub4dor" not in result.output
    reset_settings()


LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_sqlite_file_locked_by_another_process_is_one_line(sqlite_url: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    use_database(monkeypatch, f"{sqlite_url}?timeout=0.2")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["feed", "import", str(sinkhole_file(tmp_path, GOOD_EVENT.encode())),
                                     "--format", "shadowserver"])
        assert error_line(result) == (f"error: the database {sqlite_url}?timeout=0.2 is locked by another process "
                                      "(waited 0.2 s; add ?timeout=SECONDS to the database URL to wait longer)")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        dispose_engines()
        reset_settings()
    assert imported("feed", "import", str(tmp_path / "2026-11-20-event4_sinkhole-vn.csv"),
                    "--format", "shadowserver")["accepted"] == 1  # the lock is gone: the same command works


@pytest.mark.parametrize("timeout", ["0", "-1", "soon"])
def test_a_sqlite_busy_timeout_must_be_positive(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, timeout: str) -> None:
    use_database(monkeypatch, f"{sqlite_url}?timeout={timeout}")
    line = error_line(runner.invoke(app, ["campaign", "status", "1"]))
    assert line == f"error: database_url: timeout must be a number of seconds greater than 0 (timeout={timeout})"
    reset_settings()


# --- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["feed", "import", "f.csv"], "error: missing option '--format' (see `notifier feed import --help`)"),
    (["campaign", "status"], "error: missing argument 'campaign_id' (see `notifier campaign status --help`)"),
    (["campaign", "status", "abc"], "error: invalid value for 'campaign_id': must be a whole number from 1 to "
                                    "2147483647, not 'abc' (see `notifier campaign status --help`)"),
    (["demo", "--seed", "many"], "error: invalid value for '--seed': must be a valid integer, unable to parse "
                                 "string as an integer (see `notifier demo --help`)"),
    (["nosuch"], "error: no such command 'nosuch' (see `notifier --help`)"),
    (["campaign", "fly", "1"], "error: no such command 'fly' (see `notifier campaign --help`)"),
    (["feed", "show", "1", "--bogus"], "error: no such option: --bogus (see `notifier feed show --help`)"),
])
def test_usage_errors_are_one_line_pointing_at_help(args: list[str], expected: str) -> None:
    assert error_line(runner.invoke(app, args)) == expected


def test_help_is_still_help() -> None:
    result = runner.invoke(app, ["campaign", "status", "--help"])
    assert result.exit_code == 0 and result.stderr == ""
    assert "Counts per state and per channel" in result.stdout and "campaign_id" in result.stdout


# --- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["campaign", "status", "99999999999999999999"],
     "error: invalid value for 'campaign_id': must be a whole number from 1 to 2147483647, "
     "not '99999999999999999999' (see `notifier campaign status --help`)"),
    (["campaign", "status", "2147483648"],
     "error: invalid value for 'campaign_id': must be a whole number from 1 to 2147483647, "
     "not '2147483648' (see `notifier campaign status --help`)"),
    (["campaign", "cancel", "0"],
     "error: invalid value for 'campaign_id': must be a whole number from 1 to 2147483647, "
     "not '0' (see `notifier campaign cancel --help`)"),
    (["feed", "show", "-5"],
     "error: -5 is not allowed here: ids and counts are whole numbers from 1 (see `notifier feed show --help`)"),
    (["campaign", "create", "--feed", "2147483648", "--template", "infected_device"],
     "error: invalid value for '--feed': must be a whole number from 1 to 2147483647, "
     "not '2147483648' (see `notifier campaign create --help`)"),
    (["campaign", "status", "2147483647"], "error: campaign 2147483647 not found"),
    (["feed", "show", "2147483647"], "error: feed 2147483647 not found"),
])
def test_ids_outside_the_integer_range_are_refused_before_the_database(cli_db: str, args: list[str],
                                                                       expected: str) -> None:
    assert error_line(runner.invoke(app, args)) == expected


# --- rows the database could not hold ------------------------------------------------------------


def test_times_that_overflow_reject_their_row_and_the_rest_goes_in(cli_db: str, tmp_path: Path) -> None:
    feed = sinkhole_file(
        tmp_path,
        GOOD_EVENT.encode(),                                            # line 2
        b"9999-12-31T23:59:59-05:00,14.160.1.3,1,mirai,mirai,",        # line 3: after datetime.max in UTC
        b"0001-01-01T00:00:00+07:00,14.160.1.4,1,mirai,mirai,",        # line 4: before datetime.min in UTC
        b"9999-12-31T23:59:59Z,14.160.1.5,1,mirai,mirai,",             # line 5: no local time could show it
        GOOD_EVENT.replace("51234", "51235").encode(),                  # line 6
    )
    result = imported("feed", "import", str(feed), "--format", "shadowserver")
    assert (result["accepted"], result["rejected"]) == (2, 3)
    assert [e["line"] for e in result["errors"]] == [3, 4, 5]  # type: ignore[index]
    assert all("out of range" in e["reason"] for e in result["errors"])  # type: ignore[index, union-attr]

    write_csv(tmp_path / "subs.csv", ["account_id", "full_name", "msisdn"], [["HN1", "Lê Thị Hoa", "0912345678"]])
    imported("subscribers", "import", str(tmp_path / "subs.csv"))
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "0001-01-01 00:00:00", ""],                  # local +07: before datetime.min
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "9999-12-31 23:59:59"],  # fits UTC, but no margin
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "2026-11-19 20:00:00"],
    ])
    result = imported("assignments", "import", str(sessions), "--format", "sessions-csv")
    assert result["accepted"] == 1 and [e["line"] for e in result["errors"]] == [2, 3]  # type: ignore[index]
    assert "'0001-01-01 00:00:00' (out of range" in result["errors"][0]["reason"]  # type: ignore[index]


def test_a_nul_byte_rejects_its_row_and_the_rest_goes_in(cli_db: str, tmp_path: Path) -> None:
    feed = sinkhole_file(
        tmp_path,
        GOOD_EVENT.encode(),
        b"2026-11-19 21:14:05Z,14.160.1.3,51234,mi\x00rai,mirai,",  # line 3
        GOOD_EVENT.replace("51234", "51235").encode(),
    )
    result = imported("feed", "import", str(feed), "--format", "shadowserver")
    assert (result["accepted"], result["rejected"]) == (2, 1)
    assert result["errors"] == [{"line": 3, "reason": "contains a NUL byte (at position 41)"}]
    items = imported("feed", "show", str(result["id"]), "--items")
    assert [(i["line"], i["status"]) for i in items] == [  # type: ignore[index, union-attr]
        (2, "unmatched"), (3, "rejected"), (4, "unmatched")]


@pytest.mark.parametrize("args, expected", [
    (["feed", "import", "{feed}", "--format", "shadowserver", "--source", LONG],
     "error: invalid value for '--source': longer than 100 characters (5000 given) "
     "(see `notifier feed import --help`)"),
    (["feed", "import", "{feed}", "--format", "shadowserver", "--report-type", LONG],
     "error: invalid value for '--report-type': longer than 64 characters (5000 given) "
     "(see `notifier feed import --help`)"),
    (["history", "--account", LONG],
     "error: invalid value for '--account': longer than 64 characters (5000 given) (see `notifier history --help`)"),
    (["history", "--account", "HN1", "--actor", LONG],
     "error: invalid value for '--actor': longer than 100 characters (5000 given) (see `notifier history --help`)"),
    (["history", "--msisdn", LONG],
     "error: invalid value for '--msisdn': longer than 254 characters (5000 given) (see `notifier history --help`)"),
    (["campaign", "create", "--feed", "1", "--template", "infected_device", "--name", LONG],
     "error: invalid value for '--name': longer than 200 characters (5000 given) "
     "(see `notifier campaign create --help`)"),
])
def test_long_arguments_are_refused_cleanly(cli_db: str, tmp_path: Path, args: list[str], expected: str) -> None:
    feed = sinkhole_file(tmp_path, GOOD_EVENT.encode())
    assert error_line(runner.invoke(app, [a.replace("{feed}", str(feed)) for a in args])) == expected


@pytest.mark.parametrize("args, column_limit", [
    (["feed", "import", "f.csv", "--format", LONG], 32),
    (["assignments", "import", "f.csv", "--format", LONG], 32),
    (["feed", "show", "1", "--status", LONG], 16),
    (["campaign", "create", "--feed", "1", "--template", LONG], 64),
    (["campaign", "create", "--feed", "1", "--template", "infected_device", "--channels", LONG], 100),
    (["history", "--email", LONG], 254),
    (["audit", "--actor", LONG], 100),
    (["audit", "--viewer", LONG], 100),
])
def test_every_text_option_stored_in_a_bounded_column_is_checked(cli_sqlite: str, args: list[str],
                                                                  column_limit: int) -> None:
    assert f"longer than {column_limit} characters (5000 given)" in error_line(runner.invoke(app, args))


def test_an_argument_at_the_column_limit_is_stored(cli_db: str, tmp_path: Path) -> None:
    source = "Ư" * 100  # 100 characters is what feed.source holds, also on PostgreSQL
    result = imported("feed", "import", str(sinkhole_file(tmp_path, GOOD_EVENT.encode())), "--format", "shadowserver",
                      "--source", source)
    assert imported("feed", "show", str(result["id"]))["source"] == source


def test_a_long_word_in_an_error_is_shortened(cli_db: str, tmp_path: Path) -> None:
    line = error_line(runner.invoke(app, ["subscribers", "import", "/nonexistent/" + "d" * 300 + ".csv"]))
    assert len(line) < 250 and "characters)" in line


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value, expected", [
    ("NOTIFIER_DISPATCH__SMS_PER_SECOND", "0", "dispatch.sms_per_second must be greater than 0"),
    ("NOTIFIER_DISPATCH__WORKER_THREADS", "0", "dispatch.worker_threads must be greater than 0"),
    ("NOTIFIER_DISPATCH__UNKNOWN_RESEND_AFTER_SECONDS", "-900", "dispatch.unknown_resend_after_seconds must be "
                                                               "greater than 0"),
    ("NOTIFIER_SMPP__WINDOW", "-1", "smpp.window must be greater than 0"),
    ("NOTIFIER_SMPP__SUBMIT_TIMEOUT_SECONDS", "0", "smpp.submit_timeout_seconds must be greater than 0"),
    ("NOTIFIER_SMTP__TIMEOUT_SECONDS", "-5", "smtp.timeout_seconds must be greater than 0"),
    ("NOTIFIER_SMTP__PORT", "70000", "smtp.port must be less than or equal to 65535"),
])
def test_bad_settings_are_refused_at_start_with_their_name(cli_sqlite: str, monkeypatch: pytest.MonkeyPatch,
                                                           variable: str, value: str, expected: str) -> None:
    monkeypatch.setenv(variable, value)
    reset_settings()
    line = error_line(runner.invoke(app, ["campaign", "status", "1"]))
    assert line == f"error: {expected} ({variable}={value})"


@pytest.mark.parametrize("args, expected", [
    (["worker", "--threads", "-3"], "error: invalid value for '--threads': must be greater than or equal to 1 "
                                    "(see `notifier worker --help`)"),
    (["demo", "--subscribers", "-5"], "error: invalid value for '--subscribers': must be greater than or equal to 1 "
                                      "(see `notifier demo --help`)"),
    (["demo", "--subscribers", "0"], "error: invalid value for '--subscribers': must be greater than or equal to 1 "
                                     "(see `notifier demo --help`)"),
])
def test_counts_below_one_are_refused(cli_sqlite: str, args: list[str], expected: str) -> None:
    assert error_line(runner.invoke(app, args)) == expected


# --- anything else -----------------------------------------------------------------------------


def _explode(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("could not reach 0912 345 678 or nguyen.van.a@example.vn\nsecond line of detail")


UNEXPECTED = ("error: unexpected RuntimeError: could not reach +8491****678 or n***@example.vn "
              "(run with -v for details)")


def test_an_unexpected_error_is_one_masked_line(cli_sqlite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("notifier.campaigns.campaign_status", _explode)
    result = runner.invoke(app, ["campaign", "status", "1"])
    assert error_line(result) == UNEXPECTED


def test_verbose_shows_the_masked_traceback_then_the_line(cli_sqlite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("notifier.campaigns.campaign_status", _explode)
    result = runner.invoke(app, ["-v", "campaign", "status", "1"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback (most recent call last):" in lines and lines[-1] == UNEXPECTED
    assert "RuntimeError: could not reach +8491****678 or n***@example.vn" in result.stderr
    assert "0912 345 678" not in result.output and "nguyen.van.a@" not in result.output
