"""A loopback SMSC (SMPP 3.4, smpp34) for tests and the demo, and `SmscPeer` to run it.

The server runs in its own process (`python -m notifier.peers.smsc --port P --log FILE`): an
interpreter that ran an smpp34 server sometimes segfaults on exit, so it ends with `os._exit(0)`
after flushing, and the controller stops it by pid. It accepts every bind, answers every submit_sm
with a hex id, writes one JSON line per submit, and sends delivery receipts like a real SMSC,
including store-and-forward: receipts for an ESME that has gone wait for the next bind with the
same system_id (our crash recovery depends on that). Like a real SMSC it keeps those receipts
across its own restart (a journal next to the log, `<log>.receipts`), answers a receipt refused
with a temporary error again after `--receipt-retry` seconds, can answer submits late
(`--answer-delay`), can die right after the N-th submit it takes, inside a long SMS
(`--crash-after`), and sets TCP_NODELAY on its connections (smpp34 leaves Nagle on, which costs
~40 ms per multi-part message). Tests freeze it with SIGSTOP and kill/restart it by pid.

A control port (`--control-port`, JSON lines) lets tests make it act like the network: `mo` sends a
subscriber's reply (MO deliver_sm, esm_class 0, possibly several UDH parts in any order) to a bind
that can receive, kept and sent again like receipts until the ESME answers OK; `inject` writes raw
PDUs (generic_nack, an unknown command id) to every relayed connection.

`--relay` (implied by `--tls-cert`) puts a front end on the public port that passes the bytes to
smpp34 on an inner port: it terminates TLS, logs every bind (command, system_id, system_type) to
`<log>.binds`, and lets receiver and transmitter binds work — smpp34 refuses deliver_sm_resp on a
bind_receiver session, so the front end binds transceiver behind a receiver or transmitter bind and
the SMSC sends receipts and replies only to the binds that may receive them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn
from zoneinfo import ZoneInfo

import smpp34

from notifier.peers import LOOPBACK, ensure_port_free, free_port, stop_child, wait_for_port
from notifier.sms import concat_header, decode_parts, encode_sms

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STATE_DELIVERED, STATE_UNDELIVERABLE = 2, 5
ESM_CLASS_RECEIPT = 0x04
_STOP_TIMEOUT_SECONDS = 5.0
_HEADER = struct.Struct(">LLLL")
_BIND_TRANSCEIVER = 0x00000009
_BIND_COMMANDS = {0x00000001: "bind_receiver", 0x00000002: "bind_transmitter", _BIND_TRANSCEIVER: "bind_transceiver"}
_ROLE_SUFFIX = {0x00000001: ":r", 0x00000002: ":t"}  # what the front end appends to the system_id
_ROLES = {":r": "rx", ":t": "tx"}


@dataclass(frozen=True)
class _PendingReceipt:
    """A receipt to send: where from/to, and the bytes an SMSC would put in deliver_sm."""

    source_addr: str
    destination_addr: str
    short_message: bytes
    receipted_id: str  # for a subscriber's reply: "mo-N", its key in the journal
    state: int
    esm_class: int = ESM_CLASS_RECEIPT  # a reply: 0, or 0x40 with a UDH
    data_coding: int = 0


RESPONSE_TIMEOUT_SECONDS = 10.0  # how long a deliver_sm waits for its deliver_sm_resp


class _Smsc:
    """The server's state: live sessions, per-system_id receipt backlog, the submit log."""

    def __init__(self, args: argparse.Namespace, log_file: IO[str]) -> None:
        self._args = args
        self._log = log_file
        self._ids = itertools.count(int(time.time() * 1000) & 0x0FFFFFFF)  # fresh ids after a restart
        self._sessions: dict[str, Any] = {}  # session_id -> smpp34.Esme
        self._backlog: dict[str, list[_PendingReceipt]] = defaultdict(list)
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = 0
        self._system_ids: dict[str, str] = {}  # session_id -> system_id, until it unbinds
        self._journal_path = Path(str(args.log) + ".receipts")
        self._journal = _load_journal(self._journal_path, self._backlog)
        self._recent: deque[float] = deque()  # accept times within the last second (--throttle-above)
        self._roles: dict[str, str] = {}  # session_id -> "trx" | "tx" | "rx"
        self._mo_ids = itertools.count(int(time.time() * 1000))
        self._fronts: set[asyncio.StreamWriter] = set()  # relayed client connections (for `inject`)

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Handle server events forever (the caller cancels on SIGTERM); `on_ready` once listening."""
        relayed = self._args.relay or self._args.tls_cert is not None
        inner_port = free_port() if relayed else self._args.port
        server = smpp34.Server(host=LOOPBACK, port=inner_port, system_id="TESTSMSC")
        await server.start()
        if relayed:
            front = _Front(self, inner_port, self._args)
            await front.start()
        if self._args.control_port:
            await asyncio.start_server(self._control, LOOPBACK, self._args.control_port)
        if on_ready is not None:
            on_ready()
        while True:
            event = await server.next()
            if isinstance(event, smpp34.Esme):
                self._on_bind(event)
            elif isinstance(event, smpp34.SubmitSmEvent):
                self._on_submit(event)
            elif isinstance(event, smpp34.Unbound):
                self._sessions.pop(event.session_id, None)

    def _on_bind(self, esme: Any) -> None:
        _set_nodelay_on_connections()
        system_id, role = esme.system_id, "trx" if esme.can_receive else "tx"
        if system_id[-2:] in _ROLES:  # bound through the front end as a receiver or transmitter
            system_id, role = system_id[:-2], _ROLES[system_id[-2:]]
        self._sessions[esme.session_id] = esme
        self._system_ids[esme.session_id] = system_id
        self._roles[esme.session_id] = role
        if role == "tx":
            return  # receipts and replies wait for a bind that may receive them
        backlog = self._backlog.pop(system_id, [])
        for receipt in backlog:
            self._spawn(self._deliver(esme.session_id, system_id, receipt, delay=0.0))

    def _receiving(self, session_id: str | None, system_id: str) -> Any:
        """The session to hand a receipt or reply to: this one if it may receive, else another
        bind of the same system_id that may (a receiver next to a transmitter), else None."""
        esme = self._sessions.get(session_id or "")
        if esme is not None and self._roles.get(esme.session_id) != "tx":
            return esme
        return next((other for sid, other in self._sessions.items()
                     if self._system_ids.get(sid) == system_id and self._roles.get(sid) != "tx"), None)

    def _on_submit(self, event: Any) -> None:
        if self._args.answer_delay:
            self._spawn(self._answer_late(event))
        else:
            self._answer(event)

    async def _answer_late(self, event: Any) -> None:
        """A slow SMSC: the submit is taken (and logged) only when it is answered."""
        await asyncio.sleep(self._args.answer_delay)
        self._answer(event)

    def _answer(self, event: Any) -> None:
        system_id = self._system_ids.get(event.session_id, "")
        status = self._refusal(event.destination_addr)
        if status:
            event.reject(status)
            self._write_log(event, system_id, None, status)
            return
        message_id = f"{next(self._ids) & 0xFFFFFFFF:08X}"
        receipt = self._receipt_for(event, message_id) if event.registered_delivery & 1 else None
        if receipt is not None:  # kept before the ESME hears "accepted": a crash right after loses nothing
            self._journal_write({"op": "add", "system_id": system_id, **_journal_fields(receipt)})
        try:
            event.accept(message_id)
        except smpp34.SmppError:
            if receipt is not None:
                self._journal_write({"op": "done", "receipted_id": receipt.receipted_id})
            return  # the session went away before we answered: not taken
        self._accepted += 1
        self._write_log(event, system_id, message_id, smpp34.ESME_ROK)
        if self._args.crash_after is not None and self._accepted >= self._args.crash_after:
            os._exit(137)  # a crash between two submits: what it took is logged and journaled, no more
        if receipt is not None:
            self._spawn(self._deliver(event.session_id, system_id, receipt, delay=self._args.receipt_delay))

    def _refusal(self, destination: str) -> int:
        """The command_status to answer instead of accepting (0: accept), from --reject options."""
        for suffix, status in self._args.reject:
            if destination.endswith(suffix):
                return int(status)
        if self._args.reject_after is not None and self._accepted >= self._args.reject_after:
            return int(smpp34.ESME_RTHROTTLED)
        if self._args.throttle_above is not None:
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self._args.throttle_above:
                return int(smpp34.ESME_RTHROTTLED)
            self._recent.append(now)
        return 0

    def _write_log(self, event: Any, system_id: str, message_id: str | None, status: int) -> None:
        record = {
            "at": datetime.now(UTC).isoformat(), "session_id": event.session_id, "system_id": system_id,
            "source_addr": event.source_addr, "destination_addr": event.destination_addr,
            "source_addr_ton": event.source_addr_ton, "source_addr_npi": event.source_addr_npi,
            "dest_addr_ton": event.dest_addr_ton, "dest_addr_npi": event.dest_addr_npi,
            "service_type": event.service_type, "data_coding": event.data_coding, "esm_class": event.esm_class,
            "registered_delivery": event.registered_delivery,
            "short_message_hex": bytes(event.short_message).hex(), "message_id": message_id,
            "command_status": status,
        }
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def _receipt_for(self, event: Any, message_id: str) -> _PendingReceipt:
        failed = bool(self._args.fail_suffix) and event.destination_addr.endswith(self._args.fail_suffix)
        shown_id = str(int(message_id, 16)) if self._args.receipt_id_format == "decimal" else message_id
        stamp = datetime.now(ZoneInfo(self._args.timezone)).strftime("%y%m%d%H%M")  # its wall clock, minutes
        stat, err, dlvrd = ("UNDELIV", "001", "000") if failed else ("DELIVRD", "000", "001")
        text = (f"id:{shown_id} sub:001 dlvrd:{dlvrd} submit date:{stamp} done date:{stamp} "
                f"stat:{stat} err:{err} text:")
        return _PendingReceipt(source_addr=event.destination_addr, destination_addr=event.source_addr,
                               short_message=text.encode("ascii"), receipted_id=shown_id,
                               state=STATE_UNDELIVERABLE if failed else STATE_DELIVERED)

    async def _deliver(self, session_id: str, system_id: str, receipt: _PendingReceipt, *,
                       delay: float) -> None:
        """Send one receipt. If that ESME has gone, try another bind of the same system_id, else
        keep it for the next bind; if the ESME refused it (temporary NACK), keep it too."""
        if delay:
            await asyncio.sleep(delay)
        esme = self._receiving(session_id, system_id)
        outcome = await self._push(esme, receipt) if esme is not None else "gone"
        if outcome == "delivered":
            self._journal_write({"op": "done", "receipted_id": receipt.receipted_id})
            return
        if outcome == "unanswered":
            sibling = next((other for sid, other in self._sessions.items()
                            if sid != esme.session_id and self._system_ids.get(sid) == system_id
                            and self._roles.get(sid) != "tx"), None)
            if sibling is not None:
                self._spawn(self._deliver(sibling.session_id, system_id, receipt, delay=0.0))
                return
            outcome = "refused" if esme.session_id in self._sessions else "gone"
        if outcome == "refused" and esme.session_id in self._sessions:  # "try again later"
            self._spawn(self._deliver(esme.session_id, system_id, receipt, delay=self._args.receipt_retry))
            return
        # The session is gone — or refused while it was going away (killed mid-push: the error says
        # "refused" but the session is no longer bound): another bind of the system_id takes it, else
        # it waits for the next bind. Before, such a receipt waited for a bind that never came while
        # the other worker's session stayed bound, and its message stayed `sent` for good.
        if esme is not None:
            self._sessions.pop(esme.session_id, None)
        sibling = self._receiving(None, system_id)
        if sibling is not None:
            self._spawn(self._deliver(sibling.session_id, system_id, receipt, delay=0.0))
        else:
            self._backlog[system_id].append(receipt)

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One JSON command per line, one JSON answer per line (`SmscPeer.send_reply`, `inject`)."""
        try:
            while line := await reader.readline():
                command = json.loads(line)
                writer.write((json.dumps(self._command(command)) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        if command["op"] == "mo":
            return self._send_mo(command)
        if command["op"] == "inject":
            for front in list(self._fronts):
                front.write(bytes.fromhex(command["hex"]))
            return {"ok": True, "connections": len(self._fronts)}
        return {"ok": False, "error": f"unknown op {command['op']!r}"}

    def _send_mo(self, command: dict[str, Any]) -> dict[str, Any]:
        """A subscriber's reply: each part (hex short_message, in the order given) is queued for a
        receiving bind of `system_id`, journalled and retried like a receipt."""
        system_id = command["system_id"]
        for part in command["parts"]:
            reply = _PendingReceipt(source_addr=command["source"], destination_addr=command["destination"],
                                    short_message=bytes.fromhex(part), receipted_id=f"mo-{next(self._mo_ids)}",
                                    state=0, esm_class=command["esm_class"], data_coding=command["data_coding"])
            self._journal_write({"op": "add", "system_id": system_id, **_journal_fields(reply)})
            self._spawn(self._deliver("", system_id, reply, delay=0.0))
        return {"ok": True, "parts": len(command["parts"])}

    def _journal_write(self, record: dict[str, Any]) -> None:
        self._journal.write(json.dumps(record) + "\n")
        self._journal.flush()

    @staticmethod
    async def _push(esme: Any, receipt: _PendingReceipt) -> str:
        """deliver_sm one receipt: "delivered", "refused" (non-OK deliver_sm_resp) or "gone"."""
        tlvs = [smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, receipt.receipted_id.encode("ascii") + b"\0"),
                smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([receipt.state]))]
        if receipt.esm_class != ESM_CLASS_RECEIPT:
            tlvs = []  # a subscriber's reply
        try:
            response = await asyncio.wait_for(esme.deliver_sm(  # a Future, not a coroutine: no create_task
                receipt.destination_addr, receipt.short_message, source_addr=receipt.source_addr,
                source_addr_ton=1, source_addr_npi=1, esm_class=receipt.esm_class,
                data_coding=receipt.data_coding, tlvs=tlvs), RESPONSE_TIMEOUT_SECONDS)
        except TimeoutError:
            # No answer: like a real SMSC's response timer. The ESME may be dead (killed, its socket
            # not reset yet) or only slow: the receipt is offered to another bind of the same
            # system_id, else again to this one later (`_deliver`). A duplicate receipt is harmless
            # to the ESME; a receipt waiting forever on a dead session is not.
            return "unanswered"
        except smpp34.SmppError:
            return "refused" if esme.can_receive else "gone"
        except Exception as exc:  # noqa: BLE001 - the session broke mid-push (reset, closed transport)
            # Like a real SMSC whose write to a dead bind fails: the receipt is not lost, it goes
            # to another bind or waits (`_deliver`). Before, such an error ended the task and the
            # receipt with it: nobody ever received it.
            print(f"smsc: deliver_sm to {esme.session_id} failed ({type(exc).__name__}: {exc}); offered again",
                  file=sys.stderr, flush=True)
            return "unanswered"
        return "delivered" if response.is_success else "refused"

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """Forget the task; say so on stderr if it died (a receipt it carried would be lost)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"smsc: a delivery task failed: {task.exception()!r}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, log_file: IO[str], on_ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; a server that fails (its port taken) raises instead of hanging."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.create_task(_Smsc(args, log_file).serve(on_ready))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if serving.done():
        serving.result()  # the server's own failure
    serving.cancel()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Loopback SMPP 3.4 SMSC for tests and the demo.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True, help="JSON lines, one per submit_sm")
    parser.add_argument("--fail-suffix", default=None, help="destinations ending so get stat:UNDELIV")
    parser.add_argument("--receipt-id-format", choices=("hex", "decimal"), default="hex")
    parser.add_argument("--receipt-delay", type=float, default=0.0, help="seconds before each receipt")
    parser.add_argument("--receipt-retry", type=float, default=1.0,
                        help="seconds before a receipt the ESME refused (temporary error) is sent again")
    parser.add_argument("--answer-delay", type=float, default=0.0, help="seconds before each submit_sm_resp")
    parser.add_argument("--timezone", default="Asia/Ho_Chi_Minh", help="zone of receipts' submit/done dates")
    parser.add_argument("--reject", type=_rejection, action="append", default=[], metavar="SUFFIX=STATUS",
                        help="answer submits to destinations ending in SUFFIX with STATUS (e.g. 13=0x0b)")
    parser.add_argument("--reject-after", type=int, default=None, metavar="N",
                        help="answer ESME_RTHROTTLED once N submits were accepted (a quota)")
    parser.add_argument("--throttle-above", type=int, default=None, metavar="R",
                        help="answer ESME_RTHROTTLED to submits beyond R accepted in the last second")
    parser.add_argument("--crash-after", type=int, default=None, metavar="N",
                        help="die (like kill -9) right after accepting the N-th submit, e.g. inside a long SMS")
    parser.add_argument("--control-port", type=int, default=None, help="JSON-lines control (mo, inject)")
    parser.add_argument("--relay", action="store_true",
                        help="front end on --port: logs binds, allows receiver/transmitter binds, inject")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate: the front end speaks TLS")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    return parser.parse_args(argv)


def _rejection(text: str) -> tuple[str, int]:
    suffix, _, status = text.partition("=")
    if not suffix or not status:
        raise argparse.ArgumentTypeError("expected SUFFIX=STATUS, e.g. 13=0x0b")
    return suffix, int(status, 0)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then flush and leave without interpreter teardown."""
    args = _parse_args(argv)
    with args.log.open("a", encoding="utf-8") as log_file:
        _serve_loop(_run(args, log_file, on_ready=lambda: print(_ready_line(args.port, args.log), flush=True)))
        log_file.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # interpreter teardown after smpp34 ran can segfault


