"""An SMS template is rendered once when its output is only its `first_fitting` choice, and the
text is exactly what rendering it for each limit (2 GSM-7 parts, then 3 UCS-2 parts) gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifier.rendering import (
    SMS_MAX_CHARS_GSM7, SMS_MAX_CHARS_UCS2, Renderer, with_context_defaults,
)
from notifier.errors import InputError
from notifier.sms import GSM7, sms_encoding
from tests.test_rendering import TEMPLATES, TEMPLATES_DIR, empty_context, full_context


def two_renders(renderer: Renderer, name: str, context: dict[str, Any], strip: bool) -> str:
    """The rule as written: render for 2 GSM-7 parts; if the text is not GSM-7, for 3 UCS-2 parts."""
    body = ""
    for max_chars in (SMS_MAX_CHARS_GSM7, SMS_MAX_CHARS_UCS2):
        body = renderer._sms_text(name, with_context_defaults(context) | {"sms_max_chars": max_chars}, strip)
        if sms_encoding(body) == GSM7:
            break
    return body


def _contexts(template: str) -> list[dict[str, Any]]:
    long_name = full_context(template)
    long_name["threats"] = ["Mirai", "Mozi", "Gafgyt", "Emotet", "Qakbot", "Dridex"]
    return [full_context(template), empty_context(), long_name]


@pytest.mark.parametrize("strip", [False, True], ids=["diacritics", "stripped"])
@pytest.mark.parametrize("language", ["vi", "en"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_shipped_templates_render_once_with_the_same_text(template: str, language: str, strip: bool) -> None:
    renderer = Renderer(TEMPLATES_DIR)
    name = f"{language}/{template}/sms.txt.j2"
    assert renderer._choice_only(name)  # the one-render path is the one taken
    for context in _contexts(template):
        rendered = renderer.render(template, "sms", language=language, context=context, strip_sms_diacritics=strip)
        assert rendered.body == two_renders(renderer, name, context, strip)


CHOICE = '{{ ["Cảnh báo: " ~ name ~ " có mã độc, mã " ~ reference, "Canh bao " ~ reference]|first_fitting(sms_max_chars) }}'


@pytest.mark.parametrize(("source", "one_render"), [
    (CHOICE, True),
    ("Nhà mạng: " + CHOICE, True),  # text around the choice: seen at render time, rendered twice
    ("{% if sms_max_chars > 250 %}Dài {% endif %}" + CHOICE, False),  # the limit read elsewhere
    ("{% for n in [1, 2] %}" + CHOICE + "{% endfor %}", False),  # the choice made twice
    ('{% include "other.j2" %}' + CHOICE, False),
])
def test_other_templates_keep_the_two_render_rule(tmp_path: Path, source: str, one_render: bool) -> None:
    folder = tmp_path / "vi" / "notice"
    folder.mkdir(parents=True)
    (folder / "sms.txt.j2").write_text(source, encoding="utf-8")
    (tmp_path / "other.j2").write_text("Xin chào. ", encoding="utf-8")
    renderer = Renderer(tmp_path)
    name = "vi/notice/sms.txt.j2"
    assert renderer._choice_only(name) is one_render
    for context in ({"name": "Nguyễn Văn An " * 12, "reference": "CB-1-2"}, {"name": "An", "reference": "CB-7-9"}):
        for strip in (False, True):
            body = renderer.render("notice", "sms", language="vi", context=context, strip_sms_diacritics=strip).body
            assert body == two_renders(renderer, name, context, strip)


class _Spy:
    """A context value that counts how often a template reads it."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def text(self) -> str:
        self.reads += 1
        return "Canh bao ngan"


LAZY = ('{% macro first() %}{{ opening }}{% endmacro %}{% macro later_one(word) %}{{ word }} {{ spy.text }}{% endmacro %}'
        '{{ [first, later(later_one, "B"), later(later_one, "C")]|first_fitting(sms_max_chars) }}')


@pytest.mark.parametrize(("opening", "reads"), [("Cảnh báo ngắn", 0), ("x" * 400, 1)])
def test_variants_after_the_one_that_fits_are_never_rendered(tmp_path: Path, opening: str, reads: int) -> None:
    folder = tmp_path / "vi" / "notice"
    folder.mkdir(parents=True)
    (folder / "sms.txt.j2").write_text(LAZY, encoding="utf-8")
    spy = _Spy()
    renderer = Renderer(tmp_path)
    body = renderer.render("notice", "sms", language="vi", context={"opening": opening, "spy": spy}).body
    assert body == (opening if reads == 0 else "B Canh bao ngan")
    assert spy.reads == reads  # the third variant is never rendered; the second only when the first is too long
    variants = renderer.sms_variants("notice", language="vi", context={"opening": opening, "spy": spy})
    assert variants == [opening, "B Canh bao ngan", "C Canh bao ngan"]  # a check still sees them all


def test_a_later_variant_missing_a_value_is_a_template_error_naming_the_file(tmp_path: Path) -> None:
    """A deferred variant is rendered after its template's render: a value it lacks is still the
    one clear InputError, not a Jinja traceback (the row then fails as a template error)."""
    folder = tmp_path / "vi" / "notice"
    folder.mkdir(parents=True)
    (folder / "sms.txt.j2").write_text(
        '{% macro short() %}{{ missing.name }}{% endmacro %}'
        '{{ [opening, later(short)]|first_fitting(sms_max_chars) }}', encoding="utf-8")
    renderer = Renderer(tmp_path)
    assert renderer.render("notice", "sms", language="vi", context={"opening": "Cảnh báo"}).body == "Cảnh báo"
    # too long for either limit: the later variant is reached inside the render
    with pytest.raises(InputError, match=r"vi/notice/sms.txt.j2.*needs a value the context lacks"):
        renderer.render("notice", "sms", language="vi", context={"opening": "Cảnh báo " * 60})
    # fits 2 GSM-7 parts but is UCS-2 and longer than 3 UCS-2 parts: reached after the render
    with pytest.raises(InputError, match=r"vi/notice/sms.txt.j2.*needs a value the context lacks"):
        renderer.render("notice", "sms", language="vi", context={"opening": "Cảnh báo " * 25})
    with pytest.raises(InputError, match="needs a value the context lacks"):
        renderer.sms_variants("notice", language="vi", context={"opening": "x"})
