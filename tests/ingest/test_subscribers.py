"""Subscriber export: input rows → SubscriberRecords, and broken rows → rejections with reasons."""

from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path

import pytest

from notifier.errors import InputError
from notifier.ingest.records import Rejection, SubscriberRecord
from notifier.ingest.subscribers import parse_subscribers

HEADER = (
    "account_id,full_name,msisdn,email,service,billing_day,language,status,"
    "sms_opt_out,email_opt_out,voice_opt_out,address,province,usernames\n"
)


def write(tmp_path: Path, content: str | bytes, name: str = "subscribers.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def parse(path: Path, **kwargs: object) -> list[SubscriberRecord | Rejection]:
    return list(parse_subscribers(path, **kwargs))  # type: ignore[arg-type]


def test_a_full_row_becomes_a_normalised_record(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + (
        'HN-100089,Nguyễn Văn An,0912.345.678;+84 1623456789,An.Nguyen@Example.vn,FTTH,5,en,Suspended,'
        '1,không,yes,"12 Phố Huế, Hai Bà Trưng",Hà Nội,hn_100089;hn_100089_v6\n'
    ))
    assert parse(path) == [SubscriberRecord(
        line=2, account_ref="HN-100089", full_name="Nguyễn Văn An",
        msisdns=("+84912345678", "+84323456789"), emails=("an.nguyen@example.vn",), service="ftth",
        billing_day=5, language="en", status="suspended", sms_opt_out=True, email_opt_out=False,
        voice_opt_out=True, address="12 Phố Huế, Hai Bà Trưng", province="Hà Nội",
        usernames=("hn_100089", "hn_100089_v6"),
    )]


def test_only_required_columns_give_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "account_id,full_name\nA1,Trần Thị Bình\n")
    assert parse(path) == [SubscriberRecord(line=2, account_ref="A1", full_name="Trần Thị Bình")]


def test_reordered_extra_and_renamed_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "So_DT,Ghi_chu,Ten_KH,Ma_KH\n0987654321;0987 654 321;;,vip,Lê Văn C,A7\n")
    mapping = {"Ma_KH": "account_id", "Ten_KH": "full_name", "So_DT": "msisdn"}
    [record] = parse(path, column_map=mapping)
    assert isinstance(record, SubscriberRecord)
    assert (record.account_ref, record.full_name, record.msisdns) == ("A7", "Lê Văn C", ("+84987654321",))


def test_decomposed_vietnamese_is_stored_composed(tmp_path: Path) -> None:
    path = write(tmp_path, "account_id,full_name\nA1," + unicodedata.normalize("NFD", "Đặng Thị Ánh") + "\n")
    [record] = parse(path)
    assert isinstance(record, SubscriberRecord) and record.full_name == "Đặng Thị Ánh"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("Có", True), ("co", True),
     ("0", False), ("false", False), ("No", False), ("không", False), ("", False)],
)
def test_opt_out_words(tmp_path: Path, text: str, expected: bool) -> None:
    [record] = parse(write(tmp_path, f"account_id,full_name,sms_opt_out\nA1,X,{text}\n"))
    assert isinstance(record, SubscriberRecord) and record.sms_opt_out is expected


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ("A1,X,,,0,", "billing_day: '0' is not a day from 1 to 28"),
        ("A1,X,,,29,", "billing_day: '29' is not a day from 1 to 28"),
        ("A1,X,,,ngày 5,", "billing_day: 'ngày 5' is not a day from 1 to 28"),
        ("A1,X,,,,closed", "status: 'closed' is not one of active, suspended, terminated"),
        (",X,,,,", "empty account_id"),
        ("A1,,,,,", "empty full_name"),
    ],
)
def test_bad_values_reject_the_row_naming_the_value(tmp_path: Path, cells: str, reason: str) -> None:
    path = write(tmp_path, "account_id,full_name,msisdn,email,billing_day,status\n" + cells + "\n")
    [rejection] = parse(path)
    assert isinstance(rejection, Rejection)
    assert rejection.line == 2
    assert rejection.reason.startswith(reason)
    assert rejection.raw == cells


def test_a_bad_number_drops_only_itself_with_a_masked_warning(tmp_path: Path) -> None:
    # Was a rejection of the whole row; the account, its good number and e-mail now go in.
    path = write(tmp_path, "account_id,full_name,msisdn,email\nA1,X,0912345;0987654321;0891123456,a@example.vn\n")
    [record] = parse(path)
    assert isinstance(record, SubscriberRecord)
    assert record.msisdns == ("+84987654321", "+84891123456")
    assert record.emails == ("a@example.vn",)
    assert record.warnings == (
        "msisdn ****345 dropped: wrong length: a mobile number has 10 digits with the leading 0",
        "msisdn +8489****456 is not in a known range; stored as given",
    )


def test_other_field_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "account_id,full_name,language,voice_opt_out\nA1,X,fr,\nA2,X,,maybe\n")
    assert [r.reason for r in parse(path)] == [  # type: ignore[union-attr]
        "language: 'fr' is not one of vi, en",
        "voice_opt_out: 'maybe' is not yes/no (1/0, true/false, có/không)",
    ]


def test_good_rows_survive_broken_ones(tmp_path: Path) -> None:
    content = (
        b"\xef\xbb\xbfaccount_id,full_name,msisdn\n"
        b"A1,Nguy\xe1\xbb\x85n A,0912345678\n"
        b"A2,Tr\xe2\xccn B,0912345679\n"  # Windows-1258 bytes
        b"A3,Ph\xe1\xba\xa1m C\n"  # a column short
        b"A4,Ho\xc3\xa0ng D,0912-345-670\n"
    )
    result = parse(write(tmp_path, gzip.compress(content), "subscribers.csv.gz"))
    assert [(type(r).__name__, r.line) for r in result] == [
        ("SubscriberRecord", 2), ("Rejection", 3), ("Rejection", 4), ("SubscriberRecord", 5),
    ]
    assert result[1].reason.startswith("not valid UTF-8")  # type: ignore[union-attr]
    assert result[2].reason == "missing column(s): msisdn"  # type: ignore[union-attr]
    assert result[3].msisdns == ("+84912345670",)  # type: ignore[union-attr]


def test_missing_required_header_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing required column"):
        parse(write(tmp_path, "account_id,msisdn\nA1,0912345678\n"))
    with pytest.raises(InputError, match="no such file"):
        parse(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="unknown time zone"):
        parse(write(tmp_path, HEADER), tz="Mars/Olympus")


def test_a_bad_address_or_a_number_without_its_0_costs_the_account_nothing(tmp_path: Path) -> None:
    """The operator's own export: a mistyped e-mail is dropped alone (the account keeps its phone),
    and a mobile number whose leading 0 a spreadsheet dropped is read back with it — each with a
    masked warning on the line."""
    path = tmp_path / "subscribers.csv"
    path.write_text("account_id,full_name,msisdn,email\n"
                    "HN1,Nguyễn Văn A,0912345678,not-an-address;a@example.vn\n"
                    "HN2,Trần Thị B,912345679,\n", encoding="utf-8")
    first, second = list(parse_subscribers(path))
    assert (first.msisdns, first.emails) == (("+84912345678",), ("a@example.vn",))
    assert first.warnings == ("email dropped: not an e-mail address: '***' (expected local-part@domain)",)
    assert second.msisdns == ("+84912345679",)
    assert second.warnings == ("msisdn +8491****679 had no leading 0 (a spreadsheet drops it); read as a mobile number",)
