"""SMS over SMPP 3.4 (smpplib), safe for many sending threads, with reconnects and receipts.

smpplib is a single-threaded, blocking client with no send window, no reconnect and no liveness
check, so this adapter adds them: one reader thread owns every socket read (submit_sm_resp,
deliver_sm, enquire_link), senders share one write lock, a locked sequence generator and a window
semaphore, and each submit waits on a Future that the reader completes. The reader runs even when
nothing is sent, because an SMSC hands over the receipts for earlier messages after each (re)bind.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smpplib import consts, exceptions, smpp
from smpplib.client import Client, SimpleSequenceGenerator

from channels.base import OutgoingMessage, ReceiptSink, SendOutcome, SendResult, describe_connection_error
from channels.smpp_inbound import Inbound, ReceiptWriter
from channels.smpp_receipts import e164_address, is_delivery_receipt, normalise_message_id, parse_receipt
from notifier.errors import (
    ChannelError, OutcomeUnknownError, PermanentChannelError, RouteUnreachableError, TransientChannelError,
)
from notifier.identifiers import mask_msisdn
from notifier.settings import SmppSettings
from notifier.sms import encode_sms

log = logging.getLogger(__name__)
# smpplib logs every PDU in hex at DEBUG, message bodies included: keep its logger above DEBUG.
_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.setLevel(logging.WARNING)

_TRANSIENT_STATUSES = {0x08: "ESME_RSYSERR", 0x14: "ESME_RMSGQFUL", 0x58: "ESME_RTHROTTLED"}
_POLL_SECONDS = 0.2
DEFERRED = object()  # from a deliver_sm handler: the receipt writer answers later
_SESSION_NUMBERS = itertools.count(1)
_UNBIND_TIMEOUT_SECONDS = 1.0
_BACKOFF_INITIAL_SECONDS, _BACKOFF_MAX_SECONDS = 0.5, 30.0
_CONNECTION_ERRORS = (exceptions.ConnectionError, exceptions.PDUError, OSError)



class PartiallySentError(TransientChannelError):
    """A later part of a long SMS failed after earlier parts were accepted.

    Transient, because the message as a whole did not go out; `accepted_ids` lets the caller record
    the parts the subscriber will receive anyway, so their receipts still match.
    """

    def __init__(self, message: str, *, provider_status: str | None, accepted_ids: list[str]) -> None:
        super().__init__(message, provider_status=provider_status)
        self.accepted_ids = accepted_ids




class _WindowFull(TransientChannelError):
    """Every window place stayed taken for the submit timeout: nothing of this message was written."""


class _NotConnected(exceptions.ConnectionError):  # type: ignore[misc]
    """The session was already gone: nothing of this write left."""


class _LockedSequence(SimpleSequenceGenerator):
    """smpplib's generator is a bare counter; several sending threads need it atomic."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def next_sequence(self) -> int:
        with self._lock:
            return int(super().next_sequence())