def _serve_loop(main_task: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop where it is installed, else on asyncio's own loop. smpp34 hands
    every PDU over from its I/O thread with `call_soon_threadsafe`; uvloop's wake-up and loop cost
    30% less CPU per message (0.28 against 0.40 ms for a submit, its answer and its receipt), and on
    a benchmark machine the peer shares the cores with what it measures."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_task)
    else:
        uvloop.run(main_task)


def serve_foreground(*, port: int, log_path: Path, announce: Callable[[str], None]) -> NoReturn:
    """`notifier peers smsc`: serve on 127.0.0.1:port in this process until SIGINT/SIGTERM, then
    leave with status 0 through `os._exit` (interpreter teardown after smpp34 ran can segfault).

    `announce` hears one line once the server listens. A taken port is an InputError, raised
    before smpp34 is touched.
    """
    ensure_port_free(port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = _parse_args(["--port", str(port), "--log", str(log_path)])
    with log_path.open("a", encoding="utf-8") as log_file:
        _serve_loop(_run(args, log_file, on_ready=lambda: announce(_ready_line(port, log_path))))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _ready_line(port: int, log_path: Path) -> str:
    return (f"SMSC peer (SMPP 3.4, a loopback stand-in for tests and demos) listening on {LOOPBACK}:{port}: "
            f"accepts any bind, answers every submit_sm and sends its delivery receipt; submits logged "
            f"to {log_path}. Stop it with Ctrl-C (or SIGTERM).")


def _journal_fields(receipt: _PendingReceipt) -> dict[str, Any]:
    return {"source_addr": receipt.source_addr, "destination_addr": receipt.destination_addr,
            "short_message": receipt.short_message.decode("latin-1"), "receipted_id": receipt.receipted_id,
            "state": receipt.state, "esm_class": receipt.esm_class, "data_coding": receipt.data_coding}


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a log the server is appending to: a last line without its newline
    is still being written (a test reads while the SMSC writes) and is left for the next read."""
    text = path.read_text(encoding="utf-8")
    complete = text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _load_journal(path: Path, backlog: dict[str, list[_PendingReceipt]]) -> IO[str]:
    """Receipts an earlier run of this SMSC made but never delivered go to the backlog (they are
    handed to the next bind of their system_id); returns the journal, open for appending."""
    done: set[str] = set()
    added: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if record.get("op") == "done":
                done.add(record["receipted_id"])
            elif record.get("op") == "add":
                added.append(record)
    for record in added:
        if record["receipted_id"] not in done:
            fields = {key: record[key] for key in ("source_addr", "destination_addr", "receipted_id", "state")}
            fields.update({key: record[key] for key in ("esm_class", "data_coding") if key in record})
            backlog[record["system_id"]].append(_PendingReceipt(
                short_message=record["short_message"].encode("latin-1"), **fields))
    return path.open("a", encoding="utf-8")


class _Front:
    """The public side of a relayed SMSC: TLS (if configured), bind log, role rewriting, inject."""

    def __init__(self, smsc: _Smsc, inner_port: int, args: argparse.Namespace) -> None:
        self._smsc = smsc
        self._inner_port = inner_port
        self._args = args
        self._binds = Path(str(args.log) + ".binds").open("a", encoding="utf-8")

    async def start(self) -> None:
        context = None
        if self._args.tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._args.tls_cert, self._args.tls_key)
        await asyncio.start_server(self._connection, LOOPBACK, self._args.port, ssl=context)

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        inner_reader, inner_writer = await asyncio.open_connection(LOOPBACK, self._inner_port)
        for writer in (client_writer, inner_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._smsc._fronts.add(client_writer)
        binds: dict[int, int] = {}  # sequence -> the bind command the client sent (rewritten behind)
        pumps = [asyncio.create_task(self._pump(client_reader, inner_writer, lambda pdu: self._up(pdu, binds))),
                 asyncio.create_task(self._pump(inner_reader, client_writer, lambda pdu: self._down(pdu, binds)))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._smsc._fronts.discard(client_writer)
            for task in pumps:
                task.cancel()
            for writer in (client_writer, inner_writer):
                writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    rewrite: Callable[[bytes], bytes]) -> None:
        """Copy whole PDUs, each through `rewrite`, until either side closes."""
        try:
            while True:
                head = await reader.readexactly(4)
                rest = await reader.readexactly(int.from_bytes(head, "big") - 4)
                writer.write(rewrite(head + rest))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return

    def _up(self, pdu: bytes, binds: dict[int, int]) -> bytes:
        """ESME -> SMSC: log binds; a receiver or transmitter bind goes on as a transceiver one."""
        _, command_id, _, sequence = _HEADER.unpack_from(pdu)
        if command_id not in _BIND_COMMANDS:
            return pdu
        fields = pdu[16:].split(b"\0", 3)  # system_id, password, system_type, the rest
        system_id, system_type = fields[0].decode("latin-1"), fields[2].decode("latin-1")
        self._binds.write(json.dumps({"at": datetime.now(UTC).isoformat(), "command": _BIND_COMMANDS[command_id],
                                      "system_id": system_id, "system_type": system_type,
                                      "tls": self._args.tls_cert is not None}) + "\n")
        self._binds.flush()
        if command_id == _BIND_TRANSCEIVER:
            return pdu
        binds[sequence] = command_id
        body = (system_id + _ROLE_SUFFIX[command_id]).encode("latin-1") + b"\0" + b"\0".join(fields[1:])
        return _HEADER.pack(16 + len(body), _BIND_TRANSCEIVER, 0, sequence) + body

    @staticmethod
    def _down(pdu: bytes, binds: dict[int, int]) -> bytes:
        """SMSC -> ESME: the answer to a rewritten bind carries the command the ESME sent."""
        _, command_id, status, sequence = _HEADER.unpack_from(pdu)
        if command_id == 0x80000000 | _BIND_TRANSCEIVER and sequence in binds:
            return _HEADER.pack(len(pdu), 0x80000000 | binds.pop(sequence), status, sequence) + pdu[16:]
        return pdu


def _set_nodelay_on_connections() -> None:
    """smpp34 (Rust) does not expose its sockets: find this process's connected TCP sockets and set
    TCP_NODELAY on them through a duplicate descriptor (options belong to the socket, not the fd)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6) \
                    and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        finally:
            sock.close()


class SmscPeer:
    """Runs the loopback SMSC in a child process and reads what it received."""

    def __init__(self, log_path: Path, *, port: int | None = None, fail_suffix: str | None = None,
                 receipt_id_format: str = "hex", receipt_delay: float = 0.0,
                 reject: dict[str, int] | None = None, reject_after: int | None = None,
                 throttle_above: int | None = None, answer_delay: float = 0.0,
                 receipt_retry: float = 1.0, relay: bool = False, tls_cert: Path | None = None,
                 tls_key: Path | None = None, crash_after: int | None = None) -> None:
        self.log_path = Path(log_path).resolve()  # the server runs with the project as cwd
        self.port = port or free_port()
        self.fail_suffix = fail_suffix
        self.receipt_id_format = receipt_id_format
        self.receipt_delay = receipt_delay
        self.reject = dict(reject or {})
        self.reject_after = reject_after
        self.throttle_above = throttle_above
        self.answer_delay = answer_delay
        self.receipt_retry = receipt_retry
        self.relay = relay
        self.crash_after = crash_after
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.control_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server process id while it runs (tests pause it with SIGSTOP to play a hung SMSC)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> SmscPeer:
        """Spawn the server and wait until it listens on 127.0.0.1:port."""
        command = [sys.executable, "-m", "notifier.peers.smsc", "--port", str(self.port),
                   "--log", str(self.log_path), "--receipt-id-format", self.receipt_id_format,
                   "--receipt-delay", str(self.receipt_delay), "--answer-delay", str(self.answer_delay),
                   "--receipt-retry", str(self.receipt_retry), "--control-port", str(self.control_port)]
        if self.relay:
            command.append("--relay")
        if self.tls_cert is not None:
            command += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        if self.fail_suffix:
            command += ["--fail-suffix", self.fail_suffix]
        for suffix, status in self.reject.items():
            command += ["--reject", f"{suffix}={status}"]
        if self.reject_after is not None:
            command += ["--reject-after", str(self.reject_after)]
        if self.throttle_above is not None:
            command += ["--throttle-above", str(self.throttle_above)]
        if self.crash_after is not None:
            command += ["--crash-after", str(self.crash_after)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        self.log_path.touch()
        self._process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
            wait_for_port(self.control_port)
        except TimeoutError:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        """False once the server process has ended (`crash_after`, a kill)."""
        return self._process is not None and self._process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP: a hung SMSC (connections stay open, nothing is read or answered)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL by pid: a crashed SMSC. `start()` again restarts it on the same port, with the
        receipts it had not delivered (its journal) waiting for the next bind."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """Terminate the child by pid (SIGTERM, then SIGKILL); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.kill(process.pid, signal.SIGCONT)  # a frozen SMSC must run to hear SIGTERM
        except ProcessLookupError:
            pass
        stop_child(process)

    def __enter__(self) -> SmscPeer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def send_reply(self, source: str, text: str, *, system_id: str, destination: str = "8088",
                   parts: int | None = None, order: list[int] | None = None, reference: int = 0x42,
                   reference_16bit: bool = False, only: list[int] | None = None) -> int:
        """Send a subscriber's reply (MO deliver_sm, esm_class 0) to a receiving bind of `system_id`.

        GSM-7 when the text allows, else UCS-2; `parts` > 1 splits it into that many parts with a
        concatenation UDH (8-bit reference, or 16-bit with `reference_16bit`), sent in `order`
        (1-based seqs, default 1..n); `only` sends just those seqs (a part lost by the network).
        Returns the number of parts sent.
        """
        coding, payload = _encode_reply(text)
        count = parts or 1
        unit = 2 if coding == 8 else 1
        size = -(-len(payload) // unit // count) * unit
        chunks = [payload[i * size:(i + 1) * size] for i in range(count)]
        if count == 1:
            messages, esm_class = chunks, 0
        else:
            messages, esm_class = [_reply_udh(reference, count, seq, reference_16bit) + chunk
                                   for seq, chunk in enumerate(chunks, start=1)], 0x40
        seqs = [seq for seq in (order or list(range(1, count + 1))) if only is None or seq in only]
        answer = self._control({"op": "mo", "system_id": system_id, "source": source, "destination": destination,
                                "esm_class": esm_class, "data_coding": coding,
                                "parts": [messages[seq - 1].hex() for seq in seqs]})
        return int(answer["parts"])

    def inject(self, pdu: bytes) -> int:
        """Write raw PDU bytes to every relayed connection (`relay=True`); how many got them."""
        return int(self._control({"op": "inject", "hex": pdu.hex()})["connections"])

    def binds(self) -> list[dict[str, Any]]:
        """Every bind the front end saw (`relay=True` or TLS): command, system_id, system_type."""
        path = Path(str(self.log_path) + ".binds")
        if not path.exists():
            return []
        return _json_lines(path)

    def _control(self, command: dict[str, Any]) -> dict[str, Any]:
        with socket.create_connection((LOOPBACK, self.control_port), timeout=_STOP_TIMEOUT_SECONDS) as sock:
            sock.sendall((json.dumps(command) + "\n").encode())
            answer = json.loads(sock.makefile("rb").readline())
        if not answer.get("ok"):
            raise RuntimeError(f"SMSC peer refused {command['op']}: {answer}")
        return answer  # type: ignore[no-any-return]

    def submits(self) -> list[dict[str, Any]]:
        """Every submit_sm received so far, in arrival order (refused ones have message_id None)."""
        if not self.log_path.exists():
            return []
        return _json_lines(self.log_path)

    def messages(self) -> list[dict[str, Any]]:
        """Accepted submits grouped into messages by (destination, UDH ref), text reassembled.

        A repeated seq for the same key starts a new message, since 8-bit refs wrap around.
        """
        groups: list[list[dict[str, Any]]] = []
        open_groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for submit in self.submits():
            if submit["message_id"] is None:
                continue
            header = _concat(submit)
            if header is None:
                groups.append([submit])
                continue
            key = (submit["destination_addr"], header[0])
            group = open_groups.get(key)
            if group is None or header[2] in {_seq(other) for other in group}:
                group = open_groups[key] = []
                groups.append(group)
            group.append(submit)
        return [_message(group) for group in groups]

    def reassembled(self) -> Counter[str]:
        """Complete messages per destination: what each handset shows as one whole SMS (a long
        SMS of which some part never arrived is a fragment, not a message)."""
        return Counter(message["destination"] for message in self.messages() if message["complete"])

    def fragments(self) -> list[dict[str, Any]]:
        """Long SMS of which some part never arrived (an SMSC that died between its parts)."""
        return [message for message in self.messages() if not message["complete"]]


def _encode_reply(text: str) -> tuple[int, bytes]:
    """(data_coding, payload) as a handset would send it: GSM-7 septets, one per octet, else UCS-2."""
    encoded = encode_sms(text, reference=0)
    if encoded.data_coding == 0 and len(encoded.parts) == 1:
        return 0, encoded.parts[0]
    if encoded.data_coding == 0:
        return 0, b"".join(part[6:] for part in encoded.parts)
    return 8, text.encode("utf-16-be")


def _reply_udh(reference: int, total: int, seq: int, sixteen_bit: bool) -> bytes:
    if sixteen_bit:
        return bytes([0x06, 0x08, 0x04, (reference >> 8) & 0xFF, reference & 0xFF, total, seq])
    return bytes([0x05, 0x00, 0x03, reference & 0xFF, total, seq])


def _part(submit: dict[str, Any]) -> bytes:
    return bytes.fromhex(submit["short_message_hex"])


def _concat(submit: dict[str, Any]) -> tuple[int, int, int] | None:
    return concat_header(_part(submit)) if submit["esm_class"] & 0x40 else None


def _seq(submit: dict[str, Any]) -> int:
    header = _concat(submit)
    return header[2] if header else 0


def _message(group: list[dict[str, Any]]) -> dict[str, Any]:
    first = group[0]
    ordered = sorted(group, key=_seq)
    text = decode_parts([_part(submit) for submit in ordered], first["data_coding"],
                        esm_class=first["esm_class"])
    header = _concat(first)
    return {"destination": first["destination_addr"], "text": text, "parts": len(group),
            "complete": header is None or len({_seq(submit) for submit in group}) == header[1],
            "data_coding": first["data_coding"], "message_ids": [submit["message_id"] for submit in ordered]}


if __name__ == "__main__":
    main()
