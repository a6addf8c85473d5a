"""The content library: every category × language renders on every channel with edge data, and
`check_templates` catches each broken rule in a deliberately broken copy of the templates."""

from __future__ import annotations

import re
import shutil
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.rendering import Renderer, tidy_plain_text, with_context_defaults
from notifier.settings import OperatorSettings
from notifier.sms import GSM7, sms_encoding
from notifier.spoken import spoken_address, spoken_code, spoken_digits, spoken_time
from notifier.template_catalog import load_catalog
from notifier.template_check import (
    BILLING_MAX_CHARS, CHANNELS, SAMPLE_REFERENCE, VOICE_STEPS_FILE, Budget, check_templates, edge_cases,
    html_problems, render_preview, sample_for_kinds, secret_problems,
)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
CATEGORIES = ("infected_device", "malware", "leaked_credentials", "data_leak", "scam_advisory", "general_advisory")
LANGUAGES = ("vi", "en")
OPERATOR = OperatorSettings(name="VNPT", hotline="18001091", website="https://vnpt.vn",
                            care_email="hotro@vnpt.vn").model_dump()
ZONE = ZoneInfo("Asia/Ho_Chi_Minh")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES_DIR)


def _check(templates_dir: Path, **budget: int) -> list[str]:
    report = check_templates(templates_dir, operator=OPERATOR, budget=Budget(**budget))
    return [str(problem) for problem in report.problems]


@pytest.fixture
def broken_copy(tmp_path: Path) -> Path:
    """A copy of the shipped templates to break one rule in."""
    return Path(shutil.copytree(TEMPLATES_DIR, tmp_path / "templates"))


# --- the library as shipped -----------------------------------------------------------------------

def test_every_category_is_in_the_catalog_with_its_feed_kinds() -> None:
    kinds = load_catalog(TEMPLATES_DIR).kinds
    assert set(CATEGORIES) <= set(kinds)
    assert kinds["malware"] == {"infected_device"} and kinds["leaked_credentials"] == {"data_leak"}
    assert kinds["scam_advisory"] == {"advisory"}
    assert kinds["general_advisory"] == {"advisory", "infected_device", "data_leak"}
    assert load_catalog(TEMPLATES_DIR).fitting({"infected_device", "data_leak"}) == ["general_advisory"]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", CATEGORIES)
def test_every_template_renders_every_channel_with_edge_data(renderer: Renderer, template: str, language: str) -> None:
    for case, context in edge_cases(OPERATOR).items():
        for channel in CHANNELS:
            preview = render_preview(renderer, template, channel, language=language, context=context)
            texts = [text for text in (preview.body, preview.subject, preview.html) if text is not None]
            assert preview.body, (case, channel)
            for text in texts:
                assert unicodedata.is_normalized("NFC", text)
                assert "None" not in text and "{{" not in text, (case, channel)
            if channel == "sms-plain":
                assert sms_encoding(preview.body) == GSM7, case
            if channel in ("sms", "sms-plain", "billing"):
                assert context["reference"] in preview.body
            if channel == "billing":
                assert len(preview.body) <= BILLING_MAX_CHARS
            if channel == "voice":
                assert spoken_code(context["reference"]) in preview.body
                assert "http" not in preview.body and not re.search(r"\d{5,}", preview.body)


STEP_WORDS = {"vi": ("Bước một: ", "Bước hai: ", "Bước ba: ", "Bước bốn: "),
              "en": ("Step one: ", "Step two: ", "Step three: ", "Step four: ")}
CARE = {"vi": "gọi tổng đài 1 8 0 0, 1 0 9 1", "en": "call 1 8 0 0, 1 0 9 1"}
NEVER_ASKS = {"vi": "{} không bao giờ yêu cầu Quý khách cung cấp mật khẩu hay mã OTP.",
              "en": "{} never asks you for a password or an OTP code."}


def _steps(renderer: Renderer, template: str, language: str, context: dict[str, object]) -> str:
    """Key 2's text as `notifier.web` renders it: the same environment, defaults and tidying."""
    name = f"{language}/{template}/{VOICE_STEPS_FILE}"
    return tidy_plain_text(renderer.env.get_template(name).render(with_context_defaults(context)))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", CATEGORIES)
def test_every_template_speaks_its_steps_with_edge_data(renderer: Renderer, template: str, language: str) -> None:
    for case, context in edge_cases(OPERATOR).items():
        steps = _steps(renderer, template, language, context)
        lines = steps.splitlines()
        numbered = [line for line in lines if line.startswith(STEP_WORDS[language])]
        assert [line.split(":")[0] for line in numbered][:4] == [w.rstrip(": ") for w in STEP_WORDS[language]], case
        assert unicodedata.is_normalized("NFC", steps) and "None" not in steps and "{{" not in steps, case
        assert not re.search(r"[a-z][a-z0-9+.-]*://|\bhttps?\b|\bwww\.", steps, re.IGNORECASE), case
        assert not re.search(r"\d{5,}", steps), case  # every number grouped for speech
        assert CARE[language] in steps and lines[-1] == NEVER_ASKS[language].format(context["operator"]["name"]), case
        assert spoken_code(context["reference"]) not in steps  # only the steps: the script has the rest


