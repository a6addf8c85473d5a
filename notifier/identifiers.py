"""Normalise, hash, key and mask the identifiers notifier matches on.

Every input (subscriber export, feed, leak list, Authority request) names people and devices in its
own spelling. Matching only works if all of them are reduced to one canonical form first, so these
pure functions are the single place that decides what "the same phone number / address / IP" means.
They raise ValueError with the offending text, so a parser can turn it into a row rejection.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

LOCAL_TIMEZONE = "Asia/Ho_Chi_Minh"

VIETNAM_COUNTRY_CODE = "84"

# The 2018 conversion of 11-digit mobile numbers: old national prefix (without the trunk 0) → new.
# The last 7 digits did not change. Leaked databases still hold the old form.
LEGACY_MOBILE_PREFIXES: dict[str, str] = {
    # Viettel
    "162": "32", "163": "33", "164": "34", "165": "35",
    "166": "36", "167": "37", "168": "38", "169": "39",
    # MobiFone
    "120": "70", "121": "79", "122": "77", "126": "76", "128": "78",
    # VinaPhone
    "123": "83", "124": "84", "125": "85", "127": "81", "129": "82",
    # Vietnamobile
    "186": "56", "188": "58",
    # Gmobile
    "199": "59",
}
LEGACY_NATIONAL_LENGTH = 10  # old prefix (3 digits) + 7 subscriber digits, without the trunk 0

# Subscriber numbers by the first digit of the national number (without the trunk 0): their kind
# and national length. Mobile 0[35789]x xxx xxxx since 2018; fixed 02x(x) + subscriber since 2017.
MOBILE_NATIONAL_LENGTH = 9
FIXED_NATIONAL_LENGTH = 10
VIETNAMESE_SUBSCRIBER_SHAPES: dict[str, tuple[str, int]] = {
    **{first: ("mobile", MOBILE_NATIONAL_LENGTH) for first in "35789"},
    "2": ("fixed-line", FIXED_NATIONAL_LENGTH),
}

# Service numbers reach a business, never a subscriber: a feed or export naming one is an error.
SERVICE_NUMBER_TYPES = {
    PhoneNumberType.TOLL_FREE: "toll-free service number",
    PhoneNumberType.PREMIUM_RATE: "premium-rate service number",
    PhoneNumberType.SHARED_COST: "shared-cost service number",
}

_PHONE_SEPARATORS = re.compile(r"[\s.\-()/]")
_PHONE_FORM = re.compile(r"\+?[0-9]+")
_E164_FORM = re.compile(r"\+[1-9][0-9]{6,14}")
_EMAIL_LOCAL = re.compile(r"[^\s@\"(),:;<>\[\]\\]+")
_DOMAIN_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")  # letters/digits, inner hyphens
_SHA256_FORM = re.compile(r"[0-9a-f]{64}")
_EPOCH_FORM = re.compile(r"[0-9]{9,10}(?:\.[0-9]+)?")  # 1973-03-03 … 2286-11-20
_DAY_FIRST_FORMATS = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y")

MAX_EMAIL_LENGTH = 254
MAX_EMAIL_LOCAL_LENGTH = 64
IPV4_MAPPED_BASE = int(ipaddress.IPv6Address("::ffff:0:0"))
IP_KEY_HEX_DIGITS = 32


# --- phone numbers -------------------------------------------------------------------------------

class PhoneNumberError(ValueError):
    """Raised when text cannot be a phone number at all (letters, wrong length, wrong country...).

    The message quotes the text masked (all digits but the last 3 hidden): rejection reasons are
    printed and stored, and must not carry the number. `raw` keeps the text for the caller.
    """

    def __init__(self, raw: str, reason: str) -> None:
        super().__init__(f"not a Vietnamese phone number: {mask_phone_text(raw)!r} ({reason})")
        self.raw = raw
        self.reason = reason


def _phone_error(raw: str, reason: str) -> PhoneNumberError:
    return PhoneNumberError(raw, reason)


def _split_phone(raw: str) -> tuple[bool, str]:
    """Strip separators and return (written in international form, digits)."""
    compact = _PHONE_SEPARATORS.sub("", raw)
    if not compact:
        raise _phone_error(raw, "empty")
    if not _PHONE_FORM.fullmatch(compact):
        raise _phone_error(raw, "only digits, spaces, dots, dashes, brackets and a leading + are allowed")
    if compact.startswith("+"):
        return True, compact[1:]
    if compact.startswith("00"):
        return True, compact[2:]
    return False, compact


def _vietnamese_national_number(raw: str, digits: str, international: bool) -> str | None:
    """The national significant number if `digits` is Vietnamese, None for another country code.

    Without "+" a number must start with the trunk 0 or 84: anything else would be a guess.
    "+84 (0)912…" is common on business cards, so one trunk 0 after the country code is dropped.
    """
    if digits.startswith(VIETNAM_COUNTRY_CODE):
        national = digits[len(VIETNAM_COUNTRY_CODE):]
        return national[1:] if national.startswith("0") else national
    if international:
        return None
    if digits.startswith("0"):
        return digits[1:]
    raise _phone_error(raw, "no leading 0, 84 or +country code")


def remap_legacy_mobile(national: str) -> str:
    """Map an 11-digit pre-2018 mobile number (national part) to its current 10-digit form."""
    new_prefix = LEGACY_MOBILE_PREFIXES.get(national[:3])
    if new_prefix is None or len(national) != LEGACY_NATIONAL_LENGTH:
        return national
    return new_prefix + national[3:]


def _parsed(international_digits: str) -> phonenumbers.PhoneNumber | None:
    """phonenumbers' reading of "+<digits>", or None when it cannot read it at all (too long...)."""
    try:
        return phonenumbers.parse("+" + international_digits)
    except phonenumbers.NumberParseException:
        return None


