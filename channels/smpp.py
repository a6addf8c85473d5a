"""SMS over SMPP 3.4 (smpplib), safe for many sending threads, with reconnects and receipts.

smpplib is a single-threaded, blocking client with no send window, no reconnect and no liveness
check, so this adapter adds them: one reader thread owns every socket read (submit_sm_resp,
deliver_sm, enquire_link), senders share one write lock, a locked sequence generator and a window
semaphore, and each submit waits on a Future that the reader completes. The reader runs even when
nothing is sent, because an SMSC hands over the receipts for earlier messages after each (re)bind.

One transceiver bind by default; `smpp.bind_mode = "transmitter_receiver"` opens a transmitter bind
for submits and a receiver bind for receipts and replies, read by the same reader thread and
dropped and rebound together. Subscribers' replies (MO deliver_sm) go to the same writer thread as
receipts (`channels.smpp_inbound`). `smpp.tls` runs both over TLS (`channels.smpp_tls`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smpplib import consts, exceptions, smpp
from smpplib.client import Client, SimpleSequenceGenerator

from channels.base import OutgoingMessage, ReceiptSink, SendOutcome, SendResult, describe_connection_error
from channels import smpp_wire
from channels.smpp_inbound import Inbound, ReceiptWriter, ReplySink
from channels.smpp_replies import reply_part
from channels.smpp_tls import TlsSocket, client_context
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
    """A later part of a long SMS was refused after earlier parts were accepted.

    `accepted_ids` lets the caller record the parts the subscriber will receive anyway, so their
    receipts still match; `retryable` says whether the refusal was temporary (a throttling SMSC
    refusing the third part of a message at its rate limit): then the whole message can go again
    later, under a fresh concatenation reference, and the handset shows it once, whole.
    """

    def __init__(self, message: str, *, provider_status: str | None, accepted_ids: list[str],
                 retryable: bool = False) -> None:
        super().__init__(message, provider_status=provider_status)
        self.accepted_ids = accepted_ids
        self.retryable = retryable




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
                 sequence: _LockedSequence, tls_context: ssl.SSLContext | None = None) -> None:
        super().__init__(settings.host, settings.port, timeout=settings.connect_timeout_seconds,
                         sequence_generator=sequence, logger_name=_WIRE_LOG.name,
                         allow_unknown_opt_params=True)
        self._write_lock = write_lock
        self.tls_context = tls_context
        # transmitter_receiver: the receiver bind that goes with this transmitter (None: transceiver)
        self.receiver: _Client | None = None
        self.last_received = time.monotonic()
        self.last_enquire = 0.0
        # Which bind this is, for the receipt writer's liveness record (`smpp_session`).
        self.session_owner = f"{socket.gethostname()}:{os.getpid()}:{next(_SESSION_NUMBERS)}"
        self.bound_at = datetime.now(UTC)
        self._inbox = bytearray()  # what the reader received beyond the last whole PDU
        self._next_raw: bytes | None = None  # a PDU already read, for smpplib's `read_once`

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
        if self.tls_context is not None:
            sock: Any = TlsSocket(self.tls_context, self.host, self.timeout)
        else:
            sock = super()._create_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one small PDU per write
        return sock  # type: ignore[no-any-return]

    @property
    def sessions(self) -> tuple[_Client, ...]:
        """This bind and its receiver bind, if any: what the reader reads and keeps alive."""
        return (self,) if self.receiver is None else (self, self.receiver)

    def send_pdu(self, p: Any) -> bool:
        with self._write_lock:
            if self._socket is None:
                raise _NotConnected("not connected")
            return bool(super().send_pdu(p))

    def send_pdus(self, pdus: list[Any]) -> None:
        """Write several smpplib PDUs with one `sendall`."""
        self.send_raw(b"".join(p.generate() for p in pdus))

    def send_raw(self, data: bytes) -> None:
        """Write encoded PDUs with one `sendall`: the parts of a long message leave together, so
        a crash cannot cut a message between its parts (the SMSC gets all of them or none)."""
        with self._write_lock:
            if self._socket is None:
                raise _NotConnected("not connected")
            try:
                self._socket.sendall(data)
            except OSError as exc:
                raise exceptions.ConnectionError(str(exc)) from exc

    def read_available(self) -> list[bytes]:
        """The reader's one `recv`: every whole PDU that has arrived (several per call under load,
        where smpplib made two `recv` calls and a `select` per PDU)."""
        sock = self._socket
        if sock is None:
            raise exceptions.ConnectionError("socket closed")
        try:
            data = sock.recv(1 << 16)
            if data and self.tls_context is not None:
                while sock.pending():  # decrypted already: select would not wake for it
                    data += sock.recv(1 << 16)
        except OSError as exc:
            raise exceptions.ConnectionError(str(exc)) from exc
        if not data:
            raise exceptions.ConnectionError("the SMSC closed the connection")
        self._inbox += data
        try:
            pdus = smpp_wire.split_pdus(self._inbox)
        except ValueError as exc:
            raise exceptions.PDUError(str(exc)) from exc
        if pdus:
            self.last_received = time.monotonic()
        return pdus

    def handle(self, raw: bytes) -> None:
        """Act on a PDU the reader already took off the socket, the way smpplib's `read_once` does."""
        self._next_raw = raw
        try:
            self.read_once(auto_send_enquire_link=False)
        finally:
            self._next_raw = None

    def read_pdu(self) -> Any:
        raw = self._next_raw
        if raw is None:  # the bind and unbind exchanges, before and after the reader
            pdu = super().read_pdu()
        else:
            pdu = smpp.parse_pdu(raw, client=self, allow_unknown_opt_params=self.allow_unknown_opt_params)
            if not pdu.is_error() and pdu.command in consts.STATE_SETTERS:
                self.state = consts.STATE_SETTERS[pdu.command]
        self.last_received = time.monotonic()
        if pdu.command == "unbind":  # smpplib would ignore it and leave us bound to nothing
            answer = smpp.make_pdu("unbind_resp", client=self)
            answer.sequence = pdu.sequence
            self.send_pdu(answer)
            raise exceptions.ConnectionError("the SMSC unbound")
        return pdu

    def abort(self) -> None:
        """Drop the connection (and its receiver bind's) now; shutdown first so a thread blocked
        on the socket wakes up."""
        if self.receiver is not None:
            self.receiver.abort()
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
    reports_each_message = True  # a receipt for every part

    def __init__(self, settings: SmppSettings, on_receipt: ReceiptSink | None = None, *,
                 on_reply: ReplySink | None = None) -> None:
        self._settings = settings
        self._on_receipt = on_receipt
        self._on_reply = on_reply
        self._tls_context = (client_context(ca_file=settings.tls_ca_file, verify=settings.tls_verify)
                             if settings.tls else None)
        self._sequence = _LockedSequence()
        self._write_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, tuple[_Answers, int]] = {}  # sequence -> (its message's answers, part)
        self._window = _Window(max(1, settings.window))
        self._window_taker = threading.Lock()
        self._references = itertools.count(random.randrange(256))  # UDH refs; next() is atomic
        self._client: _Client | None = None
        self._backoff = _BACKOFF_INITIAL_SECONDS
        self._next_attempt = 0.0
        self._last_bind_failure = "not connected yet"  # why the last bind failed, for people
        self._stop = threading.Event()
        # close() writes a byte here so the reader's select returns at once instead of after its
        # poll (`_POLL_SECONDS`): that wait was part of the end of every `campaign run`.
        self._waker, self._wake_reader = socket.socketpair()
        self._reader: threading.Thread | None = None
        self._writer = (ReceiptWriter(on_receipt, system_id=settings.system_id, current_client=lambda: self._client,
                                      reply_sink=on_reply, reply_timeout=settings.reply_timeout_seconds)
                        if on_receipt is not None or on_reply is not None else None)

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
        template = self._submit_template(destination, encoded.data_coding, encoded.esm_class)
        try:
            ids = self._submit_parts(template, encoded.parts)
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
        with contextlib.suppress(OSError):
            self._wake_reader.send(b"\0")
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=self._settings.connect_timeout_seconds + 1)
        if reader is None or not reader.is_alive():
            self._waker.close()
            self._wake_reader.close()
        if self._writer is not None:  # store and answer what was read while the session is still up
            self._writer.stop(timeout=self._settings.connect_timeout_seconds + 1)
        with self._conn_lock:
            client, self._client = self._client, None
        if client is not None:
            for session in client.sessions:
                _unbind_quickly(session)
            client.abort()
        self._fail_pending(lambda: OutcomeUnknownError("SMPP channel closed before submit_sm_resp"))
        log.info("[channel:sms] closed")

    # -- sending ------------------------------------------------------------------------------

    def _submit_template(self, destination: str, data_coding: int, esm_class: int) -> smpp_wire.SubmitTemplate:
        """The submit_sm fields shared by every part of one message, encoded once."""
        s = self._settings
        return smpp_wire.SubmitTemplate.build(
            source_addr_ton=s.source_addr_ton, source_addr_npi=s.source_addr_npi, source_addr=s.source_addr,
            dest_addr_ton=s.dest_addr_ton, dest_addr_npi=s.dest_addr_npi, destination_addr=destination,
            esm_class=esm_class, data_coding=data_coding, registered_delivery=s.registered_delivery)

    def _submit_parts(self, template: smpp_wire.SubmitTemplate, parts: list[bytes]) -> list[str]:
        """Submit every part inside the window; returns the SMSC's ids or raises a ChannelError
        (`PartiallySentError` when some parts were accepted and others not)."""
        timeout = self._settings.submit_timeout_seconds
        slots = self._acquire_window(len(parts), timeout)
        try:
            outcomes = self._exchange(template, parts, timeout)
        finally:
            self._window.release(slots)
        return _judge(outcomes)

    def _acquire_window(self, slots: int, timeout: float) -> int:
        """Take `slots` window places at once (one taker at a time, so two long messages cannot
        each hold half the window and starve each other)."""
        wanted = min(slots, self._window.size)
        with self._window_taker:
            if not self._window.acquire(wanted, timeout):
                raise _WindowFull(f"no free SMPP window slot within {timeout}s")
        return wanted

    def _exchange(self, template: smpp_wire.SubmitTemplate, parts: list[bytes],
                  timeout: float) -> list[tuple[int, Any]]:
        """Write the PDUs and wait for the reader to hand over each response (status, message_id)."""
        written = self._write(template, parts)
        return self._await(written, time.monotonic() + timeout, timeout)

    def _write(self, template: smpp_wire.SubmitTemplate, parts: list[bytes],
               on_answer: Callable[[], None] | None = None) -> _Written:
        """Write one message's submit_sm PDUs in one `sendall`; the reader fills in their answers
        (calling `on_answer` for each)."""
        client = self._bound_client()
        sequences = [self._sequence.next_sequence() for _ in parts]
        data = b"".join(template.pdu(sequence, part) for sequence, part in zip(sequences, parts))
        answers = _Answers(len(parts), on_answer)
        with self._pending_lock:  # registered before writing: the answer can beat us back
            for index, sequence in enumerate(sequences):
                self._pending[sequence] = (answers, index)
        try:
            client.send_raw(data)
        except _NotConnected as exc:  # another thread saw the session die: nothing was written
            self._forget(sequences)
            self._connection_lost(client, exc)
            address = f"{self._settings.host}:{self._settings.port}"
            raise RouteUnreachableError(f"cannot reach the SMSC at {address} (connection lost)",
                                        channel=self.name, address=address, reason="connection lost") from exc
        except _CONNECTION_ERRORS as exc:  # part of the write may have reached the SMSC
            self._forget(sequences)
            self._connection_lost(client, exc)
            raise OutcomeUnknownError("SMSC connection lost while sending") from exc
        return _Written(sequences, answers)

    def _await(self, written: _Written, deadline: float, timeout: float) -> list[tuple[int, Any]]:
        """Each response of a written message; OutcomeUnknownError when one did not come in time
        (or the error that failed every waiting submit: the session was lost or closed)."""
        try:
            if not written.answers.done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise OutcomeUnknownError(f"no submit_sm_resp within {timeout}s")
            if written.answers.error is not None:
                raise written.answers.error
            return list(written.answers.results)  # type: ignore[arg-type]  # all filled in
        finally:
            self._forget(written.sequences)

    def _forget(self, sequences: list[int]) -> None:
        with self._pending_lock:
            for sequence in sequences:
                self._pending.pop(sequence, None)

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
        template = self._submit_template(destination, encoded.data_coding, encoded.esm_class)
        slots = _Slots(self._window, self._acquire_window(len(encoded.parts), timeout))
        try:
            written = self._write(template, encoded.parts, on_answer=slots.release_one)
        except BaseException:
            slots.release_rest()
            raise
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
            entry = self._pending.pop(sequence, None)
            complete = entry is not None and entry[0].fill(entry[1], outcome)
        if entry is None:
            log.warning("[channel:sms] response for unknown sequence %d (sender gave up)", sequence)
            return
        answers = entry[0]
        if answers.on_answer is not None:
            answers.on_answer()
        if complete:
            answers.done.release()

    def _fail_pending(self, error: Callable[[], Exception]) -> None:
        """Every submit still waiting ends with `error` (its window places come back now)."""
        with self._pending_lock:
            entries, self._pending = list(self._pending.values()), {}
            failed = {id(answers): answers for answers, _ in entries if answers.fail(error())}
        for answers, _ in entries:
            if answers.on_answer is not None:
                answers.on_answer()
        for answers in failed.values():
            answers.done.release()

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
        client = self._new_client()
        try:
            if s.bind_mode == "transmitter_receiver":
                self._bind(client, "bind_transmitter")
                client.receiver = self._new_client()
                self._bind(client.receiver, "bind_receiver")
            else:
                self._bind(client, "bind_transceiver")
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
        log.info("[channel:sms] bound to %s:%s as %s (%s%s)", s.host, s.port, s.system_id, s.bind_mode,
                 ", TLS" if s.tls else "")
        return client

    def _new_client(self) -> _Client:
        client = _Client(self._settings, write_lock=self._write_lock, sequence=self._sequence,
                         tls_context=self._tls_context)
        client.set_message_received_handler(self._on_deliver_sm)
        client.set_message_sent_handler(self._on_submit_resp)
        client.set_error_pdu_handler(self._on_error_pdu)
        return client

    def _bind(self, client: _Client, command: str) -> None:
        """Connect and bind one session with the configured credentials and system_type."""
        s = self._settings
        client.connect()
        getattr(client, command)(system_id=s.system_id, password=s.password.get_secret_value(),
                                 system_type=s.system_type)

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
        if client.receiver is not None or client.tls_context is not None:
            self._read_sessions(client.sessions)
            return
        sock = client.socket
        if sock is None:
            raise exceptions.ConnectionError("socket closed")
        readable, _, _ = select.select([sock, self._waker], [], [], _POLL_SECONDS)
        if sock in readable:
            self._read_from(client)
        self._keep_alive(client)

    def _read_sessions(self, sessions: tuple[_Client, ...]) -> None:
        """`_read_step` for a transmitter + receiver pair, or TLS (decrypted bytes may already
        wait in the TLS buffer, where select cannot see them)."""
        sockets = {}
        for session in sessions:
            sock = session.socket
            if sock is None:
                raise exceptions.ConnectionError("socket closed")
            sockets[sock.fileno()] = session
        ready = [session for session in sessions if session.tls_context is not None and session.socket.pending()]
        if not ready:
            readable, _, _ = select.select([*sockets, self._waker.fileno()], [], [], _POLL_SECONDS)
            ready = [sockets[fd] for fd in readable if fd in sockets]
        for session in ready:
            self._read_from(session)
        for session in sessions:
            self._keep_alive(session)

    def _read_from(self, session: _Client) -> None:
        for raw in session.read_available():
            try:
                self._dispatch(session, raw)
            except exceptions.UnknownCommandError as exc:  # that PDU only: read on
                log.warning("[channel:sms] ignored a PDU smpplib cannot decode: %s", exc)

    def _dispatch(self, client: _Client, raw: bytes) -> None:
        """submit_sm_resp and receipts read here (`smpp_wire`), anything else by smpplib."""
        _, command_id, status, sequence = smpp_wire.HEADER.unpack_from(raw)
        if command_id == smpp_wire.SUBMIT_SM_RESP:
            self._resolve(sequence, (status, smpp_wire.submit_sm_resp_message_id(raw)))
            return
        if command_id == smpp_wire.DELIVER_SM:
            pdu = smpp_wire.parse_deliver_sm(raw)
            if pdu is not None:
                answer = self._on_deliver_sm(pdu, client)
                if answer is not DEFERRED:
                    client.send_raw(smpp_wire.deliver_sm_resp(sequence, consts.SMPP_ESME_ROK if answer is None
                                                              else int(answer)))  # type: ignore[call-overload]
                return
        client.handle(raw)

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
            return self._on_subscriber_reply(pdu, client)
        receipt = parse_receipt(pdu, zone=self._settings.timezone)
        if receipt is None:
            log.warning("[channel:sms] delivery receipt without a message id ignored")
            return None
        if self._writer is None or client is None or self._on_receipt is None:
            return None
        if self._writer.offer(Inbound(receipt, client, pdu.sequence)):
            return DEFERRED
        log.info("[channel:sms] receipt queue full: asking the SMSC to deliver id %s again later",
                 receipt.provider_message_id)
        return int(consts.SMPP_ESME_RX_T_APPN)

    def _on_subscriber_reply(self, pdu: Any, client: Any) -> object:
        """Queue a part of a subscriber's reply for the writer (DEFERRED: answered once its reply
        is stored); without a reply sink it is only logged, masked, and answered OK."""
        source = mask_msisdn(e164_address(pdu.source_addr) or "")
        if self._writer is None or self._on_reply is None or client is None:
            log.info("[channel:sms] ignored a message from %s (no reply store configured)", source)
            return None
        if self._writer.offer(Inbound(None, client, pdu.sequence, reply=reply_part(pdu, (client, pdu.sequence)))):
            return DEFERRED
        log.info("[channel:sms] queue full: asking the SMSC to deliver the reply from %s again later", source)
        return int(consts.SMPP_ESME_RX_T_APPN)


