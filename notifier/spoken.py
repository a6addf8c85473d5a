"""Words for a voice script: numbers, codes, web addresses and times written the way they are said.

A text-to-speech voice reads "18001091" as eighteen million and "vnpt.vn/an-toan" as noise. A
Vietnamese announcer says a hotline digit by digit in small groups ("một tám không không, một không
chín một"), spells a short domain letter by letter ("vê en pê tê chấm vê en") and never reads a
link's path. Writing the digits and letters apart with spaces, the groups apart with commas and the
dots as "chấm" / "dot" makes any voice say it that way. The templates call these as filters
(`spoken_digits`, `spoken_code`, `spoken_address`, `spoken_time`).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo

from notifier.languages import language_in

SPELLED_LABEL_MAX_CHARS = 4  # "vnpt", "vn", "com": said letter by letter; longer labels as a word
_GROUP_SEPARATORS = re.compile(r"[\s.\-/()]+")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# The words (content, reviewed with the templates): how a dot is said, domain labels said as words,
# and how a time is said.
SPOKEN_DOT = {"vi": "chấm", "en": "dot"}
SPOKEN_LABELS: dict[str, dict[str, str]] = {
    "vi": {"khonggianmang": "không gian mạng", "chongluadao": "chống lừa đảo"},
    "en": {},
}
# language -> (a moment, a day alone); `month` is the month's name where the language says one.
SPOKEN_TIME: dict[str, tuple[str, str]] = {
    "vi": ("{h} giờ {m} phút ngày {d} tháng {mo} năm {y}", "ngày {d} tháng {mo} năm {y}"),
    "en": ("{h}:{m:02d} on {d} {month} {y}", "{d} {month} {y}"),
}
MONTH_NAMES_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                  "October", "November", "December")


def _digit_groups(digits: str) -> list[str]:
    """How a number without separators is grouped when said: 1800 1091, 0912 345 678, 156."""
    if len(digits) <= 4:
        return [digits]
    if len(digits) == 8:
        return [digits[:4], digits[4:]]
    if len(digits) in (10, 11):
        return [digits[:4], digits[4:7], digits[7:]]
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    if len(groups[-1]) == 1:  # never a lone digit at the end: "1 2 3, 4 5 6 7"
        groups[-2:] = [groups[-2] + groups[-1]]
    return groups


def spoken_digits(number: object) -> str:
    """`18001091` → `1 8 0 0, 1 0 9 1`; a number written with separators keeps its own groups
    (`028 3822 1234` → `0 2 8, 3 8 2 2, 1 2 3 4`). A leading `+` is dropped (a hotline is dialled
    as written in the country)."""
    text = str(number or "").strip().lstrip("+")
    written = [group for group in _GROUP_SEPARATORS.split(text) if group]
    groups = written if len(written) > 1 else _digit_groups("".join(written))
    return ", ".join(" ".join(group) for group in groups if group)


def spoken_code(code: object) -> str:
    """A reference code letter by letter, digit by digit: `CB-12-3456` → `C B, 1 2, 3 4 5 6`."""
    parts = [part for part in re.split(r"[^0-9A-Za-z]+", str(code or "")) if part]
    return ", ".join(" ".join(part.upper()) for part in parts)


def spoken_address(url: object, language: str = "vi") -> str:
    """An address to say, not to click: `https://www.vnpt.vn/an-toan` → `v n p t chấm v n`.

    The scheme, `www.` and any path are dropped (nobody can note a path by ear); a label of up to
    SPELLED_LABEL_MAX_CHARS letters is spelled, a longer one said as a word, or as the words the
    content gives it (`khonggianmang` → `không gian mạng`).
    """
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", str(url or "").strip(), flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", host, maxsplit=1)[0].lower()
    host = host[4:] if host.startswith("www.") else host
    key = language_in(language, SPOKEN_DOT)
    words = []
    for label in (part for part in host.split(".") if part):
        known = SPOKEN_LABELS.get(key, {}).get(label)
        if known:
            words.append(known)
        elif len(label) <= SPELLED_LABEL_MAX_CHARS or not label.isalpha():
            words.append(" ".join(label.replace("-", "")))
        else:
            words.append(label)
    return f" {SPOKEN_DOT[key]} ".join(words)


def spoken_time(value: datetime | date | str | None, zone: ZoneInfo, language: str = "vi") -> str:
    """`21 giờ 14 phút ngày 19 tháng 11 năm 2026` / `21:14 on 19 November 2026` in `zone`; a date
    without a time (a leak list's day) is said as the day alone; None → ``."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value) if _DATE_ONLY.match(value) else datetime.fromisoformat(value)
    moment_pattern, day_pattern = SPOKEN_TIME[language_in(language, SPOKEN_TIME)]
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt_timezone.utc)
        local = aware.astimezone(zone)
        return moment_pattern.format(h=local.hour, m=local.minute, d=local.day, mo=local.month, y=local.year,
                                     month=MONTH_NAMES_EN[local.month - 1])
    return day_pattern.format(d=value.day, mo=value.month, y=value.year, month=MONTH_NAMES_EN[value.month - 1])
