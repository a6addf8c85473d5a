"""The SMPP channel's receipt writer: the reader thread never waits on the database.

The reader hands each delivery receipt, with the session and sequence number it came on, to a
bounded queue and goes back to reading (submit_sm_resp must not wait behind a locked database).
This writer thread stores receipts in batches through the sink (`ReceiptStore.store`: one
executemany INSERT) and only then answers each deliver_sm with `deliver_sm_resp`, so the SMSC keeps
every receipt we have not stored. When the queue is full, or the store fails, the receipt is
answered with a temporary error (ESME_RX_T_APPN): the SMSC keeps it and delivers it again — nothing
is lost, and the reader never blocks. A receipt whose session died before the answer is simply
delivered again by the SMSC on the next bind (applying a receipt twice changes nothing).

It also tells the sink, once a second, when the session last heard its SMSC (`session_alive`), so
an `unknown` SMS is resent only once an SMSC could hand over the receipts it kept.

Subscribers' replies (MO deliver_sm) take the same path: the reader queues each part, this thread
joins long replies (`channels.smpp_replies.Reassembler`), stores whole replies in batches through
`reply_sink.store` and only then answers their parts; a part waiting for its siblings stays
unanswered until its reply is stored (or given up on after `reply_timeout` and stored as it is).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from smpplib import consts, exceptions

from channels.base import Receipt
from channels.smpp_replies import Reassembler, Reply, ReplyPart
from channels.smpp_wire import deliver_sm_resp

log = logging.getLogger("channels.smpp")

RECEIPT_QUEUE_CAPACITY = 2000
RECEIPT_BATCH = 500
# A batch keeps gathering while receipts keep coming (each within RECEIPT_GAP_SECONDS of the last),
# for at most RECEIPT_LINGER_SECONDS after its first: a store costs about the same for 10 receipts
# as for 200 (per receipt, ~0.5 ms against ~0.12 ms of CPU, ours and PostgreSQL's), and at a few
# hundred receipts a second taking only what was already queued made batches of a handful. The gap
# ends a batch as soon as the SMSC stops sending, so an SMSC that keeps only a few deliver_sm
# unanswered (its window) is never made to wait for the linger; none of its response timers
# (seconds) comes near it.
RECEIPT_GAP_SECONDS = 0.005
RECEIPT_LINGER_SECONDS = 0.05
HEARTBEAT_SECONDS = 1.0
IDLE_WAIT_SECONDS = 0.5  # an idle writer looks up this often (heartbeat, replies given up on)
_RETRY_LATER = int(consts.SMPP_ESME_RX_T_APPN)
_BACKOFF_INITIAL_SECONDS, _BACKOFF_MAX_SECONDS = 0.2, 5.0


@dataclass(frozen=True)
class Inbound:
    """A receipt (or a part of a subscriber's reply) waiting to be stored, and where its
    deliver_sm_resp must go."""

    receipt: Receipt | None
    client: Any  # the session it came on; the answer goes only to that session
    sequence: int
    reply: ReplyPart | None = None


_WAKE = Inbound(receipt=None, client=None, sequence=0)  # neither receipt nor reply: stored as nothing


class ReplySink(Protocol):
    """Where whole replies go (`notifier.replies.ReplyStore`): raising means none was stored."""

    def store(self, replies: list[Reply]) -> None: ...


class ReceiptWriter:
    """Stores receipts (and subscribers' replies) in batches on its own thread, then answers the SMSC."""

    def __init__(self, sink: Callable[[Receipt], None] | None, *, system_id: str, current_client: Callable[[], Any],
                 capacity: int = RECEIPT_QUEUE_CAPACITY, reply_sink: ReplySink | None = None,
                 reply_timeout: float = 10.0) -> None:
        self._sink = sink
        self._reply_sink = reply_sink
        self._reassembler = Reassembler(reply_timeout)
        self._replies_failing = False
        self._system_id = system_id
        self._current_client = current_client
        self._queue: queue.Queue[Inbound] = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._backoff = _BACKOFF_INITIAL_SECONDS
        self._last_heartbeat = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="smpp-receipt-writer", daemon=True)
            self._thread.start()

    def offer(self, item: Inbound) -> bool:
        """Queue a receipt (reader thread); False when the queue is full: answer it "retry later"."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def stop(self, timeout: float) -> None:
        """Store what is queued (answering the sessions still up), then end the thread. Called
        once the reader has stopped: everything to store is queued already."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)  # a writer waiting for a first receipt ends at once
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
            elif self._stop.is_set():
                dropped = self._reassembler.drop()
                if dropped:
                    log.info("[channel:sms] %d incomplete repl(ies) left unanswered: the SMSC hands their "
                             "parts over again on the next bind", dropped)
                return
            expired = self._reassembler.expired()
            if expired:
                self._send_answers(self._store_replies(expired))
            self._heartbeat()

    def _take(self) -> list[Inbound]:
        """Wait briefly for a first receipt, then gather the ones that keep coming (see RECEIPT_GAP_SECONDS).

        Between looks the writer sleeps a gap rather than waiting on the queue: woken by every
        receipt, it took the GIL from the reader and the senders thousands of times a second."""
        try:
            batch = [self._queue.get_nowait() if self._stop.is_set() else self._queue.get(timeout=IDLE_WAIT_SECONDS)]
        except queue.Empty:
            return []
        closes = time.monotonic() + RECEIPT_LINGER_SECONDS
        self._drain(batch)
        while len(batch) < RECEIPT_BATCH and not self._stop.is_set():
            wait = min(RECEIPT_GAP_SECONDS, closes - time.monotonic())
            if wait <= 0:
                break
            before = len(batch)
            self._stop.wait(wait)
            self._drain(batch)
            if len(batch) == before:  # none came within a gap: the SMSC has stopped sending
                break
        return batch

    def _drain(self, batch: list[Inbound]) -> None:
        """Add what is queued now, up to RECEIPT_BATCH."""
        while len(batch) < RECEIPT_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _write(self, batch: list[Inbound]) -> None:
        receipts = [item for item in batch if item.receipt is not None]
        answers = [(item.client, item.sequence, status) for item, status in zip(receipts, self._store(receipts))]
        parts = [item.reply for item in batch if item.reply is not None]
        if parts:
            whole = [reply for part in parts for reply in self._reassembler.add(part)]
            answers += self._store_replies(whole)
        self._send_answers(answers)
        statuses = [status for _, _, status in answers]
        if _RETRY_LATER in statuses:
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_SECONDS)
        else:
            self._backoff = _BACKOFF_INITIAL_SECONDS

    def _send_answers(self, answers: list[tuple[Any, int, int]]) -> None:
        """deliver_sm_resp for each (session, sequence, status): one write per session."""
        by_client: dict[int, tuple[Any, list[bytes]]] = {}
        for client, sequence, status in answers:
            by_client.setdefault(id(client), (client, []))[1].append(deliver_sm_resp(sequence, status))
        for client, encoded in by_client.values():
            try:
                client.send_raw(b"".join(encoded))
            except (exceptions.ConnectionError, OSError) as exc:
                log.info("[channel:sms] %d deliver_sm answer(s) not sent (%r): the SMSC delivers them again",
                         len(encoded), exc)

    def _store_replies(self, replies: list[Reply]) -> list[tuple[Any, int, int]]:
        """Store whole replies in one call; the answers for all their parts (RX_T_APPN when the
        store failed: the SMSC keeps every part and hands them over again)."""
        if not replies:
            return []
        status = 0
        try:
            self._reply_sink.store(replies)  # type: ignore[union-attr]  # replies are queued only with a sink
        except Exception as exc:  # noqa: BLE001 - the SMSC keeps what we could not store
            status = _RETRY_LATER
            if not self._replies_failing:
                log.warning("[channel:sms] cannot store %d subscriber repl(ies) (%s); the SMSC keeps them and "
                            "delivers them again", len(replies), type(exc).__name__)
            self._replies_failing = True
        else:
            if self._replies_failing:
                log.warning("[channel:sms] storing subscriber replies again")
            self._replies_failing = False
        return [(client, sequence, status) for reply in replies for client, sequence in reply.answers]

    def _store(self, batch: list[Inbound]) -> list[int]:
        """One status per receipt: 0 stored, RX_T_APPN not stored (the SMSC keeps it)."""
        if not batch:
            return []
        store_many = getattr(self._sink, "store", None)
        if store_many is not None:
            try:
                store_many([item.receipt for item in batch])
            except Exception as exc:  # noqa: BLE001 - the SMSC keeps what we could not store
                self._note_failure(exc, len(batch))
                return [_RETRY_LATER] * len(batch)
            self._note_recovery()
            return [0] * len(batch)
        statuses = []
        for item in batch:
            try:
                self._sink(item.receipt)
            except Exception as exc:  # noqa: BLE001
                self._note_failure(exc, 1)
                statuses.append(_RETRY_LATER)
            else:
                statuses.append(0)
        return statuses

    def _note_failure(self, exc: Exception, count: int) -> None:
        if not self._failing:
            log.warning("[channel:sms] cannot store %d receipt(s) (%s: %s); the SMSC keeps them and delivers "
                        "them again", count, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        self._failing = True

    def _note_recovery(self) -> None:
        if self._failing:
            log.warning("[channel:sms] storing receipts again")
        self._failing = False

    def _heartbeat(self) -> None:
        """Once a second: when the bound session last heard its SMSC (for the unknown-resend rule)."""
        alive = getattr(self._sink, "session_alive", None)
        now = time.monotonic()
        if alive is None or now - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now
        client = self._current_client()
        if client is None:
            return
        heard = datetime.now(UTC) - timedelta(seconds=max(0.0, now - client.last_received))
        try:
            alive(client.session_owner, self._system_id, client.bound_at, heard)
        except Exception as exc:  # noqa: BLE001 - next second; storing receipts reports outages
            log.debug("[channel:sms] session heartbeat not recorded: %r", exc)
