"""Parse the operator's customer export into SubscriberRecords (formats.md, "Subscribers").

The layout below is the whole format: which header feeds which field and through which converter.
Every phone number and address in a row is normalised; a bad value rejects the row with a reason
naming it. Phone numbers are the exception, because the export is the operator's own truth: a number
phonenumbers does not know yet is kept, an impossible one is dropped alone, and both become
warnings on the row's line (masked), so neither is silent and the account is never lost.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from notifier.errors import InputError
from notifier.identifiers import (
    LOCAL_TIMEZONE,
    PhoneNumberError,
    classify_msisdn,
    mask_phone_text,
    normalise_email,
)
from notifier.ingest.reader import Column, bounded_text, check_zone, extract, parse_layout, split_list, unique
from notifier.ingest.records import Rejection, SubscriberRecord

MIN_BILLING_DAY, MAX_BILLING_DAY = 1, 28  # day 29-31 does not exist in every month
LANGUAGES = ("vi", "en")
STATUSES = ("active", "suspended", "terminated")
# Lengths bound what one row may store (as the tables do); longer text is a broken export, not a name.
MAX_ACCOUNT_REF_CHARS = 64
MAX_NAME_CHARS = 200
MAX_ADDRESS_CHARS = 300
MAX_SHORT_TEXT_CHARS = 100
MAX_SERVICE_CHARS = 32
MAX_USERNAME_CHARS = 128
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "có", "co"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "không", "khong"})


PhoneCell = tuple[tuple[str, ...], tuple[str, ...]]  # (E.164 numbers, warnings)


def msisdn_cell(text: str) -> PhoneCell:
    """The usable numbers of a cell in E.164, and a warning for each kept-unknown or dropped one.

    Never raises: one mistyped number must not cost the account, its other numbers and its e-mail.
    """
    numbers: list[str] = []
    warnings: list[str] = []
    for item in split_list(text):
        try:
            e164, warning = classify_msisdn(item, restore_lost_zero=True)  # our own export: Excel drops the 0
        except PhoneNumberError as exc:
            warnings.append(f"msisdn {mask_phone_text(exc.raw)} dropped: {exc.reason}")
            continue
        numbers.append(e164)
        if warning:
            warnings.append(f"msisdn {warning}")
    return unique(numbers), unique(warnings)


EmailCell = tuple[tuple[str, ...], tuple[str, ...]]  # (addresses, warnings)


def email_cell(text: str) -> EmailCell:
    """The usable addresses of a cell, and a warning for each dropped one (masked).

    Never raises, like `msisdn_cell`: one mistyped address must not cost the account its phone
    numbers and its other addresses — the subscriber would then get no warning at all.
    """
    addresses: list[str] = []
    warnings: list[str] = []
    for item in split_list(text):
        try:
            addresses.append(normalise_email(item))
        except ValueError as exc:
            warnings.append(f"email dropped: {exc}")
    return unique(addresses), unique(warnings)


def username_list(text: str) -> tuple[str, ...]:
    """RADIUS user names, kept as written (case matters to some NAS configurations)."""
    check = bounded_text(MAX_USERNAME_CHARS)
    return unique([check(item) for item in split_list(text)])


def service_name(text: str) -> str:
    return bounded_text(MAX_SERVICE_CHARS)(text).lower()


def billing_day(text: str) -> int:
    if not text.isdecimal() or not MIN_BILLING_DAY <= int(text) <= MAX_BILLING_DAY:
        raise ValueError(f"{text!r} is not a day from {MIN_BILLING_DAY} to {MAX_BILLING_DAY}")
    return int(text)


def choice_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A converter accepting one of `choices`, case-insensitively."""

    def convert(text: str) -> str:
        value = text.lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return convert


def flag(text: str) -> bool:
    """1/0, true/false, yes/no, có/không (with or without diacritics)."""
    word = unicodedata.normalize("NFC", text).lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{text!r} is not yes/no (1/0, true/false, có/không)")


SUBSCRIBER_COLUMNS: tuple[Column, ...] = (
    Column("account_ref", ("account_id",), bounded_text(MAX_ACCOUNT_REF_CHARS), required=True),
    Column("full_name", ("full_name",), bounded_text(MAX_NAME_CHARS), required=True),
    Column("msisdns", ("msisdn",), msisdn_cell, default=((), ())),
    Column("emails", ("email",), email_cell, default=((), ())),
    Column("service", ("service",), service_name),
    Column("billing_day", ("billing_day",), billing_day),
    Column("language", ("language",), choice_of(LANGUAGES), default="vi"),
    Column("status", ("status",), choice_of(STATUSES), default="active"),
    Column("sms_opt_out", ("sms_opt_out",), flag, default=False),
    Column("email_opt_out", ("email_opt_out",), flag, default=False),
    Column("voice_opt_out", ("voice_opt_out",), flag, default=False),
    Column("address", ("address",), bounded_text(MAX_ADDRESS_CHARS)),
    Column("province", ("province",), bounded_text(MAX_SHORT_TEXT_CHARS)),
    Column("usernames", ("usernames",), username_list, default=()),
)


SUBSCRIBER_HEADERS: tuple[str, ...] = tuple(source for column in SUBSCRIBER_COLUMNS for source in column.sources)


def checked_column_map(column_map: Mapping[str, str] | None) -> dict[str, str]:
    """The column map (export header → our column) with our names trimmed and lower-cased, after
    refusing a name we do not have: a typo (`"msidsn"`) would silently drop every phone number."""
    mapping = {source: str(ours).strip().lower() for source, ours in (column_map or {}).items()}
    unknown = sorted({ours for ours in mapping.values() if ours not in SUBSCRIBER_HEADERS})
    if unknown:
        raise InputError(f"column map: {', '.join(repr(name) for name in unknown)} is not a subscriber column "
                         f"(known: {', '.join(SUBSCRIBER_HEADERS)})")
    return mapping


def _build(columns: tuple[Column, ...], line: int, row: dict[str, str], raw: str) -> tuple[SubscriberRecord]:
    values = extract(row, columns)
    msisdns, phone_warnings = values.pop("msisdns")  # type: ignore[misc]
    emails, email_warnings = values.pop("emails")  # type: ignore[misc]
    return (SubscriberRecord(line=line, msisdns=msisdns, emails=emails,  # type: ignore[arg-type]
                             warnings=(*phone_warnings, *email_warnings), **values),)


def parse_subscribers(
    path: Path | str,
    *,
    tz: str = LOCAL_TIMEZONE,
    column_map: Mapping[str, str] | None = None,
) -> Iterator[SubscriberRecord | Rejection]:
    """Yield one SubscriberRecord per good row and a Rejection per bad one.

    `column_map` renames the operator's own headers (`--column-map` or `[subscribers.columns]` in
    the settings) to ours; naming a column we do not have is an InputError. `tz` is the export's
    declared zone; the format has no time column today, but the importer signature is uniform and
    an unknown zone is still refused, so a wrong --tz fails here rather than in the next format.
    """
    path = Path(path)
    check_zone(path, tz)
    mapping = checked_column_map(column_map)
    yield from parse_layout(path, SUBSCRIBER_COLUMNS, _build, column_map=mapping)  # type: ignore[misc]
