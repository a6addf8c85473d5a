"""SMTP security from configuration (issue 8, item 4): STARTTLS and implicit TLS with AUTH PLAIN/LOGIN
against the aiosmtpd peer on loopback with a self-signed certificate made by `openssl`; a wrong
password, a relay without STARTTLS and an untrusted certificate stop the route (never a fallback
to clear text); outside development a username over a plain or unverified connection is refused
at start-up."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from channels.base import OutgoingMessage, SendResult
from channels.email import EmailChannel
from notifier.dispatch.loops import CampaignHalted, open_checked_runtime
from notifier.errors import ConfigError, RouteUnreachableError
from notifier.peers.smtp_sink import SmtpSink, make_test_certificate
from notifier.settings import Settings, SmtpSettings, reset_settings

USER = "canhbao-relay"
PASSWORD = "Rel@y-pa55-7f3c91"  # distinctive: searched for in every log and error
WRONG = "not-the-Pa55word-0b2e"
SENDER = "canhbao@example.vn"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made once for the module."""
    return make_test_certificate(tmp_path_factory.mktemp("tls"))


def settings_for(sink: SmtpSink, **options: object) -> SmtpSettings:
    return SmtpSettings(port=sink.port, sender=SENDER, timeout_seconds=5.0, **options)  # type: ignore[arg-type]


def messages(count: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(notification_id=n, destination=f"kh{n}@khachhang.vn", body="Cảnh báo an toàn",
                            subject="Cảnh báo", reference=f"notification-{n}") for n in range(1, count + 1)]


def secret_forms(password: str) -> list[str]:
    """The password as it could leak: plain, or base64 as AUTH PLAIN / LOGIN carry it."""
    return [password, base64.b64encode(password.encode()).decode(),
            base64.b64encode(f"\0{USER}\0{password}".encode()).decode()]


@pytest.fixture
def starttls_relay(certificate: tuple[Path, Path]) -> Iterator[SmtpSink]:
    with SmtpSink(security="starttls", certificate=certificate, credentials={USER: PASSWORD}) as sink:
        yield sink


@pytest.fixture
def implicit_tls_relay(certificate: tuple[Path, Path]) -> Iterator[SmtpSink]:
    with SmtpSink(security="tls", certificate=certificate, credentials={USER: PASSWORD}) as sink:
        yield sink


# --- sending over TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_then_auth_then_pipelined_sends(certificate: tuple[Path, Path], mechanism: str) -> None:
    excluded = tuple(m for m in ("PLAIN", "LOGIN") if m != mechanism)  # the relay offers only this one
    with SmtpSink(security="starttls", certificate=certificate, credentials={USER: PASSWORD},
                  auth_mechanisms_excluded=excluded) as relay:
        channel = EmailChannel(settings_for(relay, security="starttls", ca_file=certificate[0], username=USER,
                                            password=PASSWORD))
        try:
            outcomes = channel.send_many(messages(3))
        finally:
            channel.close()
        received = relay.wait_for(3)
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    assert [mail.envelope_to for mail in received] == [["kh1@khachhang.vn"], ["kh2@khachhang.vn"], ["kh3@khachhang.vn"]]
    assert relay.logins == [(USER, mechanism)]
    assert relay.sessions == 2  # EHLO before and after STARTTLS, on one connection: the batch reused it


def test_implicit_tls_with_auth(implicit_tls_relay: SmtpSink, certificate: tuple[Path, Path]) -> None:
    channel = EmailChannel(settings_for(implicit_tls_relay, security="tls", ca_file=certificate[0], username=USER,
                                        password=PASSWORD))
    try:
        channel.check()
        (outcome,) = channel.send_many(messages(1))
    finally:
        channel.close()
    assert isinstance(outcome, SendResult) and outcome.provider_message_ids == ["notification-1@example.vn"]
    assert implicit_tls_relay.wait_for(1)[0].headers["Message-ID"] == "<notification-1@example.vn>"
    assert implicit_tls_relay.logins[0][0] == USER


