"""Which feed kinds each template is written for, read from `templates/catalog.toml`.

A warning tells a subscriber a story: "a device on your line is infected" or "your data leaked".
Sending one story for a feed of the other kind would mislead every subscriber in it, so a campaign
is refused unless its template's kinds cover every kind of event in the feed. The mapping is data
(next to the templates it describes), so a template made for several kinds needs no code change.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from notifier.errors import ConfigError, InputError
from notifier.ingest.ais import ADVISORY
from notifier.ingest.feeds import DATA_LEAK, INFECTED_DEVICE

CATALOG_FILE_NAME = "catalog.toml"
FEED_KINDS = (INFECTED_DEVICE, DATA_LEAK, ADVISORY)  # advisory: an Authority request for a segment


@dataclass(frozen=True)
class TemplateCatalog:
    """Template name → the feed kinds it is written for; `source` names the file for messages."""

    kinds: Mapping[str, frozenset[str]]
    source: str = CATALOG_FILE_NAME

    def kinds_of(self, template: str) -> frozenset[str]:
        """The kinds `template` is for; InputError if the catalog does not list it (we cannot
        tell whether it fits a feed, so we do not guess)."""
        if template not in self.kinds:
            raise InputError(f"template {template} is not in the template catalog {self.source} "
                             f"(listed: {', '.join(sorted(self.kinds)) or 'none'})")
        return self.kinds[template]

    def fitting(self, feed_kinds: Iterable[str]) -> list[str]:
        """Templates whose kinds cover all of `feed_kinds`, sorted: what to suggest instead."""
        wanted = set(feed_kinds)
        return sorted(name for name, kinds in self.kinds.items() if wanted <= kinds)

    def check_fits(self, template: str, *, feed_id: int, feed_kinds: Iterable[str]) -> None:
        """Raise InputError, naming the feed's kind(s) and the templates that would fit, unless
        `template` is written for every kind of event in feed `feed_id`."""
        wanted = frozenset(feed_kinds)
        kinds = self.kinds_of(template)
        if wanted <= kinds:
            return
        suggestion = _suggestion(self.fitting(wanted), wanted)
        if len(wanted) == 1:
            kind = next(iter(wanted))
            raise InputError(f"feed {feed_id} is {_article(kind)} {kind} feed; template {template} is for "
                             f"{_and(kinds)} feeds ({suggestion})")
        raise InputError(f"feed {feed_id} mixes {_and(wanted)} events; template {template} is only for "
                         f"{_and(kinds)} feeds ({suggestion})")


def load_catalog(templates_dir: Path | None = None) -> TemplateCatalog:
    """Read `<templates_dir>/catalog.toml` (default: the configured templates directory).

    Raises ConfigError when the file is missing or malformed: it ships with the templates, so a
    broken one is an installation problem, not an operator's typo.
    """
    if templates_dir is None:
        from notifier.settings import get_settings

        templates_dir = get_settings().templates_dir
    path = Path(templates_dir) / CATALOG_FILE_NAME
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: template catalog missing (it lists the feed kinds each template is for)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return TemplateCatalog({name: _entry_kinds(path, name, entry) for name, entry in data.items()}, str(path))


def _entry_kinds(path: Path, name: str, entry: object) -> frozenset[str]:
    """The `kinds` of one `[template]` table, checked against the feed kinds notifier knows."""
    kinds = entry.get("kinds") if isinstance(entry, dict) else None
    if not isinstance(kinds, list) or not kinds or not all(isinstance(kind, str) for kind in kinds):
        raise ConfigError(f"{path}: [{name}] needs kinds = [\"…\"], a non-empty list of feed kinds "
                          f"({', '.join(FEED_KINDS)})")
    unknown = sorted(set(kinds) - set(FEED_KINDS))
    if unknown:
        raise ConfigError(f"{path}: [{name}] names unknown feed kind(s) {', '.join(unknown)} "
                          f"(known: {', '.join(FEED_KINDS)})")
    return frozenset(kinds)


def _and(kinds: Iterable[str]) -> str:
    """{'data_leak', 'infected_device'} → 'data_leak and infected_device' (sorted: stable messages)."""
    names = sorted(kinds)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _article(word: str) -> str:
    """'an infected_device feed', 'a data_leak feed'."""
    return "an" if word[:1] in tuple("aeiou") else "a"


def _suggestion(fitting: list[str], wanted: frozenset[str]) -> str:
    if fitting:
        return f"use {' or '.join(fitting)}"
    if len(wanted) == 1:
        return f"no template in the catalog is for {_and(wanted)} feeds"
    return "no template in the catalog covers all of them; import each kind as its own feed"
