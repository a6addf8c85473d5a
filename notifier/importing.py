"""Store what the parsers in `notifier.ingest` yield: subscribers, IP assignments and feeds.

Parsers decide what is valid; this module only persists, in batches, and counts. Every importer
returns an `ImportResult` whose `errors` list names each rejected line and why, which is also the
`--json` output of the import commands (formats.md).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from notifier.batching import chunks
from notifier.db import plan_each_execution
from notifier.errors import InputError
from notifier.identifiers import LOCAL_TIMEZONE, email_sha256, msisdn_sha256
from notifier.identity.assignments import import_assignments
from notifier.identity.matching import ItemResolver, Outcome
from notifier.import_result import MAX_REPORTED_ERRORS, ImportResult
from notifier.ingest import get_feed_parser
from notifier.ingest.ais import parse_ais_items, read_ais_request
from notifier.ingest.feeds import report_type_of
from notifier.ingest.records import FeedEventRecord, Rejection, SubscriberRecord
from notifier.ingest.reader import check_zone
from notifier.ingest.subscribers import parse_subscribers
from notifier.models import Account, ContactPoint, Feed, FeedItem, utcnow

BATCH_ROWS = 1000
# Feed items decided and stored per round (see `_store_items`): a few megabytes of records.
STORE_BATCH_ROWS = 20_000

__all__ = ["ImportResult", "import_assignments", "import_feed", "import_subscribers"]
# --- subscribers ------------------------------------------------------------------------------

_ACCOUNT_FIELDS = (
    "full_name", "service", "billing_day", "language", "status", "sms_opt_out", "email_opt_out",
    "voice_opt_out", "address", "province",
)


def import_subscribers(
    session: Session, path: Path, *, tz: str, column_map: Mapping[str, str] | None = None
) -> ImportResult:
    """Create or update accounts and their contact points, a batch of rows per few statements.

    An unchanged row changes nothing (not even `updated_at`); a contact point that stays keeps its
    opt-out. An account_id seen again in the same file is a data error in the export: the first row
    goes in and each later one is rejected naming the first line, never merged silently.
    """
    plan_each_execution(session)  # PostgreSQL: no generic plan costed on a small table (issue 7)
    result = ImportResult()
    first_lines: dict[str, int] = {}  # account_ref → first line: ~120 MB per million accounts
    for chunk in chunks(parse_subscribers(path, tz=tz, column_map=column_map), BATCH_ROWS):
        records = [record for record in chunk if _admit(record, first_lines, result)]
        result.accepted += len(records)
        changed = _store_subscribers(session, {r.account_ref: r for r in records})
        result.unchanged += len(records) - changed
    return result


def _admit(record: SubscriberRecord | Rejection, first_lines: dict[str, int], result: ImportResult) -> bool:
    """Count a rejection, refuse a repeated account_id, note warnings; True if the row goes in."""
    if isinstance(record, Rejection):
        result.reject(record)
        return False
    first = first_lines.setdefault(record.account_ref, record.line)
    if first != record.line:
        result.reject(Rejection(record.line, f"account_id {record.account_ref} already on line {first}", ""))
        return False
    for warning in record.warnings:
        result.warn(record.line, warning)
    return True


def _store_subscribers(session: Session, latest: dict[str, SubscriberRecord]) -> int:
    """Upsert one batch of accounts (keyed by account_ref); returns how many changed."""
    if not latest:
        return 0
    now = utcnow()
    existing = {row["account_ref"]: row for row in session.execute(
        sa.select(Account.__table__).where(Account.account_ref.in_(list(latest)))).mappings()}
    new_refs = [ref for ref in latest if ref not in existing]
    ids = {ref: row["id"] for ref, row in existing.items()}
    if new_refs:
        inserted = session.execute(
            sa.insert(Account).returning(Account.id, Account.account_ref),
            [{"account_ref": ref, **_account_values(latest[ref]), "created_at": now, "updated_at": now}
             for ref in new_refs],
        ).all()
        ids.update({ref: account_id for account_id, ref in inserted})
    fields_changed = {ref for ref in existing
                      if _account_values(latest[ref]) != {f: existing[ref][f] for f in _ACCOUNT_FIELDS}}
    contacts_changed = _sync_contact_points(session, {ids[ref]: _contact_rows(r) for ref, r in latest.items()})
    refresh = fields_changed | {ref for ref in existing if ids[ref] in contacts_changed}
    if refresh:
        session.execute(
            sa.update(Account.__table__).where(Account.__table__.c.id == sa.bindparam("b_id"))
            .values({name: sa.bindparam(name) for name in (*_ACCOUNT_FIELDS, "updated_at")}),
            [{"b_id": ids[ref], **_account_values(latest[ref]), "updated_at": now} for ref in refresh])
    return len(new_refs) + len(refresh)


def _account_values(record: SubscriberRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in _ACCOUNT_FIELDS}


def _contact_rows(record: SubscriberRecord) -> list[tuple[str, str, str | None]]:
    rows: list[tuple[str, str, str | None]] = []
    rows += [("msisdn", value, msisdn_sha256(value)) for value in record.msisdns]
    rows += [("email", value, email_sha256(value)) for value in record.emails]
    rows += [("username", value, None) for value in record.usernames]
    return rows


def _sync_contact_points(session: Session, wanted: dict[int, list[tuple[str, str, str | None]]]) -> set[int]:
    """Make each account's contact points equal `wanted`, keeping rows (and opt-outs) that stay.
    Returns the ids of the accounts whose contact points changed."""
    table = ContactPoint.__table__
    existing: dict[int, dict[tuple[str, str], tuple[int, int]]] = defaultdict(dict)
    for row in session.execute(sa.select(table.c.id, table.c.account_id, table.c.kind, table.c.value,
                                         table.c.position).where(table.c.account_id.in_(list(wanted)))):
        existing[row.account_id][(row.kind, row.value)] = (row.id, row.position)
    inserts: list[dict[str, object]] = []
    moves: list[dict[str, object]] = []
    deletes: list[int] = []
    changed: set[int] = set()
    for account_id, rows in wanted.items():
        current = dict(existing.get(account_id, {}))
        for position, (kind, value, digest) in enumerate(rows):
            found = current.pop((kind, value), None)
            if found is None:
                inserts.append({"account_id": account_id, "kind": kind, "value": value, "value_sha256": digest,
                                "opted_out": False, "position": position})
            elif found[1] != position:
                moves.append({"b_id": found[0], "position": position})
            else:
                continue
            changed.add(account_id)
        deletes += [contact_id for contact_id, _ in current.values()]
        changed.update([account_id] if current else [])
    if inserts:
        session.execute(sa.insert(table), inserts)
    if moves:
        session.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id"))
                        .values(position=sa.bindparam("position")), moves)
    if deletes:
        session.execute(sa.delete(table).where(table.c.id.in_(deletes)))
    return changed


def load_column_map(path: Path) -> dict[str, str]:
    """Read a `[columns]` table (export header = our column name) from a TOML file."""
    import tomllib

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    columns = data.get("columns")
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise InputError(f"{path}: needs a [columns] table of header = column name")
    return dict(columns)


# --- feeds ------------------------------------------------------------------------------------


AIS_FORMAT = "ais-json"


def import_feed(
    session: Session,
    path: Path,
    *,
    fmt: str,
    tz: str | None = None,
    source: str | None = None,
    report_type: str | None = None,
    again: bool = False,
) -> ImportResult:
    """Store a feed and every line of it (accepted or rejected), then match it to accounts.

    The same file twice is refused unless `again`: a second feed would become a second campaign,
    and every subscriber in it would be warned twice. An Authority request (`ais-json`) is
    identified by its `request_id` instead of its bytes: the same request again, whatever its
    spacing or key order, returns the feed it already is (`already_imported`), never a second one.
    A Shadowserver report type read from the file name is stored like one given explicitly.
    """
    parser = get_feed_parser(fmt)
    if fmt == AIS_FORMAT:
        return _import_ais_request(session, path, tz=tz, source=source, again=again)
    options: dict[str, object] = {}
    if tz:
        options["tz"] = tz
    if fmt == "shadowserver":
        report_type = report_type_of(path, report_type)
        options["report_type"] = report_type
    records = parser(path, **options)
    digest = file_sha256(path)
    earlier = find_feed_by_digest(session, digest)
    if earlier is not None and not again:
        raise InputError(f"{path}: already imported as feed {earlier.id} on {earlier.imported_at:%Y-%m-%d %H:%M} UTC "
                         "(use --again to import it as a new feed)")
    feed = Feed(format=fmt, source=source, report_type=report_type, filename=path.name, file_sha256=digest)
    session.add(feed)
    session.flush()
    kinds, result = _store_and_match(session, feed, records)
    feed.kind = "data_leak" if kinds == {"data_leak"} else "infected_device"
    return result


def _store_and_match(
    session: Session, feed: Feed, records: Iterable[FeedEventRecord | Rejection]
) -> tuple[set[str], ImportResult]:
    """Store every record of a new feed with its outcome, and keep the counts on the feed row."""
    result = ImportResult(id=feed.id)
    tally = _store_items(session, feed.id, records, result)
    feed.accepted, feed.rejected = result.accepted, result.rejected
    counts = result.counts = {status: tally.statuses[status] for status in ("matched", "unmatched", "ambiguous")}
    feed.matched, feed.unmatched, feed.ambiguous = counts["matched"], counts["unmatched"], counts["ambiguous"]
    return tally.kinds, result


def _import_ais_request(
    session: Session, path: Path, *, tz: str | None, source: str | None, again: bool
) -> ImportResult:
    """One Authority request → one feed, keyed by its `request_id` (formats.md, "AIS request").

    The envelope is read and checked first (a streaming pass that stores nothing), so a request
    seen before is recognised before any item is parsed. `kind` and the envelope (reference,
    deadline, threat, segment) go on the feed; an advisory has no items, only its segment.
    """
    check_zone(path, tz or LOCAL_TIMEZONE)  # before the request_id is used up by a feed of rejects
    request = read_ais_request(path)
    existing = find_feed_by_request_id(session, request.request_id)
    if existing is not None:
        if again:
            raise InputError(f"{path}: request {request.request_id} is feed {existing.id}; an Authority request "
                             "is imported once (--again does not apply to ais-json)")
        return already_imported(session, existing)
    feed = Feed(format=AIS_FORMAT, source=source or "AIS", filename=path.name, file_sha256=file_sha256(path),
                request_id=request.request_id, kind=request.kind,
                details=json.dumps(request.details(), ensure_ascii=False))
    try:
        with session.begin_nested():  # a concurrent import of the same request: keep theirs
            session.add(feed)
            session.flush()
    except IntegrityError:
        existing = find_feed_by_request_id(session, request.request_id)
        if existing is None:
            raise
        return already_imported(session, existing)
    _, result = _store_and_match(session, feed, parse_ais_items(path, request, tz=tz or LOCAL_TIMEZONE))
    return result


def find_feed_by_request_id(session: Session, request_id: str) -> Feed | None:
    """The feed an Authority request with this `request_id` was imported as, if any."""
    return session.exec(select(Feed).where(Feed.request_id == request_id)).first()


def already_imported(session: Session, feed: Feed) -> ImportResult:
    """The result of importing `feed` again: its id, its stored counts and first rejected lines,
    marked `already_imported` (the same document as the first import, so a retried job can go on)."""
    result = ImportResult(id=feed.id, accepted=feed.accepted, already_imported=True,
                          counts={"matched": feed.matched, "unmatched": feed.unmatched, "ambiguous": feed.ambiguous})
    for line, reason in session.execute(
        sa.select(FeedItem.line, FeedItem.reason).where(FeedItem.feed_id == feed.id, FeedItem.status == "rejected")
        .order_by(FeedItem.line, FeedItem.id).limit(MAX_REPORTED_ERRORS)
    ):
        result.reject(Rejection(line, reason or "", ""))
    result.rejected = feed.rejected
    return result


def find_feed_by_digest(session: Session, digest: str) -> Feed | None:
    """The earliest feed imported from a file with these exact bytes, if any."""
    return session.exec(select(Feed).where(Feed.file_sha256 == digest).order_by(Feed.id)).first()


def _store_items(
    session: Session, feed_id: int | None, records: Iterable[FeedEventRecord | Rejection],
    result: ImportResult,
) -> _Tally:
    """Store every record, a batch at a time, each item written once with its outcome (see
    `ItemResolver`): memory holds one batch whatever the file's size."""
    tally = _Tally()
    with ItemResolver(session) as resolver:
        for batch in chunks(records, STORE_BATCH_ROWS):
            resolver.store(FeedItem.__table__, ITEM_COLUMNS, _decided_rows(resolver, feed_id, batch, result, tally))
    return tally


