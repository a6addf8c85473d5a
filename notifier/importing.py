"""Store what the parsers in `notifier.ingest` yield: subscribers, IP assignments and feeds.

Parsers decide what is valid; this module only persists, in batches, and counts. Every importer
returns an `ImportResult` whose `errors` list names each rejected line and why, which is also the
`--json` output of the import commands (formats.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from notifier.errors import InputError
from notifier.identifiers import email_sha256, ip_key, msisdn_sha256
from notifier.ingest import get_assignment_parser, get_feed_parser
from notifier.ingest.records import FeedEventRecord, Rejection, SessionRecord, SubscriberRecord
from notifier.ingest.subscribers import parse_subscribers
from notifier.matching import match_feed
from notifier.models import Account, ContactPoint, Feed, FeedItem, IpAssignment, utcnow

BATCH_ROWS = 1000
MAX_REPORTED_ERRORS = 1000  # the JSON output lists at most this many; counts stay exact


@dataclass
class ImportResult:
    """What an import did: the `--json` document of every import command."""

    accepted: int = 0
    rejected: int = 0
    unchanged: int = 0
    id: int | None = None
    errors: list[dict[str, object]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def reject(self, rejection: Rejection) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": rejection.line, "reason": rejection.reason})

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "accepted": self.accepted, "rejected": self.rejected,
                "errors": self.errors, **({"counts": self.counts} if self.counts else {})}


# --- subscribers ------------------------------------------------------------------------------

_ACCOUNT_FIELDS = (
    "full_name", "service", "billing_day", "language", "status", "sms_opt_out", "email_opt_out",
    "voice_opt_out", "address", "province",
)


def import_subscribers(
    session: Session, path: Path, *, tz: str, column_map: Mapping[str, str] | None = None
) -> ImportResult:
    """Create or update accounts and their contact points; an unchanged row changes nothing."""
    result = ImportResult()
    for record in parse_subscribers(path, tz=tz, column_map=column_map):
        if isinstance(record, Rejection):
            result.reject(record)
            continue
        changed = _upsert_account(session, record)
        result.accepted += 1
        result.unchanged += 0 if changed else 1
        if result.accepted % BATCH_ROWS == 0:
            session.flush()
            session.expunge_all()
    return result


def _upsert_account(session: Session, record: SubscriberRecord) -> bool:
    account = session.exec(select(Account).where(Account.account_ref == record.account_ref)).first()
    if account is None:
        account = Account(account_ref=record.account_ref, full_name=record.full_name)
        session.add(account)
        session.flush()
    changed = False
    for name in _ACCOUNT_FIELDS:
        value = getattr(record, name)
        if getattr(account, name) != value:
            setattr(account, name, value)
            changed = True
    changed = _sync_contact_points(session, account.id, _contact_rows(record)) or changed
    if changed:
        account.updated_at = utcnow()
    return changed


def _contact_rows(record: SubscriberRecord) -> list[tuple[str, str, str | None]]:
    rows: list[tuple[str, str, str | None]] = []
    rows += [("msisdn", value, msisdn_sha256(value)) for value in record.msisdns]
    rows += [("email", value, email_sha256(value)) for value in record.emails]
    rows += [("username", value, None) for value in record.usernames]
    return rows


def _sync_contact_points(
    session: Session, account_id: int | None, wanted: list[tuple[str, str, str | None]]
) -> bool:
    """Make the account's contact points equal `wanted`, keeping rows (and opt-outs) that stay."""
    existing = {(cp.kind, cp.value): cp for cp in
                session.exec(select(ContactPoint).where(ContactPoint.account_id == account_id))}
    changed = False
    for position, (kind, value, digest) in enumerate(wanted):
        contact = existing.pop((kind, value), None)
        if contact is None:
            session.add(ContactPoint(account_id=account_id, kind=kind, value=value,
                                     value_sha256=digest, position=position))
            changed = True
        elif contact.position != position:
            contact.position = position
            changed = True
    for contact in existing.values():
        session.delete(contact)
        changed = True
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


# --- IP assignments ---------------------------------------------------------------------------


