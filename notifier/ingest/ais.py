"""Parse a request from the Authority (`ais-request/1`, formats.md "AIS request").

A request is one JSON document: an envelope (who asks, which threat, by when) and a list of items,
each naming one device (`ip` + `seen_at`, optional `port`) or one person (`msisdn`, `email` or
their SHA-256). A national request can list a million items, so the file is never loaded whole:
it is read twice with ijson, a streaming parser. The first pass (`read_ais_request`) collects the
envelope and skips the items, whatever order the keys come in (an envelope key written after the
items is still found); it also reads the whole document once, so a truncated or broken file is
refused before anything is stored, and a request is never half-imported (which its unique
`request_id` would then keep from being fixed by a re-import). The second pass
(`parse_ais_items`) yields one record per item.

An item is validated on its own: a bad one becomes a Rejection whose `line` is the item's number
in `items` (1-based: the first item is 1), with a reason that never quotes a phone number or an
e-mail address in clear, and the other items still go in. Nothing is guessed: an item naming two
identifiers, a phone number written as a JSON number (its leading 0 is lost) or a port without an
address is rejected, not repaired.
"""

from __future__ import annotations

import gzip
import io
import json
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from notifier.errors import InputError
from notifier.identifiers import LOCAL_TIMEZONE, get_zone, normalise_identifier, parse_timestamp
from notifier.ingest.feeds import (
    DATA_LEAK,
    INFECTED_DEVICE,
    MAX_CATEGORY_CHARS,
    MAX_LABEL_CHARS,
    port_number,
    time_precision,
)
from notifier.ingest.records import FeedEventRecord, Rejection, bound_raw
from notifier.redaction import mask_personal_data

SCHEMA = "ais-request/1"
ADVISORY = "advisory"
REQUEST_KINDS = (INFECTED_DEVICE, DATA_LEAK, ADVISORY)
CONTACT_KINDS = ("msisdn", "email", "msisdn_sha256", "email_sha256")
IDENTIFIER_KEYS = ("ip", *CONTACT_KINDS)
SEGMENT_KEYS = ("service", "province", "all")
MAX_REQUEST_ID_CHARS = 64  # feed.request_id
MAX_REFERENCE_CHARS = 300
MAX_DESCRIPTION_CHARS = 2000  # stored whole; notices print at most safe_labels.MAX_DESCRIPTION_CHARS
MAX_URL_CHARS = 300
MAX_SEGMENT_VALUE_CHARS = 100
MAX_REASON_TEXT_CHARS = 40  # a wrong value quoted in a reason is cut to this
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
ITEMS = "items"
ITEM_PREFIX = "items.item"


@dataclass(frozen=True)
class AisThreat:
    """What the request warns about: its name and category go on every item; the description and
    advice link are kept in `feed.details` for the notices."""

    name: str | None = None
    category: str | None = None
    description: str | None = None
    advice_url: str | None = None


@dataclass(frozen=True)
class AisRequest:
    """The envelope of one Authority request (everything but the items)."""

    request_id: str
    kind: str
    issued_at: datetime | None = None
    deadline: datetime | None = None
    reference: str | None = None
    threat: AisThreat = field(default_factory=AisThreat)
    segment: Mapping[str, object] | None = None  # advisory only: {"service": "ftth"}, {"all": True}
    item_count: int = 0

    def details(self) -> dict[str, object]:
        """The envelope as the JSON document stored in `feed.details` (times ISO 8601 UTC)."""
        return {
            "schema": SCHEMA, "request_id": self.request_id, "kind": self.kind,
            "reference": self.reference,
            "issued_at": self.issued_at.isoformat() if self.issued_at else None,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "threat": {"name": self.threat.name, "category": self.threat.category,
                       "description": self.threat.description, "advice_url": self.threat.advice_url},
            "segment": dict(self.segment) if self.segment is not None else None,
            "items": self.item_count,
        }


# --- reading -------------------------------------------------------------------------------------