@dataclass
class _Tally:
    """What storing a feed learns on the way: its report kinds and how many items got each
    outcome (the feed's counts, without reading its items back)."""

    kinds: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)


def _decided_rows(resolver: ItemResolver, feed_id: int | None, batch: list[FeedEventRecord | Rejection],
                  result: ImportResult, tally: _Tally) -> list[tuple[object, ...]]:
    """One batch's rows to store, each accepted record with its outcome (refs are batch positions);
    accepted and rejected lines are counted into `result`, kinds and outcomes into `tally`."""
    times = [None if isinstance(r, Rejection) else resolver.own_time(r.seen_at) for r in batch]
    outcomes = resolver.outcomes([(ref, r.identifier_kind, r.identifier, r.port, times[ref])
                                  for ref, r in enumerate(batch) if not isinstance(r, Rejection)])
    rows: list[tuple[object, ...]] = []
    for ref, record in enumerate(batch):
        if isinstance(record, Rejection):
            result.reject(record)
            rows.append(_rejected_row(feed_id, record))
        else:
            result.accepted += 1
            tally.kinds.add(record.kind)
            tally.statuses[outcomes[ref][0]] += 1
            rows.append(_item_row(feed_id, record, outcomes[ref], times[ref]))
    return rows


# The columns `_item_row` and `_rejected_row` fill, in their order.
ITEM_COLUMNS = ("feed_id", "line", "status", "reason", "account_id", "kind", "identifier_kind", "identifier",
                "port", "seen_at", "seen_precision", "threat", "category", "data_classes", "source", "raw")


def _item_row(feed_id: int | None, record: FeedEventRecord, outcome: Outcome, seen_at: object) -> tuple[object, ...]:
    """An accepted record with its outcome; `seen_at` already in the backend's raw form."""
    status, account_id, reason = outcome
    return (feed_id, record.line, status, reason, account_id, record.kind, record.identifier_kind,
            record.identifier, record.port, seen_at, record.seen_precision, record.threat, record.category,
            ";".join(record.data_classes) or None, record.source, record.raw[:2000] or None)


def _rejected_row(feed_id: int | None, record: Rejection) -> tuple[object, ...]:
    return (feed_id, record.line, "rejected", record.reason[:500], None, None, None, None,
            None, None, None, None, None, None, None, record.raw[:2000] or None)


def file_sha256(path: Path) -> str:
    """Digest of a file's bytes: tells an operator that a feed was imported before."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()
