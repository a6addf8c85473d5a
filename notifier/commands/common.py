"""What every area of the `notifier` command shares: consoles, option types, printers, failure.

With `--json`, a command prints one JSON document on standard output (`out`) and nothing else;
progress and logs go to standard error (`err`). A problem is one line `error: …`, exit 2 (`fail`).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from notifier.errors import NotifierError
from notifier.settings import get_settings

EXIT_FAILURE = 2
PIPED_OUTPUT_WIDTH = 400  # characters: wider than any table we print
MAX_WORD_CHARS = 120  # a 5,000-character argument echoed in a message is cut to this

# Piped or redirected output gets the width its rows need (a file has no edge to cut at); a
# terminal gets its own width, and tables fold long cells there instead of hiding them behind "…".
out = Console(width=None if sys.stdout.isatty() else PIPED_OUTPUT_WIDTH)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
TzOption = Annotated[str | None, typer.Option("--tz", help="Zone of times without one (default: the format's).")]

# --- failures: one line `error: …` on stderr, exit code 2 -------------------------------------


def fail(message: str) -> NoReturn:
    """Print `error: <message>` as exactly one line, personal data and passwords masked; exit 2."""
    from notifier.redaction import one_line, redact

    line = re.sub(rf"\S{{{MAX_WORD_CHARS + 1},}}", _shorten_word, one_line(redact(message)))
    print(f"error: {line}", file=sys.stderr, flush=True)
    raise typer.Exit(EXIT_FAILURE)


def _shorten_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return f"{word[:MAX_WORD_CHARS // 2]}…({len(word)} characters)"


def cli_errors(func: F) -> F:
    """Turn notifier's own errors into one line on stderr and exit code 2.

    The root group does this for every error anyway; the decorator keeps a command's own failures
    visibly handled where it is defined.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NotifierError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


# --- option types: refuse what the database could not hold, before it gets there ---------------

MAX_ID = 2_147_483_647  # ids are PostgreSQL `integer` columns


def _row_id(text: str | int) -> int:
    """An id as people type it: 1 … MAX_ID, else refused here. A larger one names no row, and on
    PostgreSQL it would not even fit the query's `integer` parameter (a driver error, not "not found")."""
    value = str(text).strip()
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_ID):
        raise ValueError(f"must be a whole number from 1 to {MAX_ID}, not {value!r}")
    return int(value)


def id_option(help_text: str) -> Any:
    """A `--feed`-style option holding an id, checked like every id argument (`IdArgument`)."""
    return typer.Option(parser=_row_id, help=help_text)


IdArgument = Annotated[int, typer.Argument(parser=_row_id)]


def optional_id_argument(help_text: str) -> Any:
    """An id argument that may be left out, when an option can name the rows instead."""
    return typer.Argument(parser=_row_id, show_default=False, help=help_text)


def fits(column: str) -> Callable[[str], str]:
    """A parser for a text option stored in `table.column`: longer text is refused with the limit
    models.py declares, instead of a PostgreSQL error (or, on SQLite, a value kept over length)."""
    table, name = column.split(".")

    def parse(text: str) -> str:
        import notifier.models  # noqa: F401 - registers the tables
        from sqlmodel import SQLModel

        limit = SQLModel.metadata.tables[table].c[name].type.length
        if limit is not None and len(text) > limit:
            raise ValueError(f"longer than {limit} characters ({len(text)} given)")
        return text

    return parse


# --- printers -----------------------------------------------------------------------------------


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=json_value) + "\n")


def json_value(value: object) -> object:
    """Times in JSON are ISO 8601 in UTC with the offset (`…+00:00`), whoever built the document."""
    from datetime import datetime

    from notifier.timefmt import iso_utc

    return iso_utc(value) if isinstance(value, datetime) else str(value)


def print_import(result: Any, as_json: bool, what: str) -> None:
    """An import's outcome: counts, then each rejected (and warned) line as `line N: reason`."""
    if as_json:
        print_json(result.as_json())
        return
    err.print(f"{what}: {result.accepted} accepted, {result.rejected} rejected")
    print_lines([f"line {e['line']}: {e['reason']}" for e in result.errors[:SHOWN_LINES]], result.rejected,
                "use --json or `feed show --items`")
    if result.warned:
        err.print(f"{result.warned} warning{'' if result.warned == 1 else 's'}")
        print_lines([f"line {w['line']}: {w['reason']}" for w in result.warnings[:SHOWN_LINES]], result.warned,
                    "use --json")


SHOWN_LINES = 50  # reported lines shown to people; --json has them all (up to its own cap)


def print_lines(lines: list[str], total: int, hint: str) -> None:
    """Up to SHOWN_LINES report lines on stderr, then how many more there are and where to see them."""
    for line in lines[:SHOWN_LINES]:
        err.print(f"  {line}", markup=False, highlight=False)
    if total > SHOWN_LINES:
        err.print(f"  … {total - SHOWN_LINES} more ({hint})", markup=False, highlight=False)


def table(title: str, rows: list[dict[str, Any]], *, zone: str | None = None) -> Table:
    """A table for people. Rule: every column named `*_at` (`seen_at`, `created_at`…), `at`,
    `first_seen` or `last_seen` holds a time and is shown in local time, `18/11/2026 08:24` in
    the `timezone` setting (Asia/Ho_Chi_Minh), whether the row has a datetime or an ISO string
    (`notifier.timefmt.is_time_column`); so a new listing only has to name its time columns that
    way. Such columns never wrap. `--json` output keeps ISO 8601 UTC with the offset instead."""
    from notifier.timefmt import is_time_column

    zone = zone or get_settings().timezone
    shown = Table(title=title, title_justify="left")
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    for column in columns:
        shown.add_column(column, no_wrap=is_time_column(column), overflow="fold")  # a time cut in two reads as two values
    for row in rows:  # Text, not markup: a name or a reason with "[…]" is shown as written
        shown.add_row(*(Text(_cell(c, row.get(c), zone)) for c in columns))
    return shown


def fields_table(title: str, fields: dict[str, Any]) -> Table:
    """One record as field/value rows; the same time rule applies to each field's name."""
    zone = get_settings().timezone
    return table(title, [{"field": k, "value": _cell(k, v, zone)} for k, v in fields.items()], zone=zone)


def _cell(column: str, value: Any, zone: str) -> str:
    from datetime import datetime

    from notifier.timefmt import is_time_column, local_display

    if value is None:
        return ""
    if is_time_column(column) and isinstance(value, (str, datetime)):
        try:
            return local_display(value, zone)
        except ValueError:  # not a time after all: show it as it is rather than hide it
            return str(value)
    return str(value)
