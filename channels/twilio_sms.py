"""SMS through Twilio's Messages API (channel `sms` when `sms_provider = "twilio"`).

Campaigns keep saying `sms`; only the adapter changes. Twilio answers a create with the Message
SID, which is the provider id (one per message: Twilio splits and joins the segments itself and
reports once), and later POSTs the message's status to `notifier web`, which stores it as a
`Receipt` applied like an SMPP receipt (`notifier.web`). The call and error mapping shared with
voice calls lives here too (`TwilioApi`, `channel_error`, `TwilioChannel`).

Error mapping (Twilio's `code` first, then the HTTP status):
- invalid or unreachable number (21211, 21614, 21612, 21408, 21217, 21401, …) → permanent;
- opted out (21610, the subscriber replied STOP) → `RecipientOptedOutError`: the row is `suppressed` "opted out", and the
  number's contact point is marked opted out (`on_opted_out`), so no later campaign plans it;
- 429 / 20429 / 5xx → transient (retried later; 429 also slows the route down);
- 401 / 20003 (credentials) and connection refused → `RouteUnreachableError`: no message is at
  fault, so none fails; an answer lost after the request went out → `OutcomeUnknownError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels.base import OutgoingMessage, SendOutcome, SendResult, describe_connection_error
from notifier.errors import (
    ConfigError, OutcomeUnknownError, PermanentChannelError, RecipientOptedOutError, RouteUnreachableError,
    TransientChannelError,
)
from notifier.identifiers import mask_identifier
from notifier.settings import TwilioSettings

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
MESSAGE_STATUS_PATH = "/twilio/messages/status"
OPTED_OUT_CODE = 21610
# Twilio codes that say the destination can never receive this message.
INVALID_DESTINATION_CODES = frozenset({
    21211,  # invalid 'To' phone number
    21214,  # 'To' number cannot be reached
    21217,  # phone number does not appear to be valid
    21401,  # invalid phone number
    21407,  # this phone number type does not support SMS
    21408,  # permission to send to this region is not enabled
    21612,  # the 'To' number is not currently reachable via SMS
    21614,  # 'To' number is not a valid mobile number
    21635,  # 'To' number cannot be a landline
    13223, 13224,  # (voice) invalid phone number format / invalid number
    13227,  # (voice) no international permission for this number
})
THROTTLED_CODES = frozenset({20429, 14107})  # too many requests; SMS rate limit exceeded
AUTH_CODES = frozenset({20003, 20005})  # authenticate; account not active
# What `provider_status` says for a throttling answer (notifier.dispatch.ratelimit.THROTTLING_STATUSES).
THROTTLED_STATUS = "twilio:20429"
CHECK_INTERVAL_SECONDS = 30.0  # a route that answered is not probed again for this long


def twilio_status(exc: TwilioRestException) -> str:
    """`twilio:21211`, or `http:503` when the answer named no Twilio code."""
    if exc.status == 429 or exc.code in THROTTLED_CODES:
        return THROTTLED_STATUS
    return f"twilio:{exc.code}" if exc.code else f"http:{exc.status}"


def channel_error(exc: TwilioRestException, *, channel: str, address: str) -> Exception:
    """The ChannelError a Twilio error answer means (module docstring)."""
    status = twilio_status(exc)
    text = f"Twilio answered {exc.status} (code {exc.code}): {exc.msg}"[:300]
    if exc.status == 401 or exc.code in AUTH_CODES:
        return RouteUnreachableError(f"Twilio refused our credentials: {text}", channel=channel, address=address,
                                     reason=f"credentials refused ({exc.code or exc.status})", provider_status=status)
    if exc.code == OPTED_OUT_CODE:
        return RecipientOptedOutError("opted out", provider_status=status)
    if exc.status == 429 or exc.code in THROTTLED_CODES or exc.status >= 500:
        return TransientChannelError(text, provider_status=status)
    if exc.code in INVALID_DESTINATION_CODES:
        return PermanentChannelError(f"invalid destination: {text}", provider_status=status)
    return PermanentChannelError(text, provider_status=status)


class TwilioApi:
    """A Twilio REST client per sending thread, pointed at the configured API, with connection
    failures sorted into "unreachable" (nothing left) and "unknown" (the request may have arrived).

    The client is built with region and edge from settings only: the library would otherwise
    read TWILIO_REGION / TWILIO_EDGE from the environment and rewrite the host name, which sends
    the loopback peer's requests to Twilio itself."""

    def __init__(self, settings: TwilioSettings, *, channel: str) -> None:
        token = settings.auth_token.get_secret_value()
        if not settings.account_sid or not token:
            raise ConfigError("Twilio needs twilio.account_sid and twilio.auth_token "
                              "(NOTIFIER_TWILIO__ACCOUNT_SID, NOTIFIER_TWILIO__AUTH_TOKEN)")
        self.settings = settings
        self.channel = channel
        self.base_url = (settings.api_base_url or TWILIO_API).rstrip("/")
        parts = urlsplit(self.base_url)
        self.address = parts.netloc or self.base_url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ok_until = 0.0

    def client(self) -> Client:
        """This thread's client (requests sessions are not promised to be thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            quiet = logging.getLogger("notifier.twilio.http")  # the library logs every request at INFO
            http = TwilioHttpClient(timeout=self.settings.timeout_seconds, logger=quiet)
            client = Client(self.settings.account_sid, self.settings.auth_token.get_secret_value(),
                            http_client=http)
            client.region = self.settings.region or None
            client.edge = self.settings.edge or None
            client.api.base_url = self.base_url
            self._local.client = client
        return client

    def call(self, request: Callable[[Client], Any]) -> Any:
        """Run one API request; TwilioRestException and connection errors become ChannelErrors."""
        try:
            result = request(self.client())
        except TwilioRestException as exc:
            error = channel_error(exc, channel=self.channel, address=self.address)
            if isinstance(error, RouteUnreachableError):
                self.route_failed()
            raise error from None
        except (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise self._unreachable(exc) from None
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise self._unreachable(exc) from None
            raise OutcomeUnknownError(f"Twilio's answer was lost ({describe_connection_error(exc)})",
                                      provider_status="connection-lost") from None
        except requests.exceptions.Timeout as exc:
            raise OutcomeUnknownError(f"Twilio did not answer within {self.settings.timeout_seconds:g}s",
                                      provider_status="timeout") from exc
        self.route_answered()
        return result

    def check(self) -> None:
        """Fetch our account (cheap, proves address and credentials), at most every 30 s while it works."""
        with self._lock:
            if time.monotonic() < self._ok_until:
                return
        self.call(lambda client: client.api.v2010.accounts(self.settings.account_sid).fetch())

    def route_answered(self) -> None:
        with self._lock:
            self._ok_until = time.monotonic() + CHECK_INTERVAL_SECONDS

    def route_failed(self) -> None:
        with self._lock:
            self._ok_until = 0.0

    def _unreachable(self, exc: BaseException) -> RouteUnreachableError:
        self.route_failed()
        reason = describe_connection_error(exc, timeout_seconds=self.settings.timeout_seconds)
        return RouteUnreachableError(f"cannot reach Twilio at {self.address} ({reason})", channel=self.channel,
                                     address=self.address, reason=reason)


def _never_connected(exc: BaseException) -> bool:
    """True when the connection was never made (refused, no route, name unknown): the request
    cannot have reached Twilio. urllib3 says so with NewConnectionError / NameResolutionError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"}:
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            current = reason
            continue
        args = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        current = args[0] if args else (current.__cause__ or current.__context__)
    return False


