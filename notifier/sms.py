"""SMS text encoding: pick GSM-7 or UCS-2, split into concatenated parts, and read them back.

We do not use `smpplib.gsm.make_parts`: it splits GSM-7 escape pairs across parts (its own FIXME)
and picks a random concatenation reference. A warning that arrives garbled or as two unrelated
messages reads like a scam, so the splitting here never breaks a character and the reference is the
caller's. Text is NFC-normalised first because decomposed Vietnamese needs more UCS-2 code units.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"
DATA_CODING_GSM7 = 0x00  # SMSC default alphabet, one septet per octet on the SMPP wire
DATA_CODING_UCS2 = 0x08
ESM_CLASS_UDHI = 0x40

_GSM7_SINGLE = 160
_GSM7_PART = 153  # 160 minus the 6-octet UDH (7 septets with fill bits)
_UCS2_SINGLE = 70
_UCS2_PART = 67  # 70 minus the 6-octet UDH (3 UTF-16 code units)
_MAX_PARTS = 255
_ESCAPE = 0x1B

# GSM 03.38 default alphabet, indexed by septet value; 0x1B is the escape to the extension table.
_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F,
                   "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}

_ENCODE_GSM7: dict[str, bytes] = {
    char: bytes([code]) for code, char in enumerate(_GSM7_BASIC) if code != _ESCAPE
}
_ENCODE_GSM7.update({char: bytes([_ESCAPE, code]) for char, code in _GSM7_EXTENSION.items()})
_GSM7_TRANSLATION = {ord(char): code.decode("latin-1") for char, code in _ENCODE_GSM7.items()}
_GSM7_CHARACTERS = frozenset(_ENCODE_GSM7)
_DECODE_GSM7_BASIC = dict(enumerate(_GSM7_BASIC))
_DECODE_GSM7_EXTENSION = {code: char for char, code in _GSM7_EXTENSION.items()}


@dataclass(frozen=True)
class EncodedSms:
    """A message ready for submit_sm: one `short_message` per part, UDH included."""

    parts: list[bytes]
    data_coding: int
    esm_class: int
    encoding: str


def sms_encoding(text: str) -> str:
    """GSM-7 when every character has a GSM 03.38 code, else UCS-2 (any Vietnamese diacritic)."""
    return GSM7 if _is_gsm7(unicodedata.normalize("NFC", text)) else UCS2


def _is_gsm7(normalised: str) -> bool:
    """Every character has a GSM 03.38 code (the set test runs in C: the send path asks this for
    every message, and a generator over the characters cost ~10 µs a message)."""
    return _GSM7_CHARACTERS.issuperset(normalised)


def count_parts(text: str) -> int:
    """How many SMS the text costs; operators bill and rate-limit per part."""
    return len(_chunks(unicodedata.normalize("NFC", text))[0])


def encode_sms(text: str, *, reference: int) -> EncodedSms:
    """Encode and, when it does not fit one SMS, split into parts with a concatenation UDH.

    `reference` identifies the parts of one message on the handset; only its low byte is sent, so
    callers should vary it between messages to the same subscriber.
    Raises ValueError when the text would need more than 255 parts.
    """
    chunks, encoding = _chunks(unicodedata.normalize("NFC", text))
    data_coding = DATA_CODING_GSM7 if encoding == GSM7 else DATA_CODING_UCS2
    if len(chunks) == 1:
        return EncodedSms(parts=chunks, data_coding=data_coding, esm_class=0, encoding=encoding)
    if len(chunks) > _MAX_PARTS:
        raise ValueError(f"text needs {len(chunks)} SMS parts, more than {_MAX_PARTS}")
    ref = reference & 0xFF
    parts = [_udh(ref, len(chunks), seq) + chunk for seq, chunk in enumerate(chunks, start=1)]
    return EncodedSms(parts=parts, data_coding=data_coding, esm_class=ESM_CLASS_UDHI, encoding=encoding)


def _chunks(normalised: str) -> tuple[list[bytes], str]:
    """The payload of each part (no UDH yet) and the encoding. Whole-text codecs at C speed (the
    send path encodes thousands of messages a second), cut so no character is split."""
    if _is_gsm7(normalised):
        data = normalised.translate(_GSM7_TRANSLATION).encode("latin-1")
        # 0x1B only ever starts an escape pair (the basic table has no 0x1B character).
        return _split(data, single=_GSM7_SINGLE, part=_GSM7_PART, splits_char=lambda cut: data[cut - 1] == _ESCAPE), GSM7
    data = normalised.encode("utf-16-be")
    # A high surrogate (0xD800-0xDBFF) at the end of a cut would split a character in two.
    return _split(data, single=2 * _UCS2_SINGLE, part=2 * _UCS2_PART,
                  splits_char=lambda cut: 0xD8 <= data[cut - 2] <= 0xDB), UCS2


def _split(data: bytes, *, single: int, part: int, splits_char: Callable[[int], bool]) -> list[bytes]:
    """One chunk if the data fits one SMS (`single` octets), else chunks of at most `part` octets,
    each cut moved back one unit (escape byte / surrogate) when it would split a character."""
    if len(data) <= single:
        return [data]
    unit = 1 if single == _GSM7_SINGLE else 2
    chunks: list[bytes] = []
    start = 0
    while len(data) - start > part:
        cut = start + part
        if splits_char(cut):
            cut -= unit
        chunks.append(data[start:cut])
        start = cut
    chunks.append(data[start:])
    return chunks


def _udh(reference: int, total: int, seq: int) -> bytes:
    """Concatenated-SMS user data header, 8-bit reference (IEI 0x00)."""
    return bytes([0x05, 0x00, 0x03, reference, total, seq])


def concat_header(part: bytes) -> tuple[int, int, int] | None:
    """(reference, total, seq) from a part's concatenation UDH, or None when it has none.

    Understands both the 8-bit (IEI 0x00) and 16-bit (IEI 0x08) reference forms, because receivers
    and the test SMSC must read what other senders produce too.
    """
    if not part:
        return None
    header_end = 1 + part[0]
    position = 1
    while position + 2 <= header_end and header_end <= len(part):
        iei, length = part[position], part[position + 1]
        value = part[position + 2 : position + 2 + length]
        if iei == 0x00 and length == 3:
            return value[0], value[1], value[2]
        if iei == 0x08 and length == 4:
            return (value[0] << 8) | value[1], value[2], value[3]
        position += 2 + length
    return None


def decode_parts(parts: list[bytes], data_coding: int, *, esm_class: int | None = None) -> str:
    """Reassemble a message from its parts' short_message bytes, in UDH sequence order.

    `esm_class` says whether the parts carry a UDH (bit 0x40); when not given, a UDH is assumed
    exactly when there is more than one part, which is what `encode_sms` produces.
    """
    has_udh = bool(esm_class & ESM_CLASS_UDHI) if esm_class is not None else len(parts) > 1
    payloads = [_strip_udh(part) for part in _in_sequence(parts)] if has_udh else list(parts)
    return _decode_payload(b"".join(payloads), data_coding)


def _in_sequence(parts: Iterable[bytes]) -> list[bytes]:
    """Parts sorted by their UDH seq; parts without a concatenation header keep their place."""
    indexed = list(enumerate(parts))
    return [part for _, part in sorted(indexed, key=lambda item: _seq_key(*item))]


def _seq_key(index: int, part: bytes) -> int:
    header = concat_header(part)
    return header[2] if header else index


def _strip_udh(part: bytes) -> bytes:
    return part[1 + part[0] :] if part else part


def _decode_payload(payload: bytes, data_coding: int) -> str:
    if data_coding == DATA_CODING_UCS2:
        return payload.decode("utf-16-be")
    if data_coding == DATA_CODING_GSM7:
        return _decode_gsm7(payload)
    return payload.decode("latin-1")


def _decode_gsm7(payload: bytes) -> str:
    """Unpacked septets to text; an escape followed by an unknown code reads as the base char."""
    chars: list[str] = []
    escaped = False
    for septet in payload:
        if escaped:
            chars.append(_DECODE_GSM7_EXTENSION.get(septet, _DECODE_GSM7_BASIC.get(septet, "?")))
            escaped = False
        elif septet == _ESCAPE:
            escaped = True
        else:
            chars.append(_DECODE_GSM7_BASIC.get(septet, "?"))
    return "".join(chars)