@contextmanager
def _open_json(path: Path) -> Iterator[BinaryIO]:
    """The request's bytes, gunzipped if they are gzip (told by magic bytes), without a UTF-8 BOM."""
    try:
        handle: BinaryIO = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with handle:
        stream: BinaryIO = handle
        if handle.read(2) == GZIP_MAGIC:
            handle.seek(0)
            stream = gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[assignment]
        else:
            handle.seek(0)
        buffered = io.BufferedReader(stream)  # type: ignore[arg-type]
        if buffered.peek(len(UTF8_BOM))[: len(UTF8_BOM)] == UTF8_BOM:
            buffered.read(len(UTF8_BOM))
        yield buffered


def _json_problem(path: Path, exc: Exception) -> InputError:
    return InputError(f"{path}: not a valid JSON document ({_short(str(exc), 120)}); nothing was imported")


_JSON_ERRORS = (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, OSError, EOFError)


def read_ais_request(path: Path | str) -> AisRequest:
    """First pass: the validated envelope of the request in `path`, and how many items it lists.

    Raises InputError (the whole request is refused) for a document that is not JSON, a wrong
    `schema`, a missing or unusable `request_id`, `kind`, time, threat or segment.
    """
    path = Path(path)
    envelope, item_count, has_items = _collect_envelope(path)
    return _validated_envelope(path, envelope, item_count, has_items)


def _collect_envelope(path: Path) -> tuple[dict[str, Any], int, bool]:
    """Every top-level value except `items`, built from the event stream; `items` only counted."""
    envelope: dict[str, Any] = {}
    builders: dict[str, ijson.ObjectBuilder] = {}
    item_count, has_items, top_is_map = 0, False, False
    seen_keys: set[str] = set()
    try:
        with _open_json(path) as stream:
            for prefix, event, value in ijson.parse(stream, use_float=True):
                if prefix == "":
                    top_is_map = top_is_map or event == "start_map"
                    if event == "map_key":
                        _note_key(path, value, seen_keys)
                        has_items = has_items or value == ITEMS
                    continue
                key = prefix.split(".", 1)[0]
                if key == ITEMS:
                    if prefix == ITEM_PREFIX and event in ("start_map", "start_array", "string", "number",
                                                           "boolean", "null"):
                        item_count += 1
                    continue
                builder = builders.get(key)
                if builder is None:
                    builder = builders[key] = ijson.ObjectBuilder()
                builder.event(event, value)
    except _JSON_ERRORS as exc:
        raise _json_problem(path, exc) from None
    if not top_is_map:
        raise InputError(f"{path}: an AIS request is one JSON object ({SCHEMA})")
    for key, builder in builders.items():
        envelope[key] = builder.value
    return envelope, item_count, has_items


def _note_key(path: Path, key: str, seen: set[str]) -> None:
    """A key written twice is refused: which of two `request_id`s would be the request's?"""
    if key in seen:
        raise InputError(f"{path}: key {_short(repr(key))} appears twice in the request; nothing was imported")
    seen.add(key)


def _validated_envelope(path: Path, data: dict[str, Any], item_count: int, has_items: bool) -> AisRequest:
    def refuse(reason: str) -> InputError:
        return InputError(f"{path}: {reason}; nothing was imported")

    schema = data.get("schema")
    if schema != SCHEMA:
        raise refuse(f"schema must be {SCHEMA!r}, not {_short(repr(schema))}")
    request_id = _envelope_text(data, "request_id", MAX_REQUEST_ID_CHARS, refuse, required=True)
    kind = data.get("kind")
    if kind not in REQUEST_KINDS:
        raise refuse(f"kind must be one of {', '.join(REQUEST_KINDS)}, not {_short(repr(kind))}")
    segment = data.get("segment")
    if kind == ADVISORY:
        if has_items:
            raise refuse("an advisory request carries a segment, not items")
        segment = _segment(segment, refuse)
    else:
        if not has_items or not isinstance(data.get(ITEMS, []), list):
            raise refuse(f"a {kind} request needs an items list")
        if segment is not None:
            raise refuse(f"a {kind} request lists items; only an advisory carries a segment")
    return AisRequest(
        request_id=request_id or "", kind=kind,
        issued_at=_envelope_time(data, "issued_at", refuse),
        deadline=_envelope_time(data, "deadline", refuse),
        reference=_envelope_text(data, "reference", MAX_REFERENCE_CHARS, refuse),
        threat=_threat(data.get("threat"), refuse),
        segment=segment, item_count=item_count,
    )


