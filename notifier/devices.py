"""Which device a threat most likely lives on, and what to tell the subscriber to do about it.

Advice must fit the facts it follows: telling someone whose Windows PC runs Emotet to change the
camera's password reads as a form letter (or a scam). The words are data in `content.py`; this
module only decides which device kind applies.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from notifier.content import DEVICE_HINTS, DEVICE_KEYWORDS, DEVICE_ORDER, SMS_ADVICE
from notifier.languages import DEFAULT_LANGUAGE, language_in

DEFAULT_KIND = "default"


def device_kind(threat: Mapping[str, Any] | str | Iterable[str] | None, category: str | None = None) -> str:
    """`android`, `iot`, `windows` or `default` for a threat (mapping or name) or a list of names.

    A list whose threats point at different devices gives `default`: the advice then covers all.
    """
    if threat is None or isinstance(threat, str):
        return _named_kind(threat, category)
    if isinstance(threat, Mapping):
        return _named_kind(threat.get("name"), category or threat.get("category"))
    names = tuple(threat)
    if all(isinstance(name, str) for name in names):
        return _listed_kind(names, category)
    return _common_kind({device_kind(name, category) for name in names if name})


@functools.lru_cache(maxsize=4096)
def _listed_kind(names: tuple[str, ...], category: str | None) -> str:
    """`device_kind` of a list of threat names, remembered like `_named_kind`: an SMS template asks
    for the advice of the same threats once per variant it tries."""
    return _common_kind({_named_kind(name, category) for name in names if name})


def _common_kind(kinds: set[str]) -> str:
    return kinds.pop() if len(kinds) == 1 else DEFAULT_KIND


@functools.lru_cache(maxsize=4096)
def _named_kind(name: str | None, category: str | None) -> str:
    """`device_kind` of one threat name and category, remembered: an SMS template asks for the
    advice of the same threats once per variant it tries, thousands of messages a second."""
    text = " ".join(str(part) for part in (name, category) if part)
    words = {word for word in re.split(r"[^a-z0-9]+", text.lower()) if word}
    return next((kind for kind in DEVICE_ORDER if words & DEVICE_KEYWORDS[kind]), DEFAULT_KIND)


def device_hint(
    threat: Mapping[str, Any] | str | None, category: str | None = None, language: str = DEFAULT_LANGUAGE
) -> str:
    """The device type a threat most likely runs on, as a phrase to put in a sentence.

    `threat` is the context's `threat` mapping (name and category are read) or a threat name.
    """
    return DEVICE_HINTS[language_in(language, DEVICE_HINTS)][device_kind(threat, category)]


def sms_advice(threats: Mapping[str, Any] | str | Iterable[str] | None, level: str,
               language: str = DEFAULT_LANGUAGE) -> str:
    """The steps an SMS gives for these threats' device, at a length `level` (`full`, `standard`,
    `compact`, `short`; each no longer than the one before)."""
    return SMS_ADVICE[language_in(language, SMS_ADVICE)][device_kind(threats)][level]