def _refuse_service_number(raw: str, number: phonenumbers.PhoneNumber) -> None:
    service = SERVICE_NUMBER_TYPES.get(phonenumbers.number_type(number))
    if service:
        raise _phone_error(raw, service)


def _validated_e164(raw: str, international_digits: str) -> str:
    """Parse "+<digits>" with phonenumbers; accept only valid, non-service numbers."""
    try:
        number = phonenumbers.parse("+" + international_digits)
    except phonenumbers.NumberParseException as exc:
        raise _phone_error(raw, str(exc)) from None
    if not phonenumbers.is_valid_number(number):
        reason = "no such number range" if phonenumbers.is_possible_number(number) else "wrong length"
        raise _phone_error(raw, reason)
    _refuse_service_number(raw, number)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _check_vietnamese_shape(raw: str, national: str) -> None:
    """Refuse a national number that no Vietnamese subscriber line can have (domain.md).

    A mobile is 0 + [35789] + 8 digits since the 2018 remap; a fixed line is 0 + a 2x/2xx area code
    + its subscriber number, 11 digits in all since 2017. Anything else starting with 1, 4 or 6 is a
    service number or nothing, and phonenumbers has already accepted the service numbers we take.
    """
    shape = VIETNAMESE_SUBSCRIBER_SHAPES.get(national[:1])
    if shape is None:
        raise _phone_error(raw, "no such number range")
    name, length = shape
    if len(national) != length:
        raise _phone_error(raw, f"wrong length: a {name} number has {length + 1} digits with the leading 0")


def _vietnamese_e164(raw: str, national: str) -> tuple[str, str | None]:
    """E.164 of a Vietnamese national number (already remapped), with a warning if unallocated.

    phonenumbers' ranges lag behind the number plan (new blocks, ranges an operator opens first
    for its own lines); the subscriber export is the operator's own truth, so a number of the right
    shape is kept and reported instead of losing the subscriber.
    """
    number = _parsed(VIETNAM_COUNTRY_CODE + national)
    if number is not None and phonenumbers.is_valid_number(number):
        _refuse_service_number(raw, number)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None
    _check_vietnamese_shape(raw, national)
    e164 = "+" + VIETNAM_COUNTRY_CODE + national
    return e164, f"{mask_msisdn(e164)} is not in a known range; stored as given"


def classify_msisdn(raw: str, *, restore_lost_zero: bool = False) -> tuple[str, str | None]:
    """Return (E.164, warning or None); PhoneNumberError (a ValueError) for an impossible number.

    The one place that decides which phone numbers notifier keeps, so that the subscriber import,
    leak lists, Authority requests and the care lookup agree: a leaked number in a range
    phonenumbers does not know still matches the subscriber who has it. Vietnamese numbers of a
    subscriber shape (mobile 0[35789]x + 7 digits, fixed 02… 11 digits) are kept even when
    phonenumbers calls them "not valid", with a warning that names the number masked. Foreign
    numbers (+1…, +44…) must be valid for phonenumbers: we do not know other plans' shapes, and an
    operator's export rarely holds them. Service numbers (1800, 1900) are always refused.

    `restore_lost_zero` (the operator's own subscriber export only): nine digits that start like a
    mobile are read with the 0 a spreadsheet dropped, with a warning. Lists from elsewhere (leaks,
    requests) stay strict: there such a number might be foreign, and guessing could warn the wrong
    subscriber.
    """
    international, digits = _split_phone(raw)
    restored = restore_lost_zero and not international and _lost_trunk_zero(digits)
    if restored:
        digits = "0" + digits
    national = _vietnamese_national_number(raw, digits, international)
    if national is None:
        return _validated_e164(raw, digits), None
    e164, warning = _vietnamese_e164(raw, remap_legacy_mobile(national))
    if restored and warning is None:
        warning = f"{mask_msisdn(e164)} had no leading 0 (a spreadsheet drops it); read as a mobile number"
    return e164, warning


