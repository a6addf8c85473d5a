"""Parse IP assignment sources: which account used which address when (formats.md, "IP assignments").

Only `sessions-csv` lives here; other formats register in ASSIGNMENT_FORMATS under their name, so
the CLI finds every parser through one registry.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import cast

from notifier.identifiers import LOCAL_TIMEZONE, normalise_ip
from notifier.ingest.reader import (
    Column,
    bounded_text,
    check_zone,
    extract,
    parse_rows,
    required_headers,
    timestamp_in,
)
from notifier.ingest.records import Parser, Rejection, SessionRecord, find_parser
from notifier.ingest.subscribers import MAX_ACCOUNT_REF_CHARS, MAX_USERNAME_CHARS


def session_columns(tz: str) -> tuple[Column, ...]:
    """The sessions-csv layout; times without a zone are read in `tz`."""
    at = timestamp_in(tz)
    return (
        Column("account_ref", ("account_id",), bounded_text(MAX_ACCOUNT_REF_CHARS), required=True),
        Column("ip", ("ip",), normalise_ip, required=True),
        Column("started_at", ("start",), at, required=True),
        Column("ended_at", ("end",), at),
        Column("username", ("username",), bounded_text(MAX_USERNAME_CHARS)),
    )


def _build_session(
    columns: tuple[Column, ...], line: int, row: dict[str, str], raw: str
) -> tuple[SessionRecord]:
    values = extract(row, columns)
    started, ended = cast(datetime, values["started_at"]), cast(datetime | None, values["ended_at"])
    if ended is not None and ended < started:
        raise ValueError(f"end {row['end']!r} is before start {row['start']!r}")
    return (SessionRecord(line=line, **values),)  # type: ignore[arg-type]


def parse_sessions_csv(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[SessionRecord | Rejection]:
    """Yield a SessionRecord per `account_id,ip,start,end[,username]` row; an empty end = still open."""
    path = Path(path)
    check_zone(path, tz)
    columns = session_columns(tz)
    build = functools.partial(_build_session, columns)
    # "end" must be in the header even though its cells may be empty: a file without the column
    # would otherwise turn every session into one that never ends.
    required = (*required_headers(columns), "end")
    yield from parse_rows(path, build, required=required)  # type: ignore[misc]


ASSIGNMENT_FORMATS: dict[str, Parser] = {"sessions-csv": parse_sessions_csv}


def get_assignment_parser(name: str) -> Parser:
    """The parser registered for an assignment format name; InputError for an unknown one."""
    return find_parser(ASSIGNMENT_FORMATS, name)