def _text(value: object, name: str, max_chars: int) -> str | None:
    """NFC text of at most max_chars, None when absent or blank; ValueError for a non-string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, not {type(value).__name__}")
    text = unicodedata.normalize("NFC", value.strip())
    if len(text) > max_chars:
        raise ValueError(f"{name} is longer than {max_chars} characters")
    return text or None


def _envelope_text(data: Mapping[str, Any], name: str, max_chars: int, refuse: Any,
                   *, required: bool = False) -> str | None:
    try:
        text = _text(data.get(name), name, max_chars)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if required and text is None:
        raise refuse(f"{name} is required")
    return text


def _envelope_time(data: Mapping[str, Any], name: str, refuse: Any) -> datetime | None:
    """An envelope time must say its zone: a deadline read in the wrong zone is seven hours off."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise refuse(f"{name} must be an ISO 8601 time with its zone")
    try:
        if datetime.fromisoformat(value.strip().upper()).tzinfo is None:
            raise refuse(f"{name} {_short(repr(value))} has no zone (write e.g. 2026-11-27T17:00:00+07:00)")
        return parse_timestamp(value, default_tz="UTC")
    except ValueError as exc:
        raise refuse(f"{name}: {_short(str(exc), 120)}") from None


def _threat(value: object, refuse: Any) -> AisThreat:
    if value is None:
        return AisThreat()
    if not isinstance(value, dict):
        raise refuse("threat must be an object {name, category, description, advice_url}")
    try:
        category = _text(value.get("category"), "threat.category", MAX_CATEGORY_CHARS)
        return AisThreat(
            name=_text(value.get("name"), "threat.name", MAX_LABEL_CHARS),
            category=category.lower() if category else None,
            description=_text(value.get("description"), "threat.description", MAX_DESCRIPTION_CHARS),
            advice_url=_advice_url(value.get("advice_url")),
        )
    except ValueError as exc:
        raise refuse(str(exc)) from None


def _advice_url(value: object) -> str | None:
    """An https address without spaces or credentials: it is printed in notices for people to type."""
    url = _text(value, "threat.advice_url", MAX_URL_CHARS)
    if url is None:
        return None
    host = url[len("https://"):].split("/", 1)[0]
    if not url.lower().startswith("https://") or any(ch.isspace() for ch in url) or "@" in host or "." not in host:
        raise ValueError(f"threat.advice_url must be an https:// address, not {_short(repr(url))}")
    return url


def _segment(value: object, refuse: Any) -> dict[str, object]:
    """Which accounts an advisory is for. An unknown key is refused, never ignored: dropping a
    condition would send the advisory to more subscribers than the Authority named."""
    if not isinstance(value, dict) or not value:
        raise refuse('an advisory needs a segment, e.g. {"service": "ftth"}, {"province": "Hà Nội"} or {"all": true}')
    unknown = sorted(set(value) - set(SEGMENT_KEYS))
    if unknown:
        raise refuse(f"unknown segment key(s) {', '.join(unknown)} (known: {', '.join(SEGMENT_KEYS)})")
    if "all" in value:
        if value["all"] is not True or len(value) > 1:
            raise refuse('segment "all" must be true and alone')
        return {"all": True}
    segment: dict[str, object] = {}
    for key in ("service", "province"):
        if key in value:
            try:
                text = _text(value[key], f"segment.{key}", MAX_SEGMENT_VALUE_CHARS)
            except ValueError as exc:
                raise refuse(str(exc)) from None
            if text is None:
                raise refuse(f"segment.{key} is empty")
            segment[key] = text.lower() if key == "service" else text
    return segment


# --- items ---------------------------------------------------------------------------------------

