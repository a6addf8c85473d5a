"""Content is always right: one consistent story per warning, the reference code in every SMS
variant, feed text reduced to safe labels, dates printed as dates, a leak row counted once, and
leak sources named as the operator configured. Real SQLite and PostgreSQL where rows matter."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlmodel import select

from notifier.campaigns import build_context, create_campaign
from notifier.content import LINK_SUFFIXES
from notifier.db import session_scope
from notifier.dispatch.delivery import render_notification
from notifier.importing import import_assignments, import_feed, import_subscribers
from notifier.ingest.feeds import parse_leak_csv
from notifier.ingest.records import DATE_PRECISION, FeedEventRecord
from notifier.models import Account, Campaign, FeedItem, Notification
from notifier.rendering import (
    SMS_MAX_CHARS_GSM7, SMS_MAX_CHARS_UCS2, Renderer, RenderedMessage, format_localtime, leak_labels, threat_label,
    strip_diacritics, threat_list,
)
from notifier.dispatch.runtime import make_runtime
from notifier.safe_labels import MAX_THREAT_CHARS, safe_label, source_label
from notifier.settings import Settings, reset_settings
from notifier.sms import GSM7, count_parts, sms_encoding
from tests.conftest import make_settings
from tests.factories import write_csv

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
TEMPLATES = ("data_leak", "infected_device")
LANGUAGES = ("vi", "en")
REFERENCE = "CB-12-3456"
LONG_OPERATOR = "Tổng Công ty Dịch vụ Viễn thông"
OPERATORS = {
    "short": {"name": "VNPT", "hotline": "18001091", "website": "https://vnpt.vn"},
    "long": {"name": LONG_OPERATOR, "hotline": "18001091", "website": "https://vnpt.vn"},
}
OPERATOR_REST = {"care_email": "hotro@vnpt.vn", "scan_portal": "https://khonggianmang.vn",
                 "authority_name": "Cục An toàn thông tin"}
SEEN = datetime(2026, 11, 19, 21, 14, tzinfo=UTC)  # 04:14 on 20/11 in Hà Nội
PHONE_RUN = re.compile(r"\d(?:[\s().\-/]*\d){6,}")
DOTTED = re.compile(r"[\w-]+(?:\.[\w-]+)+")


def context(template: str, *, operator: str = "short", threat: str | None = "Mirai",
            threats: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A render context as `delivery.template_context` makes it, with the given feed text."""
    base: dict[str, Any] = {
        "subscriber": {"full_name": "Nguyễn Thị Minh Khai", "account_id": "HNI-0012345"},
        "threat": {"name": threat, "category": "botnet", "description": None},
        "threats": [threat] if threats is None and threat else (threats or []),
        "events": [{"identifier": "14.160.1.2", "port": 23, "seen_at": SEEN, "threat": threat}],
        "event_count": 1, "first_seen": SEEN, "last_seen": SEEN, "ip": "14.160.1.2",
        "data_classes": [], "leaked_identifier": None, "leak_source": None, "advice_url": None,
        "operator": OPERATORS[operator] | OPERATOR_REST, "reference": REFERENCE, "source_names": {},
    }
    if template == "data_leak":
        base |= {"data_classes": ["password", "phone"], "leaked_identifier": "091****678",
                 "leak_source": "forum-dump-2026", "ip": None,
                 "events": [{"identifier": "091****678", "port": None, "seen_at": SEEN, "threat": "forum-dump-2026"}]}
    return base | extra


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES_DIR)


def fits_budget(body: str) -> bool:
    """2 GSM-7 parts, or 3 UCS-2 parts when the text is not GSM-7 (e.g. with diacritics)."""
    if sms_encoding(body) == GSM7:
        return count_parts(body) <= 2 and len(body) <= SMS_MAX_CHARS_GSM7
    return count_parts(body) <= 3 and len(body) <= SMS_MAX_CHARS_UCS2


# --- 1. one warning, one consistent story ---------------------------------------------------------