class _Client(Client):  # type: ignore[misc]
    """An smpplib session whose writes are serialised and whose reads are timed for the watchdog."""

    def __init__(self, settings: SmppSettings, *, write_lock: threading.Lock,
                 sequence: _LockedSequence) -> None:
        super().__init__(settings.host, settings.port, timeout=settings.connect_timeout_seconds,
                         sequence_generator=sequence, logger_name=_WIRE_LOG.name,
                         allow_unknown_opt_params=True)
        self._write_lock = write_lock
        self.last_received = time.monotonic()
        self.last_enquire = 0.0
        # Which bind this is, for the receipt writer's liveness record (`smpp_session`).
        self.session_owner = f"{socket.gethostname()}:{os.getpid()}:{next(_SESSION_NUMBERS)}"
        self.bound_at = datetime.now(UTC)

    def _message_received(self, pdu: Any) -> None:
        """smpplib answers deliver_sm at once; a receipt is answered by the writer after it is
        stored instead (the handler returns DEFERRED), so the SMSC keeps what we did not store."""
        status = self.message_received_handler(pdu=pdu, client=self)
        if status is DEFERRED:
            return
        answer = smpp.make_pdu("deliver_sm_resp", client=self, status=consts.SMPP_ESME_ROK if status is None else status)
        answer.sequence = pdu.sequence
        self.send_pdu(answer)

    @property
    def socket(self) -> socket.socket | None:
        return self._socket  # type: ignore[no-any-return]

    def _create_socket(self) -> socket.socket:
        sock: socket.socket = super()._create_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small PDU per write
        return sock

    def send_pdu(self, p: Any) -> bool:
        with self._write_lock:
            if self._socket is None:
                raise _NotConnected("not connected")
            return bool(super().send_pdu(p))

    def send_pdus(self, pdus: list[Any]) -> None:
        """Write several PDUs with one `sendall`: the parts of a long message leave together, so
        a crash cannot cut a message between its parts (the SMSC gets all of them or none)."""
        data = b"".join(p.generate() for p in pdus)
        with self._write_lock:
            if self._socket is None:
                raise _NotConnected("not connected")
            try:
                self._socket.sendall(data)
            except OSError as exc:
                raise exceptions.ConnectionError(str(exc)) from exc

    def read_pdu(self) -> Any:
        pdu = super().read_pdu()
        self.last_received = time.monotonic()
        if pdu.command == "unbind":  # smpplib would ignore it and leave us bound to nothing
            answer = smpp.make_pdu("unbind_resp", client=self)
            answer.sequence = pdu.sequence
            self.send_pdu(answer)
            raise exceptions.ConnectionError("the SMSC unbound")
        return pdu

    def abort(self) -> None:
        """Drop the connection now; shutdown first so a thread blocked on the socket wakes up."""
        sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._write_lock:
            sock, self._socket = self._socket, None
            self.state = consts.SMPP_CLIENT_STATE_CLOSED
        if sock is not None:
            sock.close()


