"""Settings precedence and safety; the migrations match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from notifier.db import current_revision, get_engine, upgrade
from notifier.errors import ConfigError
from notifier.settings import Settings, SmppSettings, get_settings, reset_settings


def test_environment_overrides_toml_and_nested_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('[operator]\nname = "VNPT"\nhotline = "18001091"\n[smpp]\nport = 2776\n', encoding="utf-8")
    monkeypatch.setenv("NOTIFIER_CONFIG", str(extra))
    monkeypatch.setenv("NOTIFIER_SMPP__PORT", "2999")
    monkeypatch.setenv("NOTIFIER_BROKER_URL", "redis://127.0.0.1:6379/3")
    reset_settings()
    try:
        settings = get_settings()
        assert settings.operator.name == "VNPT"  # from the site file
        assert settings.smpp.port == 2999  # the environment wins over files
        assert settings.smtp.sender == "canhbao@example.vn"  # config/default.toml
        assert not settings.embedded
    finally:
        reset_settings()


def test_production_refuses_an_empty_smpp_password() -> None:
    with pytest.raises(ConfigError, match="smpp.password"):
        Settings(environment="production").check_secrets()
    Settings(environment="production", smpp=SmppSettings(password="s3cret-from-env")).check_secrets()
    Settings(environment="development").check_secrets()


def test_migrations_create_exactly_the_models(database_url: str) -> None:
    assert current_revision(database_url) == "0001"
    upgrade(database_url)  # again: nothing to do, no error
    with get_engine(database_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []
