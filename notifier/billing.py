"""Billing-statement inserts: hand a cycle's warnings to the bill-print system and record its answer.

States (every move a compare-and-set with its `DeliveryEvent`, `notifier.dispatch.outbox`):

    planned ──billing export──▶ sent ──billing ack: printed | sent──▶ delivered
                                     └─billing ack: failed──────────▶ failed

A `billing` notification waits in `planned`: no worker sends it and `campaign run` neither queues
nor waits for it (`campaigns.HANDED_OVER_CHANNELS`). `notifier billing export --cycle 2026-12
--billing-day 5` takes every such row whose account bills on day 5, in campaigns that were
started (`campaign run`: the operator's go) and are not paused or cancelled, renders its insert,
and in the same transaction moves the rows to `sent` (provider id `<batch_id>/<account_id>`, kept
as the row's `message_part`, the way an SMS keeps its SMSC id). The files are renamed into place
after the commit (`channels.billing.BatchWriter`). A row that was exported is no longer `planned`,
so exporting the same cycle again takes only what arrived since (a new batch, `…-002`), and
`--again` rewrites the files of the cycle's batches from what was stored, changing nothing.

`notifier billing ack FILE` applies the bill-print system's answers: `printed` or `sent` →
`delivered`, `failed` → `failed` (with its reason). A line naming an unknown batch or an account
not in that batch is rejected (`line N: reason`); the others still apply.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from channels.billing import (
    AckLine, BatchInfo, BatchWriter, InsertRecord, find_font, provider_id, read_acks,
)
from notifier.db import session_scope
from notifier.dispatch.delivery import reference_code, template_context
from notifier.dispatch.outbox import RowMove, among, bulk_insert, is_postgresql, transition_rows
from notifier.dispatch.states import DELIVERED, FAILED, PLANNED, SENT
from notifier.errors import InputError
from notifier.import_result import ImportResult
from notifier.ingest.records import Rejection
from notifier.ingest.subscribers import MAX_BILLING_DAY, MIN_BILLING_DAY
from notifier.models import Account, Campaign, MessagePart, Notification, utcnow
from notifier.rendering import Renderer
from notifier.threat_categories import notification_template
from notifier.settings import Settings

BILLING = "billing"
BATCH_PREFIX = "BILL"
BATCH_NUMBER_DIGITS = 3  # BILL-2026-12-D05-001: fixed width, so the batch id is a fixed-length prefix
EXPORT_CHUNK = 500  # rows selected, rendered and moved per statement group
ACK_CHUNK = 1000  # acknowledgement lines looked up and applied per statement group
HELD_CAMPAIGNS = ("paused", "cancelled")
EXPORT_SOURCE = "billing-export"
ACK_SOURCE = "billing-ack"
_CYCLE_RE = re.compile(r"(\d{4})-(\d{2})")
_N, _C, _A, _P = Notification.__table__.c, Campaign.__table__.c, Account.__table__.c, MessagePart.__table__.c


@dataclass(frozen=True)
class BillingCycle:
    """A month's bills for the accounts billed on one day of it: what one export covers."""

    year: int
    month: int
    billing_day: int

    @classmethod
    def parse(cls, cycle: str, billing_day: int) -> "BillingCycle":
        """`2026-12` and a day 1–28 (the days an account can bill on), else InputError."""
        match = _CYCLE_RE.fullmatch((cycle or "").strip())
        if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
            raise InputError(f"--cycle must be a month as YYYY-MM (e.g. 2026-12), not {cycle!r}")
        if not MIN_BILLING_DAY <= billing_day <= MAX_BILLING_DAY:
            raise InputError(f"--billing-day must be a day from {MIN_BILLING_DAY} to {MAX_BILLING_DAY}, "
                             f"not {billing_day}")
        return cls(int(match.group(1)), int(match.group(2)), billing_day)

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def batch_prefix(self) -> str:
        return f"{BATCH_PREFIX}-{self.label}-D{self.billing_day:02d}-"

    def batch_id(self, number: int) -> str:
        if not 1 <= number < 10 ** BATCH_NUMBER_DIGITS:
            raise InputError(f"cycle {self.label} day {self.billing_day} already has {number - 1} batches")
        return f"{self.batch_prefix}{number:0{BATCH_NUMBER_DIGITS}d}"


