"""`notifier web`: the HTTP endpoints Twilio calls — status callbacks and the TwiML of warning calls.

Every `/twilio/…` request must carry a valid `X-Twilio-Signature`: the HMAC Twilio computes with
our auth token over the URL it called and the form parameters (`RequestValidator.validate`). The
URL checked is `twilio.public_base_url` + path + query, the address Twilio knows us by (behind a
TLS proxy the socket's own URL differs). A bad or missing signature is 403 and changes nothing.

Callbacks become `Receipt`s stored with `store_receipts` and applied by the receipt applier, the
path SMPP receipts take (a callback that beats the send's own record waits until it is placed):

| Twilio message status | receipt |
| --- | --- |
| queued, accepted, scheduled, sending, sent | pending (an event, no state change) |
| delivered, read | delivered |
| undelivered | undelivered (with `ErrorCode`) |
| failed, canceled | failed → the notification is `undelivered` |

A call counts as delivered when the subscriber heard the warning to its end. The call's first
TwiML document says the script once and ends with `<Redirect>` to `/twilio/voice/{id}/heard`:
Twilio requests it only after speaking the last word, and never if the callee hung up before.
That request stores a `delivered` receipt ("heard") and answers with the rest of the call: the
script said a second time, then a `<Gather>` offering 1 (repeat), 2 (the steps), 9 (customer
care, `<Dial>`). Call statuses:

| Twilio call status | receipt |
| --- | --- |
| initiated, ringing, in-progress (answered), queued | pending |
| completed, after "heard" | pending (the call already counts as delivered) |
| completed, never "heard" (hung up during the warning) | undelivered, error `not-heard` |
| busy, no-answer, canceled | undelivered |
| failed | failed → `undelivered` |

Key presses are stored as pending receipts too (`key 9`), so history shows what the subscriber
chose. `/healthz` answers 200 while the database does (for the proxy's health check).

`POST /bounces/dsn` takes one returned e-mail (a DSN or a non-delivery text, the raw message as
the body) from the MTA that receives our bounces, when it carries `X-Notifier-Token` equal to
`smtp.bounce_token` (403 otherwise, and always while no token is set); its receipts are stored
and applied like the others (`notifier.bounce_intake`, `channels.bounces`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse

from channels.base import (
    RECEIPT_DELIVERED, RECEIPT_FAILED, RECEIPT_PENDING, RECEIPT_UNDELIVERED, Receipt,
)
from channels.twilio_voice import twiml_path
from notifier.bounce_intake import MAX_MESSAGE_BYTES, BounceSummary, take_bounces
from notifier.db import session_scope
from notifier.dispatch.receipts import store_receipts
from notifier.dispatch.runtime import ReceiptApplier, Runtime, make_runtime
from notifier.errors import ConfigError
from notifier.models import Account, Campaign, InboundReceipt, Notification
from notifier.rendering import tidy_plain_text, with_context_defaults
from notifier.settings import Settings
from notifier.spoken import spoken_digits

log = logging.getLogger(__name__)

MESSAGE_STATUSES = {
    "queued": RECEIPT_PENDING, "accepted": RECEIPT_PENDING, "scheduled": RECEIPT_PENDING,
    "sending": RECEIPT_PENDING, "sent": RECEIPT_PENDING, "delivered": RECEIPT_DELIVERED, "read": RECEIPT_DELIVERED,
    "undelivered": RECEIPT_UNDELIVERED, "failed": RECEIPT_FAILED, "canceled": RECEIPT_FAILED,
}
CALL_STATUSES = {
    "queued": RECEIPT_PENDING, "initiated": RECEIPT_PENDING, "ringing": RECEIPT_PENDING,
    "in-progress": RECEIPT_PENDING, "busy": RECEIPT_UNDELIVERED, "no-answer": RECEIPT_UNDELIVERED,
    "canceled": RECEIPT_UNDELIVERED, "failed": RECEIPT_FAILED,
}
HEARD = "heard"  # raw status of the end-of-warning marker's receipt
NOT_HEARD = "not-heard"
MAX_SAY_CHARS = 3000  # Twilio's <Say> takes up to 4,096 characters; longer scripts are split at lines
STEPS_TEMPLATE = "voice_steps.txt.j2"  # optional per template: what key 2 says


@dataclass(frozen=True)
class Phrases:
    """What the call says around the script, per language."""

    repeat_intro: str
    menu: str
    steps_fallback: str
    connecting: str
    no_care: str
    invalid_key: str
    goodbye: str
    unavailable: str


PHRASES = {
    "vi": Phrases(
        repeat_intro="Xin nhắc lại nội dung cảnh báo.",
        menu=("Để nghe lại cảnh báo, xin bấm phím 1. Để nghe các bước Quý khách cần làm, xin bấm phím 2. "
              "Để gặp nhân viên chăm sóc khách hàng, xin bấm phím 9."),
        steps_fallback="Sau đây là toàn bộ nội dung cảnh báo, gồm các bước Quý khách cần làm.",
        connecting="Xin Quý khách vui lòng giữ máy, cuộc gọi đang được chuyển tới nhân viên chăm sóc khách hàng.",
        no_care="Để được hỗ trợ, Quý khách vui lòng gọi tổng đài {hotline}.",
        invalid_key="Phím Quý khách vừa bấm không có trong danh sách.",
        goodbye="Xin cảm ơn Quý khách đã lắng nghe. Xin chào Quý khách.",
        unavailable="Xin lỗi Quý khách, cuộc gọi này không còn nội dung. Xin chào Quý khách.",
    ),
    "en": Phrases(
        repeat_intro="Here is the warning again.",
        menu="To hear this warning again, press 1. To hear what to do, press 2. To speak to customer care, press 9.",
        steps_fallback="Here is the whole warning again, with the steps to take.",
        connecting="Please hold while we connect you to customer care.",
        no_care="For help, please call our hotline on {hotline}.",
        invalid_key="That key is not one of the choices.",
        goodbye="Thank you for listening. Goodbye.",
        unavailable="Sorry, this call has no message any more. Goodbye.",
    ),
}


class FormParams(dict[str, list[str]]):
    """Form parameters with every value of a repeated name, as `RequestValidator` reads them."""

    def getall(self, name: str) -> list[str]:
        return self[name]

    def one(self, name: str, default: str = "") -> str:
        values = self.get(name) or [default]
        return values[-1]


@dataclass(frozen=True)
class CallScript:
    """What a call says, in whose language."""

    script: str
    steps: str | None
    language: str  # "vi" or "en"


class TwilioWeb:
    """The endpoints' work, apart from HTTP: signature checks, receipts, TwiML."""

    def __init__(self, settings: Settings) -> None:
        token = settings.twilio.auth_token.get_secret_value()
        if not token and not settings.smtp.bounce_token.get_secret_value():
            raise ConfigError("notifier web has nothing to serve: set NOTIFIER_TWILIO__AUTH_TOKEN (Twilio "
                              "callbacks, checked with it) and/or NOTIFIER_SMTP__BOUNCE_TOKEN (DSN intake)")
        self.settings = settings
        # Without a Twilio token (a site that only takes bounces) no Twilio request can be verified:
        # every /twilio/… request is refused with 403, as a forged one is.
        self.validator = RequestValidator(token) if token else None
        self.base = settings.twilio.public_base_url.rstrip("/")
        self.runtime: Runtime = make_runtime(settings)  # renderer and context; opens no channel
        self.applier: ReceiptApplier | None = None

    # -- signatures --------------------------------------------------------------------------

    def public_url(self, request: Request) -> str:
        query = request.url.query
        return self.base + request.url.path + (f"?{query}" if query else "")

    def verified(self, request: Request, body: bytes) -> FormParams | None:
        """The request's form parameters when its signature is Twilio's, else None."""
        signature = request.headers.get("X-Twilio-Signature")
        if not signature or self.validator is None:
            return None
        params = FormParams()
        if request.method == "POST":
            try:
                decoded = body.decode("utf-8")
            except UnicodeDecodeError:
                return None
            params.update(parse_qs(decoded, keep_blank_values=True))
        if not self.validator.validate(self.public_url(request), params, signature):
            return None
        return params

    # -- receipts ----------------------------------------------------------------------------

    def store(self, receipt: Receipt) -> None:
        with session_scope(self.settings.database_url) as session:
            store_receipts(session, [receipt])
        if self.applier is not None:
            self.applier.wake()

    def message_status(self, params: FormParams) -> Receipt:
        raw = params.one("MessageStatus") or params.one("SmsStatus")
        return Receipt(channel="sms", provider_message_id=params.one("MessageSid") or params.one("SmsSid"),
                       status=MESSAGE_STATUSES.get(raw, RECEIPT_PENDING), raw_status=raw or "unknown",
                       error_code=params.one("ErrorCode") or None, destination=params.one("To") or None)

    def call_status(self, params: FormParams) -> Receipt:
        sid, raw = params.one("CallSid"), params.one("CallStatus")
        status, error_code, shown = CALL_STATUSES.get(raw, RECEIPT_PENDING), None, raw or "unknown"
        if raw == "completed":
            shown = f"completed {params.one('CallDuration', '0')}s"
            if not self.heard(sid):
                status, error_code = RECEIPT_UNDELIVERED, NOT_HEARD
        elif raw in {"busy", "no-answer", "failed", "canceled"}:
            error_code = params.one("SipResponseCode") or params.one("ErrorCode") or None
        return Receipt(channel="voice", provider_message_id=sid, status=status, raw_status=shown,
                       error_code=error_code, destination=params.one("To") or None)

    def heard(self, call_sid: str) -> bool:
        """Whether the call reached the end-of-warning marker (its receipt is stored first)."""
        with session_scope(self.settings.database_url) as session:
            return session.execute(sa.select(InboundReceipt.id).where(
                InboundReceipt.channel == "voice", InboundReceipt.provider_message_id == call_sid,
                InboundReceipt.raw_status == HEARD).limit(1)).first() is not None

    def call_event(self, params: FormParams, raw: str, status: str = RECEIPT_PENDING) -> None:
        self.store(Receipt(channel="voice", provider_message_id=params.one("CallSid"), status=status,
                           raw_status=raw, destination=params.one("To") or None))

    # -- TwiML -------------------------------------------------------------------------------

    def call_script(self, notification_id: int) -> CallScript | None:
        """The script stored when the call was claimed (rendered again if it is missing)."""
        import json

        from notifier.dispatch.delivery import render_notification, template_context
        from notifier.threat_categories import notification_template

        with session_scope(self.settings.database_url) as session:
            notification = session.get(Notification, notification_id)
            if notification is None or notification.channel != "voice":
                return None
            campaign = session.get(Campaign, notification.campaign_id)
            account = session.get(Account, notification.account_id)
        assert campaign is not None and account is not None
        language = "en" if (account.language or "").lower().startswith("en") else "vi"
        script = notification.text or render_notification(self.runtime, notification, campaign, account).body
        steps = self._steps(notification_template(json.loads(notification.context), campaign.template),
                            account.language or self.settings.default_language,
                            lambda: template_context(notification, self.runtime))
        return CallScript(script=script, steps=steps, language=language)

    def _steps(self, template: str, language: str, context: Callable[[], dict[str, Any]]) -> str | None:
        """The template's own steps text for key 2, when it has one (`voice_steps.txt.j2`)."""
        for folder in dict.fromkeys((language, self.settings.default_language)):
            path = self.settings.templates_dir / folder / template / STEPS_TEMPLATE
            if path.is_file():
                text = self.runtime.renderer.env.get_template(f"{folder}/{template}/{STEPS_TEMPLATE}").render(
                    with_context_defaults(context()))
                return tidy_plain_text(text)
        return None

    def voice(self, language: str) -> dict[str, str]:
        if language == "en":
            return {"language": self.settings.voice.en_language, "voice": self.settings.voice.en_voice}
        return {"language": self.settings.voice.language, "voice": self.settings.voice.voice}

    def say(self, response: VoiceResponse | Gather, text: str, language: str) -> None:
        for chunk in _say_chunks(text):
            response.say(chunk, **self.voice(language))

    def menu(self, response: VoiceResponse, notification_id: int, language: str) -> None:
        """The key menu, then goodbye if no key is pressed."""
        gather = Gather(num_digits=1, action=f"{self.base}{twiml_path(notification_id)}/key", method="POST",
                        timeout=self.settings.voice.gather_timeout_seconds)
        self.say(gather, PHRASES[language].menu, language)
        response.append(gather)
        self.say(response, PHRASES[language].goodbye, language)
        response.hangup()

    def first_document(self, notification_id: int) -> VoiceResponse:
        """The warning once, then the end-of-warning marker."""
        response = VoiceResponse()
        call = self.call_script(notification_id)
        if call is None:
            return self._unavailable()
        self.say(response, call.script, call.language)
        response.redirect(f"{self.base}{twiml_path(notification_id)}/heard", method="POST")
        return response

    def after_heard(self, notification_id: int) -> VoiceResponse:
        """The warning a second time, then the menu."""
        response = VoiceResponse()
        call = self.call_script(notification_id)
        if call is None:
            return self._unavailable()
        response.pause(length=1)
        self.say(response, PHRASES[call.language].repeat_intro, call.language)
        self.say(response, call.script, call.language)
        self.menu(response, notification_id, call.language)
        return response

    def key(self, notification_id: int, digit: str) -> VoiceResponse:
        """1 repeat, 2 the steps, 9 customer care; anything else: the menu again."""
        response = VoiceResponse()
        call = self.call_script(notification_id)
        if call is None:
            return self._unavailable()
        words = PHRASES[call.language]
        if digit == "1":
            self.say(response, call.script, call.language)
        elif digit == "2":
            if call.steps:
                self.say(response, call.steps, call.language)
            else:
                self.say(response, words.steps_fallback, call.language)
                self.say(response, call.script, call.language)
        elif digit == "9":
            care = self.settings.voice.care_number
            if care:
                self.say(response, words.connecting, call.language)
                response.dial(care)
                response.hangup()
                return response
            hotline = spoken_digits(self.settings.operator.hotline)
            self.say(response, words.no_care.format(hotline=hotline), call.language)
        else:
            self.say(response, words.invalid_key, call.language)
        self.menu(response, notification_id, call.language)
        return response

    def _unavailable(self) -> VoiceResponse:
        response = VoiceResponse()
        self.say(response, PHRASES["vi"].unavailable, "vi")
        response.hangup()
        return response


