"""Tests for notifier.rendering and the notice templates (every template × channel × language)."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from notifier.errors import InputError
from notifier.devices import device_hint, device_kind
from notifier.rendering import (
    RenderedMessage,
    Renderer,
    data_class_label,
    first_fitting,
    format_localtime,
    human_join,
    leak_labels,
    plain_url,
    strip_diacritics,
    threat_label,
)
from notifier.sms import GSM7, UCS2, count_parts, sms_encoding

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
TEMPLATES = ("data_leak", "infected_device")
LANGUAGES = ("vi", "en")
CHANNELS = ("sms", "email")
SEEN_AT = datetime(2026, 11, 19, 21, 14, tzinfo=timezone.utc)  # 04:14 on 20/11/2026 in Hà Nội
FIRST_SEEN = datetime(2026, 11, 18, 2, 0, tzinfo=timezone.utc)
LOCAL_TIME_VI = "04:14 ngày 20/11/2026"
LOCAL_TIME_EN = "04:14 on 20 Nov 2026"
SMS_UCS2_LIMIT_CHARS = 201  # 3 concatenated UCS-2 parts of 67
SMS_GSM7_LIMIT_CHARS = 306  # 2 concatenated GSM-7 parts of 153
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
NEVER_ASKS = {
    "vi": ("không bao giờ hỏi", "không bao giờ yêu cầu", "kể cả người xưng là"),
    "en": ("never asks",),
}
# A phrase that asks for a secret; allowed only in a sentence that negates it or blames scammers.
ASKS_FOR_SECRET = re.compile(
    r"(gửi|cung cấp|nhập|đọc|đưa|send|give|share|enter|provide|read out)\s+(\w+\s+){0,2}(mã\s+)?(OTP|mật khẩu|password)",
    re.IGNORECASE,
)
SAFE_CONTEXT = ("không", "never", "kẻ xấu", "criminals", "kể cả", "even")

OPERATOR = {
    "name": "VNPT",
    "hotline": "18001091",
    "website": "https://vnpt.vn",
    "care_email": "hotro@vnpt.vn",
    "scan_portal": "https://khonggianmang.vn",
    "authority_name": "Cục An toàn thông tin",
}


def full_context(template: str, *, full_name: str = "Nguyễn Thị Minh Khai") -> dict[str, Any]:
    """A realistic context for `template`, every optional value filled."""
    base: dict[str, Any] = {
        "subscriber": {"full_name": full_name, "account_id": "HNI-0012345"},
        "event_count": 3,
        "first_seen": FIRST_SEEN,
        "last_seen": SEEN_AT,
        "operator": dict(OPERATOR),
        "advice_url": "https://vnpt.vn/an-toan-thong-tin",
        "reference": "CB-12-345",
    }
    if template == "infected_device":
        return base | {
            "threat": {"name": "Mirai", "category": "botnet", "description": "Mạng botnet IoT"},
            "events": [{"identifier": "14.160.1.2", "port": 23, "seen_at": SEEN_AT, "threat": "Mirai"}],
            "ip": "14.160.1.2",
            "data_classes": [],
            "leaked_identifier": None,
            "leak_source": None,
        }
    return base | {
        "threat": {"name": None, "category": None, "description": None},
        "events": [{"identifier": "091****678", "port": None, "seen_at": SEEN_AT, "threat": None}],
        "ip": None,
        "data_classes": ["phone", "password"],
        "leaked_identifier": "091****678",
        "leak_source": "Diễn đàn mua bán dữ liệu",
    }


def empty_context() -> dict[str, Any]:
    """Required keys only carry values; every optional one is None or empty."""
    return {
        "subscriber": {"full_name": "", "account_id": ""},
        "threat": {"name": None, "category": None, "description": None},
        "events": [],
        "event_count": 0,
        "first_seen": None,
        "last_seen": None,
        "ip": None,
        "data_classes": [],
        "leaked_identifier": None,
        "leak_source": None,
        "operator": dict(OPERATOR),
        "advice_url": None,
        "reference": "CB-12-345",
    }


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES_DIR)


def texts(message: RenderedMessage) -> list[str]:
    """Every text part a subscriber can see."""
    return [part for part in (message.subject, message.body, message.html) if part is not None]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("context_factory", [full_context, lambda _t: empty_context()], ids=["full", "empty"])
def test_every_template_renders_clean(renderer, template, channel, language, context_factory):
    message = renderer.render(template, channel, language=language, context=context_factory(template))
    assert message.body
    if channel == "email":
        assert message.subject and "\n" not in message.subject
        assert message.html and message.html.startswith("<!DOCTYPE html>")
        assert f'<html lang="{language}">' in message.html
    else:
        assert message.subject is None and message.html is None
        assert "\n" not in message.body and "  " not in message.body
    assert OPERATOR["hotline"] in message.body
    for text in texts(message):
        assert "{{" not in text and "{%" not in text and "}}" not in text
        assert "None" not in text
        assert unicodedata.is_normalized("NFC", text)
        assert "http" not in text  # addresses are given to be typed, never as links


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_email_states_the_key_facts(renderer, template, language):
    message = renderer.render(template, "email", language=language, context=full_context(template))
    local_time = LOCAL_TIME_VI if language == "vi" else LOCAL_TIME_EN
    for text in (message.body, message.html):
        for fact in ("Nguyễn Thị Minh Khai", "CB-12-345", "18001091", "vnpt.vn", "hotro@vnpt.vn", "5656", "156",
                     "Cục An toàn thông tin", local_time):
            assert fact in text, (fact, template, language)
        if template == "infected_device":
            for fact in ("Mirai", "14.160.1.2", "khonggianmang.vn"):
                assert fact in text
        else:
            for fact in ("091****678", "haveibeenpwned.com", "chongluadao.vn"):
                assert fact in text
    closing = "Trân trọng,\nVNPT" if language == "vi" else "Kind regards,\nVNPT"
    assert closing in message.body


@pytest.mark.parametrize("template", TEMPLATES)
def test_vietnamese_email_wording(renderer, template):
    message = renderer.render(template, "email", language="vi", context=full_context(template))
    assert message.body.startswith("Kính gửi Quý khách Nguyễn Thị Minh Khai,")
    assert "Chúng tôi không truy cập vào thiết bị" in message.body
    assert "không bao giờ yêu cầu Quý khách cung cấp mật khẩu, mã OTP" in message.body
    assert "1. Đổi ngay mật khẩu" in message.body
    assert "mật khẩu" in message.body and "Quý khách" in message.html


def test_infected_device_sms_vietnamese(renderer):
    body = renderer.render("infected_device", "sms", language="vi", context=full_context("infected_device")).body
    # Mirai lives on routers and cameras: the steps are theirs (the reference code is in every variant)
    for fact in ("VNPT:", "Mirai", "IP 14.160.1.2", "04:14 ngày 20/11", "Đổi mật khẩu modem/camera",
                 "cập nhật firmware", "18001091", "vnpt.vn", "mã CB-12-345", "không bao giờ"):
        assert fact in body, fact
    assert len(body) <= SMS_UCS2_LIMIT_CHARS
    assert sms_encoding(body) == UCS2 and count_parts(body) == 3


def test_data_leak_sms_vietnamese(renderer):
    body = renderer.render("data_leak", "sms", language="vi", context=full_context("data_leak")).body
    for fact in ("VNPT:", "Mật khẩu và số điện thoại", "Đổi mật khẩu", "xác thực 2 bước",
                 "cảnh giác cuộc gọi", "OTP", "18001091", "vnpt.vn"):
        assert fact in body, fact
    assert len(body) <= SMS_UCS2_LIMIT_CHARS


@pytest.mark.parametrize("template", TEMPLATES)
def test_sms_without_diacritics_is_gsm7_ascii_and_fits_two_parts(renderer, template):
    plain = renderer.render(
        template, "sms", language="vi", context=full_context(template), strip_sms_diacritics=True
    ).body
    assert plain.isascii()
    assert set(plain) <= GSM7_BASIC
    assert len(plain) <= SMS_GSM7_LIMIT_CHARS
    assert sms_encoding(plain) == GSM7 and count_parts(plain) == 2
    assert "Quy khach" in plain
    # two GSM-7 parts leave room for the richer variant: full date and the reference
    assert "CB-12-345" in plain and "khong bao gio yeu cau" in plain
    if template == "infected_device":
        assert "04:14 ngay 20/11/2026" in plain and "mat khau mac dinh" in plain
    else:
        assert "091****678" in plain


@pytest.mark.parametrize("template", TEMPLATES)
def test_english_sms_is_gsm7_and_fits_two_parts(renderer, template):
    body = renderer.render(template, "sms", language="en", context=full_context(template)).body
    assert set(body) <= GSM7_BASIC
    assert len(body) <= SMS_GSM7_LIMIT_CHARS
    assert "never asks for passwords or OTPs" in body


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_no_notice_asks_for_a_secret(renderer, template, channel, language):
    message = renderer.render(template, channel, language=language, context=full_context(template))
    if channel == "sms":
        assert any(marker in message.body for marker in NEVER_ASKS[language])
    for text in texts(message):
        for sentence in re.split(r"(?<=[.;:])\s+|\n", text):
            if ASKS_FOR_SECRET.search(sentence):
                assert any(word in sentence.lower() for word in SAFE_CONTEXT), sentence


@pytest.mark.parametrize("template", TEMPLATES)
def test_html_escapes_the_subscriber_name(renderer, template):
    context = full_context(template, full_name='<script>alert("x")</script> Lê Văn Tám')
    message = renderer.render(template, "email", language="vi", context=context)
    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    assert "Lê Văn Tám" in message.html
    assert '<script>alert("x")</script>' in message.body  # plain text is not HTML


@pytest.mark.parametrize("template", TEMPLATES)
def test_html_has_no_external_resources(renderer, template):
    html = renderer.render(template, "email", language="vi", context=full_context(template)).html
    for forbidden in ("<img", "<script", "<link", "<a ", "src=", "url("):
        assert forbidden not in html


def test_strip_diacritics():
    assert strip_diacritics("Đường Nguyễn Thị Minh Khai, Quý khách") == "Duong Nguyen Thi Minh Khai, Quy khach"
    assert strip_diacritics("đổi mật khẩu") == "doi mat khau"
    assert strip_diacritics("plain ASCII") == "plain ASCII"


def test_sms_output_is_nfc_even_for_decomposed_input(renderer):
    context = full_context("infected_device")
    context["operator"] = OPERATOR | {"name": unicodedata.normalize("NFD", "Nhà mạng")}
    body = renderer.render("infected_device", "sms", language="vi", context=context).body
    assert unicodedata.is_normalized("NFC", body)
    assert body.startswith("Nhà mạng:")


def test_unknown_template_is_an_input_error(renderer):
    with pytest.raises(InputError, match=r"unknown template 'nope' \(known: data_leak, general_advisory, infected_device, "):
        renderer.render("nope", "sms", language="vi", context=full_context("data_leak"))
    with pytest.raises(InputError, match="unknown template"):
        renderer.render("../vi/data_leak", "sms", language="vi", context=full_context("data_leak"))


def test_check_template(renderer):
    renderer.check_template("infected_device")
    with pytest.raises(InputError, match="unknown template 'botnet'"):
        renderer.check_template("botnet")


def test_unknown_channel_is_an_input_error(renderer):
    with pytest.raises(InputError, match="unknown channel 'fax'"):
        renderer.render("data_leak", "fax", language="vi", context=full_context("data_leak"))


@pytest.mark.parametrize("missing", ["operator", "reference", "subscriber"])
def test_missing_required_key_is_an_error(renderer, missing):
    context = full_context("infected_device")
    del context[missing]
    with pytest.raises(InputError, match="lacks"):
        renderer.render("infected_device", "email", language="vi", context=context)


@pytest.mark.parametrize(
    ("language", "expected_start"),
    [("vi", "VNPT: "), ("VI", "VNPT: "), ("vi-VN", "VNPT: "), ("fr", "VNPT: "), ("", "VNPT: "),
     ("en", "VNPT security alert"), ("en-US", "VNPT security alert")],
)
def test_language_fallback(renderer, language, expected_start):
    body = renderer.render("infected_device", "sms", language=language, context=full_context("infected_device")).body
    assert body.startswith(expected_start)


def test_default_language_is_configurable():
    english_first = Renderer(TEMPLATES_DIR, default_language="en")
    body = english_first.render("data_leak", "sms", language="fr", context=full_context("data_leak")).body
    assert body.startswith("VNPT security alert")


def test_available_templates(renderer, tmp_path):
    assert renderer.available_templates() == ["data_leak", "general_advisory", "infected_device",
                                              "leaked_credentials", "malware", "scam_advisory"]
    assert Renderer(tmp_path).available_templates() == []


def test_localtime_filter():
    zone = Renderer(TEMPLATES_DIR).zone
    assert format_localtime(SEEN_AT, zone) == LOCAL_TIME_VI
    assert format_localtime(datetime(2026, 11, 19, 21, 14), zone) == LOCAL_TIME_VI  # naive counts as UTC
    assert format_localtime("2026-11-19T21:14:00+00:00", zone) == LOCAL_TIME_VI
    assert format_localtime(SEEN_AT, zone, style="short") == "04:14 ngày 20/11"
    assert format_localtime(SEEN_AT, zone, style="compact") == "04:14 20/11"
    assert format_localtime(SEEN_AT, zone, "en", style="compact") == "04:14 20 Nov"
    assert format_localtime(SEEN_AT, zone, "en") == LOCAL_TIME_EN
    assert format_localtime(None, zone) == ""


@pytest.mark.parametrize(("ip", "seen", "style", "language", "expected"), [
    ("14.160.1.2", SEEN_AT, "compact", "vi", " (IP 14.160.1.2, 04:14 20/11)"),
    ("14.160.1.2", SEEN_AT, "full", "vi", f" (IP 14.160.1.2, {LOCAL_TIME_VI})"),
    ("14.160.1.2", SEEN_AT, "short", "en", " (IP 14.160.1.2, 04:14 on 20 Nov)"),
    ("", SEEN_AT, "compact", "vi", " (04:14 20/11)"),
    ("14.160.1.2", None, "compact", "vi", " (IP 14.160.1.2)"),
    ("", None, "compact", "vi", ""),
])
def test_sighting_filter_quotes_the_address_and_time(ip, seen, style, language, expected):
    template = Renderer(TEMPLATES_DIR).env.from_string("{{ ip|sighting(seen, style, language) }}")
    assert template.render(ip=ip, seen=seen, style=style, language=language) == expected


def test_localtime_follows_the_configured_zone():
    utc_renderer = Renderer(TEMPLATES_DIR, timezone="UTC")
    body = utc_renderer.render("infected_device", "email", language="vi", context=full_context("infected_device")).body
    assert "21:14 ngày 19/11/2026" in body


@pytest.mark.parametrize(
    ("code", "label"),
    [("password", "mật khẩu"), ("address", "địa chỉ"), ("national_id", "số CCCD/CMND"), ("dob", "ngày sinh"),
     ("bank", "thông tin tài khoản ngân hàng"), ("email", "địa chỉ e-mail"), ("phone", "số điện thoại"),
     ("msisdn", "số điện thoại"), ("shoe_size", "shoe_size")],
)
def test_data_class_label(code, label):
    assert data_class_label(code) == label


def test_leak_labels_order_dedupe_and_limit():
    assert leak_labels(["phone", "msisdn", "password"]) == ["mật khẩu", "số điện thoại"]
    assert leak_labels(["address", "dob", "bank"], limit=2) == [
        "thông tin tài khoản ngân hàng", "ngày sinh", "thông tin khác"
    ]
    assert human_join(["a", "b", "c"]) == "a, b và c"
    assert human_join(["a", "b"], "en") == "a and b"


@pytest.mark.parametrize(
    ("threat", "expected"),
    [
        ({"name": "Mirai", "category": "botnet"}, "bộ định tuyến (modem/router Wi-Fi), camera hoặc thiết bị IoT"),
        ({"name": "Gafgyt.B", "category": None}, "bộ định tuyến (modem/router Wi-Fi), camera hoặc thiết bị IoT"),
        ("Mozi", "bộ định tuyến (modem/router Wi-Fi), camera hoặc thiết bị IoT"),
        ({"name": None, "category": "camera"}, "bộ định tuyến (modem/router Wi-Fi), camera hoặc thiết bị IoT"),
        ({"name": "Android.Banker.FluBot", "category": "banking"}, "điện thoại Android"),
        ({"name": "Emotet", "category": None}, "máy tính chạy Windows"),
        ({"name": None, "category": None}, "máy tính, điện thoại hoặc thiết bị kết nối Internet"),
        ("Unheard-of", "máy tính, điện thoại hoặc thiết bị kết nối Internet"),
    ],
)
def test_device_hint(threat, expected):
    assert device_hint(threat) == expected


@pytest.mark.parametrize(
    ("threats", "expected"),
    [
        (["Mirai", "Mozi"], "iot"),  # one device: its advice
        (("Mirai", "Mozi"), "iot"),
        (["Mirai", "Emotet"], "default"),  # two devices: advice that covers both
        (["", "Emotet", None], "windows"),  # blanks name nothing
        ([{"name": "Mirai", "category": "botnet"}, "Mozi"], "iot"),  # mappings in the list too
        ([{"name": "Emotet"}, "Mirai"], "default"),
        ([], "default"),
    ],
)
def test_device_kind_of_a_list_of_threats(threats, expected):
    assert device_kind(threats) == expected
    assert device_kind(threats) == expected  # the remembered answer is the same


def test_plain_url():
    assert plain_url("https://vnpt.vn/") == "vnpt.vn"
    assert plain_url("http://khonggianmang.vn/kiem-tra") == "khonggianmang.vn/kiem-tra"
    assert plain_url(None) == ""


@pytest.mark.parametrize("language", LANGUAGES)
def test_long_event_lists_show_the_latest_ten(renderer, language):
    context = full_context("infected_device")
    context["events"] = [
        {"identifier": f"14.160.1.{n}", "port": None, "seen_at": SEEN_AT, "threat": None} for n in range(1, 26)
    ]
    context["event_count"] = 25
    message = renderer.render("infected_device", "email", language=language, context=context)
    summary = "10 lần gần nhất trong số 25" if language == "vi" else "latest 10 of 25"
    assert summary in message.body and summary in message.html
    for text in (message.body, message.html):
        assert re.search(r"\b14\.160\.1\.16\b", text) and re.search(r"\b14\.160\.1\.25\b", text)
        assert not re.search(r"\b14\.160\.1\.15\b", text)


def test_iso_strings_and_missing_identifiers_render(renderer):
    context = full_context("data_leak")
    context["first_seen"] = "2026-11-18T02:00:00+00:00"
    context["last_seen"] = "2026-11-19T21:14:00Z"
    context["events"] = [{"identifier": None, "port": None, "seen_at": None, "threat": None}]
    message = renderer.render("data_leak", "email", language="vi", context=context)
    assert LOCAL_TIME_VI in message.body
    assert "None" not in message.body and "None" not in message.html


OTHER_OPERATORS = [
    ("Nhà mạng", "00000000", "https://example.vn"),  # the shipped default (placeholders)
    ("Viettel", "18008098", "https://viettel.vn"),
    ("MobiFone", "18001090", "https://www.mobifone.vn"),
    ("FPT Telecom", "19006600", "https://fpt.vn"),
]


@pytest.mark.parametrize(("name", "hotline", "website"), OTHER_OPERATORS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_sms_fits_for_other_operators(renderer, template, language, name, hotline, website):
    context = full_context(template)
    context["operator"] = OPERATOR | {"name": name, "hotline": hotline, "website": website}
    for strip in (False, True):
        body = renderer.render(template, "sms", language=language, context=context, strip_sms_diacritics=strip).body
        limit = SMS_GSM7_LIMIT_CHARS if sms_encoding(body) == GSM7 else SMS_UCS2_LIMIT_CHARS
        assert len(body) <= limit, body
        assert body.startswith(name if not strip else strip_diacritics(name))
        assert hotline in body and plain_url(website) in body


def test_threat_names_are_shown_as_people_write_them(renderer):
    context = full_context("infected_device")
    context["threat"] = {"name": "mirai", "category": None, "description": None}
    body = renderer.render("infected_device", "sms", language="vi", context=context).body
    assert "mã độc Mirai" in body
    assert threat_label("mirai-http") == "Mirai-http"
    assert threat_label("QAKBOT") == "QakBot"
    assert threat_label("Android.Banker.A") == "Android.Banker.A"
    assert threat_label("unknownbot") == "Unknownbot"
    assert threat_label(None) == ""


def test_first_fitting():
    assert first_fitting(["a  long   one", "short"], 11) == "a long one"
    assert first_fitting(["a long one", "short"], 5) == "short"
    assert first_fitting(["a long one", "much longer one"], 3) == "a long one"
    assert first_fitting([], 10) == ""


def test_an_edited_template_is_rendered_once_the_renderer_looks_at_the_disk_again(tmp_path, monkeypatch):
    """Loaded templates are reused for RESOLVED_TTL_SECONDS (no stat calls per message), then the
    file is looked at again: an operator's edit reaches running workers without a restart."""
    import os
    import shutil
    import time

    import notifier.rendering as rendering

    shutil.copytree(TEMPLATES_DIR, tmp_path / "templates")
    renderer = Renderer(tmp_path / "templates")
    context = full_context("infected_device")
    first = renderer.render("infected_device", "sms", language="vi", context=context).body
    sms = tmp_path / "templates" / "vi" / "infected_device" / "sms.txt.j2"
    sms.write_text("Thông báo mới {{ reference }}", encoding="utf-8")
    later = sms.stat().st_mtime + 10
    os.utime(sms, (later, later))
    assert renderer.render("infected_device", "sms", language="vi", context=context).body == first
    now = time.monotonic() + rendering.RESOLVED_TTL_SECONDS + 1
    monkeypatch.setattr(rendering.time, "monotonic", lambda: now)
    assert renderer.render("infected_device", "sms", language="vi", context=context).body == \
        f"Thông báo mới {context['reference']}"
