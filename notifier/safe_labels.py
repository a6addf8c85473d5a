"""Reduce text that comes from a feed to a label that is safe to print in a notice.

Threat names, leak sources, data classes and descriptions are written by whoever runs a feed, not
by us. A warning that carries a link or a phone number is exactly what a scam looks like (and a
feed can be poisoned to make ours carry one), a control character can garble or reorder a
handset's display, and a 100-character "family" breaks the SMS part budget. So every piece of feed
text passes through `safe_label` before a template prints it: what is left is words, digits and a
little punctuation, bounded in length, or "" — and the template then says the generic "mã độc" /
"malware". Text that only looks like a link (a dotted name ending in a common top-level domain) is
dropped too: printing the generic word instead of a real family name is a small loss, printing a
link is not.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping

from notifier.content import KNOWN_THREAT_NAMES, LINK_SUFFIXES

MAX_THREAT_CHARS = 40
MAX_SOURCE_CHARS = 60
MAX_DATA_CLASS_CHARS = 30
MAX_DESCRIPTION_CHARS = 160
MAX_BMP_CODE_POINT = 0xFFFF  # beyond it a character costs two UCS-2 units (and is rarely a letter we want)
_PUNCTUATION = frozenset(" .-_:/()&,'")  # all in the GSM-7 basic alphabet
_TRIMMED = " .-_:/&,'"

# Defanged and look-alike dots ("evil[.]com", "evil。com") become real ones before links are looked for.
_DEFANGED_DOT = re.compile(r"\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|[\u3002\uff61\ufe52]", re.IGNORECASE)
_DEFANGED_COLON = re.compile(r"\[:\]|\(:\)")
_URL = re.compile(r"(?:[a-z0-9+.\-]*://|\bwww\.)\S*", re.IGNORECASE)
_EMAIL = re.compile(r"\S*@\S*")
_DOTTED = re.compile(r"[\w-]+(?:\.[\w-]+)+(?::\d+)?(?:[/?#]\S*)?")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_PHONE = re.compile(r"\+?\d(?:[\s().\-/]*\d){6,}")  # 7 or more digits, whatever separates them
_EMPTY_BRACKETS = re.compile(r"\(\W*\)")
_SPACES = re.compile(r"\s+")


@functools.lru_cache(maxsize=4096)
def safe_label(text: str | None, max_chars: int) -> str:
    """`text` without links, e-mail addresses, phone numbers, IP addresses or control characters,
    at most `max_chars` long (cut at a word boundary), or "" when nothing readable remains.

    Remembered: a campaign names the same few threats in every message, and each label costs
    regular expressions and a phone-number parse (~30 µs) that every SMS rendered again."""
    if not text:
        return ""
    cleaned = _printable(unicodedata.normalize("NFKC", text))
    for _ in range(2):  # again after the character filter: it can join pieces into a new link
        cleaned = _drop_contacts(cleaned)
        cleaned = _allowed_characters(cleaned)
    cleaned = _tidy(cleaned)
    cleaned = _tidy(_shorten(cleaned, max_chars))
    return unicodedata.normalize("NFC", cleaned) if any(ch.isalpha() for ch in cleaned) else ""


def _printable(text: str) -> str:
    """Control, format (bidi overrides, zero-width), private-use and unassigned characters → spaces."""
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


def _drop_contacts(text: str) -> str:
    """Remove whatever a reader could visit, call or write to."""
    text = _DEFANGED_COLON.sub(":", _DEFANGED_DOT.sub(".", text))
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    text = _DOTTED.sub(_unless_link, text)
    text = _IPV4.sub(" ", text)
    return _PHONE.sub(" ", text)


def _unless_link(match: re.Match[str]) -> str:
    """A dotted name stays (`Android.Banker.A`) unless one of its labels is a common top-level domain."""
    labels = re.split(r"[./?#:]", match.group(0).lower())
    return " " if any(label in LINK_SUFFIXES for label in labels[1:]) else match.group(0)


def _allowed_characters(text: str) -> str:
    """Letters (with their marks), digits and a little GSM-7 punctuation; anything else → space."""
    return "".join(ch if _allowed(ch) else " " for ch in text)


def _allowed(ch: str) -> bool:
    if ord(ch) > MAX_BMP_CODE_POINT:
        return False
    category = unicodedata.category(ch)
    return category[0] in "LM" or category == "Nd" or ch in _PUNCTUATION


def _tidy(text: str) -> str:
    """One space between words, no empty or unbalanced brackets, no punctuation at either end."""
    text = _EMPTY_BRACKETS.sub(" ", text)
    if text.count("(") != text.count(")"):
        text = text.replace("(", " ").replace(")", " ")
    return _SPACES.sub(" ", text).strip(_TRIMMED)


def _shorten(text: str, max_chars: int) -> str:
    """At most `max_chars`, cut at the last space when that keeps at least half of it."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    return cut[:space] if space >= max_chars // 2 else text[:max_chars]


def threat_label(name: str | None) -> str:
    """A threat name as people write it, made safe: `mirai` → `Mirai`, `mirai-http` → `Mirai-http`,
    `QAKBOT` → `QakBot`; "" when nothing safe remains (the template then says "mã độc")."""
    label = safe_label(name, MAX_THREAT_CHARS)
    if not label:
        return ""
    head, sep, tail = _split_head(label)
    known = KNOWN_THREAT_NAMES.get(head.lower())
    if known:
        return known + sep + tail
    return label[:1].upper() + label[1:] if label.islower() else label


def _split_head(name: str) -> tuple[str, str, str]:
    """`mirai-http` → (`mirai`, `-`, `http`); a name without separator → (name, ``, ``)."""
    match = re.match(r"([A-Za-z0-9]+)([^A-Za-z0-9]?)(.*)", name, flags=re.DOTALL)
    if not match:
        return name, "", ""
    return match.group(1), match.group(2), match.group(3)


def threat_labels(names: Iterable[str | None]) -> list[str]:
    """Safe labels of `names` in their order, each once (`mirai` and `Mirai` are one), empties dropped."""
    kept: dict[str, str] = {}
    for label in (threat_label(name) for name in names):
        if label:
            kept.setdefault(label.casefold(), label)
    return list(kept.values())


def source_label(slug: str | None, names: Mapping[str, str] | None = None) -> str:
    """What a leak source is called in a notice: the operator's wording for a known slug
    (`config/` `[source_names]`, printed as given), else the slug itself made safe."""
    if not slug:
        return ""
    wording = {key.strip().casefold(): value for key, value in (names or {}).items()}
    return wording.get(slug.strip().casefold()) or safe_label(slug, MAX_SOURCE_CHARS)
