"""The shared CSV reader: physical line numbers, per-row rejections, whole-file InputErrors."""

from __future__ import annotations

import gzip
import re
import tracemalloc
from pathlib import Path

import pytest

from notifier.errors import InputError
from notifier.ingest.reader import Column, extract, parse_rows, read_rows, required_headers
from notifier.ingest.records import Rejection

TRAN_CP1258 = "Tr\u00e2\u0300n".encode("cp1258")  # "Trần" as Windows-1258 writes it


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def rows(path: Path, **kwargs: object) -> list[object]:
    return list(read_rows(path, **kwargs))  # type: ignore[arg-type]


def test_rows_are_read_by_header_name_with_physical_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", " IP ,Account_ID,Note\n1.2.3.4,A1,x\n5.6.7.8,A2,\n")
    assert rows(path, required=["ip", "account_id"]) == [
        (2, {"ip": "1.2.3.4", "account_id": "A1", "note": "x"}, "1.2.3.4,A1,x"),
        (3, {"ip": "5.6.7.8", "account_id": "A2", "note": ""}, "5.6.7.8,A2,"),
    ]


def test_values_are_trimmed_and_quoted_commas_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", 'name,address\n  Lê Thị B  ,"12 Phố Huế, Hà Nội"\n')
    [(_, row, _)] = rows(path)
    assert row == {"name": "Lê Thị B", "address": "12 Phố Huế, Hà Nội"}


def test_a_multi_line_field_keeps_later_line_numbers_physical(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", 'id,note\nA1,"two\nlines"\nA2,x\r\nA3,y\r\n')
    assert [(line, row["id"]) for line, row, _ in rows(path)] == [(2, "A1"), (4, "A2"), (5, "A3")]
    assert rows(path)[0][2] == 'A1,"two\nlines"'


def test_blank_lines_and_empty_rows_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "\nid,v\n\nA1,1\n,\n   \nA2,2\n")
    assert [(line, row["id"]) for line, row, _ in rows(path)] == [(4, "A1"), (7, "A2")]


def test_bom_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "\ufeffaccount_id,ip\nA1,1.2.3.4\n")
    assert rows(path, required=["account_id"]) == [(2, {"account_id": "A1", "ip": "1.2.3.4"}, "A1,1.2.3.4")]


@pytest.mark.parametrize("name", ["feed.csv.gz", "feed.csv"])
def test_gzip_is_recognised_by_its_magic_bytes(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, gzip.compress("\ufeffid,v\nA1,1\n".encode()))
    assert rows(path, required=["id"]) == [(2, {"id": "A1", "v": "1"}, "A1,1")]


def test_a_plain_file_named_gz_is_read_as_plain(tmp_path: Path) -> None:
    assert rows(write(tmp_path, "feed.csv.gz", "id\nA1\n")) == [(2, {"id": "A1"}, "A1")]


def test_a_wrongly_encoded_row_is_rejected_and_the_rest_goes_on(tmp_path: Path) -> None:
    content = b"id,name\nA1,Nguy\xe1\xbb\x85n\nA2," + TRAN_CP1258 + b"\nA3,L\xe9\n" + b"A4,OK\n"
    result = rows(write(tmp_path, "a.csv", content))
    assert result[0] == (2, {"id": "A1", "name": "Nguyễn"}, "A1,Nguyễn")
    assert result[1] == Rejection(3, "not valid UTF-8 (byte 0xe2 at position 6; save the file as UTF-8)",
                                  "A2,Tr\\xe2\\xccn")
    assert isinstance(result[2], Rejection) and result[2].line == 4 and "0xe9" in result[2].reason
    assert result[3] == (5, {"id": "A4", "name": "OK"}, "A4,OK")


