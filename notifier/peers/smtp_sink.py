"""A mail relay on loopback that keeps what it receives: the e-mail peer for tests and the demo.

It is a real aiosmtpd SMTP server (SMTPUTF8 enabled), so the channel is exercised over the wire.
Chosen recipients can be refused with 550 or deferred with 451 to drive the channel's error mapping.
Tests use `SmtpSink` in-process; `notifier peers smtp` (or `python -m notifier.peers.smtp_sink
--port P [--store FILE]`) runs it in the foreground until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from aiosmtpd.controller import Controller

from notifier.peers import LOOPBACK, ensure_port_free, free_port

REFUSED_REPLY = "550 5.1.1 mailbox unavailable"
DEFERRED_REPLY = "451 4.3.0 mailbox temporarily unavailable, try again later"


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it: envelope, parsed message and the exact bytes."""

    envelope_from: str
    envelope_to: list[str]
    message: EmailMessage
    raw: bytes
    received_at: datetime


class _RecordingHandler:
    """aiosmtpd handler: screens recipients, then hands each accepted message to `on_message`.

    Hooks run on the controller's event-loop thread.
    """

    def __init__(
        self,
        on_message: Callable[[ReceivedMail], None],
        fail_recipients: frozenset[str],
        tempfail_recipients: frozenset[str],
    ) -> None:
        self._on_message = on_message
        self._fail = fail_recipients
        self._tempfail = tempfail_recipients

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self._fail:
            return REFUSED_REPLY
        if address.lower() in self._tempfail:
            return DEFERRED_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content
        self._on_message(
            ReceivedMail(
                envelope_from=envelope.mail_from,
                envelope_to=list(envelope.rcpt_tos),
                # policy.default parses into EmailMessage; the stub only promises Message.
                message=cast(EmailMessage, message_from_bytes(raw, policy=policy.default)),
                raw=raw,
                received_at=datetime.now(timezone.utc),
            )
        )
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """An SMTP server on 127.0.0.1 that records every message; use as a context manager.

    `port` defaults to a free port picked before starting, because aiosmtpd cannot bind port 0.
    With `store_path`, each message is also appended there as one JSON line (for the demo).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        store_path: Path | None = None,
        fail_recipients: set[str] | None = None,
        tempfail_recipients: set[str] | None = None,
        keep_messages: bool = True,
    ) -> None:
        self.port = port if port is not None else free_port()
        self._keep = keep_messages  # False for a long-running peer: memory must not grow per message
        self._store_path = store_path
        self._fail = frozenset(address.lower() for address in fail_recipients or ())
        self._tempfail = frozenset(address.lower() for address in tempfail_recipients or ())
        self._received: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen on 127.0.0.1:port; returns once the server answers."""
        if self._controller is not None:
            raise RuntimeError(f"SMTP sink already running on port {self.port}")
        if self._store_path is not None:
            self._store_path.parent.mkdir(parents=True, exist_ok=True)
        handler = _RecordingHandler(self._record, self._fail, self._tempfail)
        controller = Controller(handler, hostname=LOOPBACK, port=self.port, enable_SMTPUTF8=True)
        controller.start()  # blocks until a test connection got the banner
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and drop open connections; safe to call twice. Messages are kept."""
        if self._controller is None:
            return
        self._controller.stop()
        self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def messages(self) -> list[ReceivedMail]:
        """Everything received so far, oldest first (a copy: the sink keeps receiving)."""
        with self._arrived:
            return list(self._received)

    def wait_for(self, count: int, timeout_seconds: float = 10.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived and return them all, or raise TimeoutError."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._received) >= count, timeout_seconds):
                raise TimeoutError(
                    f"{len(self._received)} of {count} e-mails arrived within {timeout_seconds}s"
                )
            return list(self._received)

    def _record(self, mail: ReceivedMail) -> None:
        with self._arrived:
            if self._keep:
                self._received.append(mail)
            if self._store_path is not None:
                _append_json_line(self._store_path, mail)
            self._arrived.notify_all()


def _append_json_line(path: Path, mail: ReceivedMail) -> None:
    """One line per message with the headers a demo viewer needs; never the body."""
    record = {
        "received_at": mail.received_at.isoformat(),
        "envelope_from": mail.envelope_from,
        "envelope_to": mail.envelope_to,
        "message_id": mail.message["Message-ID"],
        "subject": mail.message["Subject"],
    }
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def serve_foreground(*, port: int, store_path: Path | None, announce: Callable[[str], None]) -> None:
    """`notifier peers smtp`: serve on 127.0.0.1:port until SIGINT/SIGTERM, then stop cleanly.

    `announce` hears one line once the server answers; a taken port is an InputError.
    """
    ensure_port_free(port)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    sink = SmtpSink(port, store_path=store_path, keep_messages=False)
    try:
        sink.start()
        where = f"headers of each message logged to {store_path}" if store_path else "messages not kept"
        announce(f"mail relay peer (SMTP, a loopback stand-in for tests and demos) listening on {LOOPBACK}:{port}: "
                 f"accepts every message; {where}. Stop it with Ctrl-C (or SIGTERM).")
        while not stop.wait(1.0):  # a timed wait, so the signal handler runs promptly
            pass
    finally:
        sink.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> None:
    """`python -m notifier.peers.smtp_sink --port P [--store FILE]`."""
    parser = argparse.ArgumentParser(description="Loopback SMTP relay that keeps what it receives.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, default=None, help="JSON lines, one per message (headers only)")
    args = parser.parse_args(argv)
    serve_foreground(port=args.port, store_path=args.store, announce=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
