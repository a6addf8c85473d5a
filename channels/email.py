"""E-mail channel: warnings handed to the operator's relay over SMTP, one connection per thread.

Messages are built by `channels.email_mime.MessageComposer` (bytes for our one fixed shape: RFC 2047
Vietnamese subject and sender name, multipart text + HTML, UTF-8 in base64, CRLF), not by the
standard library's `EmailMessage`, whose header folding cost ~3 ms of CPU per e-mail.

Each sending thread keeps one SMTP session and reuses it for every message of every batch. When
the relay offers PIPELINING (RFC 2920; Postfix and the loopback peer do), a batch costs one round
trip per e-mail: the end of one message's data, then the next message's MAIL, RCPT and DATA,
leave in one write and their replies are read together. Without it, commands go one by one.

What each answer means for a message (the dispatcher acts on it, `notifier.dispatch.recording`):
- 250 after the data: accepted, with its Message-ID.
- 4xx / 5xx to MAIL, RCPT, DATA or the data: Transient / PermanentChannelError; the session is
  reset (RSET) and the next message carries on.
- the relay hung up (closed, or 421 "closing") before the message's data was complete: nothing
  was taken, so the message is tried once more on a fresh connection.
- the connection broke or timed out after the data was written but before its answer: the relay
  may have it, so it is `OutcomeUnknownError` (the row becomes `unknown`, see dispatch/unknown.py),
  never an immediate resend.
- the relay cannot be reached at all: `RouteUnreachableError` for this and the batch's remaining
  messages (nothing of them was written), so the route pauses instead of failing rows.

Security (`SmtpSettings.security`): "none", "starttls" (refused, never sent in clear, when the
relay does not offer it) or "tls" (implicit TLS, port 465); certificates verified against the
system's CAs or `smtp.ca_file`; AUTH (PLAIN/LOGIN, whichever the relay offers) only inside TLS
outside development. All of it happens once per connection in `_open`: the send path is unchanged.

The Message-ID is derived from `OutgoingMessage.reference`: when a worker crashes after the relay
accepted a message but before we recorded it, the resend carries the same Message-ID and mail
stores can drop the duplicate.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from channels.base import OutgoingMessage, SendOutcome, SendResult, describe_connection_error
from channels.email_mime import ComposedEmail, MessageComposer, message_id_for
from notifier.errors import (
    ChannelError, ConfigError, OutcomeUnknownError, PermanentChannelError, RouteUnreachableError, TransientChannelError,
)
from notifier.settings import SmtpSettings

__all__ = ["EmailChannel", "classify_smtp_error", "mask_address", "message_id_for", "tls_context"]

logger = logging.getLogger(__name__)

_SERVICE_CLOSING = 421
_PROBE_INTERVAL_SECONDS = 1.0  # while the relay is unreachable, `check()` tries it at most this often
_END_OF_DATA = b".\r\n"  # every composed message ends with CRLF, so this completes "CRLF . CRLF"

# What one command of a group is about (`_Step.kind`).
_END, _RSET, _MAIL, _RCPT, _DATA = "end of data", "RSET", "MAIL", "RCPT", "DATA"


@dataclass(eq=False)
class _Job:
    """One message on its way through this thread's session; `outcome` is set exactly once."""

    index: int
    message: OutgoingMessage
    mail: ComposedEmail
    outcome: SendOutcome | None = None
    retried: bool = False  # tried again on a fresh connection once already (the relay had hung up)


@dataclass(frozen=True)
class _Step:
    kind: str
    job: _Job | None
    command: bytes


@dataclass(eq=False)
class _Session:
    """One thread's SMTP connection, what the relay offers, and whether a refused transaction is
    still open on it (then the next group starts with RSET)."""

    smtp: smtplib.SMTP
    pipelining: bool
    smtputf8: bool
    size: bool
    reset_needed: bool = False


@dataclass(eq=False)
class _Exchange:
    """The replies read for a group, in order, and why the group stopped short (if it did)."""

    replies: list[tuple[int, bytes]] = field(default_factory=list)
    broken: OSError | None = None