def test_the_old_starttls_flag_still_means_starttls(starttls_relay: SmtpSink, certificate: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_SMTP__STARTTLS", "true")
    reset_settings()
    try:
        smtp = Settings().smtp
    finally:
        reset_settings()
    assert smtp.security == "starttls" and smtp.starttls
    assert SmtpSettings(starttls=False).security == "none"
    with pytest.raises(ValueError, match="remove starttls"):
        SmtpSettings(starttls=True, security="tls")
    channel = EmailChannel(smtp.model_copy(update={"port": starttls_relay.port, "ca_file": certificate[0],
                                                   "username": USER, "password": SecretStr(PASSWORD)}))
    try:
        assert isinstance(channel.send_many(messages(1))[0], SendResult)
    finally:
        channel.close()


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_wrong_password_stops_the_route_in_one_line_without_the_password(
        certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture, mechanism: str) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the peer's too
    excluded = tuple(m for m in ("PLAIN", "LOGIN") if m != mechanism)
    with SmtpSink(security="starttls", certificate=certificate, credentials={USER: PASSWORD},
                  auth_mechanisms_excluded=excluded) as starttls_relay:
        channel = EmailChannel(settings_for(starttls_relay, security="starttls", ca_file=certificate[0],
                                            username=USER, password=WRONG))
        try:
            with pytest.raises(RouteUnreachableError) as caught:
                channel.check()
            (outcome,) = channel.send_many(messages(1))
        finally:
            channel.close()
        assert starttls_relay.messages() == [] and starttls_relay.failed_logins >= 1
    error = caught.value
    assert "login refused" in str(error) and "535" in str(error) and "NOTIFIER_SMTP__PASSWORD" in str(error)
    assert "\n" not in str(error)
    assert isinstance(outcome, RouteUnreachableError)  # the message waits for the route; it is not failed
    shown = "\n".join([str(error), str(outcome), caplog.text])
    for form in secret_forms(WRONG):
        assert form not in shown


def test_a_wrong_password_halts_campaign_run_with_one_line(starttls_relay: SmtpSink, certificate: tuple[Path, Path],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(smtp=settings_for(starttls_relay, security="starttls", ca_file=certificate[0],
                                          username=USER, password=WRONG))
    with pytest.raises(CampaignHalted) as caught:
        open_checked_runtime(settings, ["email"], ["email"])
    message = str(caught.value)
    assert message.startswith("cannot reach the mail relay") and "login refused" in message
    assert "\n" not in message
    for form in secret_forms(WRONG):
        assert form not in message and form not in caplog.text


def test_a_relay_without_starttls_is_refused_never_used_in_clear(certificate: tuple[Path, Path]) -> None:
    # This relay would even take the password in clear; the channel must not give it the chance.
    with SmtpSink(credentials={USER: PASSWORD}, auth_require_tls=False) as relay:
        channel = EmailChannel(settings_for(relay, security="starttls", ca_file=certificate[0], username=USER,
                                            password=PASSWORD))
        try:
            (outcome,) = channel.send_many(messages(1))
        finally:
            channel.close()
        assert relay.logins == [] and relay.failed_logins == 0 and relay.messages() == []
    assert isinstance(outcome, RouteUnreachableError)
    assert "does not offer STARTTLS" in str(outcome) and 'smtp.security = "starttls"' in str(outcome)


def test_an_untrusted_certificate_is_refused(starttls_relay: SmtpSink, implicit_tls_relay: SmtpSink) -> None:
    for relay, security in ((starttls_relay, "starttls"), (implicit_tls_relay, "tls")):
        channel = EmailChannel(settings_for(relay, security=security, username=USER, password=PASSWORD))
        try:
            with pytest.raises(RouteUnreachableError, match="not trusted.*smtp.ca_file"):
                channel.check()
        finally:
            channel.close()
        assert relay.logins == [] and relay.messages() == []


def test_implicit_tls_against_a_plain_relay_fails_the_handshake() -> None:
    with SmtpSink() as relay:
        channel = EmailChannel(settings_for(relay, security="tls"))
        try:
            with pytest.raises(RouteUnreachableError, match="TLS handshake failed"):
                channel.check()
        finally:
            channel.close()


def test_unverified_tls_is_possible_for_a_lab_relay_in_development(starttls_relay: SmtpSink) -> None:
    channel = EmailChannel(settings_for(starttls_relay, security="starttls", tls_verify=False, username=USER,
                                        password=PASSWORD), plain_credentials_allowed=True)
    try:
        assert isinstance(channel.send_many(messages(1))[0], SendResult)
    finally:
        channel.close()


def test_development_may_log_in_over_a_plain_connection() -> None:
    with SmtpSink(credentials={USER: PASSWORD}, auth_require_tls=False) as relay:
        channel = EmailChannel(settings_for(relay, username=USER, password=PASSWORD), plain_credentials_allowed=True)
        try:
            assert isinstance(channel.send_many(messages(1))[0], SendResult)
        finally:
            channel.close()
        assert relay.logins and relay.logins[0][0] == USER


def test_credentials_over_a_plain_or_unverified_connection_are_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match='smtp.username is set but smtp.security is "none".*NOTIFIER_SMTP__SECURITY'):
        EmailChannel(SmtpSettings(username=USER, password=PASSWORD))
    with pytest.raises(ConfigError, match="smtp.tls_verify is false.*smtp.ca_file"):
        EmailChannel(SmtpSettings(username=USER, password=PASSWORD, security="tls", tls_verify=False))
    with pytest.raises(ConfigError, match="smtp.security"):
        Settings(environment="production", smtp=SmtpSettings(username=USER, password=PASSWORD)).check_secrets()
    EmailChannel(SmtpSettings(security="starttls")).close()  # no username: nothing to protect, no refusal
    Settings(environment="development", smtp=SmtpSettings(username=USER)).check_secrets()


def test_a_missing_ca_file_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="smtp.ca_file"):
        EmailChannel(SmtpSettings(security="starttls", ca_file=tmp_path / "missing.pem"))


def test_cli_refuses_plain_credentials_outside_development_in_one_line(tmp_path: Path) -> None:
    """`campaign run` outside development, with a username and security "none": one `error:` line
    naming the settings, exit 2, no password shown, before any database work."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("NOTIFIER_")}
    env.update({"NOTIFIER_ENVIRONMENT": "production", "NOTIFIER_SMTP__USERNAME": USER,
                "NOTIFIER_SMTP__PASSWORD": PASSWORD, "NOTIFIER_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}"})
    result = subprocess.run([sys.executable, "-m", "cli", "campaign", "run", "1"], cwd=Path(__file__).parent.parent,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "smtp.username" in lines[0] and "smtp.security" in lines[0]
    assert PASSWORD not in result.stderr + result.stdout
