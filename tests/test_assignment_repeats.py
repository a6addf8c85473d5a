"""Storing IP assignments without a unique index (migration 0010): the importer itself keeps
(range_start, started_at, account_id) to one row, across batches, files and sources, and on
PostgreSQL two imports at once take turns instead of both inserting the same row."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from notifier.db import session_scope
from notifier.identity import assignments as store
from notifier.ingest.records import Rejection, SessionRecord
from notifier.models import IpAssignment
from tests.factories import write_csv
from tests.test_assignment_store import SESSIONS, _import, _rows, _subscribers, utc
from tests.test_assignment_store import fake_format  # noqa: F401 (a fixture, used by name)

KEY = "00000000000000000000ffff0ea00102"  # ip_key of 14.160.1.2


def _stored(database_url: str) -> list[tuple[Any, ...]]:
    """(id, source, username) of every stored row, by id."""
    with session_scope(database_url) as session:
        table = IpAssignment.__table__
        return [tuple(row) for row in session.execute(
            sa.select(table.c.id, table.c.source, table.c.username).order_by(table.c.id))]


def test_a_repeated_row_stays_one_row_and_only_gains_what_it_lacked(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _subscribers(database_url, tmp_path)
    monkeypatch.setattr(store, "BATCH_ROWS", 2)  # the repeat lands in a later batch of the same import
    t0 = utc(2026, 11, 19, 1)
    fake_format["first"] = [
        SessionRecord(2, "HN1", "14.160.1.2", t0),
        SessionRecord(3, "HN2", "14.160.1.3", t0),
        SessionRecord(4, "HN1", "14.160.1.2", t0, None, "hn_1", "S1", t0 + timedelta(hours=24)),
    ]
    fake_format["shorter"] = [SessionRecord(2, "HN1", "14.160.1.2", t0, None, None, None, t0 + timedelta(hours=12))]
    fake_format["stop"] = [SessionRecord(2, "HN1", "14.160.1.2", t0, t0 + timedelta(hours=5))]
    assert _import(database_url, tmp_path / "first", "fake-radius").accepted == 3
    stored = _stored(database_url)
    assert [row[1:] for row in stored] == [("fake-radius", "hn_1"), ("fake-radius", None)]
    assert _rows(database_url)[0] == ("HN1", "14.160.1.2", KEY, KEY, 128, t0, None, t0 + timedelta(hours=24),
                                      t0 + timedelta(hours=24), "S1")  # the session id and bound filled in
    _import(database_url, tmp_path / "shorter", "fake-radius")  # an earlier bound does not shrink it
    assert _rows(database_url)[0][6:9] == (None, t0 + timedelta(hours=24), t0 + timedelta(hours=24))
    _import(database_url, tmp_path / "stop", "fake-radius")  # a given end wins
    assert _rows(database_url)[0][6:10] == (t0 + timedelta(hours=5), t0 + timedelta(hours=24),
                                            t0 + timedelta(hours=5), "S1")
    assert _stored(database_url) == stored  # same rows, same ids: nothing inserted twice


def test_a_repeat_from_another_source_updates_the_stored_row(
        database_url: str, tmp_path: Path, fake_format: dict[str, list[SessionRecord | Rejection]]) -> None:
    _subscribers(database_url, tmp_path)
    _import(database_url, write_csv(tmp_path / "s.csv", SESSIONS, [["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""]]))
    t0 = utc(2026, 11, 19, 1)
    fake_format["log"] = [SessionRecord(2, "HN1", "14.160.1.2", t0, None, "hn_1", "S1", t0 + timedelta(hours=2))]
    _import(database_url, tmp_path / "log", "fake-radius")
    assert [row[1:] for row in _stored(database_url)] == [("sessions-csv", "hn_1")]
    assert _rows(database_url)[0][5:] == (t0, None, t0 + timedelta(hours=2), t0 + timedelta(hours=2), "S1")


def test_two_imports_at_once_on_postgresql_take_turns(postgres_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first import stops inside its transaction; the second must wait for the import lock
    (seen waiting in pg_locks) and, once the first commits, finds its rows instead of adding them."""
    _subscribers(postgres_url, tmp_path)
    path = write_csv(tmp_path / "s.csv", SESSIONS, [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", ""],
        ["HN2", "14.160.1.3", "2026-11-19 08:00:00", "2026-11-19 09:00:00"]])
    inside, release = threading.Event(), threading.Event()
    insert = store._PostgresWriter._insert

    def paused_insert(self: store._PostgresWriter, values: list[tuple[Any, ...]]) -> None:
        insert(self, values)
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(30)

    monkeypatch.setattr(store._PostgresWriter, "_insert", paused_insert)
    results: dict[str, int] = {}

    def run(name: str) -> None:
        results[name] = _import(postgres_url, path).accepted

    first = threading.Thread(target=run, args=("first",), name="first")
    second = threading.Thread(target=run, args=("second",), name="second")
    first.start()
    assert inside.wait(30)
    second.start()
    try:
        assert _waits_for_the_import_lock(postgres_url)
    finally:
        release.set()
        first.join(30)
        second.join(30)
    assert results == {"first": 2, "second": 2}
    assert len(_stored(postgres_url)) == 2


def _waits_for_the_import_lock(url: str) -> bool:
    """True once another session waits for the import's advisory lock (polled, up to ~30 s)."""
    plain = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as connection:
        for _ in range(300):
            waiting = connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND objid = %s", (store._IMPORT_LOCK_KEY,)).fetchone()
            if waiting and waiting[0]:
                return True
            threading.Event().wait(0.1)
    return False
