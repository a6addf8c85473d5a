"""Reading SMPP delivery receipts: message ids in every spelling, `id:… stat:…` text, TLVs.

Kept apart from the channel so the parsing rules (which differ between SMSC vendors) can be read
and tested on their own.
"""

from __future__ import annotations

import re
from functools import lru_cache
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from channels.base import (
    RECEIPT_DELIVERED, RECEIPT_EXPIRED, RECEIPT_FAILED, RECEIPT_PENDING, RECEIPT_UNDELIVERED, Receipt,
)
from notifier.identifiers import LOCAL_TIMEZONE, get_zone

_RECEIPT_ESM_MASK, _RECEIPT_ESM_VALUE = 0x3C, 0x04
# message_state TLV values, spelled like the `stat:` field of a receipt's text.
_MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                   6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
# Keyed by the first five letters, so vendor spellings (DELIVERED, UNDELIVERABLE) map too.
_RECEIPT_STATUS = {"DELIV": RECEIPT_DELIVERED, "UNDEL": RECEIPT_UNDELIVERED, "EXPIR": RECEIPT_EXPIRED,
                   "ACCEP": RECEIPT_PENDING, "ENROU": RECEIPT_PENDING}
_RECEIPT_FIELD = re.compile(r"(?<!\S)(id|sub|dlvrd|submit date|done date|stat|err):(\S*)", re.IGNORECASE)
_TEXT_FIELD = re.compile(r"(?<!\S)text:", re.IGNORECASE)
# The layout of SMPP 3.4 Appendix B, which nearly every SMSC writes: the seven fields in order, one
# space apart, then `text:` or nothing. Matching it whole gives what `_RECEIPT_FIELD` would find in
# the same text, in one step (the reader thread reads a receipt per part); any other text is read
# field by field.
_STANDARD_RECEIPT = re.compile(
    r"id:(\S*) sub:(\S*) dlvrd:(\S*) submit date:(\S*) done date:(\S*) stat:(\S*) err:(\S*)(?:\s+text:|\s*$)",
    re.IGNORECASE)
_STANDARD_KEYS = ("id", "sub", "dlvrd", "submit date", "done date", "stat", "err")
_HEX_DIGITS = re.compile(r"[0-9a-f]+")



def is_delivery_receipt(esm_class: int) -> bool:
    """deliver_sm carries a receipt (not a subscriber's message) when its esm_class says so."""
    return esm_class & _RECEIPT_ESM_MASK == _RECEIPT_ESM_VALUE


def normalise_message_id(raw: str | bytes) -> str:
    """One spelling per SMSC message id: SMSCs pad with NUL/spaces, vary case and leading zeros."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.strip("\x00 \t\r\n").lower()
    return text.lstrip("0") or ("0" if text else "")


def message_id_alternatives(raw: str | bytes) -> tuple[str, ...]:
    """Other readings of an id (decimal <-> hex): many SMSCs answer in hex and report in decimal."""
    return _readings(normalise_message_id(raw))


def _readings(primary: str) -> tuple[str, ...]:
    """`message_id_alternatives` of an id already normalised: digits read as decimal (→ hex) and as
    hex (→ decimal); hex letters read as hex (→ decimal). The reader thread asks once per receipt."""
    if not primary.isascii():
        return ()
    if primary.isdigit():
        as_hex, as_decimal = format(int(primary), "x"), str(int(primary, 16))
        return tuple(reading for reading in ((as_hex,) if as_hex == as_decimal else (as_hex, as_decimal))
                     if reading != primary)
    if _HEX_DIGITS.fullmatch(primary):
        return (str(int(primary, 16)),)  # has a letter: never its own decimal reading
    return ()


def e164_address(address: bytes | str | None) -> str | None:
    text = address.decode("latin-1") if isinstance(address, bytes) else (address or "")
    return "+" + text if text.isascii() and text.isdigit() else None


def parse_receipt(pdu: Any, *, zone: str = LOCAL_TIMEZONE) -> Receipt | None:
    """Build a Receipt from TLVs (preferred) and the de-facto `id:… stat:… err:…` text.

    `zone` is the SMSC's (`smpp.timezone`): its dates carry none of their own.
    """
    text = (pdu.short_message or b"").decode("latin-1")
    fields = receipt_fields(text)
    raw_ids = [raw for raw in (pdu.receipted_message_id, fields.get("id")) if raw]
    if not raw_ids:
        return None
    primary = normalise_message_id(raw_ids[0])
    state_name = _MESSAGE_STATES.get(pdu.message_state) if pdu.message_state is not None else None
    raw_status = fields.get("stat") or state_name or "UNKNOWN"
    return Receipt(channel="sms", provider_message_id=primary,
                   status=_RECEIPT_STATUS.get((state_name or raw_status).upper()[:5], RECEIPT_FAILED),
                   raw_status=raw_status, error_code=fields.get("err"),
                   done_at=parse_smpp_date(fields.get("done date"), get_zone(zone)),
                   destination=e164_address(pdu.source_addr),
                   alternative_ids=_other_readings(raw_ids, primary))


def receipt_fields(text: str) -> dict[str, str]:
    """Fields before `text:` (the message excerpt after it could contain anything)."""
    standard = _STANDARD_RECEIPT.match(text)
    if standard is not None:
        return dict(zip(_STANDARD_KEYS, standard.groups()))
    return _fields_one_by_one(text)


def _fields_one_by_one(text: str) -> dict[str, str]:
    """`receipt_fields` for any layout: each known field before `text:` (the last one wins)."""
    head = _TEXT_FIELD.split(text, maxsplit=1)[0]
    return {key.lower(): value for key, value in _RECEIPT_FIELD.findall(head)}


def _other_readings(raw_ids: list[Any], primary: str) -> tuple[str, ...]:
    """Every reading of every id the receipt gives, `primary` (the first id, normalised) aside."""
    others = [normalised for normalised in map(normalise_message_id, raw_ids[1:]) if normalised != primary]
    if not others:  # the TLV and the text agree (or there is one id): the usual receipt
        return _readings(primary)
    readings = [reading for normalised in dict.fromkeys([primary, *others])
                for reading in (normalised, *_readings(normalised))]
    return tuple(dict.fromkeys(reading for reading in readings if reading and reading != primary))


def parse_smpp_date(value: str | None, zone: ZoneInfo) -> datetime | None:
    """YYMMDDhhmm[ss] in the SMSC's zone, as aware UTC; None when absent or not a date.

    SMSCs write their own wall-clock time with no offset (a Vietnamese SMSC: UTC+7), so reading
    it as UTC would put a delivery seven hours before the message was sent. Many write minutes
    only (10 digits): such a time is up to 59 s earlier than the event, which `receipts` allows for.
    """
    if not value or not value.isdigit() or len(value) not in (10, 12):
        return None
    return _smpp_date(value, zone)


@lru_cache(maxsize=4096)
def _smpp_date(digits: str, zone: ZoneInfo) -> datetime | None:
    """`parse_smpp_date` for 10 or 12 digits, remembered: the receipts of one second share their
    dates, and strptime cost more than the rest of reading a receipt. Two-digit years as strptime
    reads them (69-99 → 1900s, 00-68 → 2000s)."""
    year = int(digits[0:2])
    try:
        parsed = datetime(year + (1900 if year >= 69 else 2000), int(digits[2:4]), int(digits[4:6]),
                          int(digits[6:8]), int(digits[8:10]), int(digits[10:12] or 0), tzinfo=zone)
    except ValueError:
        return None
    return parsed.astimezone(UTC)
