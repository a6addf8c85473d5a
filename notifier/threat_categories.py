"""What kind of harm a feed item reports (its threat category), and which story an account is told.

Templates are written per threat category, not per feed: one feed can hold a Mirai-infected camera,
a FluBot-infected phone and a leaked mailbox password, and each subscriber must read the story that
fits their own events (change the camera's password; remove the unknown app; change the password
everywhere). This module is the one place that decides a feed item's category; which template tells
each category is data, the `categories` key of `templates/catalog.toml`.

| category               | the item                                                              | shipped template     |
|------------------------|-----------------------------------------------------------------------|----------------------|
| `botnet`               | an infected device whose family we do not place (sinkhole `botnet`)    | `infected_device`    |
| `iot_malware`          | a family or category that lives on routers, cameras, DVRs (Mirai)      | `infected_device`    |
| `phone_malware`        | a phone family or category (FluBot, `android`, `mobile`, `phone`)       | `malware`            |
| `pc_malware`           | a PC family or category (Emotet, `windows`, `pc`, `computer`)           | `malware`            |
| `leaked_credentials`   | Shadowserver `compromised_account`, or a leak row with a password       | `leaked_credentials` |
| `leaked_personal_data` | any other leak row                                                    | `data_leak`          |
| `scam`                 | an Authority advisory about scams / phishing                          | `scam_advisory`      |
| `advisory`             | any other Authority advisory                                          | `general_advisory`   |

An account whose events fall in several categories still gets one notification per channel (one
story told well beats two half-told): see `account_story`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from notifier.devices import device_kind
from notifier.ingest.ais import ADVISORY
from notifier.ingest.feeds import DATA_LEAK, INFECTED_DEVICE

BOTNET = "botnet"
IOT_MALWARE = "iot_malware"
PHONE_MALWARE = "phone_malware"
PC_MALWARE = "pc_malware"
LEAKED_CREDENTIALS = "leaked_credentials"
LEAKED_PERSONAL_DATA = "leaked_personal_data"
SCAM = "scam"
GENERAL_ADVISORY = "advisory"

# The feed kind each category belongs to: a template may only claim a category of a kind it is
# written for (the catalog's `kinds`), so `auto` can never send a leak story for a device.
CATEGORY_KIND: dict[str, str] = {
    BOTNET: INFECTED_DEVICE, IOT_MALWARE: INFECTED_DEVICE, PHONE_MALWARE: INFECTED_DEVICE,
    PC_MALWARE: INFECTED_DEVICE, LEAKED_CREDENTIALS: DATA_LEAK, LEAKED_PERSONAL_DATA: DATA_LEAK,
    SCAM: ADVISORY, GENERAL_ADVISORY: ADVISORY,
}
CATEGORIES = tuple(CATEGORY_KIND)

# Within one story, the category whose template tells an account's events when they fall in
# several. The broadest first: the infected-device story names every threat and, for threats on
# different devices, gives advice for all of them; the phone/PC story is only right when every
# threat is on a phone or PC. A password leak outranks other personal data: changing the password
# is the step that stops harm now, and the credentials story still suits a leak of both.
CATEGORY_PRECEDENCE = (BOTNET, IOT_MALWARE, PHONE_MALWARE, PC_MALWARE,
                       LEAKED_CREDENTIALS, LEAKED_PERSONAL_DATA, SCAM, GENERAL_ADVISORY)

# When an account has both an infected device and a leak in one feed, the device is the story
# told: the infection is ongoing and quoted with its IP and time, and it comes first in practice
# (a password changed on an infected device is stolen again). The leak's items are left out of
# that notification (see `account_story`), so nothing claims the subscriber was told of them.
STORY_ORDER = (INFECTED_DEVICE, DATA_LEAK)

_DEVICE_CATEGORY = {"iot": IOT_MALWARE, "android": PHONE_MALWARE, "windows": PC_MALWARE}
# Category words (a feed's own label, e.g. an Authority request's `threat.category`) that place a
# threat on a phone or a PC beyond the family and platform words `notifier/content.py` knows.
PHONE_WORDS = frozenset({"phone", "smartphone", "ios", "iphone", "ipad"})
PC_WORDS = frozenset({"pc", "computer", "desktop", "laptop", "macos"})
# Leak data classes that mean a login can be taken over (the feeds' codes, lower case).
CREDENTIAL_CLASSES = frozenset({"password", "passwords", "password_hash", "password_hashes", "credentials"})
COMPROMISED_ACCOUNT = "compromised_account"  # the category Shadowserver's report of the same name carries
SCAM_WORDS = frozenset({"scam", "scams", "phishing", "fraud", "smishing", "vishing", "impersonation"})
SCAM_PHRASES = ("lừa đảo", "mạo danh")  # Vietnamese categories an Authority may write


class ItemFacts(Protocol):
    """What a feed item (a `FeedItem` row) says about its harm."""

    kind: str | None
    threat: str | None
    category: str | None
    data_classes: str | None  # ";"-separated, as stored


def _words(text: str | None) -> set[str]:
    return {word for word in re.split(r"[\W_]+", (text or "").casefold()) if word}


def item_category(item: ItemFacts) -> str:
    """The threat category of one matched feed item (see the module's table).

    An infected-device item whose family and category place it nowhere is `botnet`: its template
    names the threat and gives the advice for every kind of device, which stays true whatever the
    device turns out to be.
    """
    if item.kind == DATA_LEAK:
        return leak_category(item.category, item.data_classes)
    return device_category(item.threat, item.category)


def device_category(threat: str | None, category: str | None) -> str:
    """`iot_malware`, `phone_malware`, `pc_malware` or `botnet` for an infected device's family and
    category; the family decides first (Emotet in a sinkhole report categorised `botnet` is still
    on a Windows PC)."""
    kind = device_kind(threat, category)
    if kind in _DEVICE_CATEGORY:
        return _DEVICE_CATEGORY[kind]
    words = _words(category)
    if words & PHONE_WORDS:
        return PHONE_MALWARE
    if words & PC_WORDS:
        return PC_MALWARE
    return BOTNET


def leak_category(category: str | None, data_classes: str | Iterable[str] | None) -> str:
    """`leaked_credentials` when the leak gives away a login (Shadowserver's compromised accounts
    always do; a leak row when its data classes include a password), else `leaked_personal_data`."""
    if (category or "").strip().lower() == COMPROMISED_ACCOUNT:
        return LEAKED_CREDENTIALS
    classes = data_classes.split(";") if isinstance(data_classes, str) else (data_classes or ())
    if {code.strip().lower() for code in classes} & CREDENTIAL_CLASSES:
        return LEAKED_CREDENTIALS
    return LEAKED_PERSONAL_DATA


def advisory_category(request: Mapping[str, Any]) -> str:
    """`scam` when an Authority advisory's threat category (or name) is about scams or phishing,
    else `advisory`: the scam template's steps (hang up, never give an OTP) are only right then."""
    threat = request.get("threat") if isinstance(request.get("threat"), Mapping) else {}
    text = " ".join(str(threat.get(key) or "") for key in ("category", "name")).casefold()
    if _words(text) & SCAM_WORDS or any(phrase in text for phrase in SCAM_PHRASES):
        return SCAM
    return GENERAL_ADVISORY


@dataclass(frozen=True)
class Story:
    """What one account is told: the category whose template tells it, the items it tells, and
    the items of another story this notification leaves out (`untold`)."""

    category: str
    items: list[Any]
    untold: list[Any]


def split_stories(items: list[Any]) -> list[list[Any]]:
    """The items grouped by story (feed kind), in STORY_ORDER; an item of no known kind is not
    dropped but told with the device story (matched items always carry a kind)."""
    by_kind: dict[str, list[Any]] = {}
    for item in items:
        by_kind.setdefault(item.kind if item.kind in STORY_ORDER else INFECTED_DEVICE, []).append(item)
    return [by_kind[kind] for kind in STORY_ORDER if kind in by_kind]


def account_story(items: list[Any]) -> Story:
    """The one story an account's matched items make (one notification per channel).

    The first story in STORY_ORDER is told (an infected device before a leak), with every item of
    its kind; its category is the first in CATEGORY_PRECEDENCE among them (Mirai and FluBot:
    `iot_malware` → the infected-device template naming both). Items of the other kind are
    `untold`. For `leaked_credentials` the credential items come first, so the login the message
    quotes is the one whose password leaked.
    """
    told, *others = split_stories(items)
    categories = [item_category(item) for item in told]
    category = min(categories, key=CATEGORY_PRECEDENCE.index)
    if category == LEAKED_CREDENTIALS:
        told = ([item for item, c in zip(told, categories) if c == category]
                + [item for item, c in zip(told, categories) if c != category])
    return Story(category, told, [item for group in others for item in group])


# --- the template a notification is rendered with --------------------------------------------

TEMPLATE_KEY = "template"  # in a notification's context JSON, set when the campaign chose per account
AUTO = "auto"  # the campaign template that means "per account, by category"


def notification_template(context: Mapping[str, Any], campaign_template: str) -> str:
    """The template to render a notification with: the one its planning chose for the account
    (stored in its context by an `auto` campaign), else its campaign's."""
    chosen = context.get(TEMPLATE_KEY)
    return chosen if isinstance(chosen, str) and chosen else campaign_template
