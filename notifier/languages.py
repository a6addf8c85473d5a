"""Which language's words a notice is written with: `vi-VN`, `VI`, `vi_VN` → `vi`.

One reading for every place that picks words by language (templates, date formats, device advice,
what a voice call says), so a subscriber's `vi_VN` never gets Vietnamese dates and English advice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Container

DEFAULT_LANGUAGE = "vi"
_KEY_RE = re.compile(r"^[a-z0-9_]+$")


@functools.lru_cache(maxsize=64)
def language_key(language: str | None) -> str:
    """`vi-VN`, `VI`, `vi_VN` → `vi`; anything unusable → empty string. Remembered: templates ask
    once per word list they use, thousands of messages a second."""
    if not language:
        return ""
    key = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    return key if _KEY_RE.match(key) else ""


def language_in(language: str | None, known: Container[str]) -> str:
    """`language_key` when `known` has words for it, else DEFAULT_LANGUAGE."""
    key = language_key(language)
    return key if key in known else DEFAULT_LANGUAGE