@dataclass
class ExportSummary:
    """What `billing export` did: the one summary line, or its `--json` document."""

    cycle: str
    billing_day: int
    batches: list[str] = field(default_factory=list)
    exported: int = 0
    failed: int = 0  # rows that could not be rendered: `failed` with the reason
    files: list[str] = field(default_factory=list)
    rewritten: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"cycle": self.cycle, "billing_day": self.billing_day, "batches": self.batches,
                "exported": self.exported, "failed": self.failed, "files": self.files, "rewritten": self.rewritten}

    def line(self) -> str:
        where = f" → {', '.join(self.files)}" if self.files else ""
        if self.rewritten:
            return (f"billing {self.cycle} day {self.billing_day}: {len(self.batches)} batch(es) rewritten, "
                    f"{self.exported} insert(s){where}")
        batch = self.batches[0] if self.batches else "no batch"
        return (f"billing {self.cycle} day {self.billing_day}: {batch}, {self.exported} insert(s) exported, "
                f"{self.failed} failed{where}")


# --- export -------------------------------------------------------------------------------------


def export_cycle(settings: Settings, cycle: BillingCycle, *, out_dir: Path | None = None) -> ExportSummary:
    """Export every waiting billing insert of `cycle` as one new batch (none if nothing waits).

    One transaction: the next batch id is taken, the rows are rendered and moved `planned → sent`
    chunk by chunk while the files are written under temporary names; the files are renamed into
    place only after the commit. A row another export took meanwhile is not in this batch (the
    move is a compare-and-set), and a failure before the commit leaves no files and no state change.
    """
    font = find_font(settings.billing.font_path)  # a missing font fails before anything moves
    target = Path(out_dir or settings.billing.output_dir)
    renderer = _renderer(settings)
    summary = ExportSummary(cycle.label, cycle.billing_day)
    writer: BatchWriter | None = None
    try:
        with session_scope(settings.database_url) as session:
            _serialise_exports(session, cycle)
            batch_id = cycle.batch_id(_last_batch_number(session, cycle) + 1)
            now = utcnow()
            info = BatchInfo(batch_id, cycle.label, cycle.billing_day, now, settings.operator.name)
            writer = BatchWriter(target, info, font_path=font, page_size=settings.billing.page_size)
            for rows in _waiting(session, cycle):
                records, failed = _export_chunk(session, settings, renderer, rows, batch_id, now)
                for record in records:
                    writer.add(record)
                summary.exported += len(records)
                summary.failed += failed
            if not summary.exported:
                writer.discard()
                return summary
            writer.close()
        summary.batches = [batch_id]
        summary.files = [str(path) for path in writer.publish()]
        return summary
    except BaseException:
        if writer is not None:
            writer.discard()
        raise


def _renderer(settings: Settings) -> Renderer:
    return Renderer(settings.templates_dir, timezone=settings.timezone, default_language=settings.default_language)


def _serialise_exports(session: Session, cycle: BillingCycle) -> None:
    """Two exports of one cycle and day at once would both take batch number n: on PostgreSQL the
    second waits here for the first to commit (SQLite has one writer: `session_scope` serialises)."""
    if is_postgresql(session):
        key = int.from_bytes(cycle.batch_prefix.encode()[-8:], "big") & 0x7FFF_FFFF_FFFF_FFFF
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _batch_ids(session: Session, prefix: str) -> list[str]:
    """The cycle and day's batch ids, from their inserts' provider ids (`<batch_id>/<account>`)."""
    width = len(prefix) + BATCH_NUMBER_DIGITS
    pattern = prefix + "_" * BATCH_NUMBER_DIGITS + "/%"
    return sorted(session.execute(
        sa.select(sa.func.substr(_P.provider_message_id, 1, width)).distinct()
        .where(_P.channel == BILLING, _P.provider_message_id.like(pattern))).scalars())


def _last_batch_number(session: Session, cycle: BillingCycle) -> int:
    ids = _batch_ids(session, cycle.batch_prefix)
    return int(ids[-1][-BATCH_NUMBER_DIGITS:]) if ids else 0


def _waiting(session: Session, cycle: BillingCycle) -> Iterator[Sequence[Any]]:
    """The rows to export, EXPORT_CHUNK at a time: `planned` billing rows of accounts billed on the
    cycle's day, in campaigns started and not held. Read per campaign through the (campaign_id,
    state) index, by id; the caller moves each chunk before the next is read."""
    campaigns = session.execute(
        sa.select(_C.id).where(_C.started_at.is_not(None), _C.state.not_in(HELD_CAMPAIGNS),
                               _C.channels.like(f"%{BILLING}%")).order_by(_C.id)).scalars().all()
    for campaign_id in campaigns:
        last = 0
        while True:
            rows = session.execute(
                sa.select(_N.id, _N.campaign_id, _N.context, _C.template, _A.account_ref, _A.full_name,
                          _A.address, _A.province, _A.language)
                .join(Campaign.__table__, _C.id == _N.campaign_id).join(Account.__table__, _A.id == _N.account_id)
                .where(_N.campaign_id == campaign_id, _N.state == PLANNED, _N.channel == BILLING,
                       _A.billing_day == cycle.billing_day, _N.id > last)
                .order_by(_N.id).limit(EXPORT_CHUNK)).all()
            if not rows:
                break
            yield rows
            last = rows[-1].id


