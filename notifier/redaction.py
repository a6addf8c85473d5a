"""Keep personal data and secrets out of free text: error lines, log records and tracebacks.

Structured code masks identifiers where it knows them (`identifiers.mask_identifier`), but an
error message, a driver's exception or a traceback quotes whatever it was given: a phone number in
a bad cell, an e-mail in a SQL parameter list, the password inside a database URL. Everything that
leaves the process as text for people therefore passes through `redact()` once, at the edge.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import TextIO

from notifier.identifiers import MASK, MASKED_MSISDN_KEEP_END, mask_email, mask_msisdn, normalise_msisdn

# A run of digit groups joined by single spaces, dots or dashes, optionally after "+" or a
# bracketed "(84)". Not preceded or followed by a word character, so hashes, ids inside words and
# masked numbers ("+8491****678") are left alone. Which groups form a number is decided after.
_DIGIT_RUN = re.compile(r"(?<![\w+*])(?:\(\+?84\)\s?|\+)?\d+(?:[ .\-]\d+)*(?![\w*])")
_GROUP = re.compile(r"(?:\(\+?84\)\s?|\+)?\d+")
MIN_PHONE_DIGITS = 9
MAX_PHONE_DIGITS = 15
# Without separators, a run that starts like a phone number (+…, 0…, 84…) is masked even when it
# is not a valid one: it may be a typo of a real number. With separators it may be a date or an
# IP address, so only a number that validates is masked.
_BARE_PHONE_SHAPE = re.compile(r"(?:\+|0|84)\d{8,14}")
# An address whose domain ends in a letter label (not "postgres@127.0.0.1"), and not the user part
# of a URL ("postgresql://app@db.example.vn").
_EMAIL = re.compile(r"(?<![\w.%+\-])(?<!://)[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_][\w\-]*")
_URL_PASSWORD = re.compile(r"(\b[a-z][\w+.\-]*://[^\s:/@]*:)([^\s@/]+)(@)", re.IGNORECASE)
HIDDEN_PASSWORD = "***"


def _masked_number(text: str) -> str | None:
    """The mask of `text` if it is one phone number (valid, or bare and phone-shaped), else None."""
    digits = sum(char.isdigit() for char in text)
    if not MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS:
        return None
    try:
        return mask_msisdn(normalise_msisdn(text))
    except ValueError:
        pass
    if not _BARE_PHONE_SHAPE.fullmatch(text):
        return None
    plus = "+" if text.startswith("+") else ""
    bare = text.removeprefix("+")
    return plus + MASK * (len(bare) - MASKED_MSISDN_KEEP_END) + bare[-MASKED_MSISDN_KEEP_END:]


def _mask_phones_in_run(match: re.Match[str]) -> str:
    """Mask the phone numbers inside one run of digit groups, longest first from the left.

    "0912 345 678 0" holds one number and a digit; "2026-11-19 21:14" holds none.
    """
    run = match.group(0)
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    pieces: list[str] = []
    done = 0  # characters of `run` already copied
    first = 0
    while first < len(groups):
        for last in range(min(len(groups), first + MAX_PHONE_DIGITS) - 1, first - 1, -1):  # a group has a digit
            start, end = groups[first][0], groups[last][1]
            masked = _masked_number(run[start:end])
            if masked is not None:
                pieces += [run[done:start], masked]
                done, first = end, last + 1
                break
        else:
            first += 1
    return "".join(pieces) + run[done:]


def _mask_email(match: re.Match[str]) -> str:
    return mask_email(match.group(0))


def mask_personal_data(text: str) -> str:
    """Mask every phone number and e-mail address found in free text.

    "gọi 0912 345 678 hoặc nguyen@example.vn" → "gọi +8491****678 hoặc n***@example.vn": the same
    masks as `identifiers.mask_msisdn` / `mask_email`, so a log line and a screen agree. Dates, IP
    addresses, ids and hashes are left as they are; masked text stays unchanged when masked again.
    """
    return _DIGIT_RUN.sub(_mask_phones_in_run, _EMAIL.sub(_mask_email, text))


def hide_url_passwords(text: str) -> str:
    """"postgresql+psycopg://app:s3cret@db/notifier" → "postgresql+psycopg://app:***@db/notifier"."""
    return _URL_PASSWORD.sub(rf"\g<1>{HIDDEN_PASSWORD}\g<3>", text)


def redact(text: str) -> str:
    """Everything `mask_personal_data` masks, plus passwords inside URLs: the one filter for output."""
    return mask_personal_data(hide_url_passwords(text))


def one_line(text: str) -> str:
    """Collapse line breaks and runs of spaces, so a message fits the one-line error contract."""
    return " ".join(text.split())


def format_exception(exc: BaseException) -> str:
    """The traceback of `exc` (with its causes), redacted: SQL parameters and messages quote data."""
    return redact("".join(traceback.format_exception(exc)))


class RedactingFormatter(logging.Formatter):
    """A logging formatter whose output (message, arguments, traceback, stack) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "notifier-redacting-stderr"


def configure_logging(*, verbose: bool, stream: TextIO | None = None) -> logging.Handler:
    """Send log records to stderr (INFO with verbose, else WARNING), redacted.

    Called once per command. It replaces the handler a previous call installed instead of adding
    another, and binds the stream current at that moment (the CLI test runner swaps stderr).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    return handler