def test_short_and_long_rows_are_rejected_with_what_is_wrong(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,ip,start,end\nA1,1.2.3.4\nA2,1.2.3.4,s,e,extra\nA3,1.2.3.4,s,e\n")
    result = rows(path)
    assert result[0] == Rejection(2, "missing column(s): start, end", "A1,1.2.3.4")
    assert result[1] == Rejection(3, "5 fields but the header has 4 (an unquoted comma?)", "A2,1.2.3.4,s,e,extra")
    assert result[2][0] == 4


def test_an_oversized_field_is_rejected_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,v\nA1," + "x" * 200_000 + "\nA2,2\n")
    result = rows(path)
    assert isinstance(result[0], Rejection) and result[0].line == 2 and "unreadable CSV" in result[0].reason
    assert len(result[0].raw) == 2000
    assert result[1] == (3, {"id": "A2", "v": "2"}, "A2,2")


def test_column_map_renames_source_headers(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "Ma_KH,So_DT\nA1,0912345678\n")
    result = rows(path, required=["account_id"], column_map={"ma_kh": "account_id", "SO_DT ": "msisdn"})
    assert result == [(2, {"account_id": "A1", "msisdn": "0912345678"}, "A1,0912345678")]


def test_missing_required_header_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "feed.csv", "timestamp,ip\n2026-11-19,1.2.3.4\n")
    with pytest.raises(InputError) as caught:
        rows(path, required=["timestamp", "src_ip", "src_port"])
    assert str(caught.value) == f"{path}: missing required column(s): src_ip, src_port"


def test_one_of_needs_at_least_one_of_the_headers(tmp_path: Path) -> None:
    path = write(tmp_path, "leak.csv", "name\nx\n")
    with pytest.raises(InputError, match="at least one of the columns: msisdn, email"):
        rows(path, one_of=["msisdn", "email"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\n\n  \n", "empty file (no header line)"),
        (b"\x00\x01\x02binary\x00", "binary data"),
        ("id,name\n".encode("utf-16"), "UTF-16"),
        (b"PK\x03\x04rest-of-a-zip", "zip archive"),
        (b"id,id\nA,B\n", "duplicate column(s): id"),
        (b"id,n\xe9m\nA,B\n", "header is not valid UTF-8"),
        (gzip.compress(b"id\n" + b"A1\n" * 1000)[:-30], "damaged gzip"),
        (b"\x1f\x8bnot really gzip", "damaged gzip"),
    ],
)
def test_unusable_files_raise_input_error(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        rows(write(tmp_path, "bad.csv", content))


def test_missing_file_and_directory_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        rows(tmp_path / "nope.csv")
    assert str(caught.value) == f"{tmp_path / 'nope.csv'}: no such file"  # the path as given
    with pytest.raises(InputError, match="cannot open"):
        rows(tmp_path)


def test_reading_streams_without_holding_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", "id,ip,note\n" + "A123456,14.160.1.2,some text here\n" * 20_000)
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_rows(path, required=["id"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 200_000  # the file is ~680 kB; reading holds about one row


def test_parse_rows_turns_a_value_error_into_a_rejection(tmp_path: Path) -> None:
    columns = (Column("n", ("n",), int, required=True), Column("note", ("note",), str, default="-"))

    def build(line: int, row: dict[str, str], raw: str) -> list[tuple[int, dict[str, object]]]:
        return [(line, extract(row, columns))]

    path = write(tmp_path, "a.csv", "n,note\n1,a\nx,b\n,c\n3,\n")
    result = list(parse_rows(path, build, required=required_headers(columns)))  # type: ignore[arg-type]
    assert result == [
        (2, {"n": 1, "note": "a"}),
        Rejection(3, "n: invalid literal for int() with base 10: 'x'", "x,b"),
        Rejection(4, "empty n", ",c"),
        (5, {"n": 3, "note": "-"}),
    ]


def test_extract_takes_the_first_non_empty_source() -> None:
    column = Column("threat", ("family", "infection", "tag"))
    assert extract({"family": "", "infection": "mirai", "tag": "x"}, [column]) == {"threat": "mirai"}
    assert extract({}, [column]) == {"threat": None}
