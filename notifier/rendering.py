"""Turn a template name, a channel and a context into the text a subscriber receives.

One Jinja2 `Environment` for the whole service (StrictUndefined, autoescape only for `.html`
templates) and one `Renderer.render()` entry point. Templates live in
`<templates_dir>/<language>/<template>/`:

- `sms.txt.j2`: the SMS body; whitespace is collapsed to single spaces. It may offer several
  variants, richest first (`[rich, standard, compact]|first_fitting(sms_max_chars)`): the renderer
  asks for one that fits 2 GSM-7 parts, and if the text is not GSM-7, for one that fits 3 UCS-2 parts.
  Every variant carries the reference code; the last one must fit whatever a feed says.
- `email_subject.txt.j2`, `email.txt.j2`, `email.html.j2`: the e-mail.

Text from feeds (threat names, sources, data classes, descriptions) reaches a template only
through the filters that reduce it to a safe label (`notifier.safe_labels`).

Vietnamese is the product: every rendered text is returned in NFC, and the SMS can be sent
without diacritics (`strip_sms_diacritics=True`) to fit in fewer GSM-7 parts.
"""

from __future__ import annotations

import functools
import re
import time
import unicodedata
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from notifier.content import (
    CONJUNCTIONS, DATA_CLASS_LABELS, DATE_FORMATS, DATETIME_FORMATS, 
    LEAK_SEVERITY, MONTHS_EN, MORE_THREATS, OTHER_DATA,
)
from notifier.devices import device_hint, sms_advice
from notifier.errors import InputError
from notifier.languages import DEFAULT_LANGUAGE, language_key
from notifier.safe_labels import (
    MAX_DATA_CLASS_CHARS, MAX_DESCRIPTION_CHARS, safe_label, source_label, threat_label, threat_labels,
)
from notifier.sms import GSM7, sms_encoding
from notifier.spoken import spoken_address, spoken_code, spoken_digits, spoken_time

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
CHANNEL_FILES: dict[str, tuple[str, ...]] = {
    "sms": ("sms.txt.j2",),
    "email": ("email_subject.txt.j2", "email.txt.j2", "email.html.j2"),
    "voice": ("voice.txt.j2",),  # the script a call speaks (numbers and addresses written as said)
    "billing": ("billing.txt.j2",),  # the insert printed with the bill (plain lines)
}
PLAIN_TEXT_CHANNELS = ("voice", "billing")
SMS_MAX_CHARS_GSM7 = 306  # 2 concatenated GSM-7 parts of 153 characters
SMS_MAX_CHARS_UCS2 = 201  # 3 concatenated UCS-2 parts of 67 characters
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
RESOLVED_TTL_SECONDS = 5.0  # how long Renderer remembers where a template lives
_DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
VARIANTS_KEY = "_sms_variants"  # a list in the context collects every SMS variant (`sms_variants`)
_BLANK_LINES_RE = re.compile(r"\n{3,}")