class SmppChannel:
    """The "sms" channel: submit_sm per part over one transceiver bind, receipts to `on_receipt`."""

    name = "sms"

    def __init__(self, settings: SmppSettings, on_receipt: ReceiptSink | None = None) -> None:
        self._settings = settings
        self._on_receipt = on_receipt
        self._sequence = _LockedSequence()
        self._write_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, Future[tuple[int, Any]]] = {}
        self._window = threading.BoundedSemaphore(max(1, settings.window))
        self._window_taker = threading.Lock()
        self._references = itertools.count(random.randrange(256))  # UDH refs; next() is atomic
        self._client: _Client | None = None
        self._backoff = _BACKOFF_INITIAL_SECONDS
        self._next_attempt = 0.0
        self._last_bind_failure = "not connected yet"  # why the last bind failed, for people
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._writer = (ReceiptWriter(on_receipt, system_id=settings.system_id, current_client=lambda: self._client)
                        if on_receipt is not None else None)

    @property
    def is_bound(self) -> bool:
        """True while a bound session is up (for health checks; sends may still race a drop)."""
        return self._client is not None

    def start(self) -> None:
        """Bind now and start the reader; if the SMSC is down, the reader keeps trying with backoff.

        It does not raise on a failed bind: a worker should start while the SMSC is briefly away,
        and sends raise TransientChannelError until the bind succeeds.
        """
        try:
            self._bound_client()
        except TransientChannelError:
            pass  # already logged; the reader reconnects
        finally:
            with self._conn_lock:
                if self._reader is None and not self._stop.is_set():
                    if self._writer is not None:
                        self._writer.start()
                    self._reader = threading.Thread(target=self._read_loop, name="smpp-reader", daemon=True)
                    self._reader.start()

    def send(self, message: OutgoingMessage) -> SendResult:
        """Submit every part in order and return one normalised id per part."""
        if self._stop.is_set():
            raise TransientChannelError("SMPP channel is closed")
        if self._reader is None:
            self.start()
        destination = _destination_digits(message.destination)
        try:
            encoded = encode_sms(message.body, reference=next(self._references))
        except ValueError as exc:
            raise PermanentChannelError(str(exc)) from exc
        tag = f"[channel:sms] [notification:{message.notification_id}]"
        fields = self._submit_fields(destination, encoded.data_coding, encoded.esm_class)
        try:
            ids = self._submit_parts([{**fields, "short_message": part} for part in encoded.parts])
        except RouteUnreachableError as exc:  # nothing was written; the outage is logged once, not per message
            log.debug("%s not sent: %s", tag, exc)
            raise
        except OutcomeUnknownError as exc:
            log.warning("%s message to %s may or may not have reached the SMSC: %s", tag,
                        mask_msisdn(message.destination), exc)
            raise
        except ChannelError as exc:
            log.warning("%s message to %s not (fully) sent: %s", tag, mask_msisdn(message.destination), exc)
            raise
        log.info("%s accepted %d %s part(s) to %s", tag, len(ids), encoded.encoding,
                 mask_msisdn(message.destination))
        return SendResult(provider_message_ids=ids, provider_status="ESME_ROK", parts=len(ids),
                          encoding=encoded.encoding)

    def check(self) -> None:
        """Nothing to do while bound; otherwise bind now, unless the last attempt failed less than
        a backoff ago (the reader thread keeps trying), and raise RouteUnreachableError if unbound."""
        if self._stop.is_set():
            raise TransientChannelError("SMPP channel is closed")
        if self._reader is None:
            self.start()
        self._bound_client()

    def close(self) -> None:
        """Stop the reader, unbind briefly (smpp34 never answers unbind) and fail waiting sends."""
        self._stop.set()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=self._settings.connect_timeout_seconds + 1)
        if self._writer is not None:  # store and answer what was read while the session is still up
            self._writer.stop(timeout=self._settings.connect_timeout_seconds + 1)
        with self._conn_lock:
            client, self._client = self._client, None
        if client is not None:
            _unbind_quickly(client)
            client.abort()
        self._fail_pending(lambda: OutcomeUnknownError("SMPP channel closed before submit_sm_resp"))
        log.info("[channel:sms] closed")

    # -- sending ------------------------------------------------------------------------------

    def _submit_fields(self, destination: str, data_coding: int, esm_class: int) -> dict[str, Any]:
        """submit_sm fields shared by every part of one message."""
        s = self._settings
        return {"source_addr_ton": s.source_addr_ton, "source_addr_npi": s.source_addr_npi,
                "source_addr": s.source_addr, "dest_addr_ton": s.dest_addr_ton,
                "dest_addr_npi": s.dest_addr_npi, "destination_addr": destination,
                "esm_class": esm_class, "data_coding": data_coding,
                "registered_delivery": s.registered_delivery}

    def _submit_parts(self, parts: list[dict[str, Any]]) -> list[str]:
        """Submit every part inside the window; returns the SMSC's ids or raises a ChannelError
        (`PartiallySentError` when some parts were accepted and others not)."""
        timeout = self._settings.submit_timeout_seconds
        slots = self._acquire_window(len(parts), timeout)
        try:
            outcomes = self._exchange(parts, timeout)
        finally:
            for _ in range(slots):
                self._window.release()
        return _judge(outcomes)

    def _acquire_window(self, slots: int, timeout: float) -> int:
        """Take `slots` window places at once (one taker at a time, so two long messages cannot
        each hold half the window and starve each other)."""
        deadline = time.monotonic() + timeout
        taken = 0
        with self._window_taker:
            while taken < min(slots, self._settings.window):
                if not self._window.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    for _ in range(taken):
                        self._window.release()
                    raise _WindowFull(f"no free SMPP window slot within {timeout}s")
                taken += 1
        return taken

    def _exchange(self, parts: list[dict[str, Any]], timeout: float) -> list[tuple[int, Any]]:
        """Write the PDUs and wait for the reader to hand over each response (status, message_id)."""
        written = self._write(parts)
        return self._await(written, time.monotonic() + timeout, timeout)

    def _write(self, parts: list[dict[str, Any]]) -> _Written:
        """Write one message's PDUs in one `sendall`, their answers awaited by Futures."""
        client = self._bound_client()
        pdus = [smpp.make_pdu("submit_sm", client=client, **fields) for fields in parts]
        futures: list[Future[tuple[int, Any]]] = [Future() for _ in pdus]
        with self._pending_lock:  # registered before writing: the answer can beat us back
            for pdu, future in zip(pdus, futures):
                self._pending[pdu.sequence] = future
        try:
            client.send_pdus(pdus)
        except _NotConnected as exc:  # another thread saw the session die: nothing was written
            self._forget(pdus)
            self._connection_lost(client, exc)
            address = f"{self._settings.host}:{self._settings.port}"
            raise RouteUnreachableError(f"cannot reach the SMSC at {address} (connection lost)",
                                        channel=self.name, address=address, reason="connection lost") from exc
        except _CONNECTION_ERRORS as exc:  # part of the write may have reached the SMSC
            self._forget(pdus)
            self._connection_lost(client, exc)
            raise OutcomeUnknownError("SMSC connection lost while sending") from exc
        return _Written(pdus, futures)

    def _await(self, written: _Written, deadline: float, timeout: float) -> list[tuple[int, Any]]:
        """Each response of a written message; OutcomeUnknownError when one did not come in time."""
        try:
            return [future.result(timeout=max(0.0, deadline - time.monotonic())) for future in written.futures]
        except TimeoutError as exc:
            raise OutcomeUnknownError(f"no submit_sm_resp within {timeout}s") from exc
        finally:
            self._forget(written.pdus)

    def _forget(self, pdus: list[Any]) -> None:
        with self._pending_lock:
            for pdu in pdus:
                self._pending.pop(pdu.sequence, None)

    # -- sending a batch: many messages in flight ---------------------------------------------

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Submit a batch through the window: every message is written as soon as it has window
        places (its parts in one write), and the answers are collected afterwards, so up to
        `window` submits are in flight instead of one message's parts. One outcome per message."""
        if self._stop.is_set():
            return [TransientChannelError("SMPP channel is closed") for _ in messages]
        if self._reader is None:
            self.start()
        timeout = self._settings.submit_timeout_seconds
        outcomes: list[SendOutcome | None] = [None] * len(messages)
        flights: list[_Flight] = []
        stalled: RouteUnreachableError | None = None
        for index, message in enumerate(messages):
            if stalled is not None:  # nothing was written: waiting again per message would take minutes
                outcomes[index] = stalled
                continue
            try:
                flights.append(self._launch(index, message, timeout))
            except _WindowFull as exc:
                stalled = self._stalled(exc)
                outcomes[index] = stalled
            except Exception as exc:  # noqa: BLE001 - this message's outcome; the batch carries on
                outcomes[index] = self._logged(message, exc)
        for flight in flights:
            outcomes[flight.index] = self._land(flight, timeout)
        accepted = sum(isinstance(outcome, SendResult) for outcome in outcomes)
        log.debug("[channel:sms] batch of %d: %d accepted", len(messages), accepted)
        return outcomes  # type: ignore[return-value]  # every index was filled

    def _launch(self, index: int, message: OutgoingMessage, timeout: float) -> _Flight:
        """Take window places for the message's parts and write them; places come back one per
        answer (the reader thread releases them), or all at once when the sender gives up."""
        destination = _destination_digits(message.destination)
        try:
            encoded = encode_sms(message.body, reference=next(self._references))
        except ValueError as exc:
            raise PermanentChannelError(str(exc)) from exc
        fields = self._submit_fields(destination, encoded.data_coding, encoded.esm_class)
        slots = _Slots(self._window, self._acquire_window(len(encoded.parts), timeout))
        try:
            written = self._write([{**fields, "short_message": part} for part in encoded.parts])
        except BaseException:
            slots.release_rest()
            raise
        for future in written.futures:
            future.add_done_callback(slots.release_one)
        return _Flight(index, message, encoded.encoding, written, slots, time.monotonic() + timeout)

    def _land(self, flight: _Flight, timeout: float) -> SendOutcome:
        """The message's outcome once its answers are in (or the submit timeout passed)."""
        try:
            ids = _judge(self._await(flight.written, flight.deadline, timeout))
        except Exception as exc:  # noqa: BLE001 - ChannelError or not, it is this message's outcome
            return self._logged(flight.message, exc)
        finally:
            flight.slots.release_rest()
        log.debug("[channel:sms] [notification:%s] accepted %d %s part(s) to %s", flight.message.notification_id,
                  len(ids), flight.encoding, mask_msisdn(flight.message.destination))
        return SendResult(provider_message_ids=ids, provider_status="ESME_ROK", parts=len(ids),
                          encoding=flight.encoding)

    def _stalled(self, exc: _WindowFull) -> RouteUnreachableError:
        """The SMSC answers nothing for a whole submit timeout: a route problem, not the messages'
        (none of them was written), so they wait in `queued` like during any outage."""
        address = f"{self._settings.host}:{self._settings.port}"
        log.warning("[channel:sms] the SMSC at %s answers no submit (%s)", address, exc)
        return RouteUnreachableError(f"the SMSC at {address} does not answer ({exc})", channel=self.name,
                                     address=address, reason="no answer to submits")

    def _logged(self, message: OutgoingMessage, exc: Exception) -> Exception:
        """Log one message's failure like `send` does (an outage at debug: it is logged once)."""
        tag = f"[channel:sms] [notification:{message.notification_id}]"
        target = mask_msisdn(message.destination)
        if isinstance(exc, RouteUnreachableError):
            log.debug("%s not sent: %s", tag, exc)
        elif isinstance(exc, OutcomeUnknownError):
            log.warning("%s message to %s may or may not have reached the SMSC: %s", tag, target, exc)
        else:
            log.warning("%s message to %s not (fully) sent: %s", tag, target, exc)
        return exc

    def _resolve(self, sequence: int, outcome: tuple[int, Any]) -> None:
        with self._pending_lock:
            future = self._pending.get(sequence)
        if future is None:
            log.warning("[channel:sms] response for unknown sequence %d (sender gave up)", sequence)
            return
        try:
            future.set_result(outcome)
        except InvalidStateError:
            pass  # already failed by a disconnect

    def _fail_pending(self, error: Callable[[], Exception]) -> None:
        with self._pending_lock:
            futures = list(self._pending.values())
        for future in futures:
            try:
                future.set_exception(error())
            except InvalidStateError:
                pass

    # -- connection ---------------------------------------------------------------------------

    def _bound_client(self) -> _Client:
        client = self._client
        if client is not None:
            return client
        with self._conn_lock:
            return self._client or self._connect_locked()

    def _connect_locked(self) -> _Client:
        """Connect and bind a fresh smpplib client (smpplib cannot rebind an old one); holds _conn_lock."""
        if self._stop.is_set():
            raise TransientChannelError("SMPP channel is closed")
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            raise self._unreachable(f"; next bind attempt in {wait:.1f}s")
        s = self._settings
        client = _Client(s, write_lock=self._write_lock, sequence=self._sequence)
        client.set_message_received_handler(self._on_deliver_sm)
        client.set_message_sent_handler(self._on_submit_resp)
        client.set_error_pdu_handler(self._on_error_pdu)
        try:
            client.connect()
            client.bind_transceiver(system_id=s.system_id, password=s.password.get_secret_value(),
                                    system_type=s.system_type)
        except _CONNECTION_ERRORS as exc:
            client.abort()
            self._next_attempt = time.monotonic() + self._backoff
            self._last_bind_failure = _bind_failure_reason(exc, s.connect_timeout_seconds)
            # INFO, not WARNING: during an outage this repeats with every backoff step; whoever
            # drives sending (`campaign run`, `notifier worker`) reports the outage once.
            log.info("[channel:sms] cannot bind to %s:%s as %s (%s); next attempt in %.1fs",
                     s.host, s.port, s.system_id, self._last_bind_failure, self._backoff)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_SECONDS)
            raise self._unreachable() from exc
        self._backoff = _BACKOFF_INITIAL_SECONDS
        self._client = client
        log.info("[channel:sms] bound to %s:%s as %s", s.host, s.port, s.system_id)
        return client

    def _unreachable(self, note: str = "") -> RouteUnreachableError:
        """The error for "no session and none to be had right now", with the last bind's reason."""
        address = f"{self._settings.host}:{self._settings.port}"
        return RouteUnreachableError(f"cannot reach the SMSC at {address} ({self._last_bind_failure}){note}",
                                     channel=self.name, address=address, reason=self._last_bind_failure)

    def _connection_lost(self, client: _Client, exc: BaseException) -> None:
        """Forget the session once (several threads may notice), fail its waiting sends."""
        client.abort()
        with self._conn_lock:
            if self._client is not client:
                return
            self._client = None
            self._next_attempt = time.monotonic() + self._backoff
            self._last_bind_failure = "connection lost"
        log.warning("[channel:sms] SMSC connection lost (%r); reconnecting", exc)
        self._fail_pending(lambda: OutcomeUnknownError("SMSC connection lost before submit_sm_resp"))

    # -- the reader thread --------------------------------------------------------------------

    def _read_loop(self) -> None:
        """Read PDUs, keep the link alive and reconnect; never lets an exception end the thread."""
        while not self._stop.is_set():
            client = self._client
            if client is None:
                self._reconnect_quietly()
                continue
            try:
                self._read_step(client)
            except exceptions.UnknownCommandError as exc:
                log.warning("[channel:sms] ignored a PDU smpplib cannot decode: %s", exc)
            except Exception as exc:  # a broken or undecodable stream: start a fresh session
                if client is self._client and not isinstance(exc, _CONNECTION_ERRORS):
                    log.exception("[channel:sms] unexpected error reading from the SMSC")
                self._connection_lost(client, exc)

    def _reconnect_quietly(self) -> None:
        with self._conn_lock:
            due = self._client is None and time.monotonic() >= self._next_attempt
            if due and not self._stop.is_set():
                try:
                    self._connect_locked()
                except TransientChannelError:
                    pass  # logged; backoff set
        if self._client is None:
            self._stop.wait(_POLL_SECONDS)

    def _read_step(self, client: _Client) -> None:
        sock = client.socket
        if sock is None:
            raise exceptions.ConnectionError("socket closed")
        readable, _, _ = select.select([sock], [], [], _POLL_SECONDS)
        if readable:
            client.read_once(auto_send_enquire_link=False)
        self._keep_alive(client)

    def _keep_alive(self, client: _Client) -> None:
        """enquire_link after a quiet period; a session silent for three periods is dead."""
        period = self._settings.enquire_link_seconds
        now = time.monotonic()
        quiet = now - client.last_received
        if quiet >= 3 * period:
            raise exceptions.ConnectionError(f"no PDU from the SMSC for {quiet:.1f}s")
        if quiet >= period and now - client.last_enquire >= period:
            client.last_enquire = now
            client.send_pdu(smpp.make_pdu("enquire_link", client=client))

    def _on_submit_resp(self, pdu: Any, **_: Any) -> None:
        self._resolve(pdu.sequence, (pdu.status, pdu.message_id))

    def _on_error_pdu(self, pdu: Any) -> None:
        """Keep listening on error PDUs; a submit_sm_resp error is handled by `_on_submit_resp`."""
        if pdu.command == "generic_nack":
            self._resolve(pdu.sequence, (pdu.status, None))
        elif pdu.command != "submit_sm_resp":
            log.warning("[channel:sms] %s with status 0x%08x", pdu.command, pdu.status)

    def _on_deliver_sm(self, pdu: Any, client: Any = None, **_: Any) -> object:
        """Queue a receipt for the writer thread (DEFERRED: it answers once stored), never touching
        the database here; otherwise the status for deliver_sm_resp (None = OK)."""
        if pdu.command != "deliver_sm":
            return None  # alert_notification
        if not is_delivery_receipt(pdu.esm_class or 0):
            log.info("[channel:sms] ignored a message from %s (not a delivery receipt)",
                     mask_msisdn(e164_address(pdu.source_addr) or ""))
            return None
        receipt = parse_receipt(pdu, zone=self._settings.timezone)
        if receipt is None:
            log.warning("[channel:sms] delivery receipt without a message id ignored")
            return None
        if self._writer is None or client is None:
            return None
        if self._writer.offer(Inbound(receipt, client, pdu.sequence)):
            return DEFERRED
        log.info("[channel:sms] receipt queue full: asking the SMSC to deliver id %s again later",
                 receipt.provider_message_id)
        return int(consts.SMPP_ESME_RX_T_APPN)


