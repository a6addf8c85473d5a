"""`notifier templates check` and `preview`: hold every template to the content rules before a
subscriber reads it.

The words are the product: an SMS one part over budget costs a third more, a variant without the
reference code leaves care staff blind, a no-diacritics SMS with one "ồ" left is sent as UCS-2 (or
rejected by the route), a link or a request for an OTP makes a warning look like the scam it warns
about. Each of those is a rule here, checked by rendering every template × language × channel with
edge data (long names, missing optional fields, ten threats, a leak known only by its day, an
advisory with no events) in a StrictUndefined environment, so a template that breaks on data a
feed can send fails in CI, not in front of a million subscribers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2

from notifier.errors import InputError
from notifier.rendering import Renderer, RenderedMessage, strip_diacritics, tidy_plain_text, with_context_defaults
from notifier.sms import GSM7, UCS2, count_parts, sms_encoding
from notifier.spoken import spoken_code
from notifier.template_catalog import load_catalog

DEFAULT_SMS_PARTS_UCS2 = 3  # with diacritics: 3 × 67 characters
DEFAULT_SMS_PARTS_GSM7 = 2  # without diacritics (or English): 2 × 153 characters
BILLING_MAX_CHARS = 900  # what fits the insert area of a printed bill
LANGUAGES = ("vi", "en")
CHANNELS = ("sms", "sms-plain", "email", "voice", "billing")
VOICE_STEPS_FILE = "voice_steps.txt.j2"  # optional: what key 2 of a warning call says (`notifier.web`)
VOICE_STEPS = "voice-steps"  # its name in problems
SAMPLE_REFERENCE = "CB-12-3456"
EDGE_REFERENCE = "CB-9999-99999999"  # a long campaign and notification id: the longest code we expect
LONG_OPERATOR_NAME = "Tổng Công ty Dịch vụ Viễn thông"
LONG_NAME = ("Nguyễn Thị Hồng Nhung Phương Thảo Ngọc Diệp " * 5)[:200].strip()

# Rules on text with diacritics dropped and case folded, so one pattern covers vi, en and sms-plain.
_NEVER_ASKS = re.compile(r"khong bao gio (hoi|yeu cau)|khong (dua|cung cap|gui|doc)\b[^.]{0,40}\b(mat khau|otp)"
                         r"|never (asks?|share|give)")
_ASKS_FOR_SECRET = re.compile(r"\b(gui|cung cap|(?<!dang )nhap|doc|dua|send|give|share|enter|provide|read out|reply with)\s+"
                              r"(\w+\s+){0,2}(ma\s+)?(otp|mat khau|password)")
_SAFE_CONTEXT = ("khong", "never", "not", "ke xau", "criminals", "ke ca", "even", "lua dao", "scam", "canh giac",
                 "wary", "beware", "gia danh", "mao danh", "ke gian")  # a sentence that negates or warns
_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+|\n")
_URL_SCHEME = re.compile(r"\b[a-z][a-z0-9+.-]*://|\bhttps?\b|\bwww\.", re.IGNORECASE)
SHORTENERS = ("bit.ly", "bitly.com", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly", "rb.gy",
              "cutt.ly", "shorturl.at", "tiny.cc", "s.id", "v.gd", "rebrand.ly", "t.ly", "shorte.st", "bom.so")
_SHORTENER = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(s) for s in SHORTENERS) + r")\b", re.IGNORECASE)
_UNSPOKEN_NUMBER = re.compile(r"\d{5,}")  # a voice reads "18001091" as eighteen million
_FIRST_STEP = re.compile(r"\b(buoc mot|step one)\b")  # key 2 promises steps: "Bước một: …"
_VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                            "track", "wbr"})


@dataclass(frozen=True)
class Problem:
    """One broken rule, located: `data_leak/vi sms-plain [sparse]: …`."""

    template: str
    language: str
    channel: str
    case: str
    message: str

    def __str__(self) -> str:
        return f"{self.template}/{self.language} {self.channel} [{self.case}]: {self.message}"


@dataclass
class CheckReport:
    """Every problem found, and per template × language the largest figures seen (the summary)."""

    problems: list[Problem] = field(default_factory=list)
    rows: list[dict[str, object]] = field(default_factory=list)
    renders: int = 0


@dataclass(frozen=True)
class SmsFigures:
    """What an SMS costs: its encoding, parts and length."""

    encoding: str
    parts: int
    chars: int


def sms_figures(body: str) -> SmsFigures:
    return SmsFigures("GSM-7" if sms_encoding(body) == GSM7 else "UCS-2", count_parts(body), len(body))


# --- edge data --------------------------------------------------------------------------------------

def _moment(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, 14, tzinfo=timezone.utc)


def sample_context(operator: Mapping[str, Any], *, reference: str = SAMPLE_REFERENCE,
                   source_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A realistic context with every key `campaigns.build_context` and dispatch give, times as
    dispatch hands them to templates (datetimes; a day given alone as a date)."""
    seen = _moment(19, 21)
    return {
        "subscriber": {"full_name": "Nguyễn Thị Minh Khai", "account_id": "HNI-0012345"},
        "threat": {"name": "Mirai", "category": "botnet", "description": None},
        "threats": ["Mirai"],
        "events": [{"identifier": "14.160.1.2", "port": 23, "seen_at": seen, "threat": "Mirai"}],
        "event_count": 1, "first_seen": seen, "last_seen": seen, "ip": "14.160.1.2",
        "data_classes": ["password", "phone"], "leaked_identifier": "091****678", "leak_source": "forum-dump-2026",
        "advice_url": None, "operator": dict(operator), "source_names": dict(source_names or {}),
        "reference": reference,
    }


