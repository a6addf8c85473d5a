"""Authority requests (`ais-request/1`, formats.md "AIS request"): the envelope is checked whole, each
item on its own (a bad item is reported by its number and never quoted in clear), the same request
twice is one feed, and an advisory plans one warning per account of its segment."""

from __future__ import annotations

import gzip
import hashlib
import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from cli import app
from notifier.campaigns import create_campaign
from notifier.db import session_scope
from notifier.errors import InputError
from notifier.identifiers import email_sha256, msisdn_sha256
from notifier.importing import import_feed
from notifier.ingest.ais import parse_ais_json, read_ais_request
from notifier.ingest.records import FeedEventRecord, Rejection
from notifier.models import Account, ContactPoint, Feed, FeedItem, Notification
from notifier.template_catalog import TemplateCatalog
from tests.factories import add_account

DATA = Path(__file__).resolve().parent.parent / "data" / "ais"
REQUEST = DATA / "request_with_bad_items.json"
SAME_REQUEST = DATA / "same_request_items_first.json"  # other bytes: items first, compact, keys reversed
ADVISORY = DATA / "advisory_ftth.json"
runner = CliRunner()

EXPECTED_REJECTIONS = {
    6: "item 6: ip: not an IP address: '14.161.2.300'",
    7: "item 7: seen_at is required with an ip (an address names a subscriber only at a time)",
    8: "item 8: msisdn must be text, not a number (a number loses its leading 0: quote it)",
    9: "item 9: msisdn: not a Vietnamese phone number: '***2 34' (wrong length: a mobile number has 10 digits "
       "with the leading 0)",
    10: "item 10: email: not an e-mail address: 'n***@example' (invalid characters or length before @)",
    11: "item 11: email_sha256: not a SHA-256 hex digest (it looks like a clear e-mail or phone number, not its hash; expected 64 hexadecimal digits)",
    12: "item 12: msisdn and email in one item: send one identifier per item",
    13: "item 13: no identifier (one of ip, msisdn, email, msisdn_sha256, email_sha256)",
    14: "item 14: not an object (a string)",
    15: "item 15: port 70000 is not a port number (0-65535)",
    16: "item 16: port without ip",
    17: "item 17: seen_at: not a time: 'yesterday' (expected ISO 8601, DD/MM/YYYY hh:mm:ss or Unix seconds)",
}