@dataclass(frozen=True)
class _Written:
    """One message's submit_sm PDUs on the wire and the Futures their answers complete."""

    pdus: list[Any]
    futures: list[Future[tuple[int, Any]]]


class _Slots:
    """The window places one message holds: released one per answer, the rest exactly once."""

    def __init__(self, window: threading.BoundedSemaphore, held: int) -> None:
        self._window, self._held, self._lock = window, held, threading.Lock()

    def release_one(self, _future: object = None) -> None:
        with self._lock:
            if self._held == 0:
                return
            self._held -= 1
        self._window.release()

    def release_rest(self) -> None:
        with self._lock:
            held, self._held = self._held, 0
        for _ in range(held):
            self._window.release()


@dataclass(frozen=True)
class _Flight:
    """A message of a batch that was written and awaits its answers."""

    index: int
    message: OutgoingMessage
    encoding: str
    written: _Written
    slots: _Slots
    deadline: float


def _judge(outcomes: list[tuple[int, Any]]) -> list[str]:
    """The SMSC's ids for a message whose every part was accepted; otherwise the ChannelError
    (`PartiallySentError` when some parts were accepted and others not)."""
    ids = [normalise_message_id(mid or b"") for status, mid in outcomes if status == consts.SMPP_ESME_ROK]
    refused = [status for status, _ in outcomes if status != consts.SMPP_ESME_ROK]
    if not refused:
        return ids
    error = _status_error(refused[0])
    if ids:
        raise PartiallySentError(f"{len(refused)} of {len(outcomes)} part(s) refused: {error}",
                                 provider_status=error.provider_status, accepted_ids=ids)
    raise error