def test_vietnamese_steps_are_the_templates_own(renderer: Renderer) -> None:
    context = edge_cases(OPERATOR)["full"]
    infected = _steps(renderer, "infected_device", "vi", context)
    assert "Bước bốn: kiểm tra miễn phí địa chỉ IP của Quý khách trên trang không gian mạng chấm v n." in infected
    assert "trang web chính thức v n p t chấm v n" in infected
    scam = _steps(renderer, "scam_advisory", "vi", context)
    assert "Bước năm: báo tin nhắn rác tới số 5 6 5 6, cuộc gọi lừa đảo tới số 1 5 6." in scam
    assert "gọi tổng đài 1 8 0 0, 1 0 9 1 để xác minh" in scam


def test_shipped_templates_pass_every_rule() -> None:
    assert _check(TEMPLATES_DIR) == []


def test_vietnamese_voice_script_is_written_for_speech(renderer: Renderer) -> None:
    context = edge_cases(OPERATOR)["full"]
    voice = renderer.render("infected_device", "voice", language="vi", context=context).body
    assert "Xin chào Quý khách." in voice
    assert "gọi tổng đài 1 8 0 0, 1 0 9 1" in voice
    assert "trang web chính thức v n p t chấm v n" in voice
    assert "4 giờ 14 phút ngày 20 tháng 11 năm 2026" in voice  # 21:14 UTC, local time
    assert "Nhà mạng" not in voice and "VNPT không bao giờ yêu cầu" in voice


def test_advisory_templates_need_no_events(renderer: Renderer) -> None:
    advisory = edge_cases(OPERATOR)["advisory"]
    sms = renderer.render("scam_advisory", "sms", language="vi", context=advisory).body
    assert "Mạo danh nhân viên nhà mạng khóa SIM" in sms and "http" not in sms
    billing = renderer.render("scam_advisory", "billing", language="vi", context=advisory).body
    assert "Hướng dẫn: khonggianmang.vn/canh-bao" in billing
    assert billing.splitlines()[0] == "CẢNH BÁO LỪA ĐẢO: MẠO DANH NHÂN VIÊN NHÀ MẠNG KHÓA SIM"


def test_malware_sms_advice_fits_the_device(renderer: Renderer) -> None:
    context = sample_for_kinds({"infected_device"}, OPERATOR)
    phone = context | {"threat": {"name": "FluBot", "category": None, "description": None}, "threats": ["FluBot"]}
    unknown = context | {"threat": {"name": None, "category": None, "description": None}, "threats": []}
    assert "Gỡ ứng dụng lạ" in renderer.render("malware", "sms", language="vi", context=phone).body
    assert "Quét mã độc" in renderer.render("malware", "sms", language="vi", context=unknown).body


# --- spoken words -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "said"), [
    ("18001091", "1 8 0 0, 1 0 9 1"), ("0912345678", "0 9 1 2, 3 4 5, 6 7 8"),
    ("028 3822 1234", "0 2 8, 3 8 2 2, 1 2 3 4"), ("156", "1 5 6"), ("1234567", "1 2 3, 4 5 6 7"),
])
def test_spoken_digits(number: str, said: str) -> None:
    assert spoken_digits(number) == said


def test_spoken_code_address_and_time() -> None:
    assert spoken_code("CB-12-3456") == "C B, 1 2, 3 4 5 6"
    assert spoken_address("https://www.vnpt.vn/an-toan?x=1") == "v n p t chấm v n"
    assert spoken_address("https://khonggianmang.vn") == "không gian mạng chấm v n"
    assert spoken_address("https://example.vn", "en") == "example dot v n"
    assert spoken_time(datetime(2026, 11, 19, 21, 4, tzinfo=UTC), ZONE, "en") == "4:04 on 20 November 2026"
    assert spoken_time(date(2026, 11, 2), ZONE) == "ngày 2 tháng 11 năm 2026"
    assert spoken_time(None, ZONE) == ""


# --- each rule caught in a broken copy --------------------------------------------------------------

def _write(root: Path, relative: str, text: str) -> None:
    (root / relative).write_text(text, encoding="utf-8")


def _sms(*variants: str) -> str:
    return "{{ [" + ", ".join(repr(v) for v in variants) + "]|first_fitting(sms_max_chars) }}"


NEVER = " Nhà mạng không bao giờ yêu cầu mật khẩu/OTP. Mã {{ reference }}."


def test_an_undefined_variable_is_caught(broken_copy: Path) -> None:
    _write(broken_copy, "vi/infected_device/billing.txt.j2",
           (broken_copy / "vi/infected_device/billing.txt.j2").read_text() + "{{ operator.fax }}\n")
    problems = _check(broken_copy)
    assert problems and all(p.startswith("infected_device/vi billing [") for p in problems)
    assert "needs a value the context lacks" in problems[0] and "fax" in problems[0]


