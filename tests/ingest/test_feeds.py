"""Security feeds: Shadowserver report types and leak lists → FeedEventRecords or rejections."""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.errors import InputError
from notifier.ingest.feeds import (
    FEED_FORMATS,
    REPORT_LAYOUTS,
    get_feed_parser,
    parse_leak_csv,
    parse_shadowserver,
)
from notifier.ingest.records import FeedEventRecord, Rejection

SINKHOLE_HEADER = (
    '"timestamp","protocol","src_ip","src_port","src_asn","src_geo","device_type","dst_ip","dst_port",'
    '"infection","family","tag","application","http_url"\n'
)
SEEN = datetime(2026, 11, 19, 21, 14, 5, tzinfo=UTC)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def shadowserver(path: Path, **kwargs: object) -> list[FeedEventRecord | Rejection]:
    return list(parse_shadowserver(path, **kwargs))  # type: ignore[arg-type]


def leaks(path: Path, **kwargs: object) -> list[FeedEventRecord | Rejection]:
    return list(parse_leak_csv(path, **kwargs))  # type: ignore[arg-type]


def event(line: int, identifier_kind: str, identifier: str, raw: str, **fields: object) -> FeedEventRecord:
    defaults: dict[str, object] = {
        "port": None, "seen_at": None, "threat": None, "category": None, "kind": "infected_device",
        "data_classes": (), "source": None,
    }
    return FeedEventRecord(line=line, identifier_kind=identifier_kind, identifier=identifier, raw=raw,
                           **(defaults | fields))  # type: ignore[arg-type]


# --- Shadowserver --------------------------------------------------------------------------------

def test_sinkhole_http_report_from_its_file_name(tmp_path: Path) -> None:
    rows = [
        '"2026-11-19 21:14:05","tcp","14.161.2.3","51234","45899","VN","","1.2.3.4","80","","mirai","","",""',
        '"2026-11-19 21:14:05","tcp","14.161.2.4","","45899","VN","","1.2.3.4","80","andromeda","","x","",""',
        '"2026-11-19 21:14:05","tcp","14.161.2.5","1","45899","VN","","1.2.3.4","80","","","spam","",""',
    ]
    path = write(tmp_path, "2026-11-20-event4_sinkhole_http-vietnam-geo_asn.csv", SINKHOLE_HEADER + "\n".join(rows))
    assert shadowserver(path) == [
        event(2, "ip", "14.161.2.3", rows[0], port=51234, seen_at=SEEN, threat="mirai", category="botnet"),
        event(3, "ip", "14.161.2.4", rows[1], seen_at=SEEN, threat="andromeda", category="botnet"),
        event(4, "ip", "14.161.2.5", rows[2], port=1, seen_at=SEEN, threat="spam", category="botnet"),
    ]


def test_ipv6_sinkhole_report(tmp_path: Path) -> None:
    row = '"2026-11-19 21:14:05","udp","2402:0800:6310:5600::0001","443","","","","","","x","","","",""'
    path = write(tmp_path, "2026-11-20-event6_sinkhole-vietnam-geo.csv", SINKHOLE_HEADER + row + "\n")
    [record] = shadowserver(path)
    assert isinstance(record, FeedEventRecord)
    assert (record.identifier, record.port, record.threat) == ("2402:800:6310:5600::1", 443, "x")


def test_compromised_iot_takes_the_category_from_the_device_type(tmp_path: Path) -> None:
    header = "timestamp,ip,port,asn,geo,device_vendor,device_type,category,family,tag\n"
    rows = ["2026-11-19T21:14:05Z,14.161.9.9,23,45899,VN,Hikvision,Camera,iot,mirai,",
            "2026-11-19T21:14:05Z,14.161.9.8,,45899,VN,,,iot,,telnet-bruteforce"]
    path = write(tmp_path, "2026-11-20-compromised_iot-vietnam-geo.csv", header + "\n".join(rows) + "\n")
    assert shadowserver(path) == [
        event(2, "ip", "14.161.9.9", rows[0], port=23, seen_at=SEEN, threat="mirai", category="camera"),
        event(3, "ip", "14.161.9.8", rows[1], seen_at=SEEN, threat="telnet-bruteforce", category="iot"),
    ]