def _status_error(status: int) -> ChannelError:
    """The channel error for a non-zero submit_sm_resp status."""
    provider_status = f"0x{status:08x}"
    if status in _TRANSIENT_STATUSES:
        return TransientChannelError(f"SMSC answered {_TRANSIENT_STATUSES[status]}", provider_status=provider_status)
    description = consts.DESCRIPTIONS.get(status, "unknown status")
    return PermanentChannelError(f"SMSC rejected the message: {description}", provider_status=provider_status)


def _bind_failure_reason(exc: BaseException, timeout_seconds: float) -> str:
    """"connection refused", "timed out after 5s", or the SMSC's bind_resp status when it answered."""
    if isinstance(exc, exceptions.PDUError) and len(exc.args) > 1:  # smpplib: (text, command_status)
        return f"bind refused: {exc.args[0]}"
    return describe_connection_error(exc, timeout_seconds=timeout_seconds)


def _unbind_quickly(client: _Client) -> None:
    """Politely unbind, but smpp34 (and some SMSCs) close instead of answering: short timeout."""
    sock = client.socket
    if sock is None:
        return
    try:
        sock.settimeout(_UNBIND_TIMEOUT_SECONDS)
        client.unbind()
    except (*_CONNECTION_ERRORS, exceptions.UnknownCommandError) as exc:
        log.debug("[channel:sms] unbind not answered: %r", exc)


def _destination_digits(destination: str) -> str:
    digits = destination[1:] if destination.startswith("+") else destination
    if not (digits.isascii() and digits.isdigit() and 1 <= len(digits) <= 20):
        raise PermanentChannelError(f"destination {mask_msisdn(destination)} is not an E.164 number")
    return digits