def _item(line: int, threat: str | None, seen: datetime | None, ip: str = "14.160.1.2", **fields: Any) -> FeedItem:
    values: dict[str, Any] = {"id": line, "feed_id": 1, "line": line, "status": "matched", "kind": "infected_device",
                              "identifier_kind": "ip", "identifier": ip, "seen_at": seen, "threat": threat,
                              "category": "botnet", "account_id": 1}
    return FeedItem(**(values | fields))


def test_the_threat_named_is_the_one_of_the_quoted_ip_and_time() -> None:
    account = Account(id=1, account_ref="HN1", full_name="Nguyễn Văn Ánh")
    items = [
        _item(2, "mirai", datetime(2026, 11, 19, 20, tzinfo=UTC)),
        _item(3, "Mirai", datetime(2026, 11, 19, 21, tzinfo=UTC)),
        _item(4, "gafgyt", datetime(2026, 11, 19, 22, tzinfo=UTC)),
        _item(5, "mirai", datetime(2026, 11, 19, 23, tzinfo=UTC)),
        _item(6, "mozi", datetime(2026, 11, 20, 3, tzinfo=UTC), ip="14.160.1.9", category="iot"),
        _item(7, None, None),
    ]
    built = build_context(account, items)
    assert built["threat"] == {"name": "mozi", "category": "iot", "description": None}
    assert (built["ip"], built["last_seen"]) == ("14.160.1.9", "2026-11-20T03:00:00+00:00")
    assert built["threats"] == ["mozi", "mirai", "gafgyt"]  # the quoted one, then by count, once each
    assert built["event_count"] == 6


def test_sms_and_subject_name_every_threat_the_quoted_one_first(renderer: Renderer) -> None:
    several = context("infected_device", threat="mozi", threats=["mozi", "mirai", "gafgyt"])
    plain = renderer.render("infected_device", "sms", language="vi", context=several, strip_sms_diacritics=True).body
    assert "ma doc Mozi (IP 14.160.1.2, 04:14 ngay 20/11/2026) va cac ma doc Mirai, Gafgyt." in plain
    richest = renderer.sms_variants("infected_device", language="en", context=several)[0]
    assert "infected with Mozi malware (IP 14.160.1.2, 04:14 on 20 Nov) and also Mirai and Gafgyt." in richest
    english = renderer.render("infected_device", "sms", language="en", context=several).body
    assert "infected with Mozi malware (IP 14.160.1.2, 04:14 on 20 Nov) and 2 more." in english
    email = renderer.render("infected_device", "email", language="vi", context=several)
    assert email.subject.endswith("nhiễm mã độc Mozi, Mirai và Gafgyt")
    assert "- Mã độc: Mozi, Mirai và Gafgyt\n" in email.body
    assert "Mã độc: <strong>Mozi, Mirai và Gafgyt</strong>" in email.html
    english_email = renderer.render("infected_device", "email", language="en", context=several)
    assert english_email.subject.endswith("infected with malware (Mozi, Mirai and Gafgyt)")
    assert "- Malware: Mozi, Mirai and Gafgyt\n" in english_email.body


@pytest.mark.parametrize(("threats", "vi_step", "vi_wrong", "en_step"), [
    (["emotet"], "Quét mã độc máy tính", "modem", "Scan your"),
    (["mirai"], "modem/camera", "máy tính", "router"),
    (["flubot"], "Gỡ ứng dụng lạ", "modem", "Remove"),
    (["emotet", "mirai"], "modem/camera", "Windows", "router"),  # two devices: advice for both
])
def test_the_sms_advice_fits_the_device_the_threat_lives_on(
    renderer: Renderer, threats: list[str], vi_step: str, vi_wrong: str | None, en_step: str,
) -> None:
    quoted = context("infected_device", threat=threats[0], threats=threats)
    for strip in (False, True):
        body = renderer.render("infected_device", "sms", language="vi", context=quoted, strip_sms_diacritics=strip).body
        expected = strip_diacritics(vi_step) if strip else vi_step
        assert expected.lower() in body.lower(), body
        if vi_wrong:
            assert (strip_diacritics(vi_wrong) if strip else vi_wrong) not in body, body
        assert REFERENCE in body and fits_budget(body)
    english = renderer.render("infected_device", "sms", language="en", context=quoted).body
    assert en_step.lower() in english.lower() and REFERENCE in english and fits_budget(english)


