"""Times for people and for tools: one place decides how a stored UTC moment is shown.

We store UTC (`models.UtcDateTime`), care staff and operators read Asia/Ho_Chi_Minh (the
`timezone` setting): a subscriber who says "the message came at 8:24" means local time, and a
table in UTC would make staff look seven hours off. People get `18/11/2026 08:24` (day first, as
Vietnamese write dates); JSON gets ISO 8601 in UTC with its offset (`2026-11-18T01:24:00+00:00`),
so tools never have to guess a zone and every document uses one spelling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from notifier.errors import ConfigError
from notifier.identifiers import LOCAL_TIMEZONE, get_zone
from notifier.ingest.records import DATE_PRECISION  # a feed gave the day only (`FeedItem.seen_precision`)

DISPLAY_FORMAT = "%d/%m/%Y %H:%M"
DATE_DISPLAY_FORMAT = "%d/%m/%Y"
# Column names a table shows as local time besides every name ending in `_at`.
TIME_COLUMN_NAMES = frozenset({"at", "first_seen", "last_seen"})
TIME_COLUMN_SUFFIX = "_at"


def display_zone(name: str = LOCAL_TIMEZONE) -> ZoneInfo:
    """The zone people read, or a one-line configuration error naming the bad setting."""
    try:
        return get_zone(name)
    except ValueError as exc:
        raise ConfigError(f"{exc} (setting `timezone`)") from None


def as_utc(value: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime or an ISO 8601 string.

    A value without an offset is taken as UTC, because that is how we store every time; a
    string that is not ISO 8601 raises ValueError rather than being shown as a wrong time.
    """
    moment = datetime.fromisoformat(value.strip()) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def local_display(value: datetime | str | None, zone: str = LOCAL_TIMEZONE, *, precision: str | None = None) -> str:
    """`18/11/2026 08:24` in `zone` for a datetime or ISO string; "" for None (nothing happened yet).

    `precision="date"` (a feed that gave only a day, stored as its local midnight) shows
    `18/11/2026` alone: printing 00:00 would state a time nobody gave.
    """
    if value is None or value == "":
        return ""
    local = as_utc(value).astimezone(display_zone(zone))
    return local.strftime(DATE_DISPLAY_FORMAT if precision == DATE_PRECISION else DISPLAY_FORMAT)


def iso_utc(value: datetime | str | None) -> str | None:
    """ISO 8601 in UTC with its offset (`…+00:00`), the one spelling of a time in JSON documents."""
    if value is None or value == "":
        return None
    return as_utc(value).isoformat()


def is_time_column(name: str) -> bool:
    """The table rule: a column named `*_at`, `at`, `first_seen` or `last_seen` holds a time to localise."""
    return name.endswith(TIME_COLUMN_SUFFIX) or name in TIME_COLUMN_NAMES


def local_midnight(day: str, zone: str = LOCAL_TIMEZONE) -> datetime:
    """UTC moment of 00:00 local on `day` (YYYY-MM-DD): a date people type means their own day."""
    parsed = datetime.strptime(day, "%Y-%m-%d")
    return parsed.replace(tzinfo=display_zone(zone)).astimezone(UTC)

