"""The one way to change a notification's state: a compare-and-set that records an event (the
state names are in `notifier.dispatch.states`).

    planned → queued → sending → sent → delivered
    exits: suppressed, cancelled, failed, undelivered, expired, unknown

`unknown` marks a row whose sender died between handing the message to the provider and recording
that it did: a receipt resolves it (`notifier.dispatch.receipts`; a long SMS once receipts account
for every part) or, failing that, it is sent again after `dispatch.unknown_resend_after_seconds`
(`notifier.dispatch.unknown`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.db import sqlite_time
from notifier.dispatch.states import IN_FLIGHT_STATES
from notifier.models import DeliveryEvent, MessagePart, Notification, UtcDateTime, utcnow


def in_flight(state: str) -> sa.ColumnElement[bool]:
    """`notification.state = '<state>'` with the state written as a literal, for a state
    `ix_notification_in_flight` holds: bound as a parameter, a prepared (generic) plan could not
    prove the partial index applies, and each maintenance pass would read every campaign's rows."""
    if state not in IN_FLIGHT_STATES:
        raise ValueError(f"{state!r} is not an in-flight state")
    return Notification.__table__.c.state == sa.literal_column(f"'{state}'")


def transition(
    session: Session,
    notification_id: int,
    *,
    expected: str | Collection[str],
    to_state: str,
    source: str,
    provider_status: str | None = None,
    detail: str | None = None,
    values: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> bool:
    """Move one notification to `to_state` if it is in `expected`; record the move.

    Returns False (and changes nothing) when another process moved the row first: the caller
    must then leave the row alone. The UPDATE's WHERE clause names the exact state that was read,
    so two concurrent callers can never both win.
    """
    if isinstance(expected, str):
        current: str | None = expected  # the UPDATE's WHERE checks it: no need to read first
    else:
        current = session.exec(select(Notification.state).where(Notification.id == notification_id)).first()
        if current is None or current not in expected:
            return False
    moment = at or utcnow()
    result = session.execute(
        sa.update(Notification)
        .where(Notification.id == notification_id, Notification.state == current)
        .values(state=to_state, updated_at=moment, **(values or {}))
    )
    if result.rowcount != 1:
        return False
    session.add(
        DeliveryEvent(
            notification_id=notification_id,
            at=moment,
            from_state=current,
            to_state=to_state,
            source=source,
            provider_status=_bounded(provider_status, 100),
            detail=_bounded(detail, 500),
        )
    )
    return True


def transition_many(
    session: Session,
    notification_ids: Iterable[int],
    *,
    expected: str,
    to_state: str,
    source: str,
    detail: str | None = None,
    values: dict[str, Any] | None = None,
) -> list[int]:
    """Bulk form of `transition` for one expected state; returns the ids that moved."""
    moved: list[int] = []
    moment = utcnow()
    ids = list(notification_ids)
    # Core statements, the ids as one array on PostgreSQL: queuing a 100,000-row campaign is this
    # loop, and `campaign run` sends nothing before it committed.
    chunk_size = MANY_CHUNK if is_postgresql(session) else BULK_CHUNK
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        candidates = session.execute(
            sa.update(Notification.__table__)
            .where(among(session, Notification.__table__.c.id, chunk), Notification.__table__.c.state == expected)
            .values(state=to_state, updated_at=moment, **(values or {}))
            .returning(Notification.__table__.c.id)
        ).scalars().all()
        if candidates:  # the events are built by the database from the ids: nothing per row in Python
            table, events = Notification.__table__, DeliveryEvent.__table__
            session.execute(sa.insert(events).from_select(
                ["notification_id", "at", "from_state", "to_state", "source", "detail"],
                sa.select(table.c.id, sa.literal(moment, events.c.at.type), sa.literal(expected, sa.String()),
                          sa.literal(to_state, sa.String()), sa.literal(source, sa.String()),
                          sa.literal(detail, sa.String())).where(among(session, table.c.id, candidates))))
        moved.extend(candidates)
    return moved


MANY_CHUNK = 5000  # ids per array parameter in `transition_many` on PostgreSQL


def _bounded(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


@dataclass(frozen=True)
class RowMove:
    """One row's part in a bulk move: its own column values and the words of its DeliveryEvent."""

    notification_id: int
    values: dict[str, Any] = field(default_factory=dict)
    provider_status: str | None = None
    detail: str | None = None


def transition_rows(
    session: Session,
    moves: Sequence[RowMove],
    *,
    expected: str,
    to_state: str,
    source: str,
    values: dict[str, Any] | None = None,
    only_if: sa.ColumnElement[bool] | None = None,
    skip_locked: bool = False,
    at: datetime | None = None,
) -> list[int]:
    """Bulk `transition`: the same compare-and-set and one DeliveryEvent per moved row, in a
    fixed number of statements whatever the batch size.

    One UPDATE … WHERE id IN (SELECT … ORDER BY id FOR UPDATE) RETURNING id moves the rows still
    in `expected` (and matching `only_if`): PostgreSQL locks them in id order, so two batches that
    overlap cannot deadlock; with `skip_locked`, rows another transaction holds are left to it (a
    claim: that one will send them). SQLite has one writer and ignores FOR UPDATE. `values` are
    common to every row (SQL expressions allowed); each move's own `values` follow in one
    executemany; the events go in one INSERT. Returns the ids that moved, ascending.
    """
    if not moves:
        return []
    by_id = {move.notification_id: move for move in moves}
    moment = at or utcnow()
    moved: list[int] = []
    ids = sorted(by_id)
    own = _uniform_row_values(session, moves)
    for start in range(0, len(ids), BULK_CHUNK):
        moved += _move_chunk(session, ids[start : start + BULK_CHUNK], expected=expected, to_state=to_state,
                             values=values, only_if=only_if, skip_locked=skip_locked, moment=moment,
                             own=(own, by_id) if own else None)
    if not moved:
        return []
    if not own:
        _store_row_values(session, [by_id[nid] for nid in moved])
    bulk_insert(session, DeliveryEvent.__table__, [
        {"notification_id": nid, "at": moment, "from_state": expected, "to_state": to_state, "source": source,
         "provider_status": _bounded(by_id[nid].provider_status, 100), "detail": _bounded(by_id[nid].detail, 500)}
        for nid in moved
    ])
    return moved


BULK_CHUNK = 500  # ids per statement: never an unbounded IN list


def _uniform_row_values(session: Session, moves: Sequence[RowMove]) -> tuple[str, ...]:
    """The columns every move sets to its own value, when they are the same for all moves (a
    claim: text, parts, attempts…) on PostgreSQL: then the state change and those values are one
    UPDATE, one new row version instead of two. Empty otherwise (SQLite: a second executemany is
    cheap in-process)."""
    keys = tuple(sorted(moves[0].values))
    if not keys or session.connection().dialect.name != "postgresql":
        return ()
    return keys if all(tuple(sorted(move.values)) == keys for move in moves) else ()


def _move_chunk(session: Session, ids: list[int], *, expected: str, to_state: str, values: dict[str, Any] | None,
                only_if: sa.ColumnElement[bool] | None, skip_locked: bool, moment: datetime,
                own: tuple[tuple[str, ...], dict[int, RowMove]] | None = None) -> list[int]:
    table = Notification.__table__
    chosen = sa.select(table.c.id).where(among(session, table.c.id, ids), table.c.state == expected)
    if only_if is not None:
        chosen = chosen.where(only_if)
    chosen = chosen.order_by(table.c.id).with_for_update(skip_locked=skip_locked)
    statement = (sa.update(table).where(table.c.id.in_(chosen.scalar_subquery()), table.c.state == expected)
                 .values(state=to_state, updated_at=moment, **(values or {})))
    parameters: dict[str, Any] = {}
    if own is not None:  # each row's own values joined in (PostgreSQL): one statement, one row version
        keys, by_id = own
        given = _unnest(table, (("row_id", "id"), *((f"v_{key}", key) for key in keys)))
        statement = statement.where(table.c.id == given.c.row_id).values({key: given.c[f"v_{key}"] for key in keys})
        parameters = {"a_row_id": ids, **{f"a_v_{key}": [by_id[nid].values[key] for nid in ids] for key in keys}}
    result = session.execute(statement.returning(table.c.id), parameters)
    return sorted(result.scalars().all())


def _store_row_values(session: Session, moves: list[RowMove]) -> None:
    """Each row's own values, one bulk UPDATE per distinct set of columns (usually one)."""
    table = Notification.__table__
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for move in moves:
        if move.values:
            groups.setdefault(tuple(sorted(move.values)), []).append(
                {"row_id": move.notification_id, **{f"v_{key}": value for key, value in move.values.items()}})
    for columns, rows in groups.items():
        bulk_update(session, table, rows, match={"id": "row_id"}, assign={column: f"v_{column}" for column in columns})


BULK_UPDATE_ROWS = 1000  # rows per UPDATE … FROM unnest(arrays) statement on PostgreSQL


def bulk_update(session: Session, table: sa.Table, rows: Sequence[dict[str, Any]], *, match: dict[str, str],
                assign: dict[str, str]) -> None:
    """Update many rows, each with its own values: `match` and `assign` map a column to the key of
    its value in each row dict (`match` columns must equal it, `assign` columns get it).

    PostgreSQL: one `UPDATE … FROM (SELECT unnest(…))` per BULK_UPDATE_ROWS rows — an executemany would
    execute one UPDATE per row, and those executions were the largest part of the server's CPU
    per notification. SQLite (in-process, no round trips): one executemany."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        sql, as_tuple = _sqlite_update(connection.dialect, table, tuple(assign.items()), tuple(match.items()))
        connection.exec_driver_sql(sql, [as_tuple(row) for row in rows])
        return
    columns = {**{key: column for column, key in match.items()}, **{key: column for column, key in assign.items()}}
    statement = _unnest_update(table, tuple(match.items()), tuple(assign.items()))
    for start in range(0, len(rows), BULK_UPDATE_ROWS):
        chunk = rows[start:start + BULK_UPDATE_ROWS]
        connection.execute(statement, {f"a_{key}": [row[key] for row in chunk] for key in columns})


@functools.lru_cache(maxsize=256)
def _unnest_update(table: sa.Table, match: tuple[tuple[str, str], ...], assign: tuple[tuple[str, str], ...]) -> sa.Update:
    """UPDATE table … FROM (SELECT unnest(:a_key) AS key, …) AS given WHERE …: one array parameter
    per column, so the statement's text is the same whatever the row count (SQLAlchemy compiles
    it once; a VALUES list would be compiled again for every batch). Built once per shape: the
    same statement object keeps its cache key, which SQLAlchemy otherwise computes per execution."""
    columns = {**{key: column for column, key in match}, **{key: column for column, key in assign}}
    given = _unnest(table, tuple(columns.items()))
    return (sa.update(table).where(*[table.c[column] == given.c[key] for column, key in match])
            .values({column: given.c[key] for column, key in assign}))


def _unnest(table: sa.Table, columns: tuple[tuple[str, str], ...]) -> sa.Subquery:
    """(SELECT unnest(:a_key) AS key, …) AS given: rows of values passed as one array per column
    (key → the column whose type it has), zipped by PostgreSQL."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return sa.select(*[sa.func.unnest(sa.bindparam(f"a_{key}", type_=ARRAY(table.c[column].type))).label(key)
                       for key, column in columns]).subquery("given")