# A spreadsheet that took the column for numbers turns 0912345678 into 912345678: nine digits that
# start like a Vietnamese mobile (3, 5, 7, 8, 9) can only be that number without its 0 — nine
# digits are too few for "84" + a national number (9 digits for a mobile, 10 for a fixed line).
_LOST_TRUNK_ZERO = re.compile(r"[35789]\d{8}")


def _lost_trunk_zero(digits: str) -> bool:
    return _LOST_TRUNK_ZERO.fullmatch(digits) is not None


def normalise_msisdn(raw: str) -> str:
    """Return a phone number in E.164 ("+84912345678"), following `classify_msisdn`'s rule.

    Accepts 0912345678, +84912345678, 84912345678, 0084…, 0912.345.678, "0912 345 678",
    "(84) 912 345 678" and the pre-2018 11-digit mobile forms, which are remapped before validation
    because phonenumbers finds them possible but not valid. Fixed lines are accepted too: whether a
    number is a mobile is the subscriber record's business, not its prefix's.
    """
    return classify_msisdn(raw)[0]


def mask_phone_text(raw: str) -> str:
    """Text that failed as a phone number, masked for a report: every digit but the last 3 hidden.

    An operator can still find the cell on the reported line; the report does not hold the number.
    """
    text = raw.strip()[:MAX_MASKED_TEXT_CHARS]
    digits = sum(char.isdigit() for char in text)
    hidden = digits - MASKED_MSISDN_KEEP_END
    masked: list[str] = []
    for char in text:
        if char.isdigit():
            masked.append(MASK if hidden > 0 else char)
            hidden -= 1
        else:
            masked.append(char)
    return "".join(masked)


# --- e-mail --------------------------------------------------------------------------------------

def _email_error(raw: str, reason: str) -> ValueError:
    """The message masks the text like a valid address would be (`n***@…`): reports carry no e-mail."""
    return ValueError(f"not an e-mail address: {mask_email(raw[:MAX_MASKED_TEXT_CHARS])!r} ({reason})")