class _Answers:
    """The submit_sm_resp answers of one message's parts, filled in by the reader thread. The
    sender waits on one lock for all of them (a Future per part cost more than writing it);
    `fill` and `fail` run under the channel's pending lock, so exactly one of them finishes it."""

    __slots__ = ("results", "missing", "error", "finished", "done", "on_answer")

    def __init__(self, parts: int, on_answer: Callable[[], None] | None) -> None:
        self.results: list[tuple[int, Any] | None] = [None] * parts
        self.missing = parts
        self.error: Exception | None = None
        self.finished = False
        self.done = threading.Lock()
        self.done.acquire()  # released once: every answer is in, or the submit failed
        self.on_answer = on_answer

    def fill(self, index: int, outcome: tuple[int, Any]) -> bool:
        """Record one part's answer; True when this completes the message (release `done`)."""
        self.results[index] = outcome
        self.missing -= 1
        if self.missing or self.finished:
            return False
        self.finished = True
        return True

    def fail(self, error: Exception) -> bool:
        """End the wait with `error` unless already finished; True if it did (release `done`)."""
        if self.finished:
            return False
        self.finished, self.error = True, error
        return True


@dataclass(frozen=True)
class _Written:
    """One message's submit_sm sequence numbers on the wire and the answers awaited for them."""

    sequences: list[int]
    answers: _Answers