def import_assignments(session: Session, path: Path, *, fmt: str, tz: str) -> ImportResult:
    """Store sessions (who had which IP when); a session seen again only gains its end time."""
    parser = get_assignment_parser(fmt)
    accounts = _AccountIds(session)
    result = ImportResult()
    for record in parser(path, tz=tz):
        if isinstance(record, Rejection):
            result.reject(record)
            continue
        account_id = accounts.get(record.account_ref)
        if account_id is None:
            result.reject(Rejection(record.line, f"unknown account '{record.account_ref}'", ""))
            continue
        _upsert_session(session, account_id, record, fmt)
        result.accepted += 1
    return result


def _upsert_session(session: Session, account_id: int, record: SessionRecord, fmt: str) -> None:
    key = ip_key(record.ip)
    existing = session.exec(
        select(IpAssignment).where(
            IpAssignment.account_id == account_id,
            IpAssignment.range_start == key,
            IpAssignment.started_at == record.started_at,
        )
    ).first()
    if existing is not None:
        if record.ended_at is not None and existing.ended_at != record.ended_at:
            existing.ended_at = record.ended_at
        return
    session.add(IpAssignment(account_id=account_id, network=record.ip, range_start=key, range_end=key,
                             started_at=record.started_at, ended_at=record.ended_at, source=fmt,
                             username=record.username))


class _AccountIds:
    """account_ref → id, cached for the length of one import."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._cache: dict[str, int | None] = {}

    def get(self, account_ref: str) -> int | None:
        if account_ref not in self._cache:
            self._cache[account_ref] = self._session.exec(
                select(Account.id).where(Account.account_ref == account_ref)).first()
        return self._cache[account_ref]


# --- feeds ------------------------------------------------------------------------------------


def import_feed(
    session: Session,
    path: Path,
    *,
    fmt: str,
    tz: str | None = None,
    source: str | None = None,
    report_type: str | None = None,
) -> ImportResult:
    """Store a feed and every line of it (accepted or rejected), then match it to accounts."""
    parser = get_feed_parser(fmt)
    options: dict[str, object] = {}
    if tz:
        options["tz"] = tz
    if fmt == "shadowserver" and report_type:
        options["report_type"] = report_type
    records = parser(path, **options)
    feed = Feed(format=fmt, source=source, report_type=report_type, filename=path.name,
                file_sha256=file_sha256(path))
    session.add(feed)
    session.flush()
    result = ImportResult(id=feed.id)
    kinds = _store_items(session, feed.id, records, result)
    feed.kind = "data_leak" if kinds == {"data_leak"} else "infected_device"
    feed.accepted, feed.rejected = result.accepted, result.rejected
    counts = match_feed(session, feed.id)
    feed.matched, feed.unmatched, feed.ambiguous = counts.matched, counts.unmatched, counts.ambiguous
    result.counts = {"matched": counts.matched, "unmatched": counts.unmatched,
                     "ambiguous": counts.ambiguous}
    return result


def _store_items(
    session: Session, feed_id: int | None, records: Iterable[FeedEventRecord | Rejection],
    result: ImportResult,
) -> set[str]:
    kinds: set[str] = set()
    batch: list[dict[str, object]] = []
    for record in records:
        if isinstance(record, Rejection):
            result.reject(record)
            batch.append({"feed_id": feed_id, "line": record.line, "status": "rejected",
                          "reason": record.reason[:500], "raw": record.raw[:2000] or None})
        else:
            result.accepted += 1
            kinds.add(record.kind)
            batch.append(_item_row(feed_id, record))
        if len(batch) >= BATCH_ROWS:
            session.execute(sa.insert(FeedItem), batch)
            batch = []
    if batch:
        session.execute(sa.insert(FeedItem), batch)
    return kinds


def _item_row(feed_id: int | None, record: FeedEventRecord) -> dict[str, object]:
    return {
        "feed_id": feed_id, "line": record.line, "status": "pending", "reason": None,
        "kind": record.kind, "identifier_kind": record.identifier_kind,
        "identifier": record.identifier, "port": record.port, "seen_at": record.seen_at,
        "threat": record.threat, "category": record.category,
        "data_classes": ";".join(record.data_classes) or None, "source": record.source,
        "raw": record.raw[:2000] or None,
    }


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