def send_concurrently(send: Callable[[OutgoingMessage], SendResult], messages: Sequence[OutgoingMessage],
                      pool: ThreadPoolExecutor) -> list[SendOutcome]:
    """Several API requests in flight at once (each waits ~0.1-0.3 s on Twilio), messages taken
    from `messages` in order — a paced batch hands each one over on its turn — and one outcome
    per message, in order. A route that proved unreachable stops the batch: the rest are not
    tried and get the same error (they stay `queued`, no attempt counted)."""
    futures: list[Future[SendResult]] = []
    outcomes: list[SendOutcome | None] = [None] * len(messages)
    unreachable: RouteUnreachableError | None = None
    for index, message in enumerate(messages):
        if unreachable is None:
            unreachable = _first_unreachable(futures)
        if unreachable is not None:
            outcomes[index] = unreachable
            continue
        futures.append(pool.submit(send, message))
    for index, future in enumerate(futures):
        try:
            outcomes[index] = future.result()
        except Exception as exc:  # noqa: BLE001 - one message's failure is its outcome
            outcomes[index] = exc
    return [outcome if outcome is not None else RuntimeError("not sent") for outcome in outcomes]


def _first_unreachable(futures: list[Future[SendResult]]) -> RouteUnreachableError | None:
    for future in futures:
        if future.done() and isinstance(future.exception(), RouteUnreachableError):
            return future.exception()  # type: ignore[return-value]
    return None