def _request(path: Path, **changes: object) -> Path:
    """A copy of the sample request with envelope keys changed (None removes one)."""
    document = json.loads(REQUEST.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


# --- parsing -------------------------------------------------------------------------------------


def test_each_bad_item_is_rejected_by_its_number_and_the_good_ones_go_in() -> None:
    results = list(parse_ais_json(REQUEST))
    rejected = {r.line: r.reason for r in results if isinstance(r, Rejection)}
    assert rejected == EXPECTED_REJECTIONS
    good = [r for r in results if isinstance(r, FeedEventRecord)]
    assert [(r.line, r.identifier_kind, r.identifier) for r in good] == [
        (1, "ip", "14.161.2.3"),
        (2, "msisdn", "+84912345678"),
        (3, "email", "nguyen.van.a@example.vn"),
        (4, "msisdn_sha256", hashlib.sha256(b"84912345678").hexdigest()),
        (5, "email_sha256", hashlib.sha256(b"tran.thi.b@example.vn").hexdigest()),  # upper-case hex accepted
    ]
    first = good[0]
    assert (first.port, first.seen_at) == (51234, datetime(2026, 11, 19, 21, 14, 5, tzinfo=UTC))
    assert {(r.threat, r.category, r.kind) for r in good} == {("Mirai", "botnet", "infected_device")}


def test_rejection_reasons_never_carry_a_phone_number_or_an_e_mail_in_clear() -> None:
    reasons = " ".join(r.reason for r in parse_ais_json(REQUEST) if isinstance(r, Rejection))
    for secret in ("0912 34", "nguyen.van.a@@example", "tran.thi.b@example.vn", "912345678", "le.c@example.vn"):
        assert secret not in reasons


def test_the_envelope_is_read_whatever_the_key_order() -> None:
    first, second = read_ais_request(REQUEST), read_ais_request(SAME_REQUEST)
    assert first == second
    assert (first.request_id, first.kind, first.item_count) == ("AIS-2026-001234", "infected_device", 17)
    assert first.deadline == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # 17:00 at +07:00
    assert first.threat.advice_url == "https://khonggianmang.vn/"
    assert [r.line for r in parse_ais_json(SAME_REQUEST)] == list(range(1, 18))


def test_a_gzipped_request_with_a_bom_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "request.json.gz"
    path.write_bytes(gzip.compress(b"\xef\xbb\xbf" + REQUEST.read_bytes()))
    assert [(r.line, type(r)) for r in parse_ais_json(path)] == [(r.line, type(r)) for r in parse_ais_json(REQUEST)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"schema": "ais-request/2"}, "schema must be 'ais-request/1', not 'ais-request/2'"),
    ({"request_id": None}, "request_id is required"),
    ({"request_id": "x" * 65}, "request_id is longer than 64 characters"),
    ({"request_id": 1234}, "request_id must be text, not int"),
    ({"kind": "phishing"}, "kind must be one of infected_device, data_leak, advisory, not 'phishing'"),
    ({"deadline": "2026-11-27T17:00:00"}, "deadline '2026-11-27T17:00:00' has no zone"),
    ({"issued_at": "tomorrow"}, "issued_at: Invalid isoformat string"),
    ({"threat": {"name": "Mirai", "advice_url": "http://evil.example/x"}}, "threat.advice_url must be an https://"),
    ({"threat": "Mirai"}, "threat must be an object"),
    ({"items": None}, "a infected_device request needs an items list"),
    ({"segment": {"all": True}}, "only an advisory carries a segment"),
    ({"kind": "advisory"}, "an advisory request carries a segment, not items"),
])
def test_a_bad_envelope_refuses_the_whole_request(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    path = _request(tmp_path / "request.json", **changes)
    with pytest.raises(InputError) as caught:
        list(parse_ais_json(path))
    assert message in str(caught.value) and "nothing was imported" in str(caught.value)


@pytest.mark.parametrize(("segment", "message"), [
    (None, "an advisory needs a segment"),
    ({"region": "north"}, "unknown segment key(s) region (known: service, province, all)"),
    ({"all": True, "service": "ftth"}, 'segment "all" must be true and alone'),
    ({"service": ""}, "segment.service is empty"),
])
def test_an_advisory_segment_is_never_widened_by_a_guess(tmp_path: Path, segment: object, message: str) -> None:
    document = json.loads(ADVISORY.read_text(encoding="utf-8"))
    document["segment"] = segment
    path = tmp_path / "advisory.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_ais_request(path)


@pytest.mark.parametrize(("content", "message"), [
    (REQUEST.read_bytes()[:-40], "not a valid JSON document"),  # cut off: nothing half-imported
    (b"[1, 2]", "an AIS request is one JSON object"),
    (b'{"schema": "ais-request/1", "request_id": "A", "request_id": "B", "kind": "data_leak", "items": []}',
     "key 'request_id' appears twice"),
    (b"", "not a valid JSON document"),
])
def test_a_broken_document_is_refused_before_anything_is_read(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_ais_request(path)


def test_items_stream_without_loading_the_request(tmp_path: Path) -> None:
    """100,000 items (~6 MB of JSON) parse in a few hundred kilobytes: memory does not follow the
    file (json.load of the same file takes tens of megabytes)."""
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"items": [')
        handle.write(",".join(json.dumps({"ip": f"14.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", "port": 1000,
                                          "seen_at": "2026-11-19T21:14:05Z"}) for n in range(100_000)))
        handle.write('], "schema": "ais-request/1", "request_id": "AIS-BIG", "kind": "infected_device"}')
    tracemalloc.start()
    try:
        count = sum(1 for record in parse_ais_json(path) if isinstance(record, FeedEventRecord))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 2_000_000, peak


# --- importing -----------------------------------------------------------------------------------


def _account_with_hashes(session, ref: str, msisdn: str, *emails: str) -> Account:
    """An account whose contact points carry their SHA-256, as the subscriber import stores them."""
    account = add_account(session, ref, msisdn=None)
    contacts = [("msisdn", msisdn, msisdn_sha256(msisdn))] + [("email", e, email_sha256(e)) for e in emails]
    session.add_all([ContactPoint(account_id=account.id, kind=kind, value=value, value_sha256=digest, position=n)
                     for n, (kind, value, digest) in enumerate(contacts)])
    session.flush()
    return account


def test_import_keeps_the_envelope_and_every_item(database_url: str) -> None:
    with session_scope(database_url) as session:
        _account_with_hashes(session, "HN1", "+84912345678")
        result = import_feed(session, REQUEST, fmt="ais-json")
        feed = session.get(Feed, result.id)
        assert (result.accepted, result.rejected) == (5, 12)
        assert [error["line"] for error in result.errors] == list(range(6, 18))
        assert (feed.format, feed.kind, feed.request_id, feed.source) == (
            "ais-json", "infected_device", "AIS-2026-001234", "AIS")
        details = json.loads(feed.details)
        assert details["reference"] == "Công văn số 1234/CATTT-NCSC"
        assert details["deadline"] == "2026-11-27T10:00:00+00:00"
        assert details["threat"]["description"].startswith("Mã độc Mirai")
        items = {i.line: i for i in session.exec(select(FeedItem).where(FeedItem.feed_id == feed.id))}
        assert items[2].status == "matched" and items[4].status == "matched"  # the number and its hash
        assert items[9].status == "rejected" and "0912 34" not in (items[9].reason or "")


def test_the_same_request_twice_is_one_feed(database_url: str) -> None:
    with session_scope(database_url) as session:
        first = import_feed(session, REQUEST, fmt="ais-json")
    with session_scope(database_url) as session:
        second = import_feed(session, SAME_REQUEST, fmt="ais-json")  # other bytes, same request_id
        assert second.already_imported and second.id == first.id
        assert (second.accepted, second.rejected, second.counts) == (first.accepted, first.rejected, first.counts)
        assert second.errors == first.errors
        assert len(session.exec(select(Feed)).all()) == 1
        assert len(session.exec(select(FeedItem)).all()) == 17
        with pytest.raises(InputError, match=f"request AIS-2026-001234 is feed {first.id}"):
            import_feed(session, REQUEST, fmt="ais-json", again=True)


def test_an_unknown_zone_refuses_the_request_and_keeps_its_id_free(database_url: str) -> None:
    with session_scope(database_url) as session:
        with pytest.raises(InputError, match="Asia/Hanoi_Typo"):
            import_feed(session, REQUEST, fmt="ais-json", tz="Asia/Hanoi_Typo")
        assert session.exec(select(Feed)).all() == []
    with session_scope(database_url) as session:
        assert not import_feed(session, REQUEST, fmt="ais-json").already_imported


def test_cli_says_already_imported_and_json_gives_the_same_id(cli_db: str) -> None:
    first = runner.invoke(app, ["feed", "import", str(REQUEST), "--format", "ais-json", "--json"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["feed", "import", str(SAME_REQUEST), "--format", "ais-json", "--json"])
    assert again.exit_code == 0, again.output
    document = json.loads(again.stdout)
    assert document["id"] == json.loads(first.stdout)["id"] and document["already_imported"] is True
    text = runner.invoke(app, ["feed", "import", str(REQUEST), "--format", "ais-json"])
    assert text.exit_code == 0 and f"already imported: this request is feed {document['id']}" in text.stderr


# --- advisory ------------------------------------------------------------------------------------

ADVISORY_CATALOG = TemplateCatalog({"infected_device": frozenset({"infected_device"}),
                                    "advisory_notice": frozenset({"advisory"})})


def _subscriber(session, ref: str, *, service: str, status: str = "active", sms_opt_out: bool = False,
                province: str | None = None) -> Account:
    account = add_account(session, ref, msisdn=f"+8491234{len(ref):01d}{ref[-3:]}")
    account.service, account.status, account.sms_opt_out, account.province = service, status, sms_opt_out, province
    session.flush()
    return account


def test_an_advisory_plans_one_warning_per_account_of_its_segment(database_url: str) -> None:
    with session_scope(database_url) as session:
        ftth = _subscriber(session, "HN101", service="ftth")
        suspended = _subscriber(session, "HN102", service="ftth", status="suspended")
        terminated = _subscriber(session, "HN103", service="ftth", status="terminated")
        opted_out = _subscriber(session, "HN104", service="ftth", sms_opt_out=True)
        _subscriber(session, "HN105", service="adsl")
        result = import_feed(session, ADVISORY, fmt="ais-json")
        feed = session.get(Feed, result.id)
        assert (feed.kind, result.accepted, result.rejected) == ("advisory", 0, 0)
        with pytest.raises(InputError, match="advisory feed"):
            create_campaign(session, feed_id=feed.id, template="infected_device", channels=["sms"],
                            catalog=ADVISORY_CATALOG)
        plan = create_campaign(session, feed_id=feed.id, template="advisory_notice", channels=["sms"],
                               catalog=ADVISORY_CATALOG)
        assert (plan.accounts, plan.planned, plan.suppressed) == (3, 2, 1)
        rows = {n.account_id: n for n in session.exec(select(Notification))}
        assert set(rows) == {ftth.id, suspended.id, opted_out.id} and terminated.id not in rows
        assert rows[opted_out.id].reason == "subscriber opted out of sms"
        context = json.loads(rows[ftth.id].context)
        assert context["threat"]["name"] == "Lỗ hổng modem FTTH" and context["threats"] == ["Lỗ hổng modem FTTH"]
        assert context["advice_url"] == "https://khonggianmang.vn/"
        assert context["request"]["request_id"] == "AIS-2026-ADV-0007"
        assert rows[ftth.id].threat == "Lỗ hổng modem FTTH"


@pytest.mark.parametrize(("segment", "expected"), [
    ({"all": True}, {"HN201", "HN202", "HN203"}),
    ({"province": "Hà Nội"}, {"HN201", "HN203"}),
    ({"province": "Hà Nội", "service": "FTTH"}, {"HN201"}),
])
def test_advisory_segments(database_url: str, tmp_path: Path, segment: dict[str, object], expected: set[str]) -> None:
    document = json.loads(ADVISORY.read_text(encoding="utf-8"))
    document["segment"] = segment
    path = tmp_path / "advisory.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    with session_scope(database_url) as session:
        _subscriber(session, "HN201", service="ftth", province="Hà Nội")
        _subscriber(session, "HN202", service="ftth", province="Đà Nẵng")
        _subscriber(session, "HN203", service="mobile", province="Hà Nội")
        _subscriber(session, "HN204", service="ftth", province="Hà Nội", status="terminated")
        feed_id = import_feed(session, path, fmt="ais-json").id
        create_campaign(session, feed_id=feed_id, template="advisory_notice", channels=["sms"],
                        catalog=ADVISORY_CATALOG)
        planned = set(session.exec(select(Account.account_ref).join(
            Notification, Notification.account_id == Account.id)))
        assert planned == expected


def test_item_contacts_are_matched_like_any_feed(database_url: str) -> None:
    """Sanity: hashed and clear items reach the same account through its contact points."""
    with session_scope(database_url) as session:
        _account_with_hashes(session, "HN1", "+84912345678", "tran.thi.b@example.vn", "nguyen.van.a@example.vn")
        feed_id = import_feed(session, REQUEST, fmt="ais-json").id
        statuses = dict(session.exec(select(FeedItem.line, FeedItem.status).where(FeedItem.feed_id == feed_id)).all())
        assert [statuses[n] for n in (1, 2, 3, 4, 5)] == ["unmatched", "matched", "matched", "matched", "matched"]