class _Window:
    """The SMPP window: places for submits awaiting their submit_sm_resp. The sender waiting for
    places (one at a time: `_window_taker`) is woken once a few have come back — all it needs and
    at least a fifth of the window — not at every answer: a wake-up per answer handed the GIL back
    and forth between the reader and the senders and cost the reader a quarter of its time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._wanted = 0  # what the waiting sender needs before it is woken (0: nobody waits)
        self._wake = max(1, size // 5)
        self._changed = threading.Condition(threading.Lock())

    def acquire(self, count: int, timeout: float) -> bool:
        """Take `count` (≤ size) places, waiting up to `timeout` seconds; False if they did not come."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._free < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._wanted = 0
                    return False
                self._wanted = min(self.size, max(count, self._wake))
                self._changed.wait(remaining)
            self._wanted = 0
            self._free -= count
            return True

    def release(self, count: int) -> None:
        with self._changed:
            self._free = min(self.size, self._free + count)
            if self._wanted and self._free >= self._wanted:
                self._wanted = 0
                self._changed.notify()


class _Slots:
    """The window places one message holds: released one per answer, the rest exactly once."""

    def __init__(self, window: _Window, held: int) -> None:
        self._window, self._held, self._lock = window, held, threading.Lock()

    def release_one(self, _future: object = None) -> None:
        with self._lock:
            if self._held == 0:
                return
            self._held -= 1
        self._window.release(1)

    def release_rest(self) -> None:
        with self._lock:
            held, self._held = self._held, 0
        if held:
            self._window.release(held)


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
                                 provider_status=error.provider_status, accepted_ids=ids,
                                 retryable=isinstance(error, TransientChannelError))
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