# Typographic punctuation that has no GSM-7 code: folded for the no-diacritics SMS.
_PUNCTUATION_FALLBACKS = str.maketrans(
    {"–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "\u00a0": " "}
)


@dataclass(frozen=True)
class RenderedMessage:
    """What a channel sends: an SMS has only `body`; an e-mail has all three."""

    body: str
    subject: str | None = None
    html: str | None = None


def strip_diacritics(text: str) -> str:
    """Vietnamese without diacritics: đ→d and Đ→D first (NFD keeps them), then drop combining marks."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", kept)


def collapse_whitespace(text: str) -> str:
    """One line: every run of whitespace becomes one space, ends stripped."""
    return " ".join(text.split())


def tidy_plain_text(text: str) -> str:
    """Plain-text e-mail: no trailing spaces, at most one blank line in a row, NFC."""
    lines = (line.rstrip() for line in text.strip().splitlines())
    joined = _BLANK_LINES_RE.sub("\n\n", "\n".join(lines))
    return unicodedata.normalize("NFC", joined)


def parse_moment(value: object) -> datetime | date | None:
    """A context time as templates want it: `2026-11-02` (a date known without its time) → date,
    any other ISO 8601 string → datetime; datetimes and dates pass; anything else → None."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not value:
        return None
    if _DATE_ONLY_RE.match(value):
        return date.fromisoformat(value)
    return datetime.fromisoformat(value)


def _as_utc(value: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime or ISO-8601 string; naive values count as UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt_timezone.utc)
    return value.astimezone(dt_timezone.utc)


def format_localtime(
    value: datetime | str | None, zone: ZoneInfo, language: str = DEFAULT_LANGUAGE, style: str = "full"
) -> str:
    """`21:14 ngày 19/11/2026` (vi) or `21:14 on 19 Nov 2026` (en) in `zone`; None → ``.

    `style` "short" drops the year (`21:14 ngày 19/11`), "compact" also the words (`21:14 19/11`).
    A date without a time (`date`, or an ISO `2026-11-02`) prints as a date (`02/11/2026`): it is
    already the subscriber's local day, and a made-up "00:00" would claim a time nobody gave.
    Remembered (a pure function): an SMS template formats the same time once per variant it tries.
    """
    try:
        return _remembered_localtime(value, zone, language, style)
    except TypeError:  # not hashable (a template passed a list): `parse_moment` decides
        return _local_text(value, zone, language, style)


@functools.lru_cache(maxsize=1024)
def _remembered_localtime(value: object, zone: ZoneInfo, language: str, style: str) -> str:
    return _local_text(value, zone, language, style)


def _local_text(value: object, zone: ZoneInfo, language: str, style: str) -> str:
    moment = parse_moment(value)
    if moment is None:
        return ""
    formats = DATETIME_FORMATS
    if isinstance(moment, datetime):
        local: date = _as_utc(moment).astimezone(zone)
    else:
        local, formats = moment, DATE_FORMATS
    styles = formats.get(language_key(language), formats[DEFAULT_LANGUAGE])
    pattern = styles.get(style, styles["full"])
    return pattern.format(
        hm=local.strftime("%H:%M"), d=local.day, m=local.month, y=local.year, mon=MONTHS_EN[local.month - 1]
    )


def data_class_label(code: str, language: str = DEFAULT_LANGUAGE) -> str:
    """The subscriber-facing name of a leaked data class (`national_id` → `số CCCD/CMND`); a code
    we do not know is feed text, printed only as a safe label ("" if none remains)."""
    labels = DATA_CLASS_LABELS.get(language_key(language), DATA_CLASS_LABELS[DEFAULT_LANGUAGE])
    return labels.get(code.strip().lower()) or safe_label(code, MAX_DATA_CLASS_CHARS)


def leak_labels(codes: Iterable[str], language: str = DEFAULT_LANGUAGE, limit: int | None = None) -> list[str]:
    """Labels of leaked data classes, most harmful first, without repeats.

    With `limit`, at most `limit` labels are named and the rest become "thông tin khác".
    """
    rank = {code: index for index, code in enumerate(LEAK_SEVERITY)}
    ordered = sorted((code.strip().lower() for code in codes if code), key=lambda c: rank.get(c, len(rank)))
    other = OTHER_DATA.get(language_key(language), OTHER_DATA[DEFAULT_LANGUAGE])
    labels = list(dict.fromkeys(data_class_label(code, language) or other for code in ordered))
    if limit is None or len(labels) <= limit:
        return labels
    return [label for label in labels[:limit] if label != other] + [other]


def upper_first(text: str) -> str:
    """Capitalise the first letter only (`số CCCD` → `Số CCCD`, unlike Jinja's `capitalize`)."""
    return text[:1].upper() + text[1:]


def other_threats(names: Iterable[str | None], quoted: str | None) -> list[str]:
    """Safe labels of `names` other than the quoted threat's: what an SMS adds after the threat
    whose IP and time it quotes ("… Mirai (IP …, 21:14) và các mã độc Mozi, Gafgyt")."""
    main = threat_label(quoted).casefold()
    return [label for label in threat_labels(names) if label.casefold() != main]


def threat_list(names: Iterable[str | None], language: str = DEFAULT_LANGUAGE, limit: int | None = None) -> str:
    """Every threat named once (`Mirai, Mozi và Gafgyt`); with `limit`, the first `limit` names and
    then "và N mã độc khác" / "and N more" (a single one left over is named: "1 more" saves
    nothing). "" when none has a safe name."""
    labels = threat_labels(names)
    if limit is not None and len(labels) > limit + 1:
        more = MORE_THREATS.get(language_key(language), MORE_THREATS[DEFAULT_LANGUAGE])
        labels = labels[:limit] + [more.format(n=len(labels) - limit)]
    return human_join(labels, language)


def description_label(text: str | None) -> str:
    """A feed's description of a threat, made safe for an e-mail body ("" if nothing safe remains)."""
    return safe_label(text, MAX_DESCRIPTION_CHARS)


class Later:
    """A variant written `later(macro, arg, …)` in a template: rendered only when `first_fitting`
    gets to it. An SMS template offers up to ten variants, richest first, and the first usually
    fits: rendering all of them for every message was most of a worker's CPU for a real template."""

    __slots__ = ("macro", "args")

    def __init__(self, macro: Any, *args: Any) -> None:
        self.macro, self.args = macro, args

    def __call__(self) -> str:
        return str(self.macro(*self.args))


class Variants:
    """The variants of one `first_fitting`, each rendered (a `Later` or a macro without arguments
    called, a string taken as it is) at most once, in order, and only when asked for."""

    def __init__(self, variants: Iterable[Any]) -> None:
        self._given = list(variants)
        self._texts: list[str] = []

    def __len__(self) -> int:
        return len(self._given)

    def text(self, index: int) -> str:
        """Variant `index` as one line (whitespace collapsed)."""
        while len(self._texts) <= index:
            variant = self._given[len(self._texts)]
            self._texts.append(collapse_whitespace(str(variant() if callable(variant) else variant)))
        return self._texts[index]

    def all(self) -> list[str]:
        return [self.text(index) for index in range(len(self))]

    def first_fitting(self, max_chars: int) -> str:
        """The first variant that fits `max_chars`, else the shortest (the first of those)."""
        shortest: str | None = None
        for index in range(len(self)):
            text = self.text(index)
            if len(text) <= max_chars:
                return text
            if shortest is None or len(text) < len(shortest):
                shortest = text
        return shortest or ""


def first_fitting(variants: Iterable[Any], max_chars: int) -> str:
    """The first variant that fits `max_chars` once its whitespace is collapsed, else the shortest;
    variants after the one that fits are never rendered (`Later`)."""
    return Variants(variants).first_fitting(max_chars)


def human_join(items: Iterable[Any], language: str = DEFAULT_LANGUAGE) -> str:
    """`a, b và c` (vi) / `a, b and c` (en), skipping empty items."""
    words = [str(item) for item in items if item]
    if len(words) < 2:
        return "".join(words)
    conjunction = CONJUNCTIONS.get(language_key(language), CONJUNCTIONS[DEFAULT_LANGUAGE])
    return f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def plain_url(url: str | None) -> str:
    """An address to type, not to click: `https://vnpt.vn/` → `vnpt.vn`."""
    if not url:
        return ""
    return re.sub(r"^[a-z][a-z0-9+.-]*://", "", url.strip(), flags=re.IGNORECASE).rstrip("/")


def build_environment(templates_dir: Path, zone: ZoneInfo) -> jinja2.Environment:
    """The service's one Jinja2 environment, with the notice filters registered."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=False, default=False
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )

    def localtime(value: datetime | str | None, language: str = DEFAULT_LANGUAGE, style: str = "full") -> str:
        return format_localtime(value, zone, language, style)

    def said_time(value: datetime | date | str | None, language: str = DEFAULT_LANGUAGE) -> str:
        """A time as a voice script says it, in the display zone."""
        return spoken_time(value, zone, language)

    def sighting(ip: str | None, seen: datetime | date | str | None, style: str = "full",
                 language: str = DEFAULT_LANGUAGE) -> str:
        """` (IP 14.160.1.2, 21:14 19/11)`: the address and time an SMS quotes after the threat, ""
        when it has neither. A filter, not a macro in each template: an SMS template asks for it
        in every variant it tries, and a macro call cost more than the rest of a variant."""
        shown = [text for text in (f"IP {ip}" if ip else "", format_localtime(seen, zone, language, style)) if text]
        return f" ({', '.join(shown)})" if shown else ""

    @jinja2.pass_context
    def collecting_first_fitting(context: jinja2.runtime.Context, variants: Iterable[Any], max_chars: int) -> str:
        """`first_fitting`, also handing the variants to the renderer when it asks (`VARIANTS_KEY`):
        `sms_variants` renders them all, `_render_sms` picks from them for a second limit."""
        offered = Variants(variants)
        collected = context.get(VARIANTS_KEY)
        if isinstance(collected, list):
            collected.append(offered)
        return offered.first_fitting(max_chars)

    env.filters.update(
        localtime=localtime,
        sighting=sighting,
        data_class_label=data_class_label,
        description_label=description_label,
        device_hint=device_hint,
        sms_advice=sms_advice,
        human_join=human_join,
        leak_labels=leak_labels,
        upper_first=upper_first,
        threat_label=threat_label,
        threat_labels=threat_labels,
        threat_list=threat_list,
        other_threats=other_threats,
        source_label=source_label,
        first_fitting=collecting_first_fitting,
        plain_url=plain_url,
        spoken_digits=spoken_digits,
        spoken_code=spoken_code,
        spoken_address=spoken_address,
        spoken_time=said_time,
    )
    env.globals["timezone_name"] = zone.key
    env.globals["later"] = Later
    return env


def with_context_defaults(context: Mapping[str, Any]) -> dict[str, Any]:
    """The context with the keys newer templates use filled in for contexts planned before them:
    `threats` (every threat named, the quoted one first) and `source_names` (slug → wording)."""
    values = dict(context)
    values.setdefault("source_names", {})
    if "threats" not in values:
        threat = values.get("threat")
        name = threat.get("name") if isinstance(threat, Mapping) else None
        values["threats"] = [name] if name else []
    return values


class Renderer:
    """Renders notice templates for one templates directory and one display time zone."""

    def __init__(
        self,
        templates_dir: Path,
        *,
        timezone: str = DEFAULT_TIMEZONE,
        default_language: str = DEFAULT_LANGUAGE,
    ) -> None:
        self.templates_dir = Path(templates_dir)
        self.default_language = language_key(default_language) or DEFAULT_LANGUAGE
        self.zone = ZoneInfo(timezone)
        self.env = build_environment(self.templates_dir, self.zone)
        # (template, language) -> (monotonic expiry, folder): the send path renders thousands of
        # messages a second and scanning the templates directory for each one cost more than Jinja.
        self._resolved: dict[tuple[str, str], tuple[float, str]] = {}
        self._choice_only_cache: weakref.WeakKeyDictionary[jinja2.Template, bool] = weakref.WeakKeyDictionary()
        # name -> (monotonic expiry, template): Jinja asks the file's mtime on every get_template
        # (two stat calls per SMS); an edited template is picked up within RESOLVED_TTL_SECONDS.
        self._loaded: dict[str, tuple[float, jinja2.Template]] = {}

    def available_templates(self) -> list[str]:
        """Template names present in the default language, sorted."""
        base = self.templates_dir / self.default_language
        if not base.is_dir():
            return []
        return sorted(
            entry.name
            for entry in base.iterdir()
            if entry.is_dir() and _NAME_RE.match(entry.name) and any(entry.glob("*.j2"))
        )

    def render(
        self,
        template: str,
        channel: str,
        *,
        language: str,
        context: Mapping[str, Any],
        strip_sms_diacritics: bool = False,
    ) -> RenderedMessage:
        """Render `template` for `channel` (`sms`, `email`, `voice` or `billing`) in `language` (or the
        default one); a voice script or a billing insert is plain text in `body`.

        Raises InputError for an unknown template or channel, or when the context lacks a value
        the template needs.
        """
        if channel not in CHANNEL_FILES:
            raise InputError(f"unknown channel {channel!r} (known: {', '.join(sorted(CHANNEL_FILES))})")
        folder = f"{self._resolve_language(template, language)}/{template}"
        values = with_context_defaults(context)
        if channel == "sms":
            return RenderedMessage(body=self._render_sms(f"{folder}/sms.txt.j2", values, strip_sms_diacritics))
        if channel in PLAIN_TEXT_CHANNELS:
            return RenderedMessage(body=tidy_plain_text(self._render_file(f"{folder}/{channel}.txt.j2", values)))
        subject = collapse_whitespace(self._render_file(f"{folder}/email_subject.txt.j2", values))
        return RenderedMessage(
            body=tidy_plain_text(self._render_file(f"{folder}/email.txt.j2", values)),
            subject=unicodedata.normalize("NFC", subject),
            html=unicodedata.normalize("NFC", self._render_file(f"{folder}/email.html.j2", values).strip()),
        )

    def sms_variants(
        self, template: str, *, language: str, context: Mapping[str, Any], strip_sms_diacritics: bool = False
    ) -> list[str]:
        """Every SMS variant the template offers for `context`, richest first, as they would be sent
        (one line, NFC, diacritics dropped if asked): lets a test hold each one to the rules."""
        folder = f"{self._resolve_language(template, language)}/{template}"
        collected: list[Variants] = []
        values = with_context_defaults(context) | {"sms_max_chars": SMS_MAX_CHARS_UCS2, VARIANTS_KEY: collected}
        self._render_file(f"{folder}/sms.txt.j2", values)
        with _template_errors(f"{folder}/sms.txt.j2"):
            return [self._finish_sms(text, strip_sms_diacritics) for offered in collected for text in offered.all()]

    def check_template(self, template: str) -> None:
        """Raise InputError unless `template` exists in the default language (e.g. before planning)."""
        known = self.available_templates()
        if not _NAME_RE.match(template or "") or template not in known:
            raise InputError(f"unknown template {template!r} (known: {', '.join(known) or 'none'})")

    def _resolve_language(self, template: str, language: str) -> str:
        """The requested language if it has this template, else the default; InputError if neither.
        A found answer is remembered for RESOLVED_TTL_SECONDS (a template added or removed on disk
        is seen within that time); an unknown template is looked up every time."""
        key = (template, language)
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        self.check_template(template)
        wanted = language_key(language)
        found = wanted if wanted and (self.templates_dir / wanted / template).is_dir() else self.default_language
        self._resolved[key] = (time.monotonic() + RESOLVED_TTL_SECONDS, found)
        return found

    def _render_sms(self, name: str, values: dict[str, Any], strip: bool) -> str:
        """One line of NFC text: the variant for 2 GSM-7 parts, or for 3 UCS-2 parts if not GSM-7.
        A template whose output is nothing but its one `first_fitting(sms_max_chars)` choice is
        rendered once and the choice made here for each limit (the send path renders thousands of
        SMS a second: a Vietnamese text with diacritics cost two renders)."""
        if self._choice_only(name):
            collected: list[Variants] = []
            text = self._render_file(name, values | {"sms_max_chars": SMS_MAX_CHARS_GSM7, VARIANTS_KEY: collected})
            choice = collected[0].first_fitting(SMS_MAX_CHARS_GSM7) if len(collected) == 1 else ""
            if choice and collapse_whitespace(text) == choice:  # nothing around the choice
                body = self._finish_sms(choice, strip)
                if sms_encoding(body) == GSM7:
                    return body
                with _template_errors(name):
                    return self._finish_sms(collected[0].first_fitting(SMS_MAX_CHARS_UCS2), strip)
        body = ""
        for max_chars in (SMS_MAX_CHARS_GSM7, SMS_MAX_CHARS_UCS2):
            body = self._sms_text(name, values | {"sms_max_chars": max_chars}, strip)
            if sms_encoding(body) == GSM7:
                break
        return body

    def _choice_only(self, name: str) -> bool:
        """Whether `sms_max_chars` is read only once, as the argument of one top-level
        `first_fitting` (so the variants do not depend on it), with nothing included or imported."""
        try:
            template = self._template(name)
        except jinja2.TemplateNotFound:
            return False  # `_render_file` says so
        known = self._choice_only_cache.get(template)
        if known is None:
            tree = self.env.parse(self.env.loader.get_source(self.env, name)[0])  # type: ignore[union-attr]
            uses = [node for node in tree.find_all(jinja2.nodes.Name) if node.name == "sms_max_chars"]
            calls = [node for node in tree.find_all(jinja2.nodes.Filter) if node.name == "first_fitting"]
            top = [node for output in tree.body if isinstance(output, jinja2.nodes.Output)
                   for node in output.nodes if node in calls]
            known = (len(uses) == 1 and len(calls) == 1 and len(top) == 1 and top[0].args == uses
                     and not top[0].kwargs and not any(tree.find_all(
                         (jinja2.nodes.Include, jinja2.nodes.Import, jinja2.nodes.FromImport, jinja2.nodes.Extends))))
            self._choice_only_cache[template] = known
        return known

    def _sms_text(self, name: str, values: dict[str, Any], strip: bool) -> str:
        """Render, then make it the one line that is sent."""
        return self._finish_sms(self._render_file(name, values), strip)

    @staticmethod
    def _finish_sms(text: str, strip: bool) -> str:
        """Collapse to one line, NFC; then drop diacritics (and fancy punctuation) if asked."""
        body = unicodedata.normalize("NFC", collapse_whitespace(text))
        if strip:
            body = strip_diacritics(body).translate(_PUNCTUATION_FALLBACKS)
        return body

    def _render_file(self, name: str, values: dict[str, Any]) -> str:
        """Render one template file, turning Jinja's errors into InputError."""
        with _template_errors(name):
            return self._template(name).render(values)

    def _template(self, name: str) -> jinja2.Template:
        """The loaded template, looked up on disk again at most every RESOLVED_TTL_SECONDS."""
        cached = self._loaded.get(name)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        template = self.env.get_template(name)
        self._loaded[name] = (now + RESOLVED_TTL_SECONDS, template)
        return template


@contextmanager
def _template_errors(name: str) -> Iterator[None]:
    """Jinja's errors as InputError, also for a `later` variant rendered after its template's render."""
    try:
        yield
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"template file {name!r} is missing") from exc
    except jinja2.UndefinedError as exc:
        raise InputError(f"template {name!r} needs a value the context lacks: {exc.message}") from exc