class EmailChannel:
    """Sends `OutgoingMessage`s through one SMTP relay; safe to call from several threads.

    Each thread keeps its own SMTP session (an `smtplib.SMTP` object is not thread-safe and a
    shared one would serialise the workers); all of them are remembered so `close()` can end them.
    """

    name = "email"
    reports_each_message = False  # a relay's 250 is all we hear; bounces come late or never

    def __init__(self, settings: SmtpSettings, *, plain_credentials_allowed: bool = False) -> None:
        """Refuses (ConfigError, at start-up) a set-up that would expose the relay password: a
        username with `security = "none"` or with unverified TLS. Development may allow it
        (`plain_credentials_allowed`), for a lab relay. The TLS context is built once, here, so a
        missing `ca_file` is a start-up error too."""
        problems = [] if plain_credentials_allowed else settings.plain_credential_problems()
        if problems:
            raise ConfigError("refusing to log in to the mail relay: " + "; ".join(problems))
        self._settings = settings
        self._tls = tls_context(settings) if settings.security != "none" else None
        self._composer = MessageComposer(settings.sender, settings.sender_name)
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
        (outcome,) = self.send_many([message])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Send the batch on this thread's session (opened once, reused for the next batch too):
        one outcome per message, in order; a refusal never stops the others."""
        outcomes: list[SendOutcome | None] = [None] * len(messages)
        jobs: list[_Job] = []
        for index, message in enumerate(messages):
            try:
                jobs.append(_Job(index, message, self._composer.compose(message)))
            except ChannelError as error:  # an address or text that cannot be written: this one fails
                outcomes[index] = error
        if jobs:
            self._converse(jobs)
        for job in jobs:
            outcomes[job.index] = job.outcome
        final = [outcome if outcome is not None else RuntimeError("e-mail left without an outcome (a bug)")
                 for outcome in outcomes]
        _log_outcomes(messages, final)
        return final

    def close(self) -> None:
        """End every thread's connection; the channel is not used afterwards."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            _quit_quietly(connection)

    # -- the conversation ------------------------------------------------------------------------

    def _converse(self, jobs: list[_Job]) -> None:
        """Send every job, one group of commands per round trip, until each has its outcome.

        A group is: the data of the message whose DATA was just accepted (if any), RSET after a
        refused transaction (if needed), then MAIL, RCPT and DATA of the next message.
        """
        waiting = deque(jobs)
        data_next: _Job | None = None  # its DATA got 354: its data opens the next group
        while waiting or data_next is not None:
            try:
                session = self._session()
            except RouteUnreachableError as error:  # data_next is None here: a broken group clears it
                for job in waiting:
                    job.outcome = _copy(error)
                return
            job = waiting.popleft() if waiting else None
            if job is not None and job.mail.international and not session.smtputf8:
                job.outcome = TransientChannelError("the address needs SMTPUTF8, which the relay does not offer",
                                                    provider_status="SMTPNotSupportedError")
                job = None
                if data_next is None:
                    continue
            steps = self._group(session, data_next, job)
            try:
                exchange = _exchange(session, steps)
                data_next = self._apply(session, steps, exchange, waiting)
            except Exception as exc:  # noqa: BLE001 - a bug must not turn accepted messages into failures
                self._discard_connection()
                _settle_unanswered(steps, set(), exc, waiting, retry=False)
                for left in waiting:
                    left.outcome = exc
                return

    def _group(self, session: _Session, data_next: _Job | None, job: _Job | None) -> list[_Step]:
        steps: list[_Step] = []
        if data_next is not None:
            steps.append(_Step(_END, data_next, data_next.mail.data + _END_OF_DATA))
        if session.reset_needed:
            steps.append(_Step(_RSET, None, b"RSET\r\n"))
        if job is not None:
            mail, destination = job.mail, job.message.destination
            options = f" SIZE={len(mail.data)}" if session.size else ""
            if mail.international:
                options += " SMTPUTF8 BODY=8BITMIME"
            steps += [_Step(_MAIL, job, f"MAIL FROM:<{self._settings.sender}>{options}\r\n".encode("utf-8")),
                      _Step(_RCPT, job, f"RCPT TO:<{destination}>\r\n".encode("utf-8")),
                      _Step(_DATA, job, b"DATA\r\n")]
        return steps

    def _apply(self, session: _Session, steps: list[_Step], exchange: _Exchange, waiting: deque[_Job]) -> _Job | None:
        """Give each answered step its meaning; returns the job whose data goes next, if any.

        A 421 ("closing"), a failed RSET or a connection that broke ends the session: what was
        not answered is settled by `_settle_unanswered`.
        """
        data_next: _Job | None = None
        broken: OSError | None = exchange.broken
        answered: set[int] = set()
        closed_at: int | None = None  # the step the relay answered 421: refused, not taken
        for position, (step, (code, text)) in enumerate(zip(steps, exchange.replies)):
            job = step.job
            if code == _SERVICE_CLOSING:
                broken, closed_at = smtplib.SMTPResponseException(code, text), position
                break
            answered.add(position)
            if step.kind == _RSET:
                if code != 250:
                    broken = smtplib.SMTPResponseException(code, text)
                    break
                session.reset_needed = False
            elif job is None:
                continue
            elif step.kind == _END:
                job.outcome = (SendResult(provider_message_ids=[job.mail.message_id], provider_status=str(code),
                                          parts=1, encoding="utf-8")
                               if 200 <= code < 300 else _error_for_reply(code, text))
            elif step.kind == _MAIL:
                if code != 250:
                    job.outcome = _error_for_reply(code, text)
            elif job.outcome is not None:  # RCPT / DATA after a refusal: a 5xx is expected
                if code == 354:  # a relay that takes DATA without a recipient: it cannot be trusted
                    broken = smtplib.SMTPResponseException(code, text)
                    break
            elif step.kind == _RCPT and code not in (250, 251):
                job.outcome = _error_for_reply(code, text)
                session.reset_needed = True
            elif step.kind == _DATA:
                if code == 354:
                    data_next = job
                else:
                    job.outcome = _error_for_reply(code, text)
                    session.reset_needed = True
        if broken is None and len(exchange.replies) == len(steps):
            return data_next
        self._discard_connection()
        _settle_unanswered(steps, answered, broken or smtplib.SMTPServerDisconnected("no reply"), waiting,
                           retry=True, closed_at=closed_at)
        return None

    # -- connections -----------------------------------------------------------------------------

    def _session(self) -> _Session:
        """This thread's open session, opened on first use (RouteUnreachableError if it cannot be)."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            connection = self._open()
            session = _Session(connection, pipelining=connection.has_extn("pipelining"),
                               smtputf8=connection.has_extn("smtputf8"), size=connection.has_extn("size"))
            self._local.session = session
            with self._lock:
                self._connections.add(connection)
        return session

    def _discard_connection(self) -> None:
        """Forget and close this thread's connection so the next send opens a fresh one.

        No QUIT: after a timeout the relay may never answer, and waiting for it would stall the worker.
        """
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            return
        self._local.session = None
        with self._lock:
            self._connections.discard(session.smtp)
        session.smtp.close()

    def _open(self) -> smtplib.SMTP:
        """Connect (over TLS from the first byte with `security = "tls"`), EHLO, STARTTLS and EHLO
        again with "starttls", then log in when a username is set.

        A refusal while setting up the session (bad credentials, no STARTTLS, 554 banner, an
        untrusted certificate) is about the relay, not the message, so it is a
        RouteUnreachableError (transient) even when the reply is 5xx: marking every queued warning
        permanently failed because of a configuration slip would lose them. So is a relay that
        cannot be connected to at all. With "starttls", a relay that does not offer it is never
        used in clear (it may be an attacker stripping the offer): the route stays down and says why.
        """
        settings = self._settings
        connection: smtplib.SMTP | None = None
        try:
            # The host is given to the constructor (which connects): smtplib checks the
            # certificate against the host name it was constructed with, not the one given to connect().
            if settings.security == "tls":
                connection = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_seconds,
                                              context=self._tls)
            else:
                connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
            connection.ehlo()
            if settings.security == "starttls":
                if not connection.has_extn("starttls"):
                    raise _SetupRefused('the relay does not offer STARTTLS, which smtp.security = "starttls" '
                                        "requires: nothing is sent in clear", "no STARTTLS")
                connection.starttls(context=self._tls)
                connection.ehlo()
            if settings.username:
                self._log_in(connection)
        except _SetupRefused as exc:
            _close(connection)
            raise self._route_down(exc.reason, exc.provider_status) from None
        except smtplib.SMTPResponseException as exc:
            _close(connection)
            status = _status_text(exc.smtp_code, exc.smtp_error)
            what = ("login refused (check smtp.username and NOTIFIER_SMTP__PASSWORD)"
                    if isinstance(exc, smtplib.SMTPAuthenticationError) else "session set-up refused")
            raise self._route_down(f"{what}: {status}", status) from exc
        except ssl.SSLError as exc:  # before OSError, which it is
            _close(connection)
            raise self._route_down(_describe_tls_error(exc), type(exc).__name__) from exc
        except OSError as exc:  # refused, timed out, closed before the banner, unknown host
            _close(connection)
            reason = describe_connection_error(exc, timeout_seconds=settings.timeout_seconds)
            raise self._route_down(reason, type(exc).__name__) from exc
        except BaseException:
            _close(connection)
            raise
        with self._lock:
            self._route_ok, self._route_failure = True, None
        return connection

    def _log_in(self, connection: smtplib.SMTP) -> None:
        """AUTH with the configured credentials; only over TLS unless development allowed otherwise
        (checked at construction). The password never appears in an error or a log line."""
        if not connection.has_extn("auth"):
            raise _SetupRefused("the relay does not offer AUTH, and smtp.username is set", "no AUTH")
        connection.login(self._settings.username, self._settings.password.get_secret_value())

    def _route_down(self, reason: str, provider_status: str) -> RouteUnreachableError:
        """Remember that the relay could not be used (for `check()`) and return the error to raise."""
        address = f"{self._settings.host}:{self._settings.port}"
        error = RouteUnreachableError(f"cannot reach the mail relay at {address} ({reason})", channel=self.name,
                                      address=address, reason=reason, provider_status=provider_status)
        with self._lock:
            self._route_ok, self._route_failure, self._route_failed_at = False, error, time.monotonic()
        return error


def _exchange(session: _Session, steps: list[_Step]) -> _Exchange:
    """Write the group (at once when the relay pipelines, else command by command) and read one
    reply per command; stops at a 421 or when the connection breaks, keeping what was read."""
    exchange = _Exchange()
    connection = session.smtp
    try:
        if session.pipelining:
            connection.send(b"".join(step.command for step in steps))
        for step in steps:
            if not session.pipelining:
                connection.send(step.command)
            reply = connection.getreply()
            exchange.replies.append(reply)
            if reply[0] == _SERVICE_CLOSING:
                break
    except OSError as exc:  # smtplib.SMTPServerDisconnected (closed, reset, timed out) is one too
        exchange.broken = exc
    return exchange


def _settle_unanswered(steps: list[_Step], answered: set[int], cause: BaseException, waiting: deque[_Job],
                       *, retry: bool, closed_at: int | None = None) -> None:
    """Outcomes for the jobs of a group that stopped short.

    A message whose data was written and not answered may be at the relay: OutcomeUnknownError
    (a 421 answer to the data, at `closed_at`, is an answer: not taken). A message that had not
    got that far was not taken: back to the front of the queue once (a fresh connection
    follows), or, the second time, the error that stopped it.
    """
    settled: set[int] = set()
    again: list[_Job] = []
    for position, step in enumerate(steps):
        job = step.job
        if position in answered or job is None or job.outcome is not None or id(job) in settled:
            continue
        settled.add(id(job))
        if step.kind == _END and position != closed_at:
            job.outcome = OutcomeUnknownError(f"no answer from the mail relay after the message's data "
                                              f"({_describe(cause)}): it may have the message")
        elif retry and not job.retried:
            job.retried = True
            again.append(job)
        else:
            job.outcome = cause if not isinstance(cause, OSError) else classify_smtp_error(cause)
    waiting.extendleft(reversed(again))  # first in the queue, in their order


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


def _describe(cause: BaseException) -> str:
    if isinstance(cause, smtplib.SMTPResponseException):
        return _status_text(cause.smtp_code, cause.smtp_error)
    return str(cause) or type(cause).__name__


def _copy(error: RouteUnreachableError) -> RouteUnreachableError:
    """A fresh instance to raise: one exception object raised by several threads shares a traceback."""
    return RouteUnreachableError(str(error), channel=error.channel, address=error.address, reason=error.reason,
                                 provider_status=error.provider_status)


class _SetupRefused(Exception):
    """Internal: the session cannot be set up safely; `reason` says why, for people."""

    def __init__(self, reason: str, provider_status: str) -> None:
        super().__init__(reason)
        self.reason, self.provider_status = reason, provider_status


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The client TLS context for the relay: the system's CAs (or `ca_file`), host name checked,
    TLS 1.2 or later; with `tls_verify = false`, encryption without any check (a lab relay)."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"smtp.ca_file {settings.ca_file} cannot be used as a CA bundle: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe_tls_error(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate of the relay not trusted: {exc.verify_message} "
                "(trust its CA with smtp.ca_file)")
    return f"TLS handshake failed: {exc.reason or exc}"


def _log_outcomes(messages: Sequence[OutgoingMessage], outcomes: Sequence[SendOutcome]) -> None:
    """One line per message, the address masked; nothing computed for levels that are off."""
    accepted_logged = logger.isEnabledFor(logging.INFO)
    for message, outcome in zip(messages, outcomes):
        if isinstance(outcome, SendResult):
            if accepted_logged:
                logger.info("e-mail to %s accepted, Message-ID %s", mask_address(message.destination),
                            outcome.provider_message_ids[0])
        elif isinstance(outcome, RouteUnreachableError):  # the outage is logged once, not per message
            logger.debug("e-mail to %s not sent: %s", mask_address(message.destination), outcome)
        elif isinstance(outcome, ChannelError):
            _log_failure(message.destination, outcome)


def _log_failure(destination: str, error: ChannelError) -> None:
    logger.warning(
        "e-mail to %s not accepted (%s): %s",
        mask_address(destination),
        type(error).__name__,
        error.provider_status,
    )


def _close(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        connection.close()


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
