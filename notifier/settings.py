"""One settings object, read lazily from `config/default.toml`, an optional extra TOML file and
`NOTIFIER_*` environment variables (nested with `__`, e.g. `NOTIFIER_SMPP__PORT=2775`).

Precedence, highest first: environment, `NOTIFIER_CONFIG` file, `config/default.toml`, code defaults.
Nothing is read at import time: call `get_settings()`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from notifier.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout (site-packages once installed)


def shipped_dir(name: str) -> Path:
    """Where the shipped `templates/` or `config/` tree is.

    The repository keeps both at the top; a wheel carries them inside the package as
    `notifier/_templates` and `notifier/_config` (pyproject.toml maps them there, so nothing named
    `templates` or `config` lands in site-packages). Prefer the packaged copy, else the checkout's
    (a checkout or an editable install has no packaged copy).
    """
    packaged = resources.files("notifier").joinpath(f"_{name}")
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return PROJECT_ROOT / name


TEMPLATES_DIR = shipped_dir("templates")
DEFAULT_CONFIG_FILE = shipped_dir("config") / "default.toml"
LOCAL_TIMEZONE = "Asia/Ho_Chi_Minh"
Port = Annotated[int, Field(ge=1, le=65535)]

# The operator identity shipped for development, in one place: the defaults below use these, and
# `check_secrets` refuses to send outside development while any is still in force. Each is plainly
# not a real party: "the network operator", a hotline that no network can route (in Viet Nam "00"
# opens an international number and no country code starts with 0), example.vn addresses (a
# placeholder by name, though not a reserved domain like `.example`) and the generic brandname.
PLACEHOLDER_OPERATOR_NAME = "Nhà mạng"
PLACEHOLDER_HOTLINE = "00000000"  # 8 digits, as long as a real 1800 xxxx line: SMS lengths stay true
PLACEHOLDER_WEBSITE = "https://example.vn"
PLACEHOLDER_CARE_EMAIL = "hotro@example.vn"
PLACEHOLDER_BRANDNAME = "NHAMANG"
PLACEHOLDERS: dict[str, str] = {
    "operator.name": PLACEHOLDER_OPERATOR_NAME,
    "operator.hotline": PLACEHOLDER_HOTLINE,
    "operator.website": PLACEHOLDER_WEBSITE,
    "operator.care_email": PLACEHOLDER_CARE_EMAIL,
    "smpp.source_addr": PLACEHOLDER_BRANDNAME,
}
WEAK_SECRETS = frozenset({"changeme", "secret", "password"})


class OperatorSettings(BaseModel):
    """Who the warning comes from: shown to subscribers so they can verify it is genuine."""

    name: str = PLACEHOLDER_OPERATOR_NAME
    hotline: str = PLACEHOLDER_HOTLINE
    website: str = PLACEHOLDER_WEBSITE
    care_email: str = PLACEHOLDER_CARE_EMAIL
    authority_name: str = "Cục An toàn thông tin"
    scan_portal: str = "https://khonggianmang.vn"


class SmppSettings(BaseModel):
    """The operator's SMSC (or the loopback test peer)."""

    host: str = "127.0.0.1"
    port: Port = 2775
    system_id: str = "notifier"
    password: SecretStr = SecretStr("")
    system_type: str = ""
    source_addr: str = PLACEHOLDER_BRANDNAME
    source_addr_ton: int = 5  # alphanumeric brandname
    source_addr_npi: int = 0
    dest_addr_ton: int = 1  # international
    dest_addr_npi: int = 1  # E.164
    registered_delivery: int = 1  # ask for a receipt
    window: PositiveInt = 10  # submits awaiting submit_sm_resp at once
    submit_timeout_seconds: PositiveFloat = 10.0
    connect_timeout_seconds: PositiveFloat = 5.0
    enquire_link_seconds: PositiveFloat = 30.0
    # The zone the SMSC writes receipts' `submit date`/`done date` in (YYMMDDhhmm, no zone of their own).
    timezone: str = LOCAL_TIMEZONE
    # "transceiver": one bind for everything; "transmitter_receiver": a transmitter bind for
    # submits and a receiver bind for receipts and replies (SMSCs that offer no transceiver).
    bind_mode: Literal["transceiver", "transmitter_receiver"] = "transceiver"
    tls: bool = False  # SMPP over TLS to the SMSC (both binds); certificate checked against tls_ca_file
    tls_ca_file: Path | None = None  # PEM of the CA that signed the SMSC's certificate (default: system CAs)
    tls_verify: bool = True  # False skips certificate and host-name checks: a lab SMSC only
    # A long subscriber reply still missing a part this long after its first part is stored as it is.
    reply_timeout_seconds: PositiveFloat = 10.0
    # How long the SMSC may keep a receipt it sent to a session that died before answering it (its
    # deliver_sm response timer) before it offers the receipt to another bind: an `unknown` SMS is
    # resent only after a session has heard the SMSC this long after the row became unknown.
    receipt_redelivery_seconds: PositiveFloat = 60.0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        """Refuse a misspelt zone at start-up, not in the receipt reader thread hours later."""
        from notifier.identifiers import get_zone

        get_zone(value)
        return value


