"""A loopback stand-in for Twilio's REST API: the SMS and voice peer for tests and trials.

It speaks the subset notifier uses, as Twilio does: `POST /2010-04-01/Accounts/{sid}/Messages.json`
and `Calls.json` with Basic auth (account SID + auth token), `GET /2010-04-01/Accounts/{sid}.json`,
realistic JSON resources and error bodies with Twilio codes (`{"code": 21211, "message": …,
"more_info": …, "status": 400}`). Afterwards it plays the provider's side over real HTTP, every
request signed exactly as Twilio signs them (`X-Twilio-Signature`,
`RequestValidator.compute_signature` over the URL called and the form parameters):

- a message: status callbacks `sent` then `delivered` (or `undelivered` / `failed` with an
  `ErrorCode`) to the `StatusCallback` URL given;
- a call: progress callbacks (`initiated`, `ringing`, `answered` as asked in `StatusCallbackEvent`),
  then — answered — it fetches the call's TwiML from `Url`, "speaks" its `<Say>`s, follows
  `<Redirect>`, posts the scripted key presses (`Digits`) to a `<Gather>`'s action, notes a
  `<Dial>`, and ends with a `completed` callback carrying `CallDuration`; or it ends as `busy`,
  `no-answer`, `failed` or `canceled`; `hangup` answers and hangs up after the first `<Say>`.

What happens to a number is its scenario (`--scenario '+84900000001={"call": "busy"}'` or
`POST /_peer/scenario`): `error` (`{"status": 400, "code": 21211, "message": …}`) refuses the API
request, `drop` closes the connection without an answer, `sms` is the message's final status,
`call` the call's outcome, `keys` the digits pressed at successive `<Gather>`s. Everything it did
is listed by `GET /_peer/events` (and appended to `--log` as JSON lines). It listens on 127.0.0.1
only. `python -m notifier.peers.twilio --port P --account-sid AC… --auth-token …` runs it in the
foreground until Ctrl-C / SIGTERM; tests use `TwilioPeer`, a child process stopped by pid.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin

from twilio.request_validator import RequestValidator

from notifier.peers import LOOPBACK, ensure_port_free, free_port, stop_child, wait_for_port

API_VERSION = "2010-04-01"
_ACCOUNT = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-fA-F]{32})(?P<rest>\.json|/Messages\.json|/Calls\.json)$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
MAX_DOCUMENTS = 25  # TwiML documents one call may fetch (a Redirect loop ends there)
WORDS_PER_SECOND = 2.5  # how long a <Say> "takes", for CallDuration
REQUEST_TIMEOUT_SECONDS = 15  # callbacks and TwiML fetches, as Twilio's own limit
PROJECT_ROOT = Path(__file__).resolve().parents[2]
Answer = tuple[int, dict[str, Any], bool]  # (HTTP status, JSON body, close without answering)


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """An error body as Twilio writes it."""
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


def exchange(request: urllib.request.Request) -> tuple[int, str]:
    """Make a request Twilio makes to us; (HTTP status, body) whatever the status. A connection
    that fails raises OSError: what the caller records for it is its own."""
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _now() -> str:
    return formatdate(usegmt=False).replace("-0000", "+0000")


class PeerState:
    """What the peer knows: credentials, scenarios per number, and the events it produced."""

    def __init__(self, account_sid: str, auth_token: str, *, log_path: Path | None = None,
                 callback_delay: float = 0.02) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.validator = RequestValidator(auth_token)
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.callback_delay = callback_delay
        self._log_path = log_path
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="twilio-peer")

    def scenario(self, number: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.scenarios.get(number, {}))

    def record(self, event: dict[str, Any]) -> None:
        event = {"at": time.time(), **event}
        with self._lock:
            self.events.append(event)
            if self._log_path is not None:
                with self._log_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(event, ensure_ascii=False) + "\n")

    def authorised(self, header: str | None, sid: str) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.account_sid == sid and secrets.compare_digest(password, self.auth_token)

    # -- requests Twilio makes ------------------------------------------------------------------

    def post_signed(self, url: str, params: dict[str, str], *, call_sid: str | None = None,
                    kind: str = "callback") -> tuple[int, str]:
        """POST `params` to `url` as Twilio does: form-encoded, signed over the exact URL."""
        signature = self.validator.compute_signature(url, params)
        request = urllib.request.Request(url, data=urlencode(params).encode("utf-8"), method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": secrets.token_hex(16)})
        try:
            status, body = exchange(request)
        except OSError as exc:
            status, body = 0, f"{type(exc).__name__}: {exc}"
        self.record({"type": kind, "url": url, "params": params, "status": status, "call_sid": call_sid,
                     **({"body": body} if kind == "twiml" else {})})
        return status, body


# -- messages ----------------------------------------------------------------------------------


def scripted_refusal(state: PeerState, kind: str, to: str, scenario: dict[str, Any]) -> Answer | None:
    """What `to`'s scenario makes of a create before the request itself is looked at: no answer
    at all (`drop`, recorded as `{kind}-dropped`), the scripted Twilio error, or None (go on)."""
    if scenario.get("drop"):
        state.record({"type": f"{kind}-dropped", "to": to})
        return 0, {}, True
    if "error" in scenario:
        error = scenario["error"]
        status = int(error["status"])
        return status, twilio_error(status, int(error["code"]), str(error.get("message", "error"))), False
    return None


def create_message(state: PeerState, form: dict[str, list[str]]) -> Answer:
    """(HTTP status, JSON body, close without answering) for a Messages.json POST."""
    to, body = _one(form, "To"), _one(form, "Body")
    sender, service = _one(form, "From"), _one(form, "MessagingServiceSid")
    scenario = state.scenario(to)
    refusal = scripted_refusal(state, "sms", to, scenario)
    if refusal is not None:
        return refusal
    if not _E164.match(to):
        return 400, twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number."), False
    if not sender and not service:
        return 400, twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required."), False
    if not body:
        return 400, twilio_error(400, 21602, "Message body is required."), False
    from notifier.sms import count_parts

    sid = new_sid("SM")
    status = "accepted" if service else "queued"
    resource = {
        "account_sid": state.account_sid, "api_version": API_VERSION, "body": body, "date_created": _now(),
        "date_sent": None, "date_updated": _now(), "direction": "outbound-api", "error_code": None,
        "error_message": None, "from": sender or None, "messaging_service_sid": service or None, "num_media": "0",
        "num_segments": str(count_parts(body)), "price": None, "price_unit": "USD", "sid": sid, "status": status,
        "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{state.account_sid}/Messages/{sid}/Media.json"},
        "to": to, "uri": f"/{API_VERSION}/Accounts/{state.account_sid}/Messages/{sid}.json",
    }
    state.record({"type": "sms", "sid": sid, "to": to, "from": sender, "messaging_service_sid": service,
                  "body": body, "status_callback": _one(form, "StatusCallback")})
    callback = _one(form, "StatusCallback")
    if callback:
        state.pool.submit(_message_callbacks, state, resource, callback, scenario)
    return 201, resource, False


def _message_callbacks(state: PeerState, resource: dict[str, Any], url: str, scenario: dict[str, Any]) -> None:
    final = str(scenario.get("sms", "delivered"))
    steps = ["sent", final] if final in {"delivered", "undelivered"} else [final] if final == "failed" else ["sent"]
    for status in steps:
        time.sleep(state.callback_delay)
        params = {"AccountSid": state.account_sid, "ApiVersion": API_VERSION, "MessageSid": resource["sid"],
                  "SmsSid": resource["sid"], "MessageStatus": status, "SmsStatus": status, "To": resource["to"],
                  "From": resource["from"] or ""}
        if resource["messaging_service_sid"]:
            params["MessagingServiceSid"] = resource["messaging_service_sid"]
        if status in {"undelivered", "failed"}:
            params["ErrorCode"] = str(scenario.get("error_code", 30003 if status == "undelivered" else 30008))
        state.post_signed(url, params)


# -- calls -------------------------------------------------------------------------------------


def create_call(state: PeerState, form: dict[str, list[str]]) -> Answer:
    """(HTTP status, JSON body, close without answering) for a Calls.json POST."""
    to, sender, url = _one(form, "To"), _one(form, "From"), _one(form, "Url")
    scenario = state.scenario(to)
    refusal = scripted_refusal(state, "call", to, scenario)
    if refusal is not None:
        return refusal
    if not _E164.match(to):
        return 400, twilio_error(400, 13224, f"The phone number you are attempting to call, {to}, is not valid."), False
    if not sender:
        return 400, twilio_error(400, 21213, "No 'From' number is specified"), False
    if not url:
        return 400, twilio_error(400, 21205, "Url parameter is required."), False
    sid = new_sid("CA")
    resource = {
        "account_sid": state.account_sid, "annotation": None, "answered_by": None, "api_version": API_VERSION,
        "caller_name": None, "date_created": _now(), "date_updated": _now(), "direction": "outbound-api",
        "duration": None, "end_time": None, "forwarded_from": None, "from": sender, "from_formatted": sender,
        "group_sid": None, "parent_call_sid": None, "phone_number_sid": None, "price": None, "price_unit": "USD",
        "queue_time": "0", "sid": sid, "start_time": None, "status": "queued",
        "subresource_uris": {"recordings": f"/{API_VERSION}/Accounts/{state.account_sid}/Calls/{sid}/Recordings.json"},
        "to": to, "to_formatted": to, "trunk_sid": None,
        "uri": f"/{API_VERSION}/Accounts/{state.account_sid}/Calls/{sid}.json",
    }
    call = _Call(state, resource, url=url, method=_one(form, "Method") or "POST",
                 status_callback=_one(form, "StatusCallback"), events=set(form.get("StatusCallbackEvent", [])),
                 scenario=scenario)
    state.record({"type": "call", "sid": sid, "to": to, "from": sender, "url": url,
                  "status_callback": call.status_callback, "events": sorted(call.events)})
    state.pool.submit(call.run)
    return 201, resource, False


class _Call:
    """One simulated call: progress callbacks, TwiML fetched and followed, the final status."""

    def __init__(self, state: PeerState, resource: dict[str, Any], *, url: str, method: str, status_callback: str,
                 events: set[str], scenario: dict[str, Any]) -> None:
        self.state, self.resource = state, resource
        self.url, self.method, self.status_callback, self.events = url, method.upper(), status_callback, events
        self.outcome = str(scenario.get("call", "answer"))
        self.keys = list(str(scenario.get("keys", "")))
        self.seconds = 0.0
        self.sequence = 0

    def params(self, status: str) -> dict[str, str]:
        r = self.resource
        return {"AccountSid": r["account_sid"], "ApiVersion": API_VERSION, "CallSid": r["sid"], "CallStatus": status,
                "Called": r["to"], "Caller": r["from"], "Direction": "outbound-api", "From": r["from"], "To": r["to"]}

    def progress(self, event: str, status: str, **extra: str) -> None:
        """A status callback, if Twilio would send it (`completed` always is)."""
        if not self.status_callback or (event != "completed" and event not in self.events):
            return
        time.sleep(self.state.callback_delay)
        params = {**self.params(status), "CallbackSource": "call-progress-events",
                  "SequenceNumber": str(self.sequence), "Timestamp": _now(), **extra}
        self.sequence += 1
        self.state.post_signed(self.status_callback, params, call_sid=self.resource["sid"])

    def run(self) -> None:
        try:
            self.progress("initiated", "initiated")
            if self.outcome == "failed":
                self.progress("completed", "failed", SipResponseCode="500")
                return
            self.progress("ringing", "ringing")
            if self.outcome in {"busy", "no-answer", "canceled"}:
                sip = {"busy": "486", "no-answer": "487", "canceled": "487"}[self.outcome]
                self.progress("completed", self.outcome, SipResponseCode=sip, CallDuration="0")
                return
            self.progress("answered", "in-progress")
            self.follow()
            duration = str(max(1, math.ceil(self.seconds)))
            self.progress("completed", "completed", CallDuration=duration, Duration=str(math.ceil(int(duration) / 60)),
                          SipResponseCode="200")
        except Exception as exc:  # noqa: BLE001 - a peer bug must show in the events, not vanish
            self.state.record({"type": "peer-error", "call_sid": self.resource["sid"], "error": repr(exc)})

    def follow(self) -> None:
        """Fetch and play TwiML documents until the call ends (Hangup, end of document, hang-up)."""
        url, method, params = self.url, self.method, self.params("in-progress")
        for _ in range(MAX_DOCUMENTS):
            status, body = self.fetch(url, method, params)
            if status != 200:
                return  # Twilio would say "an application error has occurred" and hang up
            nxt = self.play(ET.fromstring(body), url)
            if nxt is None:
                return
            url, method, params = nxt

    def fetch(self, url: str, method: str, params: dict[str, str]) -> tuple[int, str]:
        if method == "GET":
            full = url + ("&" if "?" in url else "?") + urlencode(params)
            signature = self.state.validator.compute_signature(full, {})
            request = urllib.request.Request(full, headers={"X-Twilio-Signature": signature,
                                                            "User-Agent": "TwilioProxy/1.1"})
            status, body = exchange(request)
            self.state.record({"type": "twiml", "url": full, "params": {}, "status": status, "body": body,
                               "call_sid": self.resource["sid"]})
            return status, body
        return self.state.post_signed(url, params, call_sid=self.resource["sid"], kind="twiml")

    def play(self, document: ET.Element, url: str) -> tuple[str, str, dict[str, str]] | None:
        """Play one document; the next request to make, or None when the call is over."""
        for verb in document:
            if verb.tag == "Say":
                self.say(verb)
                if self.outcome == "hangup":
                    return None  # the subscriber hung up during the warning
            elif verb.tag == "Pause":
                self.seconds += float(verb.get("length", "1"))
            elif verb.tag == "Redirect":
                return urljoin(url, (verb.text or "").strip()), verb.get("method", "POST").upper(), \
                    self.params("in-progress")
            elif verb.tag == "Gather":
                for prompt in verb:
                    if prompt.tag == "Say":
                        self.say(prompt)
                if self.keys:
                    digit = self.keys.pop(0)
                    self.state.record({"type": "key", "digits": digit, "call_sid": self.resource["sid"]})
                    action = urljoin(url, verb.get("action") or url)
                    return action, verb.get("method", "POST").upper(), {**self.params("in-progress"),
                                                                      "Digits": digit, "FinishedOnKey": ""}
                self.seconds += float(verb.get("timeout", "5"))
            elif verb.tag == "Dial":
                number = (verb.findtext("Number") or verb.text or "").strip()
                self.state.record({"type": "dial", "number": number, "call_sid": self.resource["sid"]})
                self.seconds += 30
            elif verb.tag in {"Hangup", "Reject"}:
                return None
        return None

    def say(self, verb: ET.Element) -> None:
        text = (verb.text or "").strip()
        self.seconds += len(text.split()) / WORDS_PER_SECOND
        self.state.record({"type": "say", "text": text, "language": verb.get("language"), "voice": verb.get("voice"),
                           "call_sid": self.resource["sid"]})


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[-1]


# -- the HTTP server ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """The peer's HTTP side; `make_handler` gives each server a subclass holding its `state`."""

    state: PeerState
    server_version = "TwilioPeer/1.0"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        return  # events are the log

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _account_path(self, *, the_account: bool) -> re.Match[str] | None:
        """This request's account path, authorised; else None, the 404 or 401 already answered.
        `the_account`: the account resource itself (GET) rather than Messages/Calls (POST)."""
        match = _ACCOUNT.match(self.path.split("?")[0])
        if not match or (match["rest"] == ".json") != the_account:
            self._send_json(404, twilio_error(404, 20404, "The requested resource was not found"))
            return None
        if not self.state.authorised(self.headers.get("Authorization"), match["sid"]):
            self._send_json(401, twilio_error(401, 20003, "Authenticate"))
            return None
        return match

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        state = self.state
        if self.path == "/_peer/events":
            with state._lock:
                events = list(state.events)
            return self._send_json(200, events)
        if self._account_path(the_account=True) is None:
            return
        self._send_json(200, {"sid": state.account_sid, "friendly_name": "notifier loopback", "status": "active",
                              "type": "Full", "date_created": _now(), "date_updated": _now(),
                              "uri": f"/{API_VERSION}/Accounts/{state.account_sid}.json"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        raw = self._body()
        if self.path == "/_peer/scenario":
            settings = json.loads(raw or b"{}")
            with self.state._lock:
                self.state.scenarios[settings["number"]] = settings.get("scenario", {})
            return self._send_json(200, {"ok": True})
        match = self._account_path(the_account=False)
        if match is None:
            return
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        create = create_message if match["rest"] == "/Messages.json" else create_call
        status, body, drop = create(self.state, form)
        if drop:
            self.close_connection = True
            return  # no answer at all: the client cannot know whether we took it
        self._send_json(status, body)


def make_handler(state: PeerState) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `state` (http.server builds one handler object per request)."""
    return type("Handler", (_Handler,), {"state": state})


class TwilioPeerServer:
    """The peer in this process (a thread): what the child process of `TwilioPeer` runs."""

    def __init__(self, state: PeerState, *, port: int) -> None:
        ensure_port_free(port)
        self.state = state
        self.port = port
        self._server = ThreadingHTTPServer((LOOPBACK, port), make_handler(state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="twilio-peer", daemon=True)

    def start(self) -> TwilioPeerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.state.pool.shutdown(wait=False, cancel_futures=True)


class TwilioPeer:
    """Runs the Twilio peer in a child process on a free loopback port; stopped by pid."""

    def __init__(self, *, account_sid: str, auth_token: str, port: int | None = None,
                 log_path: Path | None = None, callback_delay: float = 0.02) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.port = port or free_port()
        self.log_path = log_path
        self.callback_delay = callback_delay
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """What `twilio.api_base_url` is set to."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> TwilioPeer:
        command = [sys.executable, "-m", "notifier.peers.twilio", "--port", str(self.port),
                   "--account-sid", self.account_sid, "--callback-delay", str(self.callback_delay)]
        if self.log_path is not None:
            command += ["--log", str(self.log_path)]
        env = dict(os.environ, TWILIO_PEER_AUTH_TOKEN=self.auth_token)  # not on the command line
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL; safe to call twice."""
        process, self._process = self._process, None
        stop_child(process)

    def __enter__(self) -> TwilioPeer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def set_scenario(self, number: str, **scenario: Any) -> None:
        """What happens to `number` from now on (module docstring)."""
        data = json.dumps({"number": number, "scenario": scenario}).encode("utf-8")
        request = urllib.request.Request(self.base_url + "/_peer/scenario", data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.base_url + "/_peer/events", timeout=5) as response:
            events: list[dict[str, Any]] = json.loads(response.read())
        return [event for event in events if kind is None or event["type"] == kind]


def _parse_scenario(text: str) -> tuple[str, dict[str, Any]]:
    number, _, body = text.partition("=")
    return number.strip(), json.loads(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A loopback stand-in for Twilio's REST API (SMS and calls).")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--account-sid", default="AC" + "0" * 32)
    parser.add_argument("--auth-token", default=None, help="default: $TWILIO_PEER_AUTH_TOKEN")
    parser.add_argument("--log", type=Path, default=None, help="append every event here as a JSON line")
    parser.add_argument("--callback-delay", type=float, default=0.02, help="seconds before each callback")
    parser.add_argument("--scenario", action="append", default=[], help='NUMBER={"call": "busy"} (repeatable)')
    args = parser.parse_args(argv)
    token = args.auth_token or os.environ.get("TWILIO_PEER_AUTH_TOKEN") or ""
    if not token:
        parser.error("give --auth-token or TWILIO_PEER_AUTH_TOKEN")
    state = PeerState(args.account_sid, token, log_path=args.log, callback_delay=args.callback_delay)
    state.scenarios.update(dict(_parse_scenario(text) for text in args.scenario))
    server = TwilioPeerServer(state, port=args.port).start()
    print(f"Twilio peer listening on http://{LOOPBACK}:{args.port} (account {args.account_sid})", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    while not stopped.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
