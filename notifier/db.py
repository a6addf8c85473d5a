"""Engine, sessions and schema migrations.

SQLite (embedded default) runs in WAL mode with a busy timeout (30 s, or `?timeout=SECONDS` in the
URL) so worker threads, the receipt reader and the CLI can share the file; PostgreSQL is used as is
(connect timeout 10 s unless the URL says `?connect_timeout=`). The caller owns the transaction:
data-access functions take a session and do not commit. `explain_database_error` turns the driver
errors people can act on (no schema, unreachable, locked) into one line for the CLI.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
import functools
import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import Session

from notifier.errors import ConfigError, DatabaseError, SchemaMissingError

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0  # default; `?timeout=SECONDS` in a SQLite URL overrides it
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10  # default; `?connect_timeout=SECONDS` in the URL overrides it
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SUPPORTED_URL_EXAMPLES = "sqlite:///./var/notifier.db or postgresql+psycopg://user@host/db"


def parse_database_url(database_url: str) -> sa.URL:
    """The URL object, or a ConfigError that does not repeat the text (it may hold a password)."""
    try:
        return sa.make_url(database_url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"database_url is not a database URL (expected e.g. {SUPPORTED_URL_EXAMPLES})") from None


def shown_url(database_url: str) -> str:
    """The URL as people may see it: the password replaced by ***; never the text of a bad URL."""
    try:
        return sa.make_url(database_url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparsable database URL)"


def _prepare_sqlite_path(url: sa.URL) -> None:
    if url.database and url.database != ":memory:":
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the directory of the database {url.database}: "
                                f"{exc.strerror or exc}") from exc


def sqlite_busy_timeout_seconds(url: sa.URL) -> float:
    """How long a SQLite statement waits for another process's lock: `?timeout=` or the default.

    Refused when not a positive number: 0 would turn every concurrent write into an error.
    """
    raw = url.query.get("timeout")
    if raw is None:
        return SQLITE_BUSY_TIMEOUT_SECONDS
    try:
        seconds = float(raw if isinstance(raw, str) else raw[-1])
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"database_url: timeout must be a number of seconds greater than 0 (timeout={raw})")
    return seconds


def _sqlite_pragmas(busy_timeout_ms: int, dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")  # first: WAL switching may wait too
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()

# bench/dispatch.py sets this for the `notifier worker` processes it starts: each writes the SQL
# statements and commits its engines ran (JSON) to `<value>.<pid>` when it exits. Off otherwise.
SQL_COUNTS_ENV = "NOTIFIER_SQL_COUNTS_FILE"
_sql_counts: dict[str, int] = {"statements": 0, "commits": 0}
_counted_engines: list[Engine] = []


def _count_sql(engine: Engine) -> None:
    """Count statements (an executemany is one) and commits of `engine` for the benchmark."""
    if not _counted_engines:
        atexit.register(_write_sql_counts, os.environ[SQL_COUNTS_ENV])

    def statement(*_: object) -> None:
        _sql_counts["statements"] += 1

    def commit(*_: object) -> None:
        _sql_counts["commits"] += 1

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "commit", commit)
    _counted_engines.append(engine)


def _write_sql_counts(path: str) -> None:
    Path(f"{path}.{os.getpid()}").write_text(json.dumps(_sql_counts), encoding="utf-8")


def get_engine(database_url: str) -> Engine:
    """One engine per database URL per process."""
    with _engines_lock:
        engine = _engines.get(database_url)
        if engine is None:
            engine = _engines[database_url] = _create_engine(database_url)
            if os.environ.get(SQL_COUNTS_ENV):
                _count_sql(engine)
        return engine


def _create_engine(database_url: str) -> Engine:
    """`hide_parameters`: a database error's text (logged by workers, shown with -v) would otherwise
    carry the statement's parameters, i.e. subscribers' numbers and addresses."""
    url = parse_database_url(database_url)
    try:
        if url.get_backend_name() == "sqlite":
            _prepare_sqlite_path(url)
            timeout = sqlite_busy_timeout_seconds(url)
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": timeout},
                                      hide_parameters=True)
            sa.event.listen(engine, "connect", functools.partial(_sqlite_pragmas, int(timeout * 1000)))
            return engine
        connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args,
                                  hide_parameters=True)
        sa.event.listen(engine, "connect", _postgres_binary_arrays)
        return engine
    except (sa.exc.NoSuchModuleError, ImportError):
        raise ConfigError(f"database_url: no driver for {url.drivername!r} "
                          f"(use {SUPPORTED_URL_EXAMPLES})") from None


def _postgres_binary_arrays(driver_connection: Any, _record: Any) -> None:
    """Send list parameters (the `= ANY(:ids)` and `unnest(:column)` arrays of every bulk statement)
    in PostgreSQL's binary array format. psycopg's `%s` uses the dumper registered last for a type;
    its default for lists is the text format, which quotes and escapes every element in Python:
    1.7 µs per string and 3.2 µs per timestamp against 0.2 and 0.3 in binary, the largest single
    cost of a worker on the send path."""
    from psycopg.types.array import ListBinaryDumper

    driver_connection.adapters.register_dumper(list, ListBinaryDumper)


@contextmanager
def sqlite_page_cache(driver_connection: Any, kib: int) -> Iterator[None]:
    """A `kib` KiB SQLite page cache on this connection for a bulk job (the default 2 MiB holds none
    of a big table's indexes, so every probe or insert re-reads pages from the OS), restored
    afterwards: the connection goes back to the pool, and workers should not keep it each."""
    previous = driver_connection.execute("PRAGMA main.cache_size").fetchone()[0]
    driver_connection.execute(f"PRAGMA main.cache_size = -{int(kib)}")
    try:
        yield
    finally:
        driver_connection.execute(f"PRAGMA main.cache_size = {int(previous)}")


def sqlite_time(moment: datetime | None) -> str | None:
    """A time as SQLAlchemy's SQLite `DateTime` stores it (naive UTC, always with microseconds).

    SQLite compares stored times as text, so every writer that goes past SQLAlchemy's types (bulk
    paths handing tuples to the driver) must write exactly this form; a naive time is refused, as
    `models.UtcDateTime` refuses it."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the database; use aware UTC datetimes")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(" ", "microseconds")[:26]  # without the "+00:00"