class SmtpSettings(BaseModel):
    """The operator's mail relay (or the loopback aiosmtpd peer), how the session is secured, and
    the shared secret that lets an MTA post bounces to `notifier web`.

    `security`: "none" (plain SMTP), "starttls" (plain connect, then STARTTLS before anything
    else; a relay that does not offer it is refused, never used in clear) or "tls" (implicit TLS
    from the first byte, "SMTPS", usually port 465). The old `starttls = true` still reads as
    `security = "starttls"`. Certificates are verified against the system's CAs, or `ca_file`.
    """

    host: str = "127.0.0.1"
    port: Port = 2525
    sender: str = "canhbao@example.vn"
    sender_name: str = "Nhà mạng - Cảnh báo an toàn thông tin"
    security: Literal["none", "starttls", "tls"] = "none"
    ca_file: Path | None = None  # PEM bundle of the CA(s) that signed the relay's certificate
    # False skips certificate and host-name checks (a lab relay only): outside development,
    # credentials are then refused, since anyone on the path could pose as the relay.
    tls_verify: bool = True
    username: str = ""
    password: SecretStr = SecretStr("")  # NOTIFIER_SMTP__PASSWORD; never in a file
    timeout_seconds: PositiveFloat = 15.0
    # True when the server we hand mail to is the recipients' own mail exchanger (or a relay whose
    # acceptance the operator takes as proof): its "250" then marks the e-mail delivered, and a
    # bounce arriving later moves it to undelivered. False leaves e-mails `sent` until a DSN says.
    accepted_means_delivered: bool = True
    # The X-Notifier-Token an MTA sends with each bounce it posts to `notifier web` (POST
    # /bounces/dsn); empty: that endpoint refuses everything. NOTIFIER_SMTP__BOUNCE_TOKEN.
    bounce_token: SecretStr = SecretStr("")

    @model_validator(mode="before")
    @classmethod
    def _old_starttls_flag(cls, data: Any) -> Any:
        """`starttls = true|false` (before `security` existed) means "starttls" | "none"; given
        together with a `security` that says otherwise it is refused rather than guessed."""
        if not isinstance(data, dict) or "starttls" not in data:
            return data
        data = dict(data)
        wanted = "starttls" if TypeAdapter(bool).validate_python(data.pop("starttls")) else "none"
        given = data.get("security")
        if given is None:
            data["security"] = wanted
        elif given != wanted:
            raise ValueError(f"the old setting starttls (= {wanted!r}) contradicts security = {given!r}: "
                             "remove starttls")
        return data

    @property
    def starttls(self) -> bool:
        """The old name, read-only: True when `security` is "starttls"."""
        return self.security == "starttls"

    def plain_credential_problems(self) -> list[str]:
        """What would expose the relay password outside development: a username with no TLS, or
        with TLS whose certificate is not checked (an impostor relay would read it just the same)."""
        if not self.username:
            return []
        if self.security == "none":
            return [f'smtp.username is set but smtp.security is "none": credentials would cross the network '
                    f'in clear; set smtp.security = "starttls" or "tls" ({env_variable("smtp.security")})']
        if not self.tls_verify:
            return ["smtp.username is set but smtp.tls_verify is false: an impostor relay could read the "
                    f"password; trust the relay's CA with smtp.ca_file ({env_variable('smtp.ca_file')}) instead"]
        return []


