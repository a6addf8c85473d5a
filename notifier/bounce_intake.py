"""Bounces in: read returned messages, store their receipts, count what they were.

`notifier bounces import PATH` (a maildir or .eml files) and `POST /bounces/dsn` on `notifier web`
both end here. Each message is read by `channels.bounces.read_bounce`; the receipts are stored
with `store_receipts` (one INSERT per batch) and applied by the receipt applier exactly like SMPP
receipts. Before storing:
- a receipt equal to one already stored (same Message-ID, status, diagnostic and time: the same
  mailbox imported twice) is skipped and counted as a duplicate, so an import is safe to repeat;
- a receipt whose Message-IDs name no e-mail we recorded is still stored (a crashed sender's
  `unknown` row may claim it by its address, and the applier makes it an `orphan` after 24 h)
  but counted as an orphan, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

from channels.base import RECEIPT_DELIVERED, RECEIPT_UNDELIVERED, Receipt
from channels.bounces import CHANNEL, BounceReading, read_bounce
from notifier.dispatch.outbox import among
from notifier.dispatch.receipts import store_receipts
from notifier.errors import InputError
from notifier.models import InboundReceipt, MessagePart

BATCH = 500  # messages read, checked and stored per transaction
MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # a returned message larger than this is not read (nor posted)


@dataclass
class BounceSummary:
    """What a batch of returned messages turned out to be (counts per receipt; problems per message)."""

    messages: int = 0
    undelivered: int = 0
    delayed: int = 0  # and other reports that are not final (relayed, expanded): events only
    delivered: int = 0
    orphans: int = 0  # receipts naming no e-mail we recorded
    duplicates: int = 0  # already stored by an earlier import
    not_bounces: int = 0  # auto-replies, answers, read receipts: no receipt
    problems: list[dict[str, str]] = field(default_factory=list)  # {"message": name, "reason": …}

    @property
    def stored(self) -> int:
        return self.undelivered + self.delayed + self.delivered

    def as_json(self) -> dict[str, object]:
        return {"messages": self.messages, "stored": self.stored, "undelivered": self.undelivered,
                "delayed": self.delayed, "delivered": self.delivered, "orphans": self.orphans,
                "duplicates": self.duplicates, "not_bounces": self.not_bounces,
                "problems": len(self.problems), "errors": self.problems}

    def line(self) -> str:
        return (f"bounces: {self.messages} message(s): {self.undelivered} undelivered, {self.delayed} delayed, "
                f"{self.delivered} delivered ({self.orphans} naming no e-mail of ours), "
                f"{self.duplicates} already imported, {self.not_bounces} not a bounce, "
                f"{len(self.problems)} unreadable")


def take_bounces(session: Session, messages: Iterable[tuple[str, bytes | str]], *, sender: str,
                 summary: BounceSummary | None = None) -> BounceSummary:
    """Read (name, bytes) messages, store their receipts in `session` (the caller commits) and
    count them. A message that cannot be read (given as the reason why, a str, or unparseable) is
    a problem with its name; the rest go on."""
    summary = summary or BounceSummary()
    receipts: list[Receipt] = []
    for name, raw in messages:
        summary.messages += 1
        reading = _read(name, raw, sender, summary)
        if reading is not None:
            receipts += reading.receipts
    _store_new(session, receipts, summary)
    return summary


def _read(name: str, raw: bytes | str, sender: str, summary: BounceSummary) -> BounceReading | None:
    if isinstance(raw, str):
        summary.problems.append({"message": name, "reason": raw})
        return None
    if len(raw) > MAX_MESSAGE_BYTES:
        summary.problems.append({"message": name, "reason": f"larger than {MAX_MESSAGE_BYTES} bytes: not read"})
        return None
    try:
        reading = read_bounce(raw, sender=sender)
    except Exception as exc:  # noqa: BLE001 - one malformed message must not stop the mailbox
        summary.problems.append({"message": name, "reason": f"cannot be parsed: {type(exc).__name__}"})
        return None
    if not reading.is_bounce:
        summary.not_bounces += 1
        return None
    if reading.problem:
        summary.problems.append({"message": name, "reason": reading.problem})
    return reading


def _store_new(session: Session, receipts: list[Receipt], summary: BounceSummary) -> None:
    """Store the receipts not stored before, one INSERT; count each by status, orphans apart."""
    seen = _stored_already(session, receipts)
    fresh: list[Receipt] = []
    for receipt in receipts:
        key = _key(receipt.provider_message_id, receipt.raw_status, receipt.error_code, receipt.done_at)
        if key in seen:
            summary.duplicates += 1
            continue
        seen.add(key)
        fresh.append(receipt)
    known = _recorded_ids(session, fresh)
    for receipt in fresh:
        if receipt.status == RECEIPT_UNDELIVERED:
            summary.undelivered += 1
        elif receipt.status == RECEIPT_DELIVERED:
            summary.delivered += 1
        else:
            summary.delayed += 1
        if not known.intersection(_ids(receipt)):
            summary.orphans += 1
    store_receipts(session, fresh)


def _ids(receipt: Receipt) -> list[str]:
    return [receipt.provider_message_id, *receipt.alternative_ids]


def _key(message_id: str, raw_status: str, error_code: str | None, done_at: datetime | None) -> tuple[object, ...]:
    """What makes two bounce receipts the same report (as stored: columns cut to their size)."""
    return message_id[:100], raw_status[:32], (error_code or "")[:32], done_at.timestamp() if done_at else None


def _stored_already(session: Session, receipts: Sequence[Receipt]) -> set[tuple[object, ...]]:
    wanted = sorted({receipt.provider_message_id[:100] for receipt in receipts})
    found: set[tuple[object, ...]] = set()
    for start in range(0, len(wanted), BATCH):
        rows = session.execute(
            sa.select(InboundReceipt.provider_message_id, InboundReceipt.raw_status, InboundReceipt.error_code,
                      InboundReceipt.done_at)
            .where(InboundReceipt.channel == CHANNEL,
                   among(session, InboundReceipt.provider_message_id, wanted[start:start + BATCH])))
        found.update(_key(*row) for row in rows)
    return found


def _recorded_ids(session: Session, receipts: Sequence[Receipt]) -> set[str]:
    """The receipts' Message-IDs that name a recorded e-mail (one query per chunk)."""
    wanted = sorted({candidate for receipt in receipts for candidate in _ids(receipt)})
    found: set[str] = set()
    for start in range(0, len(wanted), BATCH):
        found.update(session.execute(
            sa.select(MessagePart.provider_message_id)
            .where(MessagePart.channel == CHANNEL,
                   among(session, MessagePart.provider_message_id, wanted[start:start + BATCH]))).scalars())
    return found