def test_threats_that_do_not_fit_are_counted(renderer: Renderer) -> None:
    many = ["Mozi", "Mirai", "Gafgyt", "Hajime", "Tsunami"]
    tight = context("infected_device", operator="long", threat="Mozi", threats=many)
    body = renderer.render("infected_device", "sms", language="vi", context=tight).body
    assert "mã độc Mozi (IP 14.160.1.2, 04:14 20/11) và 4 mã độc khác." in body and fits_budget(body)
    english = renderer.render("infected_device", "sms", language="en", context=tight).body
    assert "Mozi malware found on your line (IP 14.160.1.2, 04:14 20 Nov) and 4 more." in english
    subject = renderer.render("infected_device", "email", language="vi", context=tight).subject
    assert subject.endswith("nhiễm mã độc Mozi, Mirai, Gafgyt và 2 mã độc khác")
    assert renderer.render("infected_device", "email", language="en", context=tight).subject.endswith(
        "infected with malware (Mozi, Mirai, Gafgyt and 2 more)")
    assert threat_list(["mirai", "Mirai", "MIRAI"]) == "Mirai"
    assert threat_list(["Mozi", "Mirai", "Gafgyt", "Hajime"], limit=3) == "Mozi, Mirai, Gafgyt và Hajime"


def test_contexts_planned_before_the_threats_list_still_render(renderer: Renderer) -> None:
    old = context("infected_device")
    del old["threats"], old["source_names"]
    message = renderer.render("infected_device", "email", language="vi", context=old)
    assert "- Mã độc: Mirai\n" in message.body


# --- 2. every SMS variant carries the reference code ----------------------------------------------

@pytest.mark.parametrize("operator", sorted(OPERATORS))
@pytest.mark.parametrize("strip", [False, True], ids=["diacritics", "plain"])
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("threats", [["Mirai"], ["Mirai", "Mozi", "Gafgyt", "Hajime"]], ids=["one", "several"])
def test_every_sms_variant_carries_the_reference_and_the_sent_one_fits(
    renderer: Renderer, template: str, language: str, strip: bool, operator: str, threats: list[str]
) -> None:
    values = context(template, operator=operator, threat=threats[0], threats=threats)
    variants = renderer.sms_variants(template, language=language, context=values, strip_sms_diacritics=strip)
    assert len(variants) >= 3
    for variant in variants:
        assert REFERENCE in variant, variant
    assert fits_budget(min(variants, key=len))  # the shortest always fits: it drops words, never the code
    body = renderer.render(template, "sms", language=language, context=values, strip_sms_diacritics=strip).body
    assert body in variants and REFERENCE in body and fits_budget(body), body
    assert OPERATORS[operator]["hotline"] in body
    if strip:
        assert sms_encoding(body) == GSM7 and count_parts(body) <= 2


# --- 3. feed text is reduced to a safe label ------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("mirai", "mirai"),
        ("Mirai http://evil.com/x", "Mirai"),
        ("hxxp://evil[.]com/payload", ""),
        ("Mozi www.lua-dao.vn", "Mozi"),
        ("visit evil.com now", "visit now"),
        ("Gọi 0912.345.678 để được hỗ trợ", "Gọi để được hỗ trợ"),
        ("call +84 912 345 678", "call"),
        ("mail: thief@evil.vn", "mail"),
        ("\u202eMirai\u200b\x07", "Mirai"),
        ("Trojan.Win32.Agent", "Trojan.Win32.Agent"),
        ("Android.Banker.A", "Android.Banker.A"),
        ("Trojan:Win32/Emotet", "Trojan:Win32/Emotet"),
        ("Mirai (evil.com)", "Mirai"),
        ("{Mirai}|^~€", "Mirai"),
        ("😈 http://x.io 😈", ""),
        ("1.2.3.4 Mozi", "Mozi"),
        ("Mã độc ngân hàng", "Mã độc ngân hàng"),
        (None, ""),
    ],
)
def test_safe_label(text: str | None, label: str) -> None:
    assert safe_label(text, MAX_THREAT_CHARS) == label