@functools.lru_cache(maxsize=256)
def _unnest_insert(table: sa.Table, keys: tuple[str, ...]) -> sa.Insert:
    """INSERT INTO table (keys) SELECT unnest(:a_key), …: built once per shape (see `_unnest_update`)."""
    given = _unnest(table, tuple((key, key) for key in keys))
    return sa.insert(table).from_select(list(keys), sa.select(*[given.c[key] for key in keys]))


def drop_parts(session: Session, notification_ids: Sequence[int]) -> None:
    """Forget the recorded parts of rows about to be sent again as a whole: the next attempt
    numbers its parts from 1, and a receipt must never count an old attempt's part as the new
    one's. The row's events keep the old provider ids."""
    ids = sorted(set(notification_ids))
    for start in range(0, len(ids), BULK_CHUNK):
        session.execute(sa.delete(MessagePart.__table__).where(
            among(session, MessagePart.__table__.c.notification_id, ids[start:start + BULK_CHUNK])))


def dialect_name(session: Session) -> str:
    """`sqlite` or `postgresql`: which statements and value forms the session's database takes."""
    return session.get_bind().dialect.name


def is_postgresql(session: Session) -> bool:
    return dialect_name(session) == "postgresql"


def among(session: Session, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """`column IN (values)` as one parameter, so the statement's text is the same for every batch:
    on PostgreSQL `column = ANY(:array)` (an IN list of 500 parameters made psycopg parse a new
    query text each time, a third of a worker's CPU); on SQLite, ids and strings as one JSON array
    read by `json_each` (an IN list was expanded by SQLAlchemy value by value and prepared again
    by SQLite for every new length: 1.0 → 0.5 ms to look up 300 provider ids)."""
    dialect = dialect_name(session)
    listed = list(values)
    if dialect != "postgresql" and not all(type(value) in (int, str) for value in listed):
        return column.in_(listed)
    return among_param(column, None, dialect, value=among_value(dialect, listed))


def among_param(column: sa.ColumnElement[Any], name: str | None, dialect: str, *,
                value: Any = None) -> sa.ColumnElement[bool]:
    """`among` with a named parameter, for a statement built once per dialect and run many times
    (building and keying a statement cost more than running it); `among_value` gives the value."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(name, value, type_=ARRAY(column.type)))
    if not sqlite_has_json_each():
        return column.in_(sa.bindparam(name, value, expanding=True))
    return column.in_(sa.select(_JSON_VALUE).select_from(sa.func.json_each(sa.bindparam(name, value, type_=sa.String()))))


def among_value(dialect: str, values: Sequence[int] | Sequence[str]) -> Any:
    """The value of an `among_param` parameter: the ids or strings themselves (PostgreSQL's array,
    an SQLite without JSON's IN list) or one JSON array (SQLite's `json_each`)."""
    return list(values) if dialect == "postgresql" or not sqlite_has_json_each() else json.dumps(list(values))


@functools.cache
def sqlite_has_json_each() -> bool:
    """Whether the SQLite library Python links has `json_each` (built in since 3.38, an option
    before): without it `among` falls back to IN lists, slower but the same rows."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as probe:
            return probe.execute("SELECT value FROM json_each('[1]')").fetchall() == [(1,)]
    except sqlite3.Error:
        return False


_JSON_VALUE = sa.column("value")


def bulk_insert(session: Session, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows in one statement: on PostgreSQL `INSERT … SELECT unnest(:array), …` (one
    execution, one short query text), elsewhere an executemany. Every row has the same keys."""
    if not rows:
        return
    keys = tuple(rows[0])
    if not is_postgresql(session):
        connection = session.connection()
        sql, as_tuple = _sqlite_insert(connection.dialect, table, keys)
        connection.exec_driver_sql(sql, [as_tuple(row) for row in rows])
        return
    statement = _unnest_insert(table, keys)
    for start in range(0, len(rows), MANY_CHUNK):
        chunk = rows[start:start + MANY_CHUNK]
        session.execute(statement, {f"a_{key}": [row[key] for row in chunk] for key in keys})


# -- SQLite: many rows through the driver ------------------------------------------------------
# An executemany through SQLAlchemy runs every value of every row through its type's bind
# processor (for a time: `UtcDateTime`, then the dialect's formatting) inside SQLAlchemy's
# execution context: that was a fifth of the send path's Python time with receipts. These
# statements are compiled once per shape and get plain tuples, the times formatted by
# `db.sqlite_time` (exactly what SQLAlchemy stores) and any other typed value by its own processor.


@functools.lru_cache(maxsize=256)
def _sqlite_insert(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> tuple[str, Callable[[Any], tuple[Any, ...]]]:
    quote = dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(key) for key in keys)}) "
           f"VALUES ({', '.join('?' for _ in keys)})")
    return sql, _row_tuple(dialect, [(table.c[key].type, key) for key in keys])


@functools.lru_cache(maxsize=256)
def _sqlite_update(dialect: sa.Dialect, table: sa.Table, assign: tuple[tuple[str, str], ...],
                   match: tuple[tuple[str, str], ...]) -> tuple[str, Callable[[Any], tuple[Any, ...]]]:
    quote = dialect.identifier_preparer.quote
    sql = (f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(column)} = ?' for column, _ in assign)} "
           f"WHERE {' AND '.join(f'{quote(column)} = ?' for column, _ in match)}")
    return sql, _row_tuple(dialect, [(table.c[column].type, key) for column, key in (*assign, *match)])


# A batch's rows share their times (the moment of the move, of the receipt pass): formatted once.
_stored_time = functools.lru_cache(maxsize=512)(sqlite_time)


def _row_tuple(dialect: sa.Dialect, columns: list[tuple[sa.types.TypeEngine[Any], str]]) -> Callable[[Any], tuple[Any, ...]]:
    """row dict → the driver's tuple: the values of `columns`' keys, each as its type binds it."""
    keys = [key for _, key in columns]
    pick = operator.itemgetter(*keys)
    convert = [(position, _stored_time if isinstance(type_, UtcDateTime) else type_._cached_bind_processor(dialect))
               for position, (type_, _) in enumerate(columns)]
    convert = [(position, processor) for position, processor in convert if processor is not None]
    if len(keys) == 1:
        one = convert[0][1] if convert else None
        return (lambda row: (one(row[keys[0]]),)) if one else (lambda row: (row[keys[0]],))
    if not convert:
        return pick  # type: ignore[return-value]

    def as_tuple(row: Any) -> tuple[Any, ...]:
        values = list(pick(row))
        for position, processor in convert:
            values[position] = processor(values[position])
        return tuple(values)

    return as_tuple
