"""What the Twilio tests share: the loopback Twilio peer and `notifier web`, each a real process on a
free 127.0.0.1 port stopped by pid, settings that join them, and waits on database state.

The fixtures `peer`, `web_port` and `web` are bound in the test modules that use them (pytest finds
fixtures among a module's names); `web` asks for the requesting module's own `settings` fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from sqlmodel import Session
from twilio.request_validator import RequestValidator

from notifier.db import get_engine, session_scope
from notifier.dispatch.delivery import deliver_batch
from notifier.dispatch.runtime import make_runtime
from notifier.models import Notification
from notifier.peers import LOOPBACK, free_port, stop_child, wait_for_port
from notifier.peers.twilio import TwilioPeer
from notifier.settings import DispatchSettings, Settings, TwilioSettings, VoiceSettings
from tests.factories import add_account, add_notification

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "peer-auth-token-9c41d2"
FROM_NUMBER = "+842812345678"
CARE_NUMBER = "+842873000000"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 20.0
T = TypeVar("T")


def twilio_settings(database_url: str, *, api_base_url: str, web_port: int, **twilio: Any) -> Settings:
    """Settings for a test: Twilio SMS and voice against the peer, callbacks to our `notifier web`."""
    return Settings(
        database_url=database_url,
        sms_provider="twilio",
        twilio=TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
                              api_base_url=api_base_url, public_base_url=f"http://{LOOPBACK}:{web_port}",
                              timeout_seconds=5, **twilio),
        voice=VoiceSettings(care_number=CARE_NUMBER, gather_timeout_seconds=3),
        dispatch=DispatchSettings(sms_per_second=1000, email_per_second=1000, voice_per_second=1000,
                                  receipt_wait_seconds=5, max_retries=3),
    )


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that gives `notifier web` (a child process) these settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("NOTIFIER_")}
    env.update({
        "NOTIFIER_DATABASE_URL": settings.database_url,
        "NOTIFIER_SMS_PROVIDER": settings.sms_provider,
        "NOTIFIER_TWILIO__ACCOUNT_SID": settings.twilio.account_sid,
        "NOTIFIER_TWILIO__AUTH_TOKEN": settings.twilio.auth_token.get_secret_value(),
        "NOTIFIER_TWILIO__FROM_NUMBER": settings.twilio.from_number,
        "NOTIFIER_TWILIO__API_BASE_URL": settings.twilio.api_base_url,
        "NOTIFIER_TWILIO__PUBLIC_BASE_URL": settings.twilio.public_base_url,
        "NOTIFIER_VOICE__CARE_NUMBER": settings.voice.care_number,
        "NOTIFIER_VOICE__GATHER_TIMEOUT_SECONDS": str(settings.voice.gather_timeout_seconds),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    })
    return env


class WebProcess:
    """`notifier web --port P` as a child process; stopped by pid with SIGTERM."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, settings: Settings, log_path: Path) -> WebProcess:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "web", "--host", LOOPBACK, "--port", str(self.port)],
                cwd=PROJECT_ROOT, env=settings_environment(settings), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, timeout_seconds=30)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_child(process, timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""


@contextmanager
def web_process(settings: Settings, port: int, log_path: Path) -> Iterator[WebProcess]:
    web = WebProcess(port).start(settings, log_path)
    try:
        yield web
    finally:
        web.stop()


def signed_post(url: str, params: dict[str, str], *, token: str = AUTH_TOKEN, signature: str | None = None,
                sign_url: str | None = None) -> tuple[int, str]:
    """POST as Twilio would (form body, X-Twilio-Signature over `sign_url or url` and the params);
    `signature` replaces the computed one (a forgery), "" sends none."""
    computed = RequestValidator(token).compute_signature(sign_url or url, params)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature != "":
        headers["X-Twilio-Signature"] = computed if signature is None else signature
    request = urllib.request.Request(url, data=urlencode(params).encode("utf-8"), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def wait_until(what: str, probe: Callable[[], T | None], *, seconds: float = WAIT_SECONDS) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (no timing assertion:
    the bound only keeps a broken run from hanging)."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def notification_state(database_url: str, notification_id: int) -> Notification:
    with Session(get_engine(database_url), expire_on_commit=False) as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return row


def wait_for_state(database_url: str, notification_id: int, *states: str) -> Notification:
    return wait_until(f"notification {notification_id} in {states}", lambda: (
        row if (row := notification_state(database_url, notification_id)).state in states else None))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[TwilioPeer]:
    """The loopback Twilio peer, its events also written to tmp_path/twilio.jsonl."""
    with TwilioPeer(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, log_path=tmp_path / "twilio.jsonl") as running:
        yield running


@pytest.fixture
def web_port() -> int:
    """The port `notifier web` will listen on: settings name it before the process starts."""
    return free_port()


@pytest.fixture
def web(settings: Settings, web_port: int, tmp_path: Path) -> Iterator[WebProcess]:
    """`notifier web` with the requesting module's `settings`, receiving the peer's callbacks."""
    with web_process(settings, web_port, tmp_path / "web.log") as process:
        yield process


# -- notifications -------------------------------------------------------------------------------


def queued_notification(database_url: str, channel: str, destination: str, *, language: str | None = None) -> int:
    """A queued notification on `channel` to `destination`, for an account of its own; its id."""
    with session_scope(database_url) as session:
        account = add_account(session, f"HN-{destination[-6:]}", msisdn=destination)
        if language is not None:
            account.language = language
        return add_notification(session, account, channel=channel, destination=destination).id or 0


def deliver(settings: Settings, *ids: int) -> dict[int, str]:
    """Send these notifications as a worker would (one batch); each one's outcome."""
    runtime = make_runtime(settings)
    try:
        return deliver_batch(runtime, list(ids)).outcomes
    finally:
        runtime.close()
