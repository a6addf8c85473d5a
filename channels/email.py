"""E-mail channel: one warning per message, handed to the operator's relay over SMTP.

Messages are built with `email.message.EmailMessage` under `policy.SMTP`, so the Vietnamese subject
and sender name are RFC 2047-encoded and line endings are CRLF. Bodies are base64 so the message is
7-bit clean whatever the relay supports (non-ASCII *addresses* still need SMTPUTF8, which
`smtplib.send_message` negotiates by itself).

The Message-ID is derived from `OutgoingMessage.reference`: when a worker crashes after the relay
accepted a message but before we recorded it, the resend carries the same Message-ID and mail
stores can drop the duplicate.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import ssl
import string
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from channels.base import OutgoingMessage, SendOutcome, SendResult, describe_connection_error, send_each
from notifier.errors import ChannelError, PermanentChannelError, RouteUnreachableError, TransientChannelError
from notifier.settings import SmtpSettings

logger = logging.getLogger(__name__)

# RFC 5322 atext plus "." (dot-atom-text), minus "=" which we use as the escape character.
_ID_SAFE = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/?^_`{|}~.")
_SERVICE_CLOSING = 421
_PROBE_INTERVAL_SECONDS = 1.0  # while the relay is unreachable, `check()` tries it at most this often


class EmailChannel:
    """Sends `OutgoingMessage`s through one SMTP relay; safe to call from several threads.

    Each thread keeps its own SMTP connection (an `smtplib.SMTP` object is not thread-safe and a
    shared one would serialise the workers); all of them are remembered so `close()` can end them.
    """

    name = "email"

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[smtplib.SMTP] = set()
        # Route state for `check()`: True after a session opened, False after one could not be.
        self._route_ok: bool | None = None
        self._route_failure: RouteUnreachableError | None = None
        self._route_failed_at = 0.0

    def check(self) -> None:
        """Nothing to do while sessions open fine; otherwise connect and EHLO now (at most once a
        second while the relay stays away) and raise RouteUnreachableError if that fails."""
        with self._lock:
            ok, failure, failed_at = self._route_ok, self._route_failure, self._route_failed_at
        if ok:
            return
        if failure is not None and time.monotonic() - failed_at < _PROBE_INTERVAL_SECONDS:
            raise _copy(failure)
        _quit_quietly(self._open())

    def send(self, message: OutgoingMessage) -> SendResult:
        """Deliver one message to the relay, or raise Transient/PermanentChannelError."""
        mime = build_email(message, self._settings)
        message_id = mime["Message-ID"].strip("<>")
        try:
            self._transmit(mime, message.destination)
        except RouteUnreachableError as error:  # nothing was sent; the outage is logged once, not per message
            logger.debug("e-mail to %s not sent: %s", mask_address(message.destination), error)
            raise
        except ChannelError as error:
            _log_failure(message.destination, error)
            raise
        except OSError as exc:  # smtplib.SMTPException is an OSError too
            error = classify_smtp_error(exc)
            _log_failure(message.destination, error)
            raise error from exc
        logger.info("e-mail to %s accepted, Message-ID %s", mask_address(message.destination), message_id)
        return SendResult(provider_message_ids=[message_id], provider_status="250", parts=1, encoding="utf-8")

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Send one after the other on this thread's connection, opened once and reused for the
        whole batch (and the next): one outcome per message, a refusal never stops the others."""
        return send_each(self, messages)

    def close(self) -> None:
        """End every thread's connection; the channel is not used afterwards."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            _quit_quietly(connection)

    def _transmit(self, mime: EmailMessage, destination: str) -> None:
        """Send on this thread's connection, once more on a fresh one if the relay had hung up.

        Relays close idle connections (often with a 421 first); the cached connection only notices
        when it is next used, which says nothing about the message itself.
        """
        try:
            self._send_once(mime, destination)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException) as exc:
            if not _relay_hung_up(exc):
                raise
            self._send_once(mime, destination)

    def _send_once(self, mime: EmailMessage, destination: str) -> None:
        """One SMTP transaction; any failure drops the connection, whose state is then uncertain."""
        connection = self._connection()
        try:
            connection.send_message(mime, from_addr=self._settings.sender, to_addrs=[destination])
        except BaseException:
            self._discard_connection()
            raise

    def _connection(self) -> smtplib.SMTP:
        """This thread's open connection, opened on first use."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._open()
            self._local.connection = connection
            with self._lock:
                self._connections.add(connection)
        return connection

    def _discard_connection(self) -> None:
        """Forget and close this thread's connection so the next send opens a fresh one.

        No QUIT: after a timeout the relay may never answer, and waiting for it would stall the worker.
        """
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is None:
            return
        self._local.connection = None
        with self._lock:
            self._connections.discard(connection)
        connection.close()

    def _open(self) -> smtplib.SMTP:
        """Connect, EHLO, STARTTLS and log in as configured.

        A refusal while setting up the session (bad credentials, no STARTTLS, 554 banner) is about
        the relay, not the message, so it is a RouteUnreachableError (transient) even when the reply
        is 5xx: marking every queued warning permanently failed because of a configuration slip
        would lose them. So is a relay that cannot be connected to at all.
        """
        settings = self._settings
        connection = smtplib.SMTP(timeout=settings.timeout_seconds)
        try:
            connection.connect(settings.host, settings.port)
            connection.ehlo()
            if settings.starttls:
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            if settings.username:
                connection.login(settings.username, settings.password.get_secret_value())
        except smtplib.SMTPResponseException as exc:
            connection.close()
            status = _status_text(exc.smtp_code, exc.smtp_error)
            raise self._route_down(f"session set-up refused: {status}", status) from exc
        except OSError as exc:  # refused, timed out, closed before the banner, unknown host
            connection.close()
            reason = describe_connection_error(exc, timeout_seconds=settings.timeout_seconds)
            raise self._route_down(reason, type(exc).__name__) from exc
        except BaseException:
            connection.close()
            raise
        with self._lock:
            self._route_ok, self._route_failure = True, None
        return connection

    def _route_down(self, reason: str, provider_status: str) -> RouteUnreachableError:
        """Remember that the relay could not be used (for `check()`) and return the error to raise."""
        address = f"{self._settings.host}:{self._settings.port}"
        error = RouteUnreachableError(f"cannot reach the mail relay at {address} ({reason})", channel=self.name,
                                      address=address, reason=reason, provider_status=provider_status)
        with self._lock:
            self._route_ok, self._route_failure, self._route_failed_at = False, error, time.monotonic()
        return error


