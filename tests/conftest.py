"""Shared fixtures: real databases (SQLite and PostgreSQL), real Redis, real protocol peers.

Each test run makes its own PostgreSQL database and drops it; Redis tests use their own db number
and key namespace and delete only those keys. Every peer listens on 127.0.0.1 and is stopped here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from notifier.db import dispose_engines, upgrade
from notifier.peers.smsc import RESPONSE_TIMEOUT_SECONDS, SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.settings import DispatchSettings, Settings, SmppSettings, SmtpSettings, reset_settings

POSTGRES_ADMIN_URL = os.environ.get("NOTIFIER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("NOTIFIER_TEST_REDIS", "redis://127.0.0.1:6379/11")

for _name in [n for n in os.environ if n.startswith("NOTIFIER_") and not n.startswith("NOTIFIER_TEST_")]:
    del os.environ[_name]  # the developer's own configuration must not leak into tests


@pytest.fixture(scope="session")
def postgres_server() -> str:
    with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5) as connection:
        connection.execute("SELECT 1")
    return POSTGRES_ADMIN_URL


@contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    """A migrated database of our own on the shared server, dropped afterwards."""
    name = f"notifier_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        upgrade(f"{base}/{name}")
        yield f"{base}/{name}"
    finally:
        dispose_engines()
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _sqlite_database(directory: Path) -> Iterator[str]:
    url = f"sqlite:///{directory / 'notifier.db'}"
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind the product supports."""
    if request.param == "sqlite":
        with _sqlite_database(tmp_path) as url:
            yield url
    else:
        with _postgres_database(request.getfixturevalue("postgres_server")) as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with _sqlite_database(tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    with _postgres_database(postgres_server) as url:
        yield url


@pytest.fixture
def smsc(tmp_path: Path) -> Iterator[SmscPeer]:
    """A real SMPP server process on loopback that acknowledges and sends receipts."""
    with SmscPeer(tmp_path / "smsc.jsonl", fail_suffix="99") as peer:
        yield peer


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def make_settings(database_url: str, *, smsc: SmscPeer | None = None, smtp: SmtpSink | None = None,
                  **overrides: object) -> Settings:
    """Settings for a test: its database, its peers, short waits."""
    dispatch = DispatchSettings(**{"receipt_wait_seconds": 5, "sms_per_second": 1000, "email_per_second": 1000,
                                   "unknown_resend_after_seconds": 5, "requeue_after_seconds": 5,
                                   **overrides.pop("dispatch", {})})  # type: ignore[dict-item]
    return Settings(
        database_url=database_url,
        # The loopback SMSC offers a dead session's receipt elsewhere after RESPONSE_TIMEOUT_SECONDS.
        smpp=SmppSettings(port=smsc.port if smsc else 1, system_id="notifier-test",
                          receipt_redelivery_seconds=RESPONSE_TIMEOUT_SECONDS + 2),
        smtp=SmtpSettings(port=smtp.port if smtp else 1),
        dispatch=dispatch,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
def cli_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The `notifier` command pointed at a fresh database of each kind, printing tables 200 columns
    wide (a care agent's terminal, not the test runner's 80)."""
    import cli
    from rich.console import Console

    monkeypatch.setenv("NOTIFIER_DATABASE_URL", database_url)
    monkeypatch.setattr(cli, "out", Console(width=200))
    reset_settings()
    yield database_url
    reset_settings()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis db of our own; yields the URL and deletes the test namespace's keys afterwards."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.ping()
    yield REDIS_TEST_URL
    client.close()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    namespace = f"notifier-test-{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{namespace}*"):
        client.delete(key)
    client.close()