def parse_ais_items(path: Path | str, request: AisRequest, *, tz: str = LOCAL_TIMEZONE
                    ) -> Iterator[FeedEventRecord | Rejection]:
    """Second pass: one FeedEventRecord per good item, one Rejection (item number, reason) per bad.

    `tz` is the zone of an item time written without one (the Authority writes its zone; a bare
    time is read as Vietnamese time unless `--tz` says otherwise).
    """
    path = Path(path)
    if request.kind == ADVISORY:
        return
    try:
        with _open_json(path) as stream:
            for number, item in enumerate(ijson.items(stream, ITEM_PREFIX, use_float=True), start=1):
                yield _item_record(number, item, request, tz)
    except _JSON_ERRORS as exc:  # the first pass read it whole: the file changed in between
        raise _json_problem(path, exc) from None


def parse_ais_json(path: Path | str, *, tz: str = LOCAL_TIMEZONE) -> Iterator[FeedEventRecord | Rejection]:
    """Both passes: the envelope (validated first) then every item, as a feed parser."""
    path = Path(path)
    try:
        get_zone(tz)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    yield from parse_ais_items(path, read_ais_request(path), tz=tz)


def _item_record(number: int, item: object, request: AisRequest, tz: str) -> FeedEventRecord | Rejection:
    raw = bound_raw(json.dumps(item, ensure_ascii=False, default=str))
    try:
        return _build_item(number, item, request, tz, raw)
    except ValueError as exc:
        return Rejection(number, f"item {number}: {exc}", raw)


def _build_item(number: int, item: object, request: AisRequest, tz: str, raw: str) -> FeedEventRecord:
    if not isinstance(item, dict):
        raise ValueError(f"not an object (a {_json_type(item)})")
    present = [key for key in IDENTIFIER_KEYS if item.get(key) not in (None, "")]
    if not present:
        raise ValueError(f"no identifier (one of {', '.join(IDENTIFIER_KEYS)})")
    if len(present) > 1:
        raise ValueError(f"{' and '.join(present)} in one item: send one identifier per item")
    kind = present[0]
    identifier = _identifier(kind, item[kind])
    port = _port(item.get("port")) if "port" in item else None
    if port is not None and kind != "ip":
        raise ValueError("port without ip")
    seen_at = _seen_at(item.get("seen_at"), tz)
    if kind == "ip" and seen_at is None:
        raise ValueError("seen_at is required with an ip (an address names a subscriber only at a time)")
    if kind == "ip" and request.kind != INFECTED_DEVICE:
        raise ValueError(f"an ip item in a {request.kind} request (ip items are infected devices)")
    leak = request.kind == DATA_LEAK
    return FeedEventRecord(
        line=number, identifier_kind=kind, identifier=identifier, port=port, seen_at=seen_at,
        seen_precision=time_precision(item["seen_at"]) if seen_at is not None else None,
        threat=request.threat.name,
        category=DATA_LEAK if leak else (request.threat.category or "botnet"),
        kind=request.kind, data_classes=(), source=request.threat.name if leak else None, raw=raw,
    )


def _identifier(kind: str, value: object) -> str:
    """The normalised identifier; the reason never shows a phone number or e-mail address."""
    if not isinstance(value, str):
        extra = " (a number loses its leading 0: quote it)" if kind == "msisdn" else ""
        raise ValueError(f"{kind} must be text, not a {_json_type(value)}{extra}")
    try:
        return normalise_identifier(kind, value)
    except ValueError as exc:
        reason = str(exc) if kind in ("msisdn", "email") else mask_personal_data(str(exc))  # msisdn/email mask themselves
        raise ValueError(f"{kind}: {reason}") from None


def _port(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"port must be a whole number, not a {_json_type(value)}")
    try:
        return port_number(str(value).strip())
    except ValueError:
        raise ValueError(f"port {_short(str(value))} is not a port number (0-65535)") from None


def _seen_at(value: object, tz: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"seen_at must be an ISO 8601 time, not a {_json_type(value)}")
    try:
        return parse_timestamp(value, default_tz=tz)
    except ValueError as exc:
        raise ValueError(f"seen_at: {_short(str(exc), 120)}") from None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    return {str: "string", list: "list", dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _short(text: str, limit: int = MAX_REASON_TEXT_CHARS) -> str:
    """A quoted value cut for a one-line reason, personal data masked."""
    text = mask_personal_data(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