def test_an_sms_over_budget_is_caught(broken_copy: Path) -> None:
    _write(broken_copy, "vi/data_leak/sms.txt.j2", "Cảnh báo " * 18 + "{{ reference }}." + NEVER)
    problems = _check(broken_copy)
    assert any(p.startswith("data_leak/vi sms [full]: over budget: 4 UCS-2 parts") for p in problems), problems
    assert not any(p.startswith("data_leak/vi sms-plain") for p in problems)  # 2 GSM-7 parts hold


def test_the_budget_is_an_option(broken_copy: Path) -> None:
    problems = _check(broken_copy, ucs2_parts=2)
    assert any("over budget" in p and "limit 2" in p for p in problems)
    assert not any(p.startswith("data_leak/en sms-plain") for p in problems)  # 2 GSM-7 parts still hold


def test_a_variant_without_the_reference_code_is_caught(broken_copy: Path) -> None:
    _write(broken_copy, "vi/leaked_credentials/sms.txt.j2",
           "{{ [" + repr("Nhà mạng: mật khẩu bị lộ. Nhà mạng không bao giờ yêu cầu mật khẩu/OTP.")
           + ", 'Mật khẩu bị lộ. Mã ' ~ reference ~ '. Nhà mạng không bao giờ hỏi mật khẩu/OTP.']"
           "|first_fitting(sms_max_chars) }}")
    problems = _check(broken_copy)
    assert "leaked_credentials/vi sms [full]: variant 1: no reference code CB-9999-99999999" in problems


def test_a_no_diacritics_sms_that_is_not_gsm7_is_caught(broken_copy: Path) -> None:
    _write(broken_copy, "vi/malware/sms.txt.j2", "Nhà mạng ✓ cảnh báo." + NEVER)
    problems = _check(broken_copy)
    assert any(p.startswith("malware/vi sms-plain [sparse]: not pure GSM-7: ['✓']") for p in problems), problems


@pytest.mark.parametrize(("text", "message"), [
    ("Xem https://vnpt.vn/x.", "a URL scheme or link: 'https://'"),
    ("Xem bit.ly/abc123.", "a link shortener: 'bit.ly'"),
])
def test_a_link_in_an_sms_is_caught(broken_copy: Path, text: str, message: str) -> None:
    _write(broken_copy, "en/general_advisory/sms.txt.j2", text + NEVER)
    assert f"general_advisory/en sms [full]: variant 1: {message}" in _check(broken_copy)


def test_a_request_for_a_password_is_caught(broken_copy: Path) -> None:
    _write(broken_copy, "vi/scam_advisory/voice.txt.j2",
           "Quý khách vui lòng đọc mã OTP cho tổng đài viên. Mã {{ reference|spoken_code }}.")
    problems = [p for p in _check(broken_copy) if p.startswith("scam_advisory/vi voice [full]")]
    assert any("no sentence saying the operator never asks" in p for p in problems)
    assert any("seems to ask for a secret: 'quy khach vui long doc ma otp" in p for p in problems)


def test_a_warning_that_names_a_secret_is_not_an_ask() -> None:
    assert secret_problems("Không đưa mật khẩu/OTP cho ai. Nhà mạng không bao giờ hỏi mật khẩu/OTP.") == []
    assert secret_problems("Tài khoản đăng nhập và mật khẩu của Quý khách đã bị lộ. We never ask for OTPs.") == []


def test_broken_voice_steps_are_caught(broken_copy: Path) -> None:
    _write(broken_copy, "vi/malware/voice_steps.txt.j2",
           "Xem https://vnpt.vn. Gọi 18001091. {{ operator.fax }}")
    _write(broken_copy, "en/malware/voice_steps.txt.j2", "Call 18001091 or see https://vnpt.vn.")
    problems = [p for p in _check(broken_copy) if "voice-steps" in p]
    assert problems and all(p.startswith("malware/") for p in problems)
    assert any(p.startswith("malware/vi voice-steps [full]: template") and "fax" in p for p in problems)
    english = [p for p in problems if p.startswith("malware/en voice-steps [full]: ")]
    assert any("no numbered first step" in p for p in english)
    assert any("number 18001091 is not grouped for speech" in p for p in english)
    assert any("a URL scheme or link: 'https://'" in p for p in english)
    assert any("no sentence saying the operator never asks" in p for p in english)


def test_html_that_does_not_parse_is_caught(broken_copy: Path) -> None:
    path = broken_copy / "en/malware/email.html.j2"
    path.write_text(path.read_text().replace("</ol>", ""), encoding="utf-8")
    problems = _check(broken_copy)
    assert any(p.startswith("malware/en email [full]: HTML does not parse: </td> closes <ol>") for p in problems)
    assert html_problems("<p>no doctype</p>") == ["HTML does not start with <!DOCTYPE html>"]


def test_a_template_missing_from_the_catalog_is_caught(broken_copy: Path) -> None:
    shutil.copytree(broken_copy / "vi/malware", broken_copy / "vi/unlisted")
    assert "unlisted/- catalog [-]: template folder not in catalog.toml" in _check(broken_copy)


def test_preview_sample_uses_the_sample_reference() -> None:
    assert sample_for_kinds({"advisory"}, OPERATOR)["reference"] == SAMPLE_REFERENCE
    assert sample_for_kinds({"data_leak"}, OPERATOR)["threats"] == []