def test_compromised_account_is_a_leaked_password(tmp_path: Path) -> None:
    header = "timestamp,email,infection,service,username,extra\n"
    row = "2026-11-19 21:14:05, Nguyen.Van.A@Example.VN ,redline-stealer,facebook.com,nva,zzz"
    path = write(tmp_path, "2026-11-20-compromised_account-vietnam.csv", header + row + "\n")
    assert shadowserver(path) == [
        event(2, "email", "nguyen.van.a@example.vn", row, seen_at=SEEN, threat="redline-stealer",
              category="compromised_account", kind="data_leak", data_classes=("password",),
              source="facebook.com"),
    ]


def test_legacy_botnet_drone_with_reordered_columns_and_gzip(tmp_path: Path) -> None:
    content = "\ufeffTAG,Family,Infection,Port,IP,Timestamp\n,,conficker,445,14.161.0.1,2026-11-19 21:14:05\n"
    path = write(tmp_path, "2026-11-20-botnet_drone-vietnam.csv.gz", gzip.compress(content.encode()))
    [record] = shadowserver(path)
    assert isinstance(record, FeedEventRecord)
    assert (record.identifier, record.port, record.threat, record.category, record.seen_at) == (
        "14.161.0.1", 445, "conficker", "botnet", SEEN)


def test_every_announced_report_type_has_a_layout() -> None:
    assert set(REPORT_LAYOUTS) >= {
        "event4_sinkhole", "event6_sinkhole", "event4_microsoft_sinkhole", "event4_sinkhole_http",
        "event6_sinkhole_http", "event4_microsoft_sinkhole_http", "compromised_iot", "compromised_account",
        "botnet_drone",
    }


def test_report_type_argument_and_its_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", "timestamp,ip,port,infection\n2026-11-19 21:14:05,14.161.0.1,,x\n")
    [record] = shadowserver(path, report_type="botnet_drone")
    assert isinstance(record, FeedEventRecord) and record.identifier == "14.161.0.1"
    with pytest.raises(InputError, match="cannot tell the Shadowserver report type"):
        shadowserver(path)
    with pytest.raises(InputError, match="unknown Shadowserver report type 'scan_ftp'"):
        shadowserver(write(tmp_path, "2026-11-20-scan_ftp-vietnam.csv", "timestamp,ip\n"))


def test_broken_shadowserver_rows_are_rejected_and_the_rest_kept(tmp_path: Path) -> None:
    header = "timestamp,src_ip,src_port,family\n"
    content = (
        header.encode()
        + b"2026-11-19 21:14:05,14.161.2.3,51234,mirai\n"
        + b"2026-11-19 21:14:05,14.161.2.300,51234,mirai\n"
        + b"yesterday,14.161.2.3,51234,mirai\n"
        + b"2026-11-19 21:14:05,14.161.2.3,99999,mirai\n"
        + b"2026-11-19 21:14:05,14.161.2.3\n"
        + b"2026-11-19 21:14:05,14.161.2.3,1,Tr\xe2\xcc\n"
        + b"2026-11-19 21:14:05,,1,mirai\n"
        + b"2026-11-19 21:14:05,14.161.2.9,1,mirai\n"
    )
    result = shadowserver(write(tmp_path, "2026-11-20-event4_sinkhole-vietnam.csv", content))
    assert [(r.line, r.reason) for r in result if isinstance(r, Rejection)] == [
        (3, "src_ip: not an IP address: '14.161.2.300'"),
        (4, "timestamp: not a time: 'yesterday' (expected ISO 8601, DD/MM/YYYY hh:mm:ss or Unix seconds)"),
        (5, "src_port: not a port number: '99999'"),
        (6, "missing column(s): src_port, family"),
        (7, "not valid UTF-8 (byte 0xe2 at position 36; save the file as UTF-8)"),
        (8, "empty src_ip"),
    ]
    assert [r.line for r in result if isinstance(r, FeedEventRecord)] == [2, 9]


