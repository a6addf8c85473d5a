"""Identifiers: every accepted spelling reduces to one canonical form; anything else is refused."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.identifiers import (
    LOCAL_TIMEZONE,
    PhoneNumberError,
    classify_msisdn,
    email_sha256,
    ip_key,
    mask_email,
    mask_identifier,
    mask_msisdn,
    mask_phone_text,
    msisdn_sha256,
    network_keys,
    normalise_email,
    normalise_identifier,
    normalise_ip,
    normalise_msisdn,
    normalise_sha256,
    parse_timestamp,
)

# --- phone numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw",
    [
        "0912345678",
        "+84912345678",
        "84912345678",
        "0084912345678",
        "0912.345.678",
        "0912 345 678",
        "0912-345-678",
        "(84) 912 345 678",
        "(+84) 912 345 678",
        "+84 (0) 912 345 678",
        "  0912345678  ",
    ],
)
def test_accepted_phone_forms_give_e164(raw: str) -> None:
    assert normalise_msisdn(raw) == "+84912345678"


# The 2018 table from domain.md, written out independently of the code under test.
LEGACY_TABLE = {
    "Viettel": [("0162", "032"), ("0163", "033"), ("0164", "034"), ("0165", "035"),
                ("0166", "036"), ("0167", "037"), ("0168", "038"), ("0169", "039")],
    "MobiFone": [("0120", "070"), ("0121", "079"), ("0122", "077"), ("0126", "076"), ("0128", "078")],
    "VinaPhone": [("0123", "083"), ("0124", "084"), ("0125", "085"), ("0127", "081"), ("0129", "082")],
    "Vietnamobile": [("0186", "056"), ("0188", "058")],
    "Gmobile": [("0199", "059")],
}
LEGACY_CASES = [(carrier, old, new) for carrier, pairs in LEGACY_TABLE.items() for old, new in pairs]


@pytest.mark.parametrize(("carrier", "old", "new"), LEGACY_CASES)
def test_legacy_eleven_digit_mobiles_are_remapped(carrier: str, old: str, new: str) -> None:
    subscriber = "3456789"  # the last 7 digits never changed
    expected = "+84" + new[1:] + subscriber
    assert normalise_msisdn(old + subscriber) == expected
    assert normalise_msisdn("+84" + old[1:] + subscriber) == expected
    assert normalise_msisdn("84" + old[1:] + subscriber) == expected
    assert normalise_msisdn(f"{old} {subscriber[:3]} {subscriber[3:]}") == expected


@given(st.sampled_from(["91", "98", "32", "70", "79", "83", "85", "56", "59", "88"]),
       st.text(alphabet="0123456789", min_size=7, max_size=7))
def test_normalising_is_idempotent_across_forms(prefix: str, subscriber: str) -> None:
    e164 = normalise_msisdn("0" + prefix + subscriber)
    assert e164 == "+84" + prefix + subscriber
    assert normalise_msisdn(e164) == e164
    assert normalise_msisdn(e164[1:]) == e164


def test_legacy_prefix_with_wrong_length_is_not_remapped() -> None:
    with pytest.raises(ValueError, match="not a Vietnamese phone number"):
        normalise_msisdn("0162345678")  # 10 digits: neither old nor new form


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("02438123456", "+842438123456"),  # Hà Nội fixed line, post-2017 area code
        ("028 3812 3456", "+842838123456"),  # TP.HCM fixed line
        ("+84 24 3812 3456", "+842438123456"),
    ],
)
def test_fixed_lines_are_accepted_without_guessing_a_type(raw: str, expected: str) -> None:
    # Whether a number is a mobile is the subscriber record's business, not the prefix's.
    assert normalise_msisdn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+1 415 555 2671", "+14155552671"), ("0014155552671", "+14155552671"),
     ("+44 7911 123456", "+447911123456")],
)
def test_valid_foreign_numbers_in_international_form_are_accepted(raw: str, expected: str) -> None:
    assert normalise_msisdn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("091234567a", "only digits"),
        ("0912+345678", "only digits"),
        ("912345678", "no leading 0, 84 or +country code"),  # from a leak list: maybe foreign, never guessed
        ("0912345", "wrong length: a mobile number has 10 digits"),
        ("091234567890123", "wrong length: a mobile number has 10 digits"),
        ("08912345678", "wrong length: a mobile number has 10 digits"),  # one digit too many
        ("0201234567", "wrong length: a fixed-line number has 11 digits"),  # was "no such number range"
        ("024381234567", "wrong length: a fixed-line number has 11 digits"),
        ("+84 170 123 4567", "no such number range"),
        ("0401234567", "no such number range"),  # no subscriber lines start with 04 or 06
        ("1900 1234", "no leading 0, 84 or +country code"),
        ("+84 1900 1234", "premium-rate"),
        ("+84 1800 1234", "toll-free"),
        ("+1 555 0000", "no such number range"),
    ],
)
def test_bad_numbers_are_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match="not a Vietnamese phone number") as caught:
        normalise_msisdn(raw)
    assert reason in str(caught.value)
    assert repr(mask_phone_text(raw)) in str(caught.value)  # the message names the text masked
    digits_in_raw = "".join(char for char in raw if char.isdigit())
    assert len(digits_in_raw) < 4 or digits_in_raw not in str(caught.value)
    assert isinstance(caught.value, PhoneNumberError) and caught.value.reason.startswith(reason)
    digits = "".join(char for char in raw if char.isdigit())
    assert len(digits) < 4 or digits not in caught.value.reason  # the reason alone can be shown


@pytest.mark.parametrize(
    ("raw", "expected", "masked"),
    [
        ("0891 123 456", "+84891123456", "+8489****456"),  # mobile shape, 089[0-5] unallocated
        ("+84 801 234 567", "+84801234567", "+8480****567"),
        ("0992.123.456", "+84992123456", "+8499****456"),
        ("0501234567", "+84501234567", "+8450****567"),
        ("02001234567", "+842001234567", "+8420*****567"),  # fixed shape, area code 200 not in use
        ("01201234567", "+84701234567", None),  # legacy remap still comes first (0120 → 070)
    ],
)
def test_numbers_of_the_right_shape_are_kept_even_in_unknown_ranges(raw: str, expected: str, masked: str | None) -> None:
    e164, warning = classify_msisdn(raw)
    assert e164 == expected
    assert normalise_msisdn(raw) == expected  # leak lists and the care lookup follow the same rule
    if masked is None:
        assert warning is None
    else:
        assert warning == f"{masked} is not in a known range; stored as given"
        assert expected not in warning


@pytest.mark.parametrize("raw", ["0912345678", "+84 24 3812 3456", "+1 415 555 2671", "01623456789"])
def test_numbers_phonenumbers_knows_carry_no_warning(raw: str) -> None:
    assert classify_msisdn(raw)[1] is None


def test_a_foreign_number_must_be_valid_for_phonenumbers() -> None:
    # +1 555 0100 has a North American shape, but only Vietnamese numbers are trusted by shape.
    with pytest.raises(PhoneNumberError, match="no such number range"):
        classify_msisdn("+1 555 0100")


@pytest.mark.parametrize(
    ("raw", "masked"),
    [("0912345", "****345"), ("091234567a", "******567a"), ("+84 170 123 4567", "+** *** *** *567"),
     ("12", "12"), ("9" * 40, "*" * 29 + "999")],
)
def test_phone_text_is_masked_but_for_the_last_three_digits(raw: str, masked: str) -> None:
    assert mask_phone_text(raw) == masked


# --- e-mail --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Nguyen.Van.A@Example.VN ", "nguyen.van.a@example.vn"),
        ("a+tag@mail.example.com.vn", "a+tag@mail.example.com.vn"),
        ("user_1@sub-domain.vn", "user_1@sub-domain.vn"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "plainaddress", "@example.vn", "a@", "a@localhost", "a b@example.vn", "a@@example.vn",
     ".a@example.vn", "a..b@example.vn", "a@-example.vn", "a@example..vn", "a@exa_mple.vn",
     "x" * 65 + "@example.vn", "a@" + "b" * 250 + ".vn"],
)
def test_bad_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not an e-mail address"):
        normalise_email(raw)


# --- hashes --------------------------------------------------------------------------------------

def test_msisdn_hash_is_sha256_of_e164_digits_without_plus() -> None:
    expected = hashlib.sha256(b"84912345678").hexdigest()
    assert msisdn_sha256("+84912345678") == expected
    assert msisdn_sha256(normalise_msisdn("0912 345 678")) == expected
    assert expected == "25cc2f7574420a2d46c9f2d6cf94cdbb242ef7d479afe92ed6e8eb33a7493093"


def test_msisdn_hash_refuses_anything_but_e164() -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        msisdn_sha256("0912345678")


def test_email_hash_is_sha256_of_trimmed_lower_cased_address() -> None:
    expected = hashlib.sha256(b"nguyen.van.a@example.vn").hexdigest()
    assert email_sha256("  Nguyen.Van.A@Example.VN ") == expected


def test_sha256_digests_are_lower_cased_and_checked() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert normalise_sha256(" " + digest.upper() + " ") == digest
    for bad in ("", digest[:-1], digest + "0", "g" * 64):
        with pytest.raises(ValueError, match="not a SHA-256"):
            normalise_sha256(bad)


def test_identifiers_are_normalised_by_kind() -> None:
    assert normalise_identifier("msisdn", "0912345678") == "+84912345678"
    assert normalise_identifier("ip", " 1.2.3.4 ") == "1.2.3.4"
    with pytest.raises(ValueError, match="unknown identifier kind"):
        normalise_identifier("imei", "1")


# --- IP addresses --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 14.160.1.2 ", "14.160.1.2"),
        ("2402:0800:6310:5600:0000:0000:0000:0001", "2402:800:6310:5600::1"),
        ("2402:800:6310:5600::1", "2402:800:6310:5600::1"),
        ("::ffff:14.160.1.2", "14.160.1.2"),  # an IPv4 host seen through an IPv6 socket
    ],
)
def test_ip_addresses_are_compressed(raw: str, expected: str) -> None:
    assert normalise_ip(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "999.1.1.1", "14.160.1", "01.2.3.4", "14.160.1.0/24", "2402:800::/56", "fe80::1%eth0", "host"]
)
def test_non_addresses_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        normalise_ip(raw)


def test_ip_key_is_fixed_width_and_maps_ipv4_into_ipv6() -> None:
    assert ip_key("1.2.3.4") == "00000000000000000000ffff01020304"
    assert ip_key("::ffff:1.2.3.4") == ip_key("1.2.3.4")
    assert ip_key("2402:800::1") == "24020800000000000000000000000001"
    assert all(len(ip_key(ip)) == 32 for ip in ("0.0.0.0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))


def _canonical(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return int(address) + 0xFFFF00000000 if address.version == 4 else int(address)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@given(addresses, addresses)
def test_ip_key_orders_like_the_addresses_across_families(
    a: ipaddress.IPv4Address | ipaddress.IPv6Address, b: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    if (isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped) or (
        isinstance(b, ipaddress.IPv6Address) and b.ipv4_mapped
    ):
        return  # mapped addresses are IPv4 by definition; covered above
    assert (ip_key(str(a)) < ip_key(str(b))) == (_canonical(a) < _canonical(b))


def test_network_keys_of_an_ipv4_slash_24() -> None:
    first, last = network_keys("14.160.1.0/24")
    assert (first, last) == (ip_key("14.160.1.0"), ip_key("14.160.1.255"))
    assert first <= ip_key("14.160.1.77") <= last
    assert not first <= ip_key("14.160.2.0") <= last


def test_network_keys_of_an_ipv6_slash_56() -> None:
    first, last = network_keys("2402:800:6310:5600::/56")
    assert first == "24020800631056000000000000000000"
    assert last == "24020800631056ffffffffffffffffff"
    assert first <= ip_key("2402:800:6310:56ab::1") <= last
    assert not first <= ip_key("2402:800:6310:5700::") <= last


def test_network_keys_of_a_bare_address_and_refusals() -> None:
    assert network_keys("14.160.1.2") == (ip_key("14.160.1.2"), ip_key("14.160.1.2"))
    for bad in ("14.160.1.5/24", "2402:800::/200", "nonsense"):
        with pytest.raises(ValueError, match="not an IP network"):
            network_keys(bad)


# --- masks ---------------------------------------------------------------------------------------

def test_masks_hide_the_middle_of_a_number_and_the_local_part() -> None:
    assert mask_msisdn("+84912345678") == "+8491****678"
    assert mask_msisdn("+14155552671") == "+141*****671"
    assert mask_msisdn("0912345678") == "***"  # not E.164: masked entirely, never raises
    assert mask_email("nguyen.van.a@example.vn") == "n***@example.vn"
    assert mask_email("no-at-sign") == "***"


@pytest.mark.parametrize("number", ["+84912345678", "+14155552671", "+85512345678", "+3531234567", "+8801712345678",
                                    "+99912345678", "+2812345678", "+6512345678"])
def test_masks_keep_the_country_code_that_phonenumbers_reads(number: str) -> None:
    """One, two and three digit codes, and unassigned ones (999, 28: masked entirely), as a full parse
    reads them (the mask looks the code up without parsing)."""
    import phonenumbers

    try:
        country = str(phonenumbers.parse(number).country_code)
    except phonenumbers.NumberParseException:
        assert mask_msisdn(number) == "***"
        return
    masked = mask_msisdn(number)
    assert masked.startswith("+" + country) and masked[len(country) + 1] in "0123456789*"
    assert len(masked) == len(number) and "*" in masked
    assert all(shown in ("*", digit) for shown, digit in zip(masked, number))


def test_mask_identifier_by_kind() -> None:
    digest = hashlib.sha256(b"84912345678").hexdigest()
    assert mask_identifier("msisdn", "+84912345678") == "+8491****678"
    assert mask_identifier("email", "an@example.vn") == "a***@example.vn"
    assert mask_identifier("ip", "14.160.1.2") == "14.160.1.2"
    assert mask_identifier("msisdn_sha256", digest) == digest[:8] + "…"
    assert mask_identifier("email_sha256", digest) == digest[:8] + "…"
    with pytest.raises(ValueError, match="unknown identifier kind"):
        mask_identifier("imei", "1")


# --- time ----------------------------------------------------------------------------------------

EXPECTED = datetime(2026, 11, 19, 14, 14, 5, tzinfo=UTC)  # 21:14:05 in Hà Nội


@pytest.mark.parametrize(
    ("raw", "default_tz", "expected"),
    [
        ("2026-11-19T14:14:05Z", LOCAL_TIMEZONE, EXPECTED),
        ("2026-11-19t14:14:05z", LOCAL_TIMEZONE, EXPECTED),
        ("2026-11-19T21:14:05+07:00", "UTC", EXPECTED),
        ("2026-11-19 21:14:05+0700", "UTC", EXPECTED),
        ("2026-11-19 21:14:05", LOCAL_TIMEZONE, EXPECTED),
        ("2026-11-19 14:14:05", "UTC", EXPECTED),
        ("2026-11-19T14:14:05.000+00:00", LOCAL_TIMEZONE, EXPECTED),
        ("19/11/2026 21:14:05", LOCAL_TIMEZONE, EXPECTED),
        ("19/11/2026 14:14:05", "UTC", EXPECTED),
        ("19/11/2026 21:14", LOCAL_TIMEZONE, EXPECTED.replace(second=0)),
        ("1795097645", LOCAL_TIMEZONE, EXPECTED),  # epoch seconds carry their own zone
        ("1795097645.5", "UTC", EXPECTED.replace(microsecond=500000)),
        ("2026-11-19", LOCAL_TIMEZONE, datetime(2026, 11, 18, 17, 0, tzinfo=UTC)),
        ("20261119", "UTC", datetime(2026, 11, 19, tzinfo=UTC)),
    ],
)
def test_timestamps_in_every_form_and_zone(raw: str, default_tz: str, expected: datetime) -> None:
    parsed = parse_timestamp(raw, default_tz)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "raw", ["", "yesterday", "31/02/2026 10:00:00", "2026-13-01T00:00:00", "1795097645000", "11/19/2026 21:14:05"]
)
def test_bad_timestamps_name_the_text(raw: str) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_timestamp(raw, LOCAL_TIMEZONE)


def test_unknown_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_timestamp("2026-11-19 21:14:05", "Asia/Hanoi_Typo")
