"""SMS encoding: alphabet choice, part boundaries, no split characters, lossless round trip."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.sms import concat_header, count_parts, decode_parts, encode_sms, sms_encoding

VIETNAMESE = "Kính gửi Quý khách: thiết bị của Quý khách có dấu hiệu nhiễm mã độc."


def payloads(text: str) -> list[bytes]:
    """Each part's user data without its UDH."""
    encoded = encode_sms(text, reference=1)
    return [part[6:] for part in encoded.parts] if encoded.esm_class else encoded.parts


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Canh bao: thiet bi nhiem ma doc", "GSM-7"),
        ("Hotline 18001091 @ £ $ ¥ è é Ä ß", "GSM-7"),
        ("Braces {} and € count double", "GSM-7"),
        (VIETNAMESE, "UCS-2"),
        ("đ", "UCS-2"),
        ("emoji 😀", "UCS-2"),
        ("escape \x1b is not a character", "UCS-2"),
    ],
)
def test_alphabet_choice(text: str, encoding: str) -> None:
    assert sms_encoding(text) == encoding
    encoded = encode_sms(text, reference=0)
    assert encoded.encoding == encoding
    assert encoded.data_coding == (0 if encoding == "GSM-7" else 8)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),  # 162 septets
        ("a" * 159 + "^", 2),  # the escape pair makes 161
        ("đ" * 70, 1),
        ("đ" * 71, 2),
        ("đ" * 134, 2),
        ("đ" * 135, 3),
        ("😀" * 35, 1),  # 70 UTF-16 code units
        ("😀" * 36, 2),
    ],
)
def test_part_counts_at_boundaries(text: str, parts: int) -> None:
    assert count_parts(text) == parts
    assert len(encode_sms(text, reference=0).parts) == parts


def test_single_part_has_no_udh() -> None:
    encoded = encode_sms("a" * 160, reference=9)
    assert encoded.esm_class == 0
    assert encoded.parts == [b"a" * 160]


def test_concatenated_parts_carry_udh_with_low_byte_of_reference() -> None:
    encoded = encode_sms("đ" * 135, reference=0x1234)
    assert encoded.esm_class == 0x40
    assert [part[:6] for part in encoded.parts] == [bytes([5, 0, 3, 0x34, 3, seq]) for seq in (1, 2, 3)]
    assert [concat_header(part) for part in encoded.parts] == [(0x34, 3, 1), (0x34, 3, 2), (0x34, 3, 3)]


def test_extension_characters_count_two_septets_and_stay_whole() -> None:
    text = "a" * 152 + "€" + "b" * 10
    first, second = payloads(text)
    assert first == b"a" * 152  # 153 would split ESC from its code
    assert second == b"\x1b\x65" + b"b" * 10
    assert decode_parts(encode_sms(text, reference=3).parts, 0) == text


def test_surrogate_pairs_are_never_split() -> None:
    text = "đđ" + "😀" * 40
    encoded_payloads = payloads(text)
    assert len(encoded_payloads[0]) == 66 * 2
    for payload in encoded_payloads:
        payload.decode("utf-16-be")  # raises on a lone surrogate


def test_vietnamese_is_normalised_to_nfc_before_counting() -> None:
    decomposed = unicodedata.normalize("NFD", VIETNAMESE * 2)
    assert count_parts(decomposed) == count_parts(VIETNAMESE * 2)
    encoded = encode_sms(decomposed, reference=5)
    assert decode_parts(encoded.parts, encoded.data_coding) == unicodedata.normalize("NFC", decomposed)


def test_parts_are_reassembled_in_sequence_order() -> None:
    encoded = encode_sms(VIETNAMESE * 3, reference=77)
    assert decode_parts(list(reversed(encoded.parts)), encoded.data_coding) == VIETNAMESE * 3


def test_more_than_255_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_sms("a" * (153 * 255 + 1), reference=0)


@given(st.text(), st.integers(min_value=0, max_value=2**31))
def test_round_trip_is_lossless(text: str, reference: int) -> None:
    encoded = encode_sms(text, reference=reference)
    expected = unicodedata.normalize("NFC", text)
    assert decode_parts(encoded.parts, encoded.data_coding, esm_class=encoded.esm_class) == expected
    assert decode_parts(encoded.parts, encoded.data_coding) == expected
    assert all(len(part) <= 140 for part in encoded.parts)
    assert (encoded.esm_class == 0x40) == (len(encoded.parts) > 1)


@given(st.text(alphabet=st.sampled_from("aé€[]😀ệđ "), max_size=400))
def test_round_trip_of_long_mixed_text(text: str) -> None:
    encoded = encode_sms(text, reference=1)
    assert decode_parts(encoded.parts, encoded.data_coding, esm_class=encoded.esm_class) == text
    assert count_parts(text) == len(encoded.parts)