def test_missing_identifier_column_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "2026-11-20-event4_sinkhole-vietnam.csv", "timestamp,ip,port\n")
    with pytest.raises(InputError, match="missing required column\\(s\\): src_ip"):
        shadowserver(path)


def test_raw_text_is_bounded(tmp_path: Path) -> None:
    row = "2026-11-19 21:14:05,14.161.2.3,1,mirai," + "u" * 5000
    path = write(tmp_path, "2026-11-20-event4_sinkhole_http-x.csv", "timestamp,src_ip,src_port,family,http_url\n" + row)
    [record] = shadowserver(path)
    assert isinstance(record, FeedEventRecord) and record.raw == row[:2000]


# --- leak lists ----------------------------------------------------------------------------------

def test_leak_rows_give_one_event_per_identifier(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"84912345678").hexdigest()
    rows = [
        "01623456789,A@Example.vn,,,2026-11-19 21:14:05,forum-dump-2026,Password; Address;password",
        f",,{digest.upper()},,,,",
    ]
    path = write(tmp_path, "leak.csv",
                 "msisdn,email,msisdn_sha256,email_sha256,leaked_at,source,data_classes\n" + "\n".join(rows))
    local_seen = datetime(2026, 11, 19, 14, 14, 5, tzinfo=UTC)
    common = {"kind": "data_leak", "category": "data_leak"}
    assert leaks(path) == [
        event(2, "msisdn", "+84323456789", rows[0], seen_at=local_seen, threat="forum-dump-2026",
              source="forum-dump-2026", data_classes=("password", "address"), **common),
        event(2, "email", "a@example.vn", rows[0], seen_at=local_seen, threat="forum-dump-2026",
              source="forum-dump-2026", data_classes=("password", "address"), **common),
        event(3, "msisdn_sha256", digest, rows[1], **common),
    ]


def test_a_bad_identifier_rejects_itself_not_its_neighbour(tmp_path: Path) -> None:
    path = write(tmp_path, "leak.csv", "email,msisdn\nok@example.vn,12345\n")
    rejection, record = leaks(path)
    assert rejection == Rejection(2, "msisdn: not a Vietnamese phone number: '**345' (no leading 0, 84 or "
                                     "+country code)", "ok@example.vn,12345")
    assert isinstance(record, FeedEventRecord) and record.identifier == "ok@example.vn"


def test_broken_leak_rows(tmp_path: Path) -> None:
    content = (
        b"email_sha256,email,leaked_at\n"
        b"abc,,\n"
        b",,2026-11-19\n"
        b",x@example.vn,last year\n"
        b",Tr\xe2\xccn@example.vn,\n"
        b",y@example.vn,19/11/2026\n"
    )
    result = leaks(write(tmp_path, "leak.csv", content), tz="UTC")
    assert [(r.line, r.reason) for r in result if isinstance(r, Rejection)] == [
        (2, "email_sha256: not a SHA-256 hex digest (3 characters; expected 64 hexadecimal digits)"),
        (3, "no identifier: msisdn, email, msisdn_sha256, email_sha256 all empty"),
        (4, "leaked_at: not a time: 'last year' (expected ISO 8601, DD/MM/YYYY hh:mm:ss or Unix seconds)"),
        (5, "not valid UTF-8 (byte 0xe2 at position 4; save the file as UTF-8)"),
    ]
    [good] = [r for r in result if isinstance(r, FeedEventRecord)]
    assert (good.line, good.seen_at) == (6, datetime(2026, 11, 19, tzinfo=UTC))


def test_a_leak_list_without_any_identifier_column_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs at least one of the columns: msisdn, email"):
        leaks(write(tmp_path, "leak.csv", "name,leaked_at\nx,2026-11-19\n"))


def test_feed_registry() -> None:
    assert get_feed_parser("shadowserver") is parse_shadowserver
    assert get_feed_parser("leak-csv") is parse_leak_csv
    assert set(FEED_FORMATS) == {"shadowserver", "leak-csv", "ais-json"}
    with pytest.raises(InputError, match="unknown format 'x' \\(known: ais-json, leak-csv, shadowserver\\)"):
        get_feed_parser("x")