class DispatchSettings(BaseModel):
    """How fast and how carefully notifications leave."""

    worker_threads: PositiveInt = 4
    sms_per_second: PositiveFloat = 50.0
    email_per_second: PositiveFloat = 20.0
    # The two rates above are each route's total: with a broker (Redis) every worker on every machine
    # shares them. Pacing stays this fraction under them, so network jitter never shows the provider
    # a second over its agreed rate (it counts on its own clock).
    rate_margin: Annotated[float, Field(ge=0.0, le=0.5)] = 0.02
    sms_diacritics: bool = True  # False: send the no-diacritics variant (fewer parts, GSM-7)
    send_lease_seconds: PositiveInt = 120  # a `sending` row older than this with no live owner is orphaned
    unknown_resend_after_seconds: PositiveInt = 900  # an `unknown` row with no receipt by then is sent again
    receipt_wait_seconds: NonNegativeFloat = 30.0  # `campaign run` waits this long for outstanding receipts
    # How long a message bounced by an unreachable route waits in the broker before it is tried
    # again (the route watch re-queues the route's rows as soon as it answers).
    route_down_seconds: PositiveFloat = 30.0
    # An outage is a pause: the embedded `campaign run` waits this long (or until the campaign's
    # `ends_at`, whichever comes first) for a route it needs, then stops with one line, rows queued.
    route_outage_max_seconds: PositiveFloat = 86400.0
    # A `queued` row handed to the broker this long ago and still queued (its message lost with a
    # Redis restart, skipped, expired) is handed to the broker again by maintenance.
    requeue_after_seconds: PositiveFloat = 60.0
    max_retries: NonNegativeInt = 5
    voice_per_second: PositiveFloat = 1.0  # calls started per second (Twilio's default CPS is 1)


class IdentitySettings(BaseModel):
    """How feed items are resolved to accounts (formats.md, "IP assignments")."""

    # Clocks disagree (the feed's sensor, the BRAS, the NAT box): every assignment interval is
    # widened by this much at both ends, so an event seconds after a session's recorded end still
    # finds it, and one seconds from a hand-over finds both holders and is ambiguous, never guessed.
    clock_skew_seconds: NonNegativeInt = 60
    # A RADIUS session with no Stop counts this long after the last record that showed it alive,
    # unless a later session on the same address closes it first. (A NAT block without release
    # stays open until the next allocation of its public address and first port.)
    max_session_hours: PositiveFloat = 24.0
    # Assignments and NAT blocks that ended this long ago are deleted by `notifier assignments purge`.
    retention_days: PositiveInt = 180
    # A new sighting of a threat an account was already warned about this recently is attached to
    # that warning instead of sending another.
    cooldown_days: NonNegativeFloat = 7.0


class TwilioSettings(BaseModel):
    """Twilio's REST API (SMS when `sms_provider = "twilio"`, and voice calls), or the loopback
    peer (`python -m notifier.peers.twilio`) when `api_base_url` points at it.

    `public_base_url` is where Twilio reaches `notifier web` (behind the operator's proxy): status
    callbacks and TwiML URLs are built from it, and callback signatures are checked against it,
    because Twilio signs the URL it called, not the one the proxy hands us."""

    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")  # NOTIFIER_TWILIO__AUTH_TOKEN; never in a file
    from_number: str = ""  # E.164 sender and caller id; SMS may use messaging_service_sid instead
    messaging_service_sid: str = ""
    api_base_url: str = ""  # empty: Twilio's own API; the loopback peer: http://127.0.0.1:PORT
    # Twilio's region / edge (e.g. "ie1" / "dublin"); read from here only, never from TWILIO_* variables.
    region: str = ""
    edge: str = ""
    public_base_url: str = "http://127.0.0.1:8080"
    timeout_seconds: PositiveFloat = 15.0
    concurrency: PositiveInt = 4  # API requests in flight at once per channel (each takes ~0.1-0.3 s)


class VoiceSettings(BaseModel):
    """How a warning call sounds and what its keys do (TwiML served by `notifier web`)."""

    voice: str = "Google.vi-VN-Wavenet-A"  # Google's vi-VN voices: Standard/Wavenet A-D (Polly has none)
    language: str = "vi-VN"
    en_voice: str = "Google.en-US-Wavenet-C"  # accounts whose language is `en`
    en_language: str = "en-US"
    care_number: str = ""  # key 9 dials it (E.164); empty: key 9 says the hotline instead
    ring_timeout_seconds: Annotated[int, Field(ge=5, le=600)] = 30
    gather_timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 8


class SubscriberSettings(BaseModel):
    """How the operator's customer export is read (formats.md, "Subscribers")."""

    # The export's own header = notifier's column name (`MA_KH = "account_id"`): configured once in
    # `[subscribers.columns]`, used by every `subscribers import` that gives no `--column-map`.
    columns: dict[str, str] = Field(default_factory=dict)