# -- mailboxes ---------------------------------------------------------------------------------


def import_mailbox(database_url: str, path: Path, *, sender: str) -> BounceSummary:
    """`notifier bounces import PATH`: every message at `path`, BATCH files per transaction, each
    batch's receipts applied right after it is stored (no applier thread runs in the CLI)."""
    from notifier.db import session_scope
    from notifier.dispatch.receipts import apply_pending_receipts

    files = mailbox_files(path)
    summary = BounceSummary()
    for start in range(0, len(files), BATCH):
        with session_scope(database_url) as session:
            take_bounces(session, read_files(files[start:start + BATCH]), sender=sender, summary=summary)
        with session_scope(database_url) as session:
            apply_pending_receipts(session)
    return summary



def mailbox_files(path: Path) -> list[Path]:
    """The messages at `path`: a maildir's `new/` and `cur/`, a folder's `*.eml`, or one file.

    InputError when there is nothing of the kind (a typo in the path should not read as "0 bounces").
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or directory")
    if (path / "new").is_dir() or (path / "cur").is_dir():
        return sorted(file for folder in ("new", "cur") if (path / folder).is_dir()
                      for file in (path / folder).iterdir() if file.is_file() and not file.name.startswith("."))
    files = sorted(file for file in path.iterdir() if file.is_file() and file.suffix.lower() == ".eml")
    if not files:
        raise InputError(f"{path}: neither a maildir (cur/, new/) nor a folder with .eml files")
    return files


def read_files(files: Sequence[Path]) -> Iterator[tuple[str, bytes | str]]:
    """(name, bytes) of each file, or (name, why it was not read): too large, or unreadable."""
    for file in files:
        try:
            if file.stat().st_size > MAX_MESSAGE_BYTES:
                yield file.name, f"larger than {MAX_MESSAGE_BYTES} bytes: not read"
                continue
            yield file.name, file.read_bytes()
        except OSError as exc:
            yield file.name, f"cannot be read: {exc.strerror or type(exc).__name__}"


__all__ = ["BATCH", "MAX_MESSAGE_BYTES", "BounceSummary", "import_mailbox", "mailbox_files", "read_files", "take_bounces"]