def test_safe_labels_are_bounded_and_known_names_keep_their_spelling() -> None:
    long_name = "Botnet " + "verylongfamilyname " * 10
    assert len(safe_label(long_name, MAX_THREAT_CHARS)) <= MAX_THREAT_CHARS
    assert safe_label(long_name, MAX_THREAT_CHARS).startswith("Botnet verylongfamilyname")
    assert threat_label("mirai") == "Mirai" and threat_label("QAKBOT http://x.com") == "QakBot"
    assert threat_label("http://evil.com") == ""
    assert leak_labels(["password", "call 0912345678"]) == ["mật khẩu", "call"]
    assert leak_labels(["www.evil.com"]) == ["thông tin khác"]


@given(st.text(max_size=300))
@hypothesis_settings(max_examples=300, deadline=None)
def test_a_safe_label_never_carries_a_link_a_number_or_a_control_character(text: str) -> None:
    label = safe_label(text, MAX_THREAT_CHARS)
    assert len(label) <= MAX_THREAT_CHARS
    assert unicodedata.is_normalized("NFC", label)
    assert not PHONE_RUN.search(label)
    assert "://" not in label and "www." not in label.lower() and "@" not in label
    assert all(not unicodedata.category(ch).startswith("C") and ord(ch) <= 0xFFFF for ch in label)
    for dotted in DOTTED.findall(label):
        assert not set(dotted.lower().split(".")[1:]) & LINK_SUFFIXES, label
    assert not label or any(ch.isalpha() for ch in label)


def test_unsafe_feed_text_falls_back_to_the_generic_word(renderer: Renderer) -> None:
    poisoned = context("infected_device", threat="http://evil.com/update", threats=["http://evil.com/update"])
    poisoned["threat"]["description"] = "Call 0912 345 678 or see evil.com"
    for language, generic in (("vi", "nhiễm mã độc (IP 14.160.1.2"), ("en", "infected with malware (IP 14.160.1.2")):
        body = renderer.render("infected_device", "sms", language=language, context=poisoned).body
        assert generic in body, body
        email = renderer.render("infected_device", "email", language=language, context=poisoned)
        for text in (body, email.subject, email.body, email.html):
            assert "evil" not in text and "0912" not in text
    vi_email = renderer.render("infected_device", "email", language="vi", context=poisoned)
    assert vi_email.subject.endswith("có dấu hiệu nhiễm mã độc")
    assert "- Mã độc: chưa xác định tên\n" in vi_email.body and "- Mô tả: Call or see\n" in vi_email.body


def test_email_bodies_print_sources_and_data_classes_as_safe_labels(renderer: Renderer) -> None:
    leak = context("data_leak", leak_source="dump from evil.com call 0912345678",
                   data_classes=["password", "see www.evil.com"],
                   events=[{"identifier": "091****678", "port": None, "seen_at": SEEN,
                            "threat": "dump from evil.com call 0912345678"}])
    for language in LANGUAGES:
        for channel in ("sms", "email"):
            message = renderer.render("data_leak", channel, language=language, context=leak)
            for text in (message.subject, message.body, message.html):
                if text:
                    assert "evil" not in text and "0912345678" not in text
        assert "dump from call" in renderer.render("data_leak", "email", language=language, context=leak).body


feed_text = st.one_of(
    st.text(max_size=100),
    st.sampled_from(["http://evil.com/" + "a" * 80, "0912 345 678 " * 8, "Ｍｉｒａｉ" * 20, "\u202e" * 50,
                     "x" * 100, "Я" * 100, "mirai", ""]),
)


@given(threats=st.lists(feed_text, max_size=12), source=feed_text, description=feed_text,
       data_classes=st.lists(feed_text, max_size=6),
       ip=st.sampled_from(["14.160.1.2", "2402:800:6310:5600:1234:5678:9abc:def0", None]),
       operator=st.sampled_from(sorted(OPERATORS)))
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_sms_budget_holds_for_any_feed(renderer: Renderer, threats: list[str], source: str, description: str,
                                          data_classes: list[str], ip: str | None, operator: str) -> None:
    for template in TEMPLATES:
        values = context(template, operator=operator, threat=threats[0] if threats else None, threats=threats,
                         ip=ip, leak_source=source, data_classes=data_classes)
        values["threat"]["description"] = description
        values["events"][0]["threat"] = source if template == "data_leak" else (threats[0] if threats else None)
        for language in LANGUAGES:
            for strip in (False, True):
                body = renderer.render(template, "sms", language=language, context=values,
                                       strip_sms_diacritics=strip).body
                assert REFERENCE in body and fits_budget(body), body