def dispose_engines() -> None:
    """Close every pooled connection and forget the engines (tests, forked processes)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


_sqlite_locks: dict[str, threading.RLock] = {}


def _unit_of_work_lock(database_url: str) -> threading.RLock | None:
    """SQLite has one writer at a time and its busy handler waits by sleeping (up to 100 ms a
    try); threads of one process queue on a lock instead, which costs nothing when it is free."""
    if not database_url.startswith("sqlite"):
        return None
    with _engines_lock:
        return _sqlite_locks.setdefault(database_url, threading.RLock())


@contextmanager
def session_scope(database_url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error: one unit of work."""
    lock = _unit_of_work_lock(database_url)
    if lock is not None:
        lock.acquire()
    try:
        with Session(get_engine(database_url), expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    finally:
        if lock is not None:
            lock.release()


def plan_each_execution(session: Session) -> None:
    """On PostgreSQL, plan the transaction's statements for their parameters at every execution.

    psycopg prepares a statement run five times on a connection, and the server may then settle on
    a generic plan costed while a table was still small: a bulk import's batch lookups become full
    scans past ~150,000 rows (issue 7). Imports call this first. No-op on SQLite.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))


def empty_scratch_tables(connection: sa.Connection, *names: str) -> None:
    """Empty a connection's temporary tables between the batches of one transaction.

    PostgreSQL: TRUNCATE. A DELETE leaves every row dead in the table (and its index) until a
    vacuum, which never comes inside the job's transaction, so each later batch scanned all the
    earlier ones again: matching a 1-million-row feed fell from 99,000 to 40,000 events/s, 8.5 →
    23 µs of server CPU an event. SQLite empties a table on an unqualified DELETE.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"TRUNCATE {', '.join(names)}")
    else:
        for name in names:
            connection.exec_driver_sql(f"DELETE FROM {name}")


def alembic_config(database_url: str) -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    url = parse_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        _prepare_sqlite_path(url)
    with warnings.catch_warnings():
        # SQLite batch migrations reflect tables; SQLAlchemy cannot reflect the expression index
        # ix_account_account_ref_lower there and says so on every upgrade. The index is created by
        # migration 0002 and checked by tests/test_settings_and_schema.py.
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based index")
        command.upgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    """The schema revision the database is at, or None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(database_url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# --- errors for people ----------------------------------------------------------------------------

# SQLite says "no such table: feed" / "no such column: …"; PostgreSQL raises SQLSTATE 42P01
# (undefined table) or 42703 (undefined column). Either way the schema is missing or behind.
_NO_SCHEMA_TEXT = re.compile(r"no such (table|column)|relation .* does not exist|column .* does not exist")
_NO_SCHEMA_SQLSTATES = {"42P01", "42703"}
_SQLITE_LOCKED_TEXT = re.compile(r"database (table )?is locked|database is busy")


def explain_database_error(exc: BaseException, database_url: str | None) -> DatabaseError | None:
    """A one-line DatabaseError for a driver error people can act on, or None for any other error.

    Called once, where a command fails, instead of checking the schema before every unit of work:
    a missing table, an unreachable server and a lock held too long by another process each get a
    sentence naming the database (password hidden). The driver's own text is not repeated: it can
    hold SQL and the parameters of the statement, i.e. subscribers' data.
    """
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    orig = exc.orig
    text = str(orig)
    where = shown_url(database_url) if database_url else "the database"
    if getattr(orig, "sqlstate", None) in _NO_SCHEMA_SQLSTATES or _NO_SCHEMA_TEXT.search(text):
        return SchemaMissingError()
    if _SQLITE_LOCKED_TEXT.search(text):
        return _locked(where, database_url)
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) and exc.statement is None:
        return DatabaseError(f"cannot connect to the database {where}: {_connect_failure_reason(text)}")
    return None


def _locked(where: str, database_url: str | None) -> DatabaseError:
    waited = SQLITE_BUSY_TIMEOUT_SECONDS
    if database_url:
        try:
            waited = sqlite_busy_timeout_seconds(sa.make_url(database_url))
        except (ConfigError, sa.exc.ArgumentError):
            pass
    return DatabaseError(f"the database {where} is locked by another process (waited {waited:g} s; "
                         "add ?timeout=SECONDS to the database URL to wait longer)")


def _connect_failure_reason(text: str) -> str:
    """The last "failed:" clause of the driver's first line, without FATAL:, in lower case.

    psycopg's `connection to server at "h", port 1 failed: Connection refused` (then a hint on a
    second line) becomes "connection refused"; libpq never puts the password in these messages.
    """
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    reason = first.rsplit("failed: ", 1)[-1].strip()
    reason = re.sub(r"^(FATAL|ERROR):\s*", "", reason)
    return (reason[:1].lower() + reason[1:]) if reason[:2] != reason[:2].upper() else reason


def insert_ignoring_duplicates(session: Session, table: sa.Table) -> sa.Insert:
    """INSERT … ON CONFLICT DO NOTHING in the session's dialect (SQLite and PostgreSQL spell it
    alike): for rows that may already be there (a re-import, a second campaign on the same feed)."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()
