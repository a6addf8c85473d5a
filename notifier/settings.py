"""One settings object, read lazily from `config/default.toml`, an optional extra TOML file and
`NOTIFIER_*` environment variables (nested with `__`, e.g. `NOTIFIER_SMPP__PORT=2775`).

Precedence, highest first: environment, `NOTIFIER_CONFIG` file, `config/default.toml`, code defaults.
Nothing is read at import time: call `get_settings()`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from notifier.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config" / "default.toml"
LOCAL_TIMEZONE = "Asia/Ho_Chi_Minh"


class OperatorSettings(BaseModel):
    """Who the warning comes from: shown to subscribers so they can verify it is genuine."""

    name: str = "Nhà mạng"
    hotline: str = "18001091"
    website: str = "https://example.vn"
    care_email: str = "hotro@example.vn"
    authority_name: str = "Cục An toàn thông tin"
    scan_portal: str = "https://khonggianmang.vn"


class SmppSettings(BaseModel):
    """The operator's SMSC (or the loopback test peer)."""

    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "notifier"
    password: SecretStr = SecretStr("")
    system_type: str = ""
    source_addr: str = "NHAMANG"
    source_addr_ton: int = 5  # alphanumeric brandname
    source_addr_npi: int = 0
    dest_addr_ton: int = 1  # international
    dest_addr_npi: int = 1  # E.164
    registered_delivery: int = 1  # ask for a receipt
    window: int = 10  # submits awaiting submit_sm_resp at once
    submit_timeout_seconds: float = 10.0
    connect_timeout_seconds: float = 5.0
    enquire_link_seconds: float = 30.0


class SmtpSettings(BaseModel):
    """The operator's mail relay (or the loopback aiosmtpd peer)."""

    host: str = "127.0.0.1"
    port: int = 2525
    sender: str = "canhbao@example.vn"
    sender_name: str = "Nhà mạng - Cảnh báo an toàn thông tin"
    username: str = ""
    password: SecretStr = SecretStr("")
    starttls: bool = False
    timeout_seconds: float = 15.0
    # True when the server we hand mail to is the recipients' own mail exchanger (or a relay whose
    # acceptance the operator takes as proof): its "250" then marks the e-mail delivered. False
    # leaves e-mails `sent` until bounce/DSN tracking (roadmap) says more.
    accepted_means_delivered: bool = True


class DispatchSettings(BaseModel):
    """How fast and how carefully notifications leave."""

    worker_threads: int = 4
    sms_per_second: float = 50.0
    email_per_second: float = 20.0
    sms_diacritics: bool = True  # False: send the no-diacritics variant (fewer parts, GSM-7)
    send_lease_seconds: int = 120  # a `sending` row older than this with no live owner is orphaned
    unknown_resend_after_seconds: int = 900  # an `unknown` row with no receipt by then is sent again
    receipt_wait_seconds: float = 30.0  # `campaign run` waits this long for outstanding receipts
    max_retries: int = 5


class Settings(BaseSettings):
    """Everything configurable. Embedded mode unless a database/broker URL says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="NOTIFIER_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    environment: str = "development"
    database_url: str = "sqlite:///./var/notifier.db"
    broker_url: str | None = None  # redis://… switches to the Redis broker
    broker_namespace: str = "notifier"
    timezone: str = LOCAL_TIMEZONE
    templates_dir: Path = PROJECT_ROOT / "templates"
    default_language: str = "vi"
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    smpp: SmppSettings = Field(default_factory=SmppSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_files = [DEFAULT_CONFIG_FILE]
        extra = os.environ.get("NOTIFIER_CONFIG")
        if extra:
            toml_files.append(Path(extra))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_files),
        )

    @property
    def embedded(self) -> bool:
        """True when no external broker is configured: the worker runs inside the CLI process."""
        return not self.broker_url

    def check_secrets(self) -> None:
        """Refuse empty or placeholder credentials outside development."""
        if self.environment == "development":
            return
        for label, secret in (("smpp.password", self.smpp.password),):
            value = secret.get_secret_value()
            if not value or value.lower() in {"changeme", "secret", "password"}:
                raise ConfigError(f"{label} must be set (NOTIFIER_{label.upper().replace('.', '__')})")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the demo change the environment)."""
    get_settings.cache_clear()
