"""Which feed kinds each template is written for, read from `templates/catalog.toml`.

A warning tells a subscriber a story: "a device on your line is infected" or "your data leaked".
Sending one story for a feed of the other kind would mislead every subscriber in it, so a campaign
is refused unless its template's kinds cover every kind of event in the feed. The mapping is data
(next to the templates it describes), so a template made for several kinds needs no code change.

An entry may also claim threat categories (`categories = ["phone_malware", "pc_malware"]`, the names
of `notifier/threat_categories.py`): a campaign created with `--template auto` gives each account the
template that claims its events' category. Each category is claimed by one template at most, and
only by a template written for the category's feed kind.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from notifier.errors import ConfigError, InputError
from notifier.ingest.ais import ADVISORY
from notifier.ingest.feeds import DATA_LEAK, INFECTED_DEVICE
from notifier.threat_categories import AUTO, CATEGORY_KIND

CATALOG_FILE_NAME = "catalog.toml"
FEED_KINDS = (INFECTED_DEVICE, DATA_LEAK, ADVISORY)  # advisory: an Authority request for a segment


@dataclass(frozen=True)
class TemplateCatalog:
    """Template name → the feed kinds it is written for; `source` names the file for messages."""

    kinds: Mapping[str, frozenset[str]]
    source: str = CATALOG_FILE_NAME
    categories: Mapping[str, str] = field(default_factory=dict)  # threat category → the template claiming it

    def template_for(self, category: str) -> str:
        """The template that tells `category` (InputError when no entry claims it)."""
        if category not in self.categories:
            raise InputError(f"no template in the template catalog {self.source} claims threat category "
                             f"{category} (add it to a template's categories)")
        return self.categories[category]

    def check_auto(self, *, feed_id: int, feed_kinds: Iterable[str]) -> None:
        """Raise InputError, naming what is missing, unless every threat category of the feed's
        kinds has a template: `auto` must not find out half-way through a feed of a million events.
        ConfigError when a template claims a category of a feed kind it is not written for."""
        for category, template in sorted(self.categories.items()):
            kind = CATEGORY_KIND[category]
            if kind not in self.kinds.get(template, frozenset()):
                raise ConfigError(f"{self.source}: [{template}] claims {category}, {_article(kind)} {kind} "
                                  f"category, but is for {_and(self.kinds.get(template, ()))} feeds: template "
                                  f"auto would tell it to the wrong subscribers")
        missing = sorted(category for category, kind in CATEGORY_KIND.items()
                         if kind in set(feed_kinds) and category not in self.categories)
        if missing:
            raise InputError(f"feed {feed_id}: template auto needs a template for threat categor"
                             f"{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}; no entry of "
                             f"{self.source} claims {'it' if len(missing) == 1 else 'them'}")

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
    kinds = {name: _entry_kinds(path, name, entry) for name, entry in data.items()}
    return TemplateCatalog(kinds, str(path), _claimed_categories(path, data, kinds))


def _claimed_categories(path: Path, data: Mapping[str, object],
                        kinds: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """Threat category → template, from the entries' optional `categories`: each category known
    and claimed once. `auto` itself cannot be a template's name. (That a template is written for its
    categories' feed kinds is checked when `auto` is used, `TemplateCatalog.check_auto`: a catalog
    used only with explicit templates may leave `categories` as they are when it narrows `kinds`.)"""
    if AUTO in data:
        raise ConfigError(f"{path}: [{AUTO}] cannot be a template: `--template {AUTO}` picks one per account")
    claimed: dict[str, str] = {}
    for name, entry in data.items():
        categories = entry.get("categories", []) if isinstance(entry, dict) else []
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ConfigError(f"{path}: [{name}] categories must be a list of threat categories "
                              f"({', '.join(CATEGORY_KIND)})")
        for category in categories:
            if category not in CATEGORY_KIND:
                raise ConfigError(f"{path}: [{name}] names unknown threat category {category} "
                                  f"(known: {', '.join(CATEGORY_KIND)})")
            if category in claimed:
                raise ConfigError(f"{path}: threat category {category} is claimed by both "
                                  f"[{claimed[category]}] and [{name}]")
            claimed[category] = name
    return claimed


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