# --- 4. a day without a time prints as a date ------------------------------------------------------

def test_a_date_only_leaked_at_is_remembered(tmp_path: Path) -> None:
    path = tmp_path / "leak.csv"
    path.write_text("email,leaked_at\na@example.vn,2026-11-02\nb@example.vn,02/11/2026\n"
                    "c@example.vn,2026-11-02 10:30\nd@example.vn,\n", encoding="utf-8")
    records = [r for r in parse_leak_csv(path) if isinstance(r, FeedEventRecord)]
    assert [r.seen_precision for r in records] == [DATE_PRECISION, DATE_PRECISION, None, None]
    assert records[0].seen_at == datetime(2026, 11, 1, 17, tzinfo=UTC)  # local midnight, stored in UTC


def test_dates_format_without_a_time() -> None:
    zone = Renderer(TEMPLATES_DIR).zone
    assert format_localtime(date(2026, 11, 2), zone) == "02/11/2026"
    assert format_localtime("2026-11-02", zone) == "02/11/2026"
    assert format_localtime("2026-11-02", zone, "en") == "2 Nov 2026"
    assert format_localtime("2026-11-02", zone, style="compact") == "02/11"
    assert format_localtime("2026-11-01T17:00:00+00:00", zone) == "00:00 ngày 02/11/2026"  # a real midnight


def test_remembered_local_times_follow_the_instant_and_the_kind_of_value() -> None:
    """`format_localtime` is remembered: the same instant written in another zone gives the same
    text, a date is never mistaken for the midnight datetime that equals it in no zone, and a
    value that cannot be remembered (a list a template passed by mistake) prints nothing."""
    zone = Renderer(TEMPLATES_DIR).zone
    moment = datetime(2026, 11, 30, 3, 4, tzinfo=UTC)
    assert format_localtime(moment, zone) == "10:04 ngày 30/11/2026"
    assert format_localtime(moment.astimezone(zone), zone) == "10:04 ngày 30/11/2026"
    assert format_localtime(datetime(2026, 11, 2, tzinfo=UTC), zone) == "07:00 ngày 02/11/2026"
    assert format_localtime(date(2026, 11, 2), zone) == "02/11/2026"
    assert format_localtime(moment, zone, "en", "short") == "10:04 on 30 Nov"
    assert format_localtime(["2026-11-02"], zone) == ""  # type: ignore[arg-type]


# --- 4, 5, 6 on a real database: a leak list through import, matching, planning and rendering ----

SUBSCRIBERS = [
    ["HN1", "Nguyễn Văn Ánh", "0912345678", "anh.nguyen@example.vn"],
    ["HN2", "Trần Thị Bích Ngọc", "0987654321", "ngoc.tran@example.vn"],
]
LEAK_ROWS = [
    ["0912345678", "anh.nguyen@example.vn", "2026-11-02", "ecommerce-leak", "password;address"],  # both: one sighting
    ["", "anh.nguyen@example.vn", "2026-11-05 10:30", "forum-dump-2026", "password"],
    ["0987654321", "", "2026-11-03", "www.evil.com call 0911222333", "dob"],
]


def _plan(database_url: str, tmp_path: Path, rows: list[list[str]], template: str) -> int:
    subscribers = write_csv(tmp_path / "subscribers.csv", ["account_id", "full_name", "msisdn", "email"], SUBSCRIBERS)
    feed = write_csv(tmp_path / "leak.csv", ["msisdn", "email", "leaked_at", "source", "data_classes"], rows)
    with session_scope(database_url) as session:
        import_subscribers(session, subscribers, tz="Asia/Ho_Chi_Minh")
        imported = import_feed(session, feed, fmt="leak-csv")
        assert imported.id is not None
        return create_campaign(session, feed_id=imported.id, template=template, channels=["sms", "email"]).campaign_id