def _export_chunk(session: Session, settings: Settings, renderer: Renderer, rows: Sequence[Any], batch_id: str,
                  now: datetime) -> tuple[list[InsertRecord], int]:
    """Render one chunk, move what rendered to `sent` (its text stored as sent, its provider id as
    a message part) and what did not to `failed`; the records of the rows that moved."""
    records: dict[int, InsertRecord] = {}
    broken: list[RowMove] = []
    for row in rows:
        try:
            records[row.id] = _insert(settings, renderer, row, batch_id)
        except InputError as exc:  # a template that cannot render this row: it fails alone
            broken.append(RowMove(row.id, {"reason": f"template error: {exc}"[:300]}, detail=f"cannot render: {exc}"))
    moves = [RowMove(nid, {"text": record.insert_text}, "exported", f"billing batch {batch_id}: "
                     f"{provider_id(batch_id, record.account_id)}") for nid, record in records.items()]
    moved = transition_rows(session, moves, expected=PLANNED, to_state=SENT, source=EXPORT_SOURCE,
                            values={"sent_at": now, "parts": 1, "attempts": 1}, at=now)
    bulk_insert(session, MessagePart.__table__, [
        {"notification_id": nid, "part_no": 1, "channel": BILLING, "state": SENT, "updated_at": now,
         "provider_message_id": provider_id(batch_id, records[nid].account_id)} for nid in moved])
    failed = transition_rows(session, broken, expected=PLANNED, to_state=FAILED, source=EXPORT_SOURCE, at=now)
    return [records[nid] for nid in moved], len(failed)


def _insert(settings: Settings, renderer: Renderer, row: Any, batch_id: str) -> InsertRecord:
    """One row's insert as the bill-print system gets it: the account's current name and full
    address (the bill goes where the account's bills go now), the rendered text, the reference."""
    runtime = _SettingsOnly(settings)
    context = template_context(row, runtime)  # type: ignore[arg-type]
    text = renderer.render(notification_template(context, row.template), BILLING,  # auto: the account's own
                           language=row.language or settings.default_language, context=context).body
    return InsertRecord(batch_id=batch_id, account_id=row.account_ref, full_name=row.full_name,
                        address=row.address or "", province=row.province or "", insert_text=text,
                        reference=reference_code(row.campaign_id, row.id))


@dataclass(frozen=True)
class _SettingsOnly:
    """What `template_context` reads of a sending runtime: its settings (an export opens no channel)."""

    settings: Settings


# --- rewrite (--again) ----------------------------------------------------------------------------


def rewrite_cycle(settings: Settings, cycle: BillingCycle, *, out_dir: Path | None = None) -> ExportSummary:
    """Write the files of the cycle and day's existing batches again, from what was stored at
    export (the text as sent, the account's name and address now): a lost file, another copy for
    the printer. Nothing changes state. InputError when the cycle has no batch yet."""
    font = find_font(settings.billing.font_path)
    target = Path(out_dir or settings.billing.output_dir)
    summary = ExportSummary(cycle.label, cycle.billing_day, rewritten=True)
    with session_scope(settings.database_url) as session:
        batches = _batch_ids(session, cycle.batch_prefix)
        if not batches:
            raise InputError(f"cycle {cycle.label} day {cycle.billing_day} has no exported batch to write "
                             "again (run `notifier billing export` without --again)")
        for batch_id in batches:
            exported_at, rows = _batch_rows(session, batch_id)
            info = BatchInfo(batch_id, cycle.label, cycle.billing_day, exported_at, settings.operator.name)
            writer = BatchWriter(target, info, font_path=font, page_size=settings.billing.page_size)
            try:
                for row in rows:
                    writer.add(InsertRecord(batch_id, row.account_ref, row.full_name, row.address or "",
                                            row.province or "", row.text or "", reference_code(row.campaign_id, row.id)))
                    summary.exported += 1
                summary.files += [str(path) for path in writer.publish()]
            except BaseException:
                writer.discard()
                raise
            summary.batches.append(batch_id)
    return summary


def _batch_rows(session: Session, batch_id: str) -> tuple[datetime, list[Any]]:
    rows = session.execute(
        sa.select(_N.id, _N.campaign_id, _N.text, _N.sent_at, _A.account_ref, _A.full_name, _A.address, _A.province)
        .join(MessagePart.__table__, _P.notification_id == _N.id).join(Account.__table__, _A.id == _N.account_id)
        .where(_P.channel == BILLING, _P.provider_message_id.like(f"{batch_id}/%"))
        .order_by(_N.id)).all()
    exported_at = min((row.sent_at for row in rows if row.sent_at), default=utcnow())
    return exported_at, rows


