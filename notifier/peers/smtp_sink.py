"""A mail relay on loopback that keeps what it receives: the e-mail peer for tests and the demo.

It is a real aiosmtpd SMTP server (SMTPUTF8 enabled), so the channel is exercised over the wire.
Chosen recipients can be refused with 550 or deferred with 451 to drive the channel's error mapping.
It can also speak TLS the way production relays do (`security="starttls"`: STARTTLS offered and
required before MAIL; `"tls"`: implicit TLS from the first byte, as on port 465) with a certificate
from `make_test_certificate`, and ask for AUTH PLAIN/LOGIN (`credentials`; aiosmtpd offers AUTH only
inside TLS unless `auth_require_tls=False`).
Tests use `SmtpSink` in-process; `notifier peers smtp` (or `python -m notifier.peers.smtp_sink
--port P [--store FILE]`) runs it in the foreground until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import ssl
import subprocess
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.parser import BytesHeaderParser
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, syntax

from notifier.peers import LOOPBACK, ensure_port_free, free_port

REFUSED_REPLY = "550 5.1.1 mailbox unavailable"
_END_OF_DATA = b"\r\n.\r\n"
_MAX_LINE = 1001  # aiosmtpd's RFC 5321 line limit (4.5.3.1.6), CRLF included
_READ_SIZE = 1 << 20
DEFERRED_REPLY = "451 4.3.0 mailbox temporarily unavailable, try again later"


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it: envelope and the exact bytes; `message` (parsed with
    `policy.default`) and `headers` (headers only) are parsed when first read.

    Parsing every message as it arrives cost the relay more CPU than receiving it (~1 ms for an
    18 KB warning) and ran on the server's event loop — in the bench, in the sender's process.
    """

    envelope_from: str
    envelope_to: list[str]
    raw: bytes
    received_at: datetime

    @functools.cached_property
    def message(self) -> EmailMessage:
        # policy.default parses into EmailMessage; the stub only promises Message.
        return cast(EmailMessage, message_from_bytes(self.raw, policy=policy.default))

    @functools.cached_property
    def headers(self) -> EmailMessage:
        return cast(EmailMessage, BytesHeaderParser(policy=policy.default).parsebytes(self.raw))


class _RecordingHandler:
    """aiosmtpd handler: screens recipients, then hands each accepted message to `on_message`.

    Hooks run on the controller's event-loop thread.
    """

    def __init__(
        self,
        on_message: Callable[[ReceivedMail], None],
        fail_recipients: frozenset[str],
        tempfail_recipients: frozenset[str],
        pipelining: bool = True,
    ) -> None:
        self._on_message = on_message
        self._fail = fail_recipients
        self._tempfail = tempfail_recipients
        self._pipelining = pipelining
        self.sessions = 0  # EHLOs seen: how many SMTP sessions clients opened
        self.logins: list[tuple[str, str]] = []  # (user name, mechanism) of each login, in order
        self.failed_logins = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Offer PIPELINING (RFC 2920) like production relays do: aiosmtpd reads each command from
        a buffered stream in turn, so a client's pipelined group is answered in order."""
        self.sessions += 1
        session.host_name = hostname  # aiosmtpd leaves it to a 5-argument hook
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self._pipelining else responses

    def authenticator(self, credentials: dict[str, str]) -> Callable[..., AuthResult]:
        """aiosmtpd's `authenticator` for these user names and passwords (PLAIN and LOGIN)."""

        def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
            if isinstance(auth_data, LoginPassword):
                user = auth_data.login.decode("utf-8", "replace")
                if credentials.get(user) == auth_data.password.decode("utf-8", "replace"):
                    self.logins.append((user, mechanism))
                    return AuthResult(success=True)
            self.failed_logins += 1
            return AuthResult(success=False, handled=False)

        return check

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
        self._on_message(
            ReceivedMail(
                envelope_from=envelope.mail_from,
                envelope_to=list(envelope.rcpt_tos),
                raw=envelope.original_content,
                received_at=datetime.now(timezone.utc),
            )
        )
        return "250 2.0.0 OK: queued"


class _WholeDataSMTP(SMTP):
    """aiosmtpd's server, reading a message's data in large reads instead of line by line.

    aiosmtpd reads DATA one line at a time — a coroutine step, a buffer resume and a debug log
    call per line, ~250 for one 18 KB warning — which was most of the relay's CPU (and in the
    bench the relay runs in the sender's process). The protocol stays the same: the data ends at
    CRLF "." CRLF, leading dots are unstuffed, and the size limit (552) and line limit (500) are
    checked on the whole message before the handler sees it.
    """

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, too_big = await self._read_data()
        except asyncio.CancelledError:  # the connection was reset during DATA
            self._writer.close()
            raise
        if too_big or (self.data_size_limit and len(content) > self.data_size_limit):
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        if max(map(len, content.split(b"\r\n"))) + 2 > _MAX_LINE:
            self._set_post_data_state()
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        self.envelope.original_content = content
        self.envelope.content = content.decode("utf-8", errors="surrogateescape") if self._decode_data else content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes, bool]:
        """The data up to CRLF "." CRLF, unstuffed and with its last CRLF; True if it passed the
        size limit (then only its end was kept, to find the terminator).

        Whatever the client sent after the terminator (the next commands, when it pipelines) goes
        back to the reader for the command loop: each `read` empties the reader's buffer and
        nothing runs between it and `feed_data`, so the order is kept.
        """
        data = bytearray(b"\r\n")  # the CRLF that ended "DATA": an empty message is ".\r\n" at once
        searched, too_big = 0, False
        limit = self.data_size_limit or 0
        while (end := data.find(_END_OF_DATA, searched)) < 0:
            if limit and len(data) > limit + len(_END_OF_DATA):
                del data[:-len(_END_OF_DATA)]
                too_big = True
            searched = max(0, len(data) - len(_END_OF_DATA) + 1)
            chunk = await self._reader.read(_READ_SIZE)
            if not chunk:  # closed mid-message: nothing to hand over (aiosmtpd cancels us anyway)
                raise asyncio.CancelledError
            data += chunk
        rest = bytes(data[end + len(_END_OF_DATA):])
        if rest and not self._reader.at_eof():
            self._reader.feed_data(rest)
        return bytes(data[:end + 2]).replace(b"\r\n..", b"\r\n.")[2:], too_big