def _render_all(settings: Settings, campaign_id: int) -> dict[tuple[str, str], tuple[Notification, RenderedMessage]]:
    runtime = make_runtime(settings)
    rendered = {}
    with session_scope(settings.database_url) as session:
        campaign = session.get(Campaign, campaign_id)
        for notification, account in session.exec(
            select(Notification, Account).join(Account, Account.id == Notification.account_id)
            .where(Notification.campaign_id == campaign_id)
        ):
            message = render_notification(runtime, notification, campaign, account)
            rendered[(account.account_ref, notification.channel)] = (notification, message)
        session.expunge_all()
    return rendered


def test_a_leak_row_with_phone_and_email_is_one_sighting_and_dates_stay_dates(
    database_url: str, tmp_path: Path
) -> None:
    campaign_id = _plan(database_url, tmp_path, LEAK_ROWS, "data_leak")
    with session_scope(database_url) as session:
        items = session.exec(select(FeedItem).where(FeedItem.line == 2)).all()
        assert sorted(i.identifier_kind for i in items) == ["email", "msisdn"]  # matched on each identifier
        assert {i.status for i in items} == {"matched"} and {i.seen_precision for i in items} == {DATE_PRECISION}
    rendered = _render_all(make_settings(database_url), campaign_id)
    notification, email = rendered[("HN1", "email")]
    stored = json.loads(notification.context)
    assert stored["event_count"] == 2  # line 2 (phone + e-mail) once, line 3 once
    assert [e["seen_at"] for e in stored["events"]] == ["2026-11-02", "2026-11-05T03:30:00+00:00"]
    assert stored["events"][0]["identifier"] == "+8491****678, a***@example.vn"
    assert (stored["first_seen"], stored["last_seen"]) == ("2026-11-02", "2026-11-05T03:30:00+00:00")
    assert "- Số lần ghi nhận: 2\n" in email.body
    assert "- Ghi nhận lần đầu: 02/11/2026\n" in email.body
    assert "- Ghi nhận gần nhất: 10:30 ngày 05/11/2026\n" in email.body
    assert "00:00" not in email.body and "00:00" not in email.html
    assert "1. 02/11/2026 - +8491****678, a***@example.vn (Dữ liệu rò rỉ từ một sàn thương mại điện tử)" in email.body


def test_leak_sources_print_as_the_operator_names_them(database_url: str, tmp_path: Path) -> None:
    campaign_id = _plan(database_url, tmp_path, LEAK_ROWS, "data_leak")
    _, shipped = _render_all(make_settings(database_url), campaign_id)[("HN1", "email")]
    assert "(Dữ liệu rò rỉ từ một sàn thương mại điện tử)" in shipped.body  # config/default.toml
    assert "(forum-dump-2026)" in shipped.body  # a slug the table does not name prints as is
    settings = make_settings(database_url, source_names={"forum-dump-2026": "Một diễn đàn mua bán dữ liệu"})
    rendered = _render_all(settings, campaign_id)
    _, hn1 = rendered[("HN1", "email")]
    assert "(Một diễn đàn mua bán dữ liệu)" in hn1.body and "Một diễn đàn mua bán dữ liệu" in hn1.html
    _, hn2 = rendered[("HN2", "email")]
    assert "- Nguồn dữ liệu bị lộ: call\n" in hn2.body  # not in the table: only its safe part remains
    for _, message in rendered.values():
        for text in (message.subject, message.body, message.html):
            assert not text or ("evil" not in text and "0911222333" not in text)


def test_the_default_source_names_and_an_operator_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reset_settings()
    assert Settings().source_names["ecommerce-leak"] == "Dữ liệu rò rỉ từ một sàn thương mại điện tử"
    site = tmp_path / "site.toml"
    site.write_text('[source_names]\necommerce-leak = "Dữ liệu từ một sàn bán lẻ trực tuyến"\n', encoding="utf-8")
    monkeypatch.setenv("NOTIFIER_CONFIG", str(site))
    assert Settings().source_names == {"ecommerce-leak": "Dữ liệu từ một sàn bán lẻ trực tuyến"}
    assert source_label("ECOMMERCE-leak ", Settings().source_names) == "Dữ liệu từ một sàn bán lẻ trực tuyến"