def normalise_email(raw: str) -> str:
    """Trim and lower-case an address after a sanity check (one @, plausible local part and domain).

    Lower-casing the local part is technically lossy, but every mailbox provider in practice treats
    it case-insensitively, and hashed leak lists (email_sha256) are built the same way.
    """
    address = raw.strip().lower()
    if len(address) > MAX_EMAIL_LENGTH:
        raise _email_error(raw, f"longer than {MAX_EMAIL_LENGTH} characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise _email_error(raw, "expected local-part@domain")
    if len(local) > MAX_EMAIL_LOCAL_LENGTH or not _EMAIL_LOCAL.fullmatch(local):
        raise _email_error(raw, "invalid characters or length before @")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise _email_error(raw, "misplaced dot before @")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise _email_error(raw, "invalid domain")
    return address


# --- hashes --------------------------------------------------------------------------------------

def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def msisdn_sha256(e164: str) -> str:
    """SHA-256 (lowercase hex) of the E.164 digits without "+", as partners hash their lists.

    Only E.164 is accepted: hashing "0912…" by mistake would silently never match.
    """
    if not _E164_FORM.fullmatch(e164):
        raise ValueError(f"not an E.164 phone number: {e164!r}")
    return _sha256_hex(e164[1:])


def email_sha256(email: str) -> str:
    """SHA-256 (lowercase hex) of the trimmed, lower-cased address."""
    return _sha256_hex(normalise_email(email))


_PHONE_LIKE = re.compile(r"[+\d][\d .()-]{6,}")


def normalise_sha256(raw: str) -> str:
    """Return a SHA-256 hex digest in lower case; anything but 64 hex digits is refused."""
    digest = raw.strip().lower()
    if not _SHA256_FORM.fullmatch(digest):
        # Never quoted: a partner who forgot to hash sends the clear number or address here.
        looks_clear = "@" in digest or _PHONE_LIKE.fullmatch(digest) is not None
        hint = "it looks like a clear e-mail or phone number, not its hash" if looks_clear else \
            f"{len(digest)} characters"
        raise ValueError(f"not a SHA-256 hex digest ({hint}; expected 64 hexadecimal digits)")
    return digest


# --- IP addresses --------------------------------------------------------------------------------

def normalise_ip(raw: str) -> str:
    """Return one IP address in compressed text form; an IPv4-mapped IPv6 address becomes IPv4.

    Networks and scoped addresses (fe80::1%eth0) are refused: a feed event names one host.
    """
    text = raw.strip()
    if "/" in text:
        raise ValueError(f"not an IP address: {raw!r} (a network, not one address)")
    if "%" in text:
        raise ValueError(f"not an IP address: {raw!r} (scoped addresses are not routable)")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {raw!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def _address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    value = int(address)
    if address.version == 4:
        value += IPV4_MAPPED_BASE
    return format(value, f"0{IP_KEY_HEX_DIGITS}x")


def ip_key(ip: str) -> str:
    """A 32-hex-digit key whose string order is address order, IPv4 mapped into ::ffff:0:0/96.

    Stored next to an address or interval bounds, it lets the database answer "which interval holds
    this address" with plain string comparisons for both families.
    """
    return _address_key(ipaddress.ip_address(normalise_ip(ip)))


def network_keys(prefix: str) -> tuple[str, str]:
    """Keys of the first and last address of an IPv4/IPv6 network ("2402:800:6310:5600::/56").

    Host bits must be zero: "14.160.1.5/24" is more likely a typo than the /24 it would round to.
    A bare address is its own /32 or /128.
    """
    try:
        network = ipaddress.ip_network(prefix.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IP network: {prefix!r} ({exc})") from None
    return _address_key(network.network_address), _address_key(network.broadcast_address)


def mapped_prefix_len(prefix: str) -> int:
    """The length of a network's prefix in the 128-bit space `ip_key` uses (IPv4 /24 → 120)."""
    network = ipaddress.ip_network(prefix.strip(), strict=True)
    return network.prefixlen + (96 if network.version == 4 else 0)


def key_network_start(key: str, prefix_len: int) -> str:
    """The key of the first address of the /prefix_len network (in `ip_key` space) holding `key`."""
    host_bits = 128 - prefix_len
    return format((int(key, 16) >> host_bits) << host_bits, "032x")


# --- masking for logs and screens ----------------------------------------------------------------

MASK = "*"
MASKED_MSISDN_KEEP_NATIONAL = 2
MASKED_MSISDN_KEEP_END = 3
MASKED_HASH_KEEP = 8
MAX_MASKED_TEXT_CHARS = 32  # a runaway cell is cut, not echoed


def mask_msisdn(e164: str) -> str:
    """"+84912345678" → "+8491****678": country code, 2 digits and the last 3 stay readable.

    Never raises, because it is used while logging: text that is not E.164 is masked entirely.
    """
    if not _E164_FORM.fullmatch(e164):
        return MASK * 3
    digits = e164[1:]
    country = _country_code(digits)
    if country is None:
        return MASK * 3
    head = len(country) + MASKED_MSISDN_KEEP_NATIONAL
    hidden = len(digits) - head - MASKED_MSISDN_KEEP_END
    if hidden < MASKED_MSISDN_KEEP_END:
        return "+" + country + MASK * (len(digits) - len(country))
    return "+" + digits[:head] + MASK * hidden + digits[-MASKED_MSISDN_KEEP_END:]


def _country_code(digits: str) -> str | None:
    """The leading country calling code, the way `phonenumbers.parse` finds it for a "+" number
    (codes are prefix-free, 1 to 3 digits), without parsing the rest: every message sent is
    logged with its masked number, and a full parse cost more than the rest of the log line."""
    for length in (1, 2, 3):
        if int(digits[:length]) in COUNTRY_CODE_TO_REGION_CODE:
            return digits[:length]
    return None


def mask_email(address: str) -> str:
    """"nguyen@example.vn" → "n***@example.vn"; text without "@" is masked entirely."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return MASK * 3
    return f"{local[0]}{MASK * 3}@{domain}"


def _mask_hash(value: str) -> str:
    return value[:MASKED_HASH_KEEP] + "…"


def _keep(value: str) -> str:
    return value


# IP addresses stay readable: they identify a line at a point in time, and care staff need them.
_MASKERS = {
    "msisdn": mask_msisdn,
    "email": mask_email,
    "ip": _keep,
    "msisdn_sha256": _mask_hash,
    "email_sha256": _mask_hash,
}
IDENTIFIER_KINDS = tuple(_MASKERS)


def mask_identifier(kind: str, value: str) -> str:
    """Mask an identifier of the given kind for logs and screens."""
    masker = _MASKERS.get(kind)
    if masker is None:
        raise ValueError(f"unknown identifier kind {kind!r} (known: {', '.join(IDENTIFIER_KINDS)})")
    return masker(value)


_NORMALISERS = {
    "msisdn": normalise_msisdn,
    "email": normalise_email,
    "ip": normalise_ip,
    "msisdn_sha256": normalise_sha256,
    "email_sha256": normalise_sha256,
}


def normalise_identifier(kind: str, raw: str) -> str:
    """Normalise a value of the given identifier kind, so feeds can name the kind as data."""
    normalise = _NORMALISERS.get(kind)
    if normalise is None:
        raise ValueError(f"unknown identifier kind {kind!r} (known: {', '.join(IDENTIFIER_KINDS)})")
    return normalise(raw)


# --- time ----------------------------------------------------------------------------------------

def get_zone(name: str) -> ZoneInfo:
    """The zone for an IANA name; ValueError (not KeyError) when it does not exist."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone: {name!r}") from None


def _parse_naive_or_aware(text: str) -> datetime:
    """ISO 8601 first, then the day-first forms Vietnamese spreadsheets use."""
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError:
        pass
    for layout in _DAY_FIRST_FORMATS:
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    raise ValueError(f"not a time: {text!r} (expected ISO 8601, DD/MM/YYYY hh:mm:ss or Unix seconds)")


def parse_timestamp(raw: str, default_tz: str) -> datetime:
    """Return an aware UTC datetime from ISO 8601, "DD/MM/YYYY hh:mm[:ss]" or Unix epoch seconds.

    A time without a zone is read in `default_tz` (a zoneinfo name): every source declares its zone,
    and guessing UTC for a local RADIUS log would shift matches by seven hours. Unix seconds are
    recognised by their 9-10 integer digits, so an ISO basic date (20261119) is still a date and
    milliseconds (13 digits) are refused rather than read as a year in the far future.
    """
    text = raw.strip()
    if not text:
        raise ValueError("not a time: empty")
    if _EPOCH_FORM.fullmatch(text):
        return datetime.fromtimestamp(float(text), tz=UTC)
    moment = _parse_naive_or_aware(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=get_zone(default_tz))
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # "0001-01-01 00:00" at +07 is before the first representable moment
        raise _out_of_range(text) from None
    if not EARLIEST_TIME <= moment <= LATEST_TIME:
        raise _out_of_range(text)
    return moment


# Every stored time must survive conversion to any zone people read (UTC-12 … UTC+14) when a notice
# or a table shows it: a day's margin inside what `datetime` holds keeps `astimezone` from overflowing.
EARLIEST_TIME = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIME = datetime(9999, 12, 30, tzinfo=UTC)


def _out_of_range(text: str) -> ValueError:
    return ValueError(f"not a time: {text!r} (out of range: times must fall between "
                      f"{EARLIEST_TIME.date().isoformat()} and {LATEST_TIME.date().isoformat()} UTC)")


# --- fast keys for matching ------------------------------------------------------------------------

_IPV4_KEY_PREFIX = format(IPV4_MAPPED_BASE, f"0{IP_KEY_HEX_DIGITS}x")[:IP_KEY_HEX_DIGITS - 8]


def stored_ip_key(ip: str) -> str:
    """`ip_key` of an address already in `normalise_ip` form (as feeds store it), without re-parsing.

    Matching keys every event of a feed: `ipaddress` costs microseconds per call, which at a
    million events is most of the budget. A dotted quad is keyed by the C `inet_pton`, which is
    strict (no octal, hex or short forms); anything else (IPv6, or text `inet_pton` refuses) goes
    through `ip_key`, so a malformed value still raises ValueError instead of yielding a wrong key.
    """
    try:
        return _IPV4_KEY_PREFIX + socket.inet_pton(socket.AF_INET, ip).hex()
    except OSError:
        return ip_key(ip)


def key_ip(key: str) -> str:
    """The address text of an `ip_key` (IPv4 for the mapped range): reasons name the private address
    a CGNAT block led to, and the database keeps only its key in the lookup column."""
    value = int(key, 16)
    if value >> 32 == IPV4_MAPPED_BASE >> 32:
        return str(ipaddress.IPv4Address(value - IPV4_MAPPED_BASE))
    return ipaddress.IPv6Address(value).compressed