class TwilioChannel:
    """What the Twilio channels share: the API client, a pool of senders that keeps several
    creates in flight (`send_concurrently`), the route check, and the result of a create (its SID
    is the provider id the status callbacks name). Subclasses set `name` and write `send`."""

    name: str
    reports_each_message = True  # a signed status callback for every message and call

    def __init__(self, settings: TwilioSettings) -> None:
        self.settings = settings
        self.api = TwilioApi(settings, channel=self.name)
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix=f"twilio-{self.name}")

    def send(self, message: OutgoingMessage) -> SendResult:
        """Create the message's resource at Twilio (the subclass's API call)."""
        raise NotImplementedError

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        return send_concurrently(self.send, messages, self._pool)

    def check(self) -> None:
        self.api.check()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def created_result(created: Any) -> SendResult:
    """A created Message or Call resource as the send path records it: one provider id, one part
    (Twilio splits and joins an SMS's segments itself and reports once)."""
    return SendResult(provider_message_ids=[created.sid], provider_status=str(created.status or "queued"), parts=1)


OptOutSink = Callable[[str], None]


class TwilioSmsChannel(TwilioChannel):
    """Channel `sms` through Twilio's Messages API (module docstring)."""

    name = "sms"

    def __init__(self, settings: TwilioSettings, *, on_opted_out: OptOutSink | None = None) -> None:
        if not settings.from_number and not settings.messaging_service_sid:
            raise ConfigError("Twilio SMS needs twilio.from_number or twilio.messaging_service_sid "
                              "(NOTIFIER_TWILIO__FROM_NUMBER, NOTIFIER_TWILIO__MESSAGING_SERVICE_SID)")
        super().__init__(settings)
        self.status_callback = settings.public_base_url.rstrip("/") + MESSAGE_STATUS_PATH
        self._on_opted_out = on_opted_out

    def send(self, message: OutgoingMessage) -> SendResult:
        """Create the message; its SID is the provider id its status callbacks name."""
        sender = ({"messaging_service_sid": self.settings.messaging_service_sid}
                  if self.settings.messaging_service_sid else {"from_": self.settings.from_number})
        try:
            created = self.api.call(lambda client: client.messages.create(
                to=message.destination, body=message.body, status_callback=self.status_callback, **sender))
        except PermanentChannelError as exc:
            if exc.provider_status == f"twilio:{OPTED_OUT_CODE}":
                self._opted_out(message.destination)
            raise
        return created_result(created)

    def _opted_out(self, destination: str) -> None:
        """Twilio keeps the STOP; we record it on the contact point so planning suppresses it."""
        log.warning("[channel:sms] %s opted out at Twilio (21610): contact point marked opted out",
                    mask_identifier("msisdn", destination))
        if self._on_opted_out is None:
            return
        try:
            self._on_opted_out(destination)
        except Exception:  # noqa: BLE001 - the message's outcome stands; the mark is best effort
            log.exception("[channel:sms] could not mark %s opted out", mask_identifier("msisdn", destination))