class BillingSettings(BaseModel):
    """The hand-over to the bill-print / e-invoice system (`notifier billing export`)."""

    # The TrueType font of the PDF proof. Empty: the DejaVu Sans shipped in the package, else the
    # usual system places (`channels.billing.FONT_CANDIDATES`). reportlab's built-in fonts have no
    # Vietnamese glyphs: a font that lacks them is refused, not printed as boxes.
    font_path: Path | None = None
    output_dir: Path = Path("var/billing")  # where `billing export` writes, unless --out says
    page_size: Literal["A4", "A5"] = "A5"  # the proof: one insert per page


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
    templates_dir: Path = TEMPLATES_DIR
    default_language: str = "vi"
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    smpp: SmppSettings = Field(default_factory=SmppSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    subscribers: SubscriberSettings = Field(default_factory=SubscriberSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    sms_provider: Literal["smpp", "twilio"] = "smpp"  # which adapter channel "sms" uses
    # Leak source slug (as feeds write it) → how notices name it; a slug not listed prints as
    # itself, reduced to a safe label. `[source_names]` in config/default.toml, per operator in theirs.
    source_names: dict[str, str] = Field(default_factory=dict)

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
        """Before sending, outside development: refuse an empty or weak SMPP password and the
        shipped placeholder identity (subscribers would get a warning from "Nhà mạng" with a
        hotline nobody answers and could not tell it from a scam). One ConfigError names every
        setting to fix and its variable, so a deployment is corrected in one go."""
        if self.environment == "development":
            return
        problems: list[str] = []
        password = self.smpp.password.get_secret_value()
        if not password or password.lower() in WEAK_SECRETS:
            problems.append(f"set smpp.password ({env_variable('smpp.password')})")
        problems += self.smtp.plain_credential_problems()
        placeholders = self.placeholder_settings()
        if placeholders:
            problems.append("replace the shipped placeholders of "
                            + ", ".join(f"{label} ({env_variable(label)})" for label in placeholders))
        if problems:
            raise ConfigError(f"refusing to send in environment {self.environment!r}: " + "; ".join(problems))

    def placeholder_settings(self) -> list[str]:
        """The identity settings (dotted names) still empty or equal to the shipped placeholder,
        compared ignoring case, spacing, punctuation and URL scheme (`0000 0000` and
        `http://EXAMPLE.vn/` are the same placeholders)."""
        found = []
        for label, placeholder in PLACEHOLDERS.items():
            section, field = label.split(".")
            value = _comparable(str(getattr(getattr(self, section), field)))
            if not value or value == _comparable(placeholder):
                found.append(label)
        return found


def env_variable(label: str) -> str:
    """'smpp.source_addr' → 'NOTIFIER_SMPP__SOURCE_ADDR', the variable that sets it."""
    return "NOTIFIER_" + label.upper().replace(".", "__")


def _comparable(value: str) -> str:
    """NFC, case-folded, without URL scheme, spaces or punctuation: two spellings of one value
    compare equal."""
    without_scheme = re.sub(r"^\s*[a-z][a-z0-9+.-]*://", "", value, flags=re.IGNORECASE)
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFC", without_scheme)).casefold()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use.

    A value the model refuses (NOTIFIER_DISPATCH__SMS_PER_SECOND=0, a port of 70000, an unknown
    zone) becomes one ConfigError line naming the setting and where it was set: at start-up,
    instead of a traceback here or a division by zero in a worker thread later.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """"dispatch.sms_per_second must be greater than 0 (NOTIFIER_DISPATCH__SMS_PER_SECOND=0)"; several
    problems are joined with "; " so the message stays one line."""
    return "; ".join(_describe_problem(error["loc"], error["msg"]) for error in exc.errors())


def _describe_problem(loc: tuple[int | str, ...], message: str) -> str:
    label = ".".join(str(part) for part in loc)
    message = message.replace("Input should be", "must be").removeprefix("Value error, ")
    return f"{label} {message} ({_where_set(label)})"


def _where_set(label: str) -> str:
    """The environment variable that set `label` (or its section, given as JSON) with its value,
    else the configuration files; secrets are never shown."""
    environment = {name.upper(): value for name, value in os.environ.items()}
    parts = label.split(".")
    for depth in range(len(parts), 0, -1):
        variable = env_variable(".".join(parts[:depth]))
        if variable in environment:
            shown = "***" if "password" in label else environment[variable]
            return f"{variable}={shown}"
    files = " or ".join(filter(None, (os.environ.get("NOTIFIER_CONFIG"), str(DEFAULT_CONFIG_FILE))))
    return f"set in {files}"


def reset_settings() -> None:
    """Forget cached settings (tests and the demo change the environment)."""
    get_settings.cache_clear()