def build_email(message: OutgoingMessage, settings: SmtpSettings) -> EmailMessage:
    """The MIME message for one warning: text/plain, plus text/html as an alternative if given."""
    mime = EmailMessage(policy=policy.SMTP)
    if message.subject is not None:
        mime["Subject"] = message.subject
    mime["From"] = formataddr((settings.sender_name, settings.sender))
    mime["To"] = message.destination
    mime["Date"] = datetime.now(timezone.utc)
    mime["Message-ID"] = message_id_for(message.reference, settings.sender)
    mime["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to our sender
    if message.reference:
        mime["X-Notifier-Reference"] = message.reference
    mime.set_content(message.body, charset="utf-8", cte="base64")
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html", charset="utf-8", cte="base64")
    return mime


def message_id_for(reference: str, sender: str) -> str:
    """`<reference@sender-domain>`, the same on every resend; a random one if there is no reference.

    Characters not allowed in a Message-ID are escaped as `=XX` (and `=` itself), so distinct
    references never share an id.
    """
    domain = sender.rpartition("@")[2] or "localhost"
    if not reference:
        return make_msgid(domain=domain)
    return f"<{_escape_id_left(reference)}@{domain}>"


def _escape_id_left(reference: str) -> str:
    return "".join(
        char if char in _ID_SAFE else "".join(f"={byte:02X}" for byte in char.encode("utf-8"))
        for char in reference
    )


def classify_smtp_error(exc: OSError) -> ChannelError:
    """Map what smtplib raised during a transaction to the channel error tree.

    4xx replies, dropped connections and network failures may pass; a 5xx reply to this message
    (recipient, sender or content refused) will not.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _error_for_reply(code, text)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _error_for_reply(exc.smtp_code, exc.smtp_error)
    return TransientChannelError(f"SMTP delivery failed: {exc!r}", provider_status=type(exc).__name__)


def _error_for_reply(code: int, text: bytes | str) -> ChannelError:
    status = _status_text(code, text)
    if 500 <= code < 600:
        return PermanentChannelError(f"SMTP relay refused the message: {status}", provider_status=status)
    return TransientChannelError(f"SMTP relay deferred the message: {status}", provider_status=status)


def _status_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return f"{code} {text}".strip()


def _relay_hung_up(exc: OSError) -> bool:
    """True for a closed connection or a 421 "service closing" reply, not for a refusal."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == _SERVICE_CLOSING


def _copy(error: RouteUnreachableError) -> RouteUnreachableError:
    """A fresh instance to raise: one exception object raised by several threads shares a traceback."""
    return RouteUnreachableError(str(error), channel=error.channel, address=error.address, reason=error.reason,
                                 provider_status=error.provider_status)


def _log_failure(destination: str, error: ChannelError) -> None:
    logger.warning(
        "e-mail to %s not accepted (%s): %s",
        mask_address(destination),
        type(error).__name__,
        error.provider_status,
    )


def _quit_quietly(connection: smtplib.SMTP) -> None:
    """QUIT politely, but never let a dead connection turn cleanup into an error."""
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


def mask_address(address: str) -> str:
    """The address as it may appear in logs: subscribers' addresses are personal data."""
    return _masker()(address)


@functools.cache
def _masker() -> Callable[[str], str]:
    """`notifier.identifiers.mask_email` when it exists (written elsewhere), else a local fallback."""
    try:
        from notifier.identifiers import mask_email
    except ImportError:
        return _mask_locally
    return mask_email


def _mask_locally(address: str) -> str:
    local, _, domain = address.rpartition("@")
    if not domain or not local:
        return "***"
    return f"{local[0]}***@{domain}"