def test_an_infected_device_campaign_tells_one_story(database_url: str, tmp_path: Path) -> None:
    subscribers = write_csv(tmp_path / "subscribers.csv", ["account_id", "full_name", "msisdn", "email"],
                            SUBSCRIBERS[:1])
    sessions = write_csv(tmp_path / "sessions.csv", ["account_id", "ip", "start", "end"], [
        ["HN1", "14.160.1.2", "2026-11-19 08:00:00", "2026-11-20 08:00:00"],
        ["HN1", "14.160.1.9", "2026-11-20 08:00:00", ""],
    ])
    feed = write_csv(tmp_path / "2026-11-20-event4_sinkhole_http-vietnam-geo_asn.csv",
                     ["timestamp", "src_ip", "src_port", "infection", "family", "tag"], [
        ["2026-11-19 20:00:00Z", "14.160.1.2", "51234", "", "mirai", ""],
        ["2026-11-19 21:00:00Z", "14.160.1.2", "51235", "", "mirai", ""],
        ["2026-11-19 22:00:00Z", "14.160.1.2", "51236", "", "mirai", ""],
        ["2026-11-20 03:00:00Z", "14.160.1.9", "40000", "", "mozi", ""],  # the latest: 10:00 local, the new IP
    ])
    with session_scope(database_url) as session:
        import_subscribers(session, subscribers, tz="Asia/Ho_Chi_Minh")
        import_assignments(session, sessions, fmt="sessions-csv", tz="Asia/Ho_Chi_Minh")
        feed_id = import_feed(session, feed, fmt="shadowserver").id
        assert feed_id is not None
        campaign_id = create_campaign(session, feed_id=feed_id, template="infected_device",
                                      channels=["sms", "email"]).campaign_id
    rendered = _render_all(make_settings(database_url), campaign_id)
    notification, sms = rendered[("HN1", "sms")]
    assert notification.threat == "mozi"
    stored = json.loads(notification.context)
    assert (stored["threat"]["name"], stored["threats"], stored["ip"]) == ("mozi", ["mozi", "mirai"], "14.160.1.9")
    assert re.search(r"mã độc Mozi \(IP 14\.160\.1\.9, 10:00 (ngày )?20/11(/2026)?\)", sms.body), sms.body
    assert "Mirai" in sms.body or "và 1 mã độc khác" in sms.body
    assert "Mirai (IP" not in sms.body
    _, email = rendered[("HN1", "email")]
    assert email.subject.endswith("nhiễm mã độc Mozi và Mirai")
    assert "- Mã độc: Mozi và Mirai\n" in email.body and "- Số lần ghi nhận: 4\n" in email.body


@pytest.mark.parametrize("language", ["en", "EN", "en-US", "en_GB"])
def test_every_word_list_reads_a_language_tag_the_same_way(language: str) -> None:
    """Dates, device advice and what a call says all take `en_GB` as English (one reading:
    `notifier.languages`), and anything unknown as Vietnamese."""
    from zoneinfo import ZoneInfo

    from notifier.devices import device_hint
    from notifier.languages import language_in, language_key
    from notifier.spoken import spoken_time

    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    moment = datetime(2026, 11, 19, 14, 14, tzinfo=UTC)
    assert language_key(language) == "en"
    assert format_localtime(moment, zone, language) == format_localtime(moment, zone, "en")
    assert device_hint("mirai", language=language) == device_hint("mirai", language="en")
    assert spoken_time(moment, zone, language) == spoken_time(moment, zone, "en") != spoken_time(moment, zone, "vi")
    assert language_in("xx-YY", {"vi", "en"}) == language_in("", {"vi", "en"}) == "vi"
    # A tag no word list knows is Vietnamese everywhere (the spoken words used to take it as English).
    assert spoken_time(moment, zone, "english") == spoken_time(moment, zone, "vi")
    assert device_hint("mirai", language="english") == device_hint("mirai", language="vi")
    assert language_key("../en") == ""
