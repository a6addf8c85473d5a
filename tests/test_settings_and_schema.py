"""Settings precedence and safety; the migrations match the models."""

from __future__ import annotations

from pathlib import Path

import phonenumbers
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel
from typer.testing import CliRunner

from cli import app
from notifier.db import alembic_config, current_revision, get_engine, upgrade
from notifier.errors import ConfigError
from notifier.settings import (
    PLACEHOLDER_HOTLINE, PLACEHOLDERS, OperatorSettings, Settings, SmppSettings, get_settings, reset_settings,
)


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
    _site_settings(environment="production", smpp=SmppSettings(password="s3cret-from-env",
                                                               source_addr="THUNGHIEM")).check_secrets()
    Settings(environment="development").check_secrets()


def test_migrations_create_exactly_the_models(database_url: str) -> None:
    assert current_revision(database_url) == "0016"
    upgrade(database_url)  # again: nothing to do, no error
    with get_engine(database_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_every_migration_downgrades_to_nothing_and_upgrades_again(database_url: str) -> None:
    """Rolling a release back runs the packaged migrations' downgrades (alembic, through
    `notifier.db.alembic_config`): each must undo its upgrade, on both backends, down to an empty
    schema, and the upgrades must then build it all again."""
    command.downgrade(alembic_config(database_url), "base")
    engine = get_engine(database_url)
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(database_url) is None
    upgrade(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


# --- the placeholder operator identity (issue 5, item 2) ----------------------------------------

SITE_IDENTITY = {  # a made-up operator on a reserved domain, as a deployment would configure it
    "NOTIFIER_OPERATOR__NAME": "Mạng Thử Nghiệm",
    "NOTIFIER_OPERATOR__HOTLINE": "1800 1234",
    "NOTIFIER_OPERATOR__WEBSITE": "https://thunghiem.example",
    "NOTIFIER_OPERATOR__CARE_EMAIL": "hotro@thunghiem.example",
    "NOTIFIER_SMPP__SOURCE_ADDR": "THUNGHIEM",
    "NOTIFIER_SMPP__PASSWORD": "s3cret-from-env",
}


def _site_settings(**values: object) -> Settings:
    """Settings of a deployment that replaced every placeholder (init values win over files)."""
    operator = OperatorSettings(name="Mạng Thử Nghiệm", hotline="1800 1234", website="https://thunghiem.example",
                                care_email="hotro@thunghiem.example")
    return Settings(**({"operator": operator} | values))


def test_shipped_defaults_are_exactly_the_placeholders_the_check_knows() -> None:
    settings = Settings()  # config/default.toml + code defaults, as shipped
    assert settings.operator.hotline == PLACEHOLDER_HOTLINE
    assert settings.placeholder_settings() == list(PLACEHOLDERS)
    assert "18001091" not in {settings.operator.hotline, *PLACEHOLDERS.values()}  # VNPT's real hotline


def test_placeholder_hotline_is_no_dialable_number() -> None:
    number = phonenumbers.parse(PLACEHOLDER_HOTLINE, "VN")
    assert not phonenumbers.is_valid_number(number)
    assert PLACEHOLDER_HOTLINE.startswith("00")  # "00" opens an international call; no country code is 0


def test_production_names_every_placeholder_and_its_variable_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(environment="production", smpp=SmppSettings(password="s3cret-from-env")).check_secrets()
    message = str(caught.value)
    assert "\n" not in message
    for label, variable in (("operator.name", "NOTIFIER_OPERATOR__NAME"),
                            ("operator.hotline", "NOTIFIER_OPERATOR__HOTLINE"),
                            ("operator.website", "NOTIFIER_OPERATOR__WEBSITE"),
                            ("operator.care_email", "NOTIFIER_OPERATOR__CARE_EMAIL"),
                            ("smpp.source_addr", "NOTIFIER_SMPP__SOURCE_ADDR")):
        assert f"{label} ({variable})" in message
    assert "smpp.password" not in message and "s3cret" not in message


def test_production_names_only_what_is_still_a_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SITE_IDENTITY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOTIFIER_ENVIRONMENT", "production")
    Settings().check_secrets()  # everything replaced: may send
    monkeypatch.setenv("NOTIFIER_OPERATOR__HOTLINE", "0000 0000")  # the placeholder, spelt differently
    monkeypatch.setenv("NOTIFIER_OPERATOR__WEBSITE", "http://EXAMPLE.vn/")
    monkeypatch.setenv("NOTIFIER_SMPP__PASSWORD", "")
    with pytest.raises(ConfigError) as caught:
        Settings().check_secrets()
    message = str(caught.value)
    assert "smpp.password (NOTIFIER_SMPP__PASSWORD)" in message
    assert "operator.hotline (NOTIFIER_OPERATOR__HOTLINE), operator.website (NOTIFIER_OPERATOR__WEBSITE)" in message
    assert not any(label in message for label in ("operator.name", "care_email", "source_addr"))


def test_an_empty_identity_setting_counts_as_a_placeholder() -> None:
    settings = _site_settings(environment="staging", smpp=SmppSettings(password="x1", source_addr="  "))
    assert settings.placeholder_settings() == ["smpp.source_addr"]
    with pytest.raises(ConfigError, match=r"smpp\.source_addr \(NOTIFIER_SMPP__SOURCE_ADDR\)"):
        settings.check_secrets()


def test_development_sends_with_the_placeholders() -> None:
    Settings(environment="development").check_secrets()


def test_campaign_run_refuses_before_sending_with_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_ENVIRONMENT", "production")
    monkeypatch.setenv("NOTIFIER_SMPP__PASSWORD", "s3cret-from-env")
    monkeypatch.setenv("NOTIFIER_DATABASE_URL", "sqlite:///./nonexistent-never-opened.db")
    reset_settings()
    try:
        result = CliRunner().invoke(app, ["campaign", "run", "1", "--json"])  # --json: no progress bar
    finally:
        reset_settings()
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to send in environment 'production'")
    assert "operator.hotline (NOTIFIER_OPERATOR__HOTLINE)" in lines[0]
    assert not Path("nonexistent-never-opened.db").exists()