def _say_chunks(text: str) -> list[str]:
    """The text in pieces Twilio's <Say> accepts, split between lines (then words) when long."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        while len(line) > MAX_SAY_CHARS:
            cut = line.rfind(" ", 0, MAX_SAY_CHARS)
            cut = cut if cut > 0 else MAX_SAY_CHARS
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:cut].strip())
            line = line[cut:].strip()
        if current and len(current) + 1 + len(line) > MAX_SAY_CHARS:
            chunks.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        chunks.append(current)
    return chunks


def _twiml(response: VoiceResponse) -> Response:
    return Response(content=str(response), media_type="application/xml")


def _forbidden() -> JSONResponse:
    return JSONResponse({"error": "invalid Twilio signature"}, status_code=403)


def create_app(settings: Settings) -> FastAPI:
    """The `notifier web` application for these settings (ConfigError without a Twilio or bounce token)."""
    web = TwilioWeb(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        web.applier = ReceiptApplier(settings.database_url)
        web.applier.start()
        try:
            yield
        finally:
            web.applier.stop()
            web.applier = None

    app = FastAPI(title="notifier web", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.twilio = web

    async def signed(request: Request) -> FormParams | None:
        params = web.verified(request, await request.body())
        if params is None:
            log.warning("[web] %s %s refused: missing or invalid X-Twilio-Signature", request.method,
                        request.url.path)
        return params

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        def ping() -> None:
            with session_scope(settings.database_url) as session:
                session.execute(sa.text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            return JSONResponse({"status": "database unavailable", "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.post("/twilio/messages/status")
    async def message_status(request: Request) -> Response:
        params = await signed(request)
        if params is None:
            return _forbidden()
        if not (params.one("MessageSid") or params.one("SmsSid")):
            return JSONResponse({"error": "MessageSid missing"}, status_code=400)
        await run_in_threadpool(lambda: web.store(web.message_status(params)))
        return Response(status_code=204)

    @app.post("/twilio/calls/status")
    async def call_status(request: Request) -> Response:
        params = await signed(request)
        if params is None:
            return _forbidden()
        if not params.one("CallSid"):
            return JSONResponse({"error": "CallSid missing"}, status_code=400)
        await run_in_threadpool(lambda: web.store(web.call_status(params)))
        return Response(status_code=204)

    @app.api_route("/twilio/voice/{notification_id}", methods=["GET", "POST"])
    async def voice(notification_id: int, request: Request) -> Response:
        if await signed(request) is None:
            return _forbidden()
        return _twiml(await run_in_threadpool(web.first_document, notification_id))

    @app.api_route("/twilio/voice/{notification_id}/heard", methods=["GET", "POST"])
    async def heard(notification_id: int, request: Request) -> Response:
        params = await signed(request)
        if params is None:
            return _forbidden()
        if params.one("CallSid"):
            await run_in_threadpool(web.call_event, params, HEARD, RECEIPT_DELIVERED)
        return _twiml(await run_in_threadpool(web.after_heard, notification_id))

    @app.post("/twilio/voice/{notification_id}/key")
    async def key(notification_id: int, request: Request) -> Response:
        params = await signed(request)
        if params is None:
            return _forbidden()
        digit = params.one("Digits")[:1]
        if params.one("CallSid"):
            await run_in_threadpool(web.call_event, params, f"key {digit or '-'}")
        return _twiml(await run_in_threadpool(web.key, notification_id, digit))

    @app.post("/bounces/dsn")
    async def bounce(request: Request) -> Response:
        """One returned message (DSN or non-delivery text), raw, as the MTA holding our bounce
        mailbox pipes it; `X-Notifier-Token` must equal `smtp.bounce_token`, else 403."""
        if not _bounce_token_ok(settings, request.headers.get("X-Notifier-Token")):
            log.warning("[web] POST /bounces/dsn refused: missing or invalid X-Notifier-Token")
            return JSONResponse({"error": "missing or invalid X-Notifier-Token"}, status_code=403)
        length = request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_MESSAGE_BYTES:  # a chunked one is checked once read
            return JSONResponse({"error": f"larger than {MAX_MESSAGE_BYTES} bytes"}, status_code=413)
        body = await request.body()
        summary = await run_in_threadpool(_take_bounce, settings, body)
        if web.applier is not None:
            web.applier.wake()
        return JSONResponse(summary.as_json())

    return app


def _bounce_token_ok(settings: Settings, given: str | None) -> bool:
    """Constant-time comparison; an empty configured token accepts nothing."""
    expected = settings.smtp.bounce_token.get_secret_value()
    return bool(expected and given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def _take_bounce(settings: Settings, body: bytes) -> BounceSummary:
    with session_scope(settings.database_url) as session:
        return take_bounces(session, [("posted message", body)], sender=settings.smtp.sender)


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the app with uvicorn in the foreground until Ctrl-C / SIGTERM (`notifier web`)."""
    import uvicorn

    app = create_app(settings)
    log.info("notifier web on http://%s:%d; Twilio reaches it as %s", host, port, settings.twilio.public_base_url)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=True, proxy_headers=False)


__all__ = ["CALL_STATUSES", "MESSAGE_STATUSES", "TwilioWeb", "create_app", "serve"]