def edge_cases(operator: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The contexts every template must survive, by name."""
    base = sample_context(operator, reference=EDGE_REFERENCE)
    threats = ["Mirai", "Mozi", "Gafgyt", "Emotet", "FluBot", "QakBot", "Hajime", "Moobot", "Tsunami", "Andromeda"]
    full = base | {
        "subscriber": {"full_name": LONG_NAME, "account_id": "HCM-" + "9" * 26},
        "threat": {"name": threats[0], "category": "botnet",
                   "description": "Mạng máy tính ma điều khiển camera và modem để tấn công từ chối dịch vụ"},
        "threats": threats,
        "events": [{"identifier": f"14.160.1.{n}", "port": 23 + n, "seen_at": _moment(10 + n, n),
                    "threat": threats[n % len(threats)]} for n in range(10)],
        "event_count": 37, "first_seen": _moment(2, 1), "last_seen": _moment(19, 21),
        "data_classes": ["password", "bank", "national_id", "dob", "address", "email", "phone", "name"],
        "leaked_identifier": "n***@example.vn", "advice_url": "https://khonggianmang.vn/canh-bao/huong-dan",
    }
    sparse = base | {
        "subscriber": {"full_name": "", "account_id": ""},
        "threat": {"name": None, "category": None, "description": None}, "threats": [], "events": [],
        "event_count": 0, "first_seen": None, "last_seen": None, "ip": None, "data_classes": [],
        "leaked_identifier": None, "leak_source": None, "advice_url": None,
    }
    day = date(2026, 11, 2)
    date_only = base | {
        "threat": {"name": None, "category": "data_leak", "description": None}, "threats": [], "ip": None,
        "events": [{"identifier": "091****678", "port": None, "seen_at": day, "threat": "forum-dump-2026"}],
        "first_seen": day, "last_seen": day,
    }
    advisory = sparse | {
        "threat": {"name": "Mạo danh nhân viên nhà mạng khóa SIM", "category": "scam",
                   "description": "Kẻ gian gọi điện xưng là nhân viên nhà mạng, dọa khóa SIM để lấy mã OTP",
                   "advice_url": "https://khonggianmang.vn/canh-bao"},
        "threats": ["Mạo danh nhân viên nhà mạng khóa SIM"], "advice_url": "https://khonggianmang.vn/canh-bao",
    }
    long_operator = full | {"operator": dict(operator) | {"name": LONG_OPERATOR_NAME}}
    return {"full": full, "sparse": sparse, "date_only": date_only, "advisory": advisory,
            "long_operator": long_operator}


# --- the rules ----------------------------------------------------------------------------------

def _folded(text: str) -> str:
    return strip_diacritics(text).casefold()


def secret_problems(text: str) -> list[str]:
    """The text must say the operator never asks for a password/OTP, and never ask for one itself
    (a sentence naming one is allowed only when it negates or warns)."""
    folded = _folded(text)
    found = [] if _NEVER_ASKS.search(folded) else ["no sentence saying the operator never asks for a password/OTP"]
    for sentence in _SENTENCE_END.split(folded):
        if _ASKS_FOR_SECRET.search(sentence) and not any(word in sentence for word in _SAFE_CONTEXT):
            found.append(f"seems to ask for a secret: {sentence.strip()[:80]!r}")
    return found


def steps_problems(text: str) -> list[str]:
    """Key 2's steps are spoken: numbered ("Bước một" / "Step one"), numbers grouped for speech, no
    link, and the operator's word that it never asks for a password/OTP."""
    found = [] if _FIRST_STEP.search(_folded(text)) else ["no numbered first step (Bước một / Step one)"]
    if (number := _UNSPOKEN_NUMBER.search(text)) is not None:
        found.append(f"number {number.group(0)} is not grouped for speech")
    return found + link_problems(text) + secret_problems(text)


def link_problems(text: str) -> list[str]:
    """No URL scheme (`http`, `https://`, `www.`) and no link shortener: addresses are typed."""
    found = []
    if _URL_SCHEME.search(text):
        found.append(f"a URL scheme or link: {_URL_SCHEME.search(text).group(0)!r}")  # type: ignore[union-attr]
    if _SHORTENER.search(text):
        found.append(f"a link shortener: {_SHORTENER.search(text).group(0)!r}")  # type: ignore[union-attr]
    return found


class _TagBalance(HTMLParser):
    """Every non-void element closed, in order: what a mail client needs to show the layout."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_ELEMENTS:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {'<' + self.stack[-1] + '>' if self.stack else 'nothing'}")
            if tag in self.stack:
                del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag):]
            return
        self.stack.pop()


def html_problems(html: str) -> list[str]:
    """The e-mail's HTML must be a document whose elements all close in order."""
    if not html.lstrip().lower().startswith("<!doctype html>"):
        return ["HTML does not start with <!DOCTYPE html>"]
    parser = _TagBalance()
    parser.feed(html)
    parser.close()
    errors = parser.errors + [f"<{tag}> never closed" for tag in parser.stack]
    return [f"HTML does not parse: {error}" for error in errors[:3]]


# --- rendering every combination ---------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """How many parts an SMS may take: with diacritics (UCS-2) and without (GSM-7)."""

    ucs2_parts: int = DEFAULT_SMS_PARTS_UCS2
    gsm7_parts: int = DEFAULT_SMS_PARTS_GSM7

    def problem(self, body: str) -> str | None:
        figures = sms_figures(body)
        limit = self.gsm7_parts if figures.encoding == "GSM-7" else self.ucs2_parts
        if figures.parts > limit:
            return f"over budget: {figures.parts} {figures.encoding} parts ({figures.chars} characters), limit {limit}"
        return None


@dataclass
class _Figures:
    """The largest figures of one template × language over the edge cases (the summary row)."""

    sms: SmsFigures = SmsFigures("GSM-7", 0, 0)
    plain: SmsFigures = SmsFigures("GSM-7", 0, 0)
    subject_chars: int = 0
    voice_words: int = 0
    steps_words: int = 0
    billing_chars: int = 0

    def row(self, template: str, language: str, cases: int) -> dict[str, object]:
        return {"template": template, "language": language, "cases": cases,
                "sms": f"{self.sms.encoding} {self.sms.parts}p {self.sms.chars}c",
                "sms-plain": f"{self.plain.encoding} {self.plain.parts}p {self.plain.chars}c",
                "subject chars": self.subject_chars, "voice words": self.voice_words,
                "steps words": self.steps_words, "billing chars": self.billing_chars}


def _widest(current: SmsFigures, body: str) -> SmsFigures:
    figures = sms_figures(body)
    return figures if (figures.parts, figures.chars) > (current.parts, current.chars) else current


class _Checker:
    """Renders one template × language × case on every channel and records what breaks."""

    def __init__(self, renderer: Renderer, budget: Budget, report: CheckReport) -> None:
        self.renderer, self.budget, self.report = renderer, budget, report

    def run(self, template: str, language: str, case: str, context: Mapping[str, Any], figures: _Figures) -> None:
        def problem(channel: str, message: str) -> None:
            self.report.problems.append(Problem(template, language, channel, case, message))

        reference = str(context["reference"])
        for strip, channel in ((False, "sms"), (True, "sms-plain")):
            rendered = self._render(template, "sms", language, context, strip, lambda m, c=channel: problem(c, m))
            if rendered is None:
                continue
            body = rendered.body
            figures.sms, figures.plain = (figures.sms, _widest(figures.plain, body)) if strip else \
                (_widest(figures.sms, body), figures.plain)
            if strip and sms_encoding(body) != GSM7:
                problem(channel, f"not pure GSM-7: {sorted({ch for ch in body if sms_encoding(ch) == UCS2})}")
            if (over := self.budget.problem(body)) is not None:
                problem(channel, over)
            variants = self._variants(template, language, context, strip) or [body]  # no choice: the text itself
            for number, variant in enumerate(variants, start=1):
                for message in self._sms_rules(variant, reference, strip):
                    problem(channel, f"variant {number}: {message}")
        rendered = self._render(template, "email", language, context, False, lambda m: problem("email", m))
        if rendered is not None:
            figures.subject_chars = max(figures.subject_chars, len(rendered.subject or ""))
            for message in self._text_rules(rendered.body, reference) + html_problems(rendered.html or "") + \
                    link_problems(rendered.subject or "") + link_problems(rendered.html or ""):
                problem("email", message)
        for channel in ("voice", "billing"):
            rendered = self._render(template, channel, language, context, False, lambda m, c=channel: problem(c, m))
            if rendered is not None:
                for message in self._plain_rules(channel, rendered.body, reference, figures):
                    problem(channel, message)
        steps = self._render_steps(template, language, context, lambda m: problem(VOICE_STEPS, m))
        if steps is not None:
            figures.steps_words = max(figures.steps_words, len(steps.split()))
            for message in steps_problems(steps):
                problem(VOICE_STEPS, message)

    def _render_steps(self, template: str, language: str, context: Mapping[str, Any],
                      problem: Callable[[str], None]) -> str | None:
        """The call's steps text as `notifier.web` renders it (same environment, context defaults and
        tidying), or None when the template has none (the call then repeats the whole script)."""
        name = f"{language}/{template}/{VOICE_STEPS_FILE}"
        if not (self.renderer.templates_dir / name).is_file():
            return None
        self.report.renders += 1
        try:
            return tidy_plain_text(self.renderer.env.get_template(name).render(with_context_defaults(context)))
        except jinja2.UndefinedError as exc:
            problem(f"template {name!r} needs a value the context lacks: {exc.message}")
        except jinja2.TemplateError as exc:
            problem(f"template error: {type(exc).__name__}: {exc}")
        return None

    def _render(self, template: str, channel: str, language: str, context: Mapping[str, Any], strip: bool,
                problem: Callable[[str], None]) -> RenderedMessage | None:
        self.report.renders += 1
        try:
            return self.renderer.render(template, channel, language=language, context=context,
                                        strip_sms_diacritics=strip)
        except InputError as exc:
            problem(str(exc))
        except jinja2.TemplateError as exc:
            problem(f"template error: {type(exc).__name__}: {exc}")
        return None

    def _variants(self, template: str, language: str, context: Mapping[str, Any], strip: bool) -> list[str]:
        try:
            return self.renderer.sms_variants(template, language=language, context=context,
                                              strip_sms_diacritics=strip)
        except (InputError, jinja2.TemplateError):
            return []  # `_render` reported it

    @staticmethod
    def _sms_rules(variant: str, reference: str, strip: bool) -> list[str]:
        found = [] if reference in variant else [f"no reference code {reference}"]
        if strip and sms_encoding(variant) != GSM7:
            found.append("not pure GSM-7")
        return found + link_problems(variant) + secret_problems(variant)

    @staticmethod
    def _text_rules(text: str, reference: str) -> list[str]:
        found = [] if reference in text else [f"no reference code {reference}"]
        return found + link_problems(text) + secret_problems(text)

    def _plain_rules(self, channel: str, text: str, reference: str, figures: _Figures) -> list[str]:
        if channel == "billing":
            figures.billing_chars = max(figures.billing_chars, len(text))
            found = self._text_rules(text, reference)
            if len(text) > BILLING_MAX_CHARS:
                found.append(f"{len(text)} characters, more than the insert's {BILLING_MAX_CHARS}")
            return found
        figures.voice_words = max(figures.voice_words, len(text.split()))
        found = [] if spoken_code(reference) in text else [f"reference {reference} not spoken ({spoken_code(reference)})"]
        if (number := _UNSPOKEN_NUMBER.search(text)) is not None:
            found.append(f"number {number.group(0)} is not grouped for speech")
        return found + link_problems(text) + secret_problems(text)


def check_templates(
    templates_dir: Path, *, operator: Mapping[str, Any], source_names: Mapping[str, str] | None = None,
    timezone_name: str = "Asia/Ho_Chi_Minh", budget: Budget | None = None,
    languages: Iterable[str] = LANGUAGES,
) -> CheckReport:
    """Render every template of the catalog × language × channel with every edge case.

    A template folder missing from `catalog.toml`, or listed there but missing, is a problem too.
    """
    renderer = Renderer(templates_dir, timezone=timezone_name)
    if not (isinstance(renderer.env.undefined, type) and issubclass(renderer.env.undefined, jinja2.StrictUndefined)):
        renderer.env.undefined = jinja2.StrictUndefined  # an undefined variable must fail here
    report = CheckReport()
    catalog = load_catalog(templates_dir)
    on_disk = set(renderer.available_templates())
    for name in sorted(on_disk - set(catalog.kinds)):
        report.problems.append(Problem(name, "-", "catalog", "-", "template folder not in catalog.toml"))
    for name in sorted(set(catalog.kinds) - on_disk):
        report.problems.append(Problem(name, "-", "catalog", "-", "listed in catalog.toml but has no folder"))
    cases = edge_cases(dict(operator))
    for case in cases.values():
        case["source_names"] = dict(source_names or {})
    checker = _Checker(renderer, budget or Budget(), report)
    for template in sorted(on_disk & set(catalog.kinds)):
        for language in languages:
            if not (Path(templates_dir) / language / template).is_dir():
                report.problems.append(Problem(template, language, "-", "-", "missing in this language"))
                continue
            figures = _Figures()
            for case, context in cases.items():
                checker.run(template, language, case, context, figures)
            report.rows.append(figures.row(template, language, len(cases)))
    return report


# --- preview -------------------------------------------------------------------------------------

ACTION_TEMPLATE_PREVIEW = "templates.preview"


@dataclass(frozen=True)
class Preview:
    """One rendered channel as `templates preview` prints it; `sms` says what an SMS costs."""

    channel: str
    body: str
    subject: str | None = None
    html: str | None = None
    sms: SmsFigures | None = None


def render_preview(renderer: Renderer, template: str, channel: str, *, language: str,
                   context: Mapping[str, Any]) -> Preview:
    """Render `template` for one of CHANNELS (`sms-plain` is the SMS without diacritics)."""
    if channel not in CHANNELS:
        raise InputError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    strip = channel == "sms-plain"
    rendered = renderer.render(template, "sms" if strip else channel, language=language, context=context,
                               strip_sms_diacritics=strip)
    figures = sms_figures(rendered.body) if channel.startswith("sms") else None
    return Preview(channel, rendered.body, rendered.subject, rendered.html, figures)


def sample_for_kinds(kinds: Iterable[str], operator: Mapping[str, Any],
                     source_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Sample data that tells the template's story: a botnet sighting, a leak, or an advisory
    (the first of those the template is written for)."""
    kinds = set(kinds)
    base = sample_context(operator, source_names=source_names)
    if "infected_device" in kinds:
        return base | {"data_classes": [], "leaked_identifier": None, "leak_source": None}
    if "data_leak" in kinds:
        seen = base["last_seen"]
        return base | {"threat": {"name": None, "category": "data_leak", "description": None}, "threats": [],
                       "ip": None, "events": [{"identifier": "091****678", "port": None, "seen_at": seen,
                                               "threat": "forum-dump-2026"}]}
    return edge_cases(operator)["advisory"] | {"reference": SAMPLE_REFERENCE,
                                               "source_names": dict(source_names or {})}


@dataclass(frozen=True)
class AccountContext:
    """An account's real context for a preview, and where it came from (for the note printed)."""

    context: dict[str, Any]
    account_ref: str
    feed_id: int | None
    events: int


def account_context(session: Any, settings: Any, *, account_ref: str, feed_id: int | None, template: str,
                    actor: str) -> AccountContext | None:
    """The context dispatch would render for this account's events in feed `feed_id` (default: the
    latest feed with events matched to it; none: no events, as for an advisory), built by the same
    functions (`campaigns.build_context`, `delivery.template_context`), with the sample reference.

    Reading an account's data is a care lookup: it is audited (`templates.preview`) in the caller's
    transaction, found or not. None when no account has that id.
    """
    import json

    import sqlalchemy as sa
    from sqlmodel import select

    from notifier.audit import record_access
    from notifier.campaigns import build_context
    from notifier.dispatch.delivery import template_context
    from notifier.dispatch.runtime import Runtime
    from notifier.models import Account, Feed, FeedItem, Notification

    account = session.exec(select(Account).where(
        sa.func.lower(Account.account_ref) == account_ref.strip().lower())).first()
    items: list[Any] = []
    if account is not None:
        matched = (FeedItem.account_id == account.id, FeedItem.status == "matched")
        if feed_id is None:
            feed_id = session.exec(select(sa.func.max(FeedItem.feed_id)).where(*matched)).one()
        if feed_id is not None:
            items = list(session.exec(select(FeedItem).where(*matched, FeedItem.feed_id == feed_id)
                                      .order_by(FeedItem.id)))
    record_access(session, actor=actor, action=ACTION_TEMPLATE_PREVIEW, target_kind="account",
                  target=account_ref.strip(), result_count=0 if account is None else 1,
                  account_refs=[account.account_ref] if account is not None else [],
                  extra={"template": template, "feed": feed_id, "events": len(items)})
    if account is None:
        return None
    built = build_context(account, items)
    feed = session.get(Feed, feed_id) if feed_id is not None else None
    _fill_advisory_threat(built, feed.details if feed is not None else None)
    notification = Notification(campaign_id=0, account_id=account.id, channel="sms",
                                context=json.dumps(built, ensure_ascii=False))
    context = template_context(notification, Runtime(settings=settings, renderer=Renderer(settings.templates_dir)))
    context["reference"] = SAMPLE_REFERENCE
    return AccountContext(context, account.account_ref, feed_id, len(items))


def _fill_advisory_threat(context: dict[str, Any], details: str | None) -> None:
    """An Authority request's threat (name, description, advice link) where the events name none:
    an advisory has no events, and its words live in the feed's `details`."""
    import json

    try:
        threat = (json.loads(details) if details else {}).get("threat") or {}
    except (ValueError, AttributeError):
        return
    current = context["threat"]
    for key in ("name", "category", "description"):
        if not current.get(key) and threat.get(key):
            current[key] = threat[key]
    if current.get("name") and not context.get("threats"):
        context["threats"] = [current["name"]]
    if not context.get("advice_url") and threat.get("advice_url"):
        context["advice_url"] = threat["advice_url"]
