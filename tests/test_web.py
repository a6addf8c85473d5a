"""`notifier web` as a process on a loopback port: health check, signatures checked against the public
URL Twilio knows us by (behind a proxy), refusals that change nothing, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from channels.base import RECEIPT_DELIVERED, RECEIPT_FAILED, RECEIPT_PENDING, RECEIPT_UNDELIVERED
from notifier.db import get_engine
from notifier.models import InboundReceipt
from notifier.peers import free_port
from notifier.settings import Settings
from notifier.web import CALL_STATUSES, MAX_SAY_CHARS, MESSAGE_STATUSES, _say_chunks
from tests.twilio_support import (
    ACCOUNT_SID, PROJECT_ROOT, WebProcess, settings_environment, signed_post, twilio_settings, web_process,
)

PUBLIC = "https://canhbao.example.vn/hooks"  # the proxy's address for us, with a path prefix


@pytest.fixture
def behind_proxy(database_url: str, tmp_path: Path) -> Iterator[WebProcess]:
    """`notifier web` whose public base URL is the proxy's, not its own socket's."""
    port = free_port()
    settings = twilio_settings(database_url, api_base_url="http://127.0.0.1:9", web_port=port)
    settings.twilio.public_base_url = PUBLIC
    with web_process(settings, port, tmp_path / "web.log") as web:
        yield web


def callback(sid: str = "SM" + "5" * 32, status: str = "delivered") -> dict[str, str]:
    return {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsSid": sid,
            "MessageStatus": status, "SmsStatus": status, "To": "+84912345678", "From": "+842812345678"}


def stored(database_url: str) -> list[str]:
    with Session(get_engine(database_url)) as session:
        return list(session.execute(sa.select(InboundReceipt.raw_status).order_by(InboundReceipt.id)).scalars())


def test_healthz_answers_while_the_database_does(behind_proxy: WebProcess) -> None:
    with urllib.request.urlopen(f"{behind_proxy.base_url}/healthz", timeout=5) as response:
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}


def test_healthz_is_503_without_a_database(tmp_path: Path) -> None:
    port = free_port()
    closed = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed}/nothing?connect_timeout=1"
    settings = twilio_settings(url, api_base_url="http://127.0.0.1:9", web_port=port)
    with web_process(settings, port, tmp_path / "web.log") as web:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{web.base_url}/healthz", timeout=10)
    assert caught.value.code == 503
    assert "s3cret" not in web.output()


def test_signatures_are_checked_against_the_public_url(behind_proxy: WebProcess, database_url: str) -> None:
    local = f"{behind_proxy.base_url}/twilio/messages/status"

    # Twilio signs the URL it called (the proxy's); one signed over our socket's URL is not Twilio's.
    assert signed_post(local, callback(), sign_url=local)[0] == 403
    assert stored(database_url) == []
    assert signed_post(local, callback(), sign_url=f"{PUBLIC}/twilio/messages/status")[0] == 204
    assert stored(database_url) == ["delivered"]


def test_the_query_string_is_part_of_the_signed_url(behind_proxy: WebProcess, database_url: str) -> None:
    local = f"{behind_proxy.base_url}/twilio/messages/status?attempt=2"

    assert signed_post(local, callback(), sign_url=f"{PUBLIC}/twilio/messages/status")[0] == 403
    assert signed_post(local, callback(), sign_url=f"{PUBLIC}/twilio/messages/status?attempt=2")[0] == 204
    assert stored(database_url) == ["delivered"]


def test_a_signed_callback_without_a_message_id_is_a_bad_request(behind_proxy: WebProcess,
                                                                 database_url: str) -> None:
    params = {key: value for key, value in callback().items() if key not in {"MessageSid", "SmsSid"}}

    status, _ = signed_post(f"{behind_proxy.base_url}/twilio/messages/status", params,
                            sign_url=f"{PUBLIC}/twilio/messages/status")

    assert status == 400 and stored(database_url) == []


def test_unsigned_twiml_requests_get_no_script(behind_proxy: WebProcess) -> None:
    status, body = signed_post(f"{behind_proxy.base_url}/twilio/voice/1", {"CallSid": "CA" + "1" * 32},
                               signature="")
    assert status == 403 and "Say" not in body


def test_web_without_any_token_is_one_error_line(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'n.db'}")
    env = settings_environment(settings)
    del env["NOTIFIER_TWILIO__AUTH_TOKEN"]
    env.pop("NOTIFIER_SMTP__BOUNCE_TOKEN", None)

    result = subprocess.run([sys.executable, "-m", "cli", "web", "--port", str(free_port())], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: notifier web has nothing to serve: set NOTIFIER_TWILIO__AUTH_TOKEN (Twilio callbacks, checked "
        "with it) and/or NOTIFIER_SMTP__BOUNCE_TOKEN (DSN intake)"]


def test_web_for_bounces_only_refuses_every_twilio_request(tmp_path: Path) -> None:
    """A site without Twilio: `notifier web` serves DSN intake; a Twilio callback, however signed,
    cannot be verified and is refused."""
    from types import SimpleNamespace

    from notifier.db import upgrade
    from notifier.web import TwilioWeb

    url = f"sqlite:///{tmp_path / 'n.db'}"
    upgrade(url)
    web = TwilioWeb(Settings(database_url=url, smtp={"bounce_token": "s3cret"}))
    request = SimpleNamespace(headers={"X-Twilio-Signature": "anything"}, method="POST",
                              url=SimpleNamespace(path="/twilio/messages/status", query=""))
    assert web.verified(request, b"MessageSid=SM1&MessageStatus=delivered") is None  # type: ignore[arg-type]


def test_status_tables_cover_twilios_statuses() -> None:
    assert {MESSAGE_STATUSES[s] for s in ("queued", "accepted", "sending", "sent")} == {RECEIPT_PENDING}
    assert MESSAGE_STATUSES["delivered"] == RECEIPT_DELIVERED
    assert MESSAGE_STATUSES["undelivered"] == RECEIPT_UNDELIVERED and MESSAGE_STATUSES["failed"] == RECEIPT_FAILED
    assert {CALL_STATUSES[s] for s in ("busy", "no-answer", "canceled")} == {RECEIPT_UNDELIVERED}
    assert CALL_STATUSES["failed"] == RECEIPT_FAILED and CALL_STATUSES["in-progress"] == RECEIPT_PENDING
    assert "completed" not in CALL_STATUSES  # decided by the end-of-warning marker (notifier.web)


def test_long_scripts_are_split_for_say_between_lines() -> None:
    line = "Quý khách vui lòng đổi mật khẩu modem. " * 40  # ~1,560 characters
    text = "\n".join([line] * 5)

    chunks = _say_chunks(text)

    assert len(chunks) > 1 and all(len(chunk) <= MAX_SAY_CHARS for chunk in chunks)
    assert " ".join(chunks).split() == text.split()
    assert _say_chunks("x " * 4000) and all(len(c) <= MAX_SAY_CHARS for c in _say_chunks("x " * 4000))
