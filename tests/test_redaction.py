"""Masking personal data and passwords in free text, log records and tracebacks."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.redaction import (
    RedactingFormatter,
    configure_logging,
    format_exception,
    hide_url_passwords,
    mask_personal_data,
    one_line,
    redact,
)


@pytest.mark.parametrize("text, expected", [
    ("gọi 0912345678 ngay", "gọi +8491****678 ngay"),
    ("gọi 0912 345 678 ngay", "gọi +8491****678 ngay"),
    ("0912.345.678", "+8491****678"),
    ("0912-345-678", "+8491****678"),
    ("+84912345678", "+8491****678"),
    ("84912345678", "+8491****678"),
    ("(84) 912 345 678", "+8491****678"),
    ("01212345678", "+8479****678"),  # pre-2018 11-digit MobiFone form
    ("'0123456789' (no such number range)", "'*******789' (no such number range)"),  # phone-shaped, invalid
    ("Nguyen.Van.A@Example.vn viết", "N***@Example.vn viết"),
    ("to: 'anh@example.vn', cc: binh+tag@mail.example.com.vn",
     "to: 'a***@example.vn', cc: b***@mail.example.com.vn"),
])
def test_phone_numbers_and_emails_are_masked(text: str, expected: str) -> None:
    assert mask_personal_data(text) == expected


@pytest.mark.parametrize("text", [
    "seen 2026-11-19 21:14:05 from 14.160.1.2:51234",
    "not a time: '0001-01-01 00:00:00'",
    "203.113.152.100 and 2402:800:6310:5600::1",
    "campaign 99999999999999999999 not found; epoch 1763586845",
    "digest a3f0912345678901bc5e and 0912345678abcdef",
    "line 12: not a Vietnamese phone number: '12' (wrong length)",
])
def test_dates_addresses_ids_and_hashes_are_left_alone(text: str) -> None:
    assert mask_personal_data(text) == text


def test_masking_twice_changes_nothing() -> None:
    once = mask_personal_data("0912345678, +84 987 654 321, nguyen@example.vn")
    assert once == "+8491****678, +8498****321, n***@example.vn"
    assert mask_personal_data(once) == once


@given(st.sampled_from("35789"), st.text("0123456789", min_size=8, max_size=8),
       st.sampled_from(["{}", "0{}", "+84{}", "84{}"]), st.text(max_size=20), st.text(max_size=20))
def test_no_mobile_number_survives_in_any_surrounding_text(first: str, rest: str, form: str, before: str,
                                                           after: str) -> None:
    national = first + rest
    text = f"{before} {form.format(national) if form != '{}' else '0' + national} {after}"
    assert national not in mask_personal_data(text)


@pytest.mark.parametrize("text, expected", [
    ("postgresql+psycopg://app:s3cret@db.example.vn:5432/notifier",
     "postgresql+psycopg://app:***@db.example.vn:5432/notifier"),
    ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("postgresql+psycopg://postgres@127.0.0.1/db", "postgresql+psycopg://postgres@127.0.0.1/db"),
])
def test_passwords_in_urls_are_hidden(text: str, expected: str) -> None:
    assert hide_url_passwords(text) == expected
    assert redact(text) == expected


def test_one_line_collapses_line_breaks() -> None:
    assert one_line("first\n\tsecond  third\r\n") == "first second third"


def _failure() -> ValueError:
    try:
        raise ValueError("bad row for 0912345678 at postgresql://u:pw@h/db")
    except ValueError as exc:
        return exc


def test_tracebacks_are_redacted() -> None:
    text = format_exception(_failure())
    assert text.startswith("Traceback (most recent call last):")
    assert "ValueError: bad row for +8491****678 at postgresql://u:***@h/db" in text
    assert "0912345678" not in text and ":pw@" not in text


def test_log_records_and_their_tracebacks_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_redaction.records")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("[notification:7] to %s failed", "an.nguyen@example.vn", exc_info=_failure())
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert output.startswith("WARNING [notification:7] to a***@example.vn failed\nTraceback")
    assert "an.nguyen@" not in output and "0912345678" not in output


def test_configure_logging_installs_one_redacting_handler() -> None:
    root = logging.getLogger()
    level = root.level
    first = configure_logging(verbose=False, stream=io.StringIO())
    stream = io.StringIO()
    second = configure_logging(verbose=True, stream=stream)
    try:
        assert first not in root.handlers and second in root.handlers
        assert root.level == logging.INFO
        logging.getLogger("test_redaction.root").info("SMS to 0987654321")
        assert stream.getvalue().endswith("INFO test_redaction.root: SMS to +8498****321\n")
    finally:
        root.removeHandler(second)
        root.setLevel(level)