class _Controller(Controller):
    """aiosmtpd's controller, serving with `_WholeDataSMTP`."""

    def factory(self) -> SMTP:
        with warnings.catch_warnings():  # AUTH over implicit TLS: see SmtpSink._security_options
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return _WholeDataSMTP(self.handler, **self.SMTP_kwargs)


SMTP_SINK_THREAD = "smtp-sink"  # the name of the server's thread


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
        pipelining: bool = True,
        security: Literal["none", "starttls", "tls"] = "none",
        certificate: tuple[Path, Path] | None = None,
        credentials: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        auth_mechanisms_excluded: tuple[str, ...] = (),
    ) -> None:
        """`security` and `certificate` (PEM certificate and key files) make it a TLS relay;
        `credentials` (user name → password) make AUTH mandatory before MAIL."""
        if security != "none" and certificate is None:
            raise ValueError(f"security={security!r} needs a certificate (make_test_certificate)")
        self._security = security
        self._certificate = certificate
        self._credentials = dict(credentials) if credentials is not None else None
        self._auth_require_tls = auth_require_tls
        self._auth_excluded = auth_mechanisms_excluded  # ("PLAIN",): a relay that offers LOGIN only
        self.port = port if port is not None else free_port()
        self._pipelining = pipelining  # False: a relay that does not offer PIPELINING
        self._keep = keep_messages  # False for a long-running peer: memory must not grow per message
        self._store_path = store_path
        self._fail = frozenset(address.lower() for address in fail_recipients or ())
        self._tempfail = frozenset(address.lower() for address in tempfail_recipients or ())
        self._received: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._controller: Controller | None = None
        self._handler: _RecordingHandler | None = None
        self._sessions_before = 0  # sessions of earlier starts (stop/start keeps counting)

    def start(self) -> None:
        """Listen on 127.0.0.1:port; returns once the server answers."""
        if self._controller is not None:
            raise RuntimeError(f"SMTP sink already running on port {self.port}")
        if self._store_path is not None:
            self._store_path.parent.mkdir(parents=True, exist_ok=True)
        if self._handler is not None:
            self._sessions_before += self._handler.sessions
        handler = self._handler = _RecordingHandler(self._record, self._fail, self._tempfail, self._pipelining)
        controller = _Controller(handler, hostname=LOOPBACK, port=self.port, enable_SMTPUTF8=True,
                                 **self._security_options(handler))
        controller.start()  # blocks until a test connection got the banner
        thread = getattr(controller, "_thread", None)  # named, so a benchmark can tell the peer's CPU from ours
        if thread is not None:
            thread.name = SMTP_SINK_THREAD
        self._controller = controller

    def _security_options(self, handler: _RecordingHandler) -> dict[str, Any]:
        """The controller's keyword arguments for TLS and AUTH."""
        options: dict[str, Any] = {}
        if self._certificate is not None and self._security != "none":
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*map(str, self._certificate))
            if self._security == "tls":
                options["ssl_context"] = context
            else:
                options.update(tls_context=context, require_starttls=True)
        if self._credentials is not None:
            # aiosmtpd counts only STARTTLS as TLS when it decides whether to offer AUTH; an implicit
            # TLS session is encrypted from the first byte, so the requirement is met there anyway.
            require_tls = self._auth_require_tls and self._security != "tls"
            options.update(authenticator=handler.authenticator(self._credentials), auth_required=True,
                           auth_require_tls=require_tls, auth_exclude_mechanism=self._auth_excluded)
        return options

    @property
    def logins(self) -> list[tuple[str, str]]:
        """(user name, AUTH mechanism) of the logins since the last start."""
        return list(self._handler.logins) if self._handler is not None else []

    @property
    def failed_logins(self) -> int:
        return self._handler.failed_logins if self._handler is not None else 0

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

    @property
    def sessions(self) -> int:
        """SMTP sessions (EHLOs) clients opened so far: shows whether a sender reuses its connection."""
        return self._sessions_before + (self._handler.sessions if self._handler is not None else 0)

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


def make_test_certificate(directory: Path, *, common_name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (the `openssl` command, RSA 2048, one
    day): (certificate, key) PEM files in `directory`. The certificate is its own CA, so a client
    trusts it through `smtp.ca_file` = the certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = directory / "relay-cert.pem", directory / "relay-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(certificate), "-subj", f"/CN={common_name}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return certificate, key


def _append_json_line(path: Path, mail: ReceivedMail) -> None:
    """One line per message with the headers a demo viewer needs; never the body."""
    record = {
        "received_at": mail.received_at.isoformat(),
        "envelope_from": mail.envelope_from,
        "envelope_to": mail.envelope_to,
        "message_id": mail.headers["Message-ID"],
        "subject": mail.headers["Subject"],
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