# --- acknowledgements -----------------------------------------------------------------------------

ACK_TARGET = {"printed": DELIVERED, "sent": DELIVERED, "failed": FAILED}


def apply_acks(settings: Settings, path: Path) -> ImportResult:
    """Apply an acknowledgement file: `accepted` lines moved their insert, `unchanged` ones repeat
    an answer already recorded, rejected lines say why (`line N: reason`). Work goes ACK_CHUNK
    lines at a time: one lookup, one move per target state, one update of the message parts."""
    result = ImportResult(counts={DELIVERED: 0, FAILED: 0})
    chunk: list[AckLine] = []
    with session_scope(settings.database_url) as session:
        for item in read_acks(path, tz=settings.timezone):
            if isinstance(item, Rejection):
                result.reject(item)
                continue
            chunk.append(item)
            if len(chunk) >= ACK_CHUNK:
                _apply_chunk(session, chunk, result)
                chunk = []
        if chunk:
            _apply_chunk(session, chunk, result)
    result.errors.sort(key=lambda error: error["line"])  # type: ignore[arg-type, return-value]
    return result


def _apply_chunk(session: Session, acks: list[AckLine], result: ImportResult) -> None:
    found = {row.provider_message_id: row for row in session.execute(
        sa.select(_P.provider_message_id, _N.id, _N.state, _N.sent_at)
        .join(Notification.__table__, _N.id == _P.notification_id)
        .where(_P.channel == BILLING, among(session, _P.provider_message_id, [a.provider_id for a in acks])))}
    known_batches = _known_batches(session, {a.batch_id for a in acks if a.provider_id not in found})
    by_target: dict[str, list[tuple[AckLine, Any]]] = defaultdict(list)
    for ack in acks:
        row = found.get(ack.provider_id)
        if row is None:
            reason = (f"account {ack.account_id} is not in batch {ack.batch_id}" if ack.batch_id in known_batches
                      else f"unknown batch {ack.batch_id}")
            result.reject(Rejection(ack.line, reason, ""))
        elif row.state == ACK_TARGET[ack.status]:
            result.unchanged += 1  # the same answer again (a file sent twice)
        elif row.state != SENT:
            result.reject(Rejection(ack.line, f"{ack.status}: the insert {ack.batch_id}/{ack.account_id} is "
                                              f"already {row.state}", ""))
        else:
            by_target[ACK_TARGET[ack.status]].append((ack, row))
    for target, pairs in by_target.items():
        moved = set(transition_rows(session, [_ack_move(ack, row, target) for ack, row in pairs], expected=SENT,
                                    to_state=target, source=ACK_SOURCE))
        if moved:  # the insert's part says the same (an SMS part keeps its own receipt state the same way)
            session.execute(sa.update(MessagePart.__table__)
                            .where(among(session, _P.notification_id, sorted(moved)), _P.channel == BILLING)
                            .values(state=target, updated_at=utcnow()))
        result.accepted += len(moved)
        result.counts[target] += len(moved)
        for ack, row in pairs:
            if row.id not in moved:  # another process moved it between our read and our move
                result.reject(Rejection(ack.line, f"the insert {ack.batch_id}/{ack.account_id} changed meanwhile", ""))


def _ack_move(ack: AckLine, row: Any, target: str) -> RowMove:
    """The row's move for one answer. A bill printed before our export would put the delivery before
    its send: the time is then the export's, and the bill-print system's own time stays in the event."""
    at = max(ack.at, row.sent_at) if row.sent_at else ack.at
    detail = f"{ack.status} at {ack.at.isoformat()} ({ack.provider_id})" + (f": {ack.reason}" if ack.reason else "")
    values: dict[str, Any] = {"delivered_at": at} if target == DELIVERED else {
        "reason": f"bill-print system: {ack.reason or 'failed'}"[:300]}
    return RowMove(row.id, values, ack.status, detail)


def _known_batches(session: Session, batch_ids: set[str]) -> set[str]:
    """Which of `batch_ids` exist (one small query per batch id; an ack file names a few)."""
    known = set()
    for batch_id in sorted(batch_ids):
        if session.execute(sa.select(_P.id).where(_P.channel == BILLING, _P.provider_message_id.like(
                f"{batch_id}/%")).limit(1)).first() is not None:
            known.add(batch_id)
    return known


def summary_line(result: ImportResult) -> str:
    """`billing ack` in one line."""
    return (f"billing ack: {result.counts.get(DELIVERED, 0)} delivered, {result.counts.get(FAILED, 0)} failed, "
            f"{result.unchanged} unchanged, {result.rejected} rejected")


def ack_json(result: ImportResult) -> dict[str, Any]:
    return {**result.as_json(), "unchanged": result.unchanged}

