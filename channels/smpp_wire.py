"""The three PDUs of the SMPP hot path, encoded and decoded at C speed (struct, bytes).

Per SMS part the channel writes a submit_sm and reads a submit_sm_resp, then reads a deliver_sm
receipt and writes its deliver_sm_resp. smpplib builds a generic object per PDU and walks every
optional parameter of its table to encode or decode it: that cost more CPU than the rest of
sending a part. These functions produce and read the same bytes (tests/test_smpp_wire.py holds
them to smpplib's); every other PDU (binds, enquire_link, unbind, generic_nack, anything unusual)
still goes through smpplib.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
HEADER = struct.Struct(">LLLL")  # command_length, command_id, command_status, sequence_number
MAX_PDU_OCTETS = 1 << 16  # far above any PDU we exchange; a larger length means a broken stream
_TLV = struct.Struct(">HH")
_TLV_RECEIPTED_MESSAGE_ID = 0x001E
_TLV_MESSAGE_STATE = 0x0427
# smpplib's maximum lengths (terminating NUL included) of the C-strings of submit_sm.
_SERVICE_TYPE_MAX, _ADDRESS_MAX = 6, 21


@dataclass(frozen=True)
class SubmitTemplate:
    """The submit_sm body of one message up to (not including) sm_length: the same for every part."""

    prefix: bytes

    @classmethod
    def build(cls, *, service_type: str = "", source_addr_ton: int, source_addr_npi: int, source_addr: str,
              dest_addr_ton: int, dest_addr_npi: int, destination_addr: str, esm_class: int,
              registered_delivery: int, data_coding: int) -> SubmitTemplate:
        """As smpplib writes them: protocol_id, priority_flag, replace_if_present_flag and
        sm_default_msg_id 0, no scheduled delivery or validity period."""
        return cls(b"".join((
            _cstring(service_type, _SERVICE_TYPE_MAX), bytes((source_addr_ton, source_addr_npi)),
            _cstring(source_addr, _ADDRESS_MAX), bytes((dest_addr_ton, dest_addr_npi)),
            _cstring(destination_addr, _ADDRESS_MAX), bytes((esm_class, 0, 0)), b"\0\0",
            bytes((registered_delivery, 0, data_coding, 0)),
        )))

    def pdu(self, sequence: int, short_message: bytes) -> bytes:
        """One part's submit_sm."""
        body_length = len(self.prefix) + 1 + len(short_message)
        return b"".join((HEADER.pack(16 + body_length, SUBMIT_SM, 0, sequence), self.prefix,
                         bytes((len(short_message),)), short_message))


def deliver_sm_resp(sequence: int, status: int) -> bytes:
    """The answer to a deliver_sm (an empty message_id, as smpplib writes it)."""
    return HEADER.pack(17, DELIVER_SM_RESP, status, sequence) + b"\0"


def submit_sm_resp_message_id(pdu: bytes) -> bytes | None:
    """The message_id of a submit_sm_resp as smpplib reads it: None without a body (an error
    answer may carry none), else the octets before the NUL."""
    body = pdu[16:]
    if not body:
        return None
    end = body.find(b"\0")
    return body[:end] if end >= 0 else body[:-1]


@dataclass(frozen=True)
class DeliverSm:
    """What the channel reads from a deliver_sm (the attributes smpplib's object would carry)."""

    sequence: int
    esm_class: int
    source_addr: bytes
    short_message: bytes | None
    receipted_message_id: bytes | None
    message_state: int | None
    destination_addr: bytes = b""  # a subscriber's reply: the number or short code they wrote to
    data_coding: int = 0  # a subscriber's reply: how its text is encoded
    command: str = "deliver_sm"


def parse_deliver_sm(pdu: bytes) -> DeliverSm | None:
    """A deliver_sm with an OK status, or None for anything this reader does not take on (smpplib
    then reads it: a truncated body, a repeated or odd-sized parameter, message_payload)."""
    _, command_id, status, sequence = HEADER.unpack_from(pdu)
    if command_id != DELIVER_SM or status != 0:
        return None
    try:
        pos = _skip_cstring(pdu, 16) + 2  # service_type, source ton + npi
        source_end = pdu.index(b"\0", pos)
        source_addr = pdu[pos:source_end]
        destination_start = source_end + 1 + 2  # dest ton + npi
        pos = _skip_cstring(pdu, destination_start)
        destination_addr = pdu[destination_start:pos - 1]
        esm_class = pdu[pos]
        pos = _skip_cstring(pdu, _skip_cstring(pdu, pos + 3))  # protocol, priority; two times
        data_coding = pdu[pos + 2]  # after registered_delivery, replace_if_present
        sm_length = pdu[pos + 4]  # after sm_default_msg_id
        pos += 5
        short_message = pdu[pos:pos + sm_length] if pos < len(pdu) else None  # smpplib: None at the end
        if len(short_message or b"") != sm_length:
            return None
        pos += sm_length
        receipted, state = None, None
        while pos < len(pdu):
            tag, length = _TLV.unpack_from(pdu, pos)
            value = pdu[pos + 4:pos + 4 + length]
            if len(value) != length:
                return None
            if tag == _TLV_RECEIPTED_MESSAGE_ID and receipted is None and length:
                receipted = value[:-1]  # smpplib drops the last octet (the NUL)
            elif tag == _TLV_MESSAGE_STATE and state is None and length == 1:
                state = value[0]
            elif tag in (_TLV_RECEIPTED_MESSAGE_ID, _TLV_MESSAGE_STATE, 0x0424):
                return None  # repeated, empty or odd: let smpplib decide
            pos += 4 + length
    except (ValueError, IndexError, struct.error):
        return None
    return DeliverSm(sequence, esm_class, source_addr, short_message, receipted, state, destination_addr, data_coding)


def split_pdus(buffer: bytearray) -> list[bytes]:
    """Take every complete PDU off the front of `buffer` (what stays is the start of the next).
    Raises ValueError for a length no PDU can have: the stream is broken."""
    pdus = []
    pos = 0
    while len(buffer) - pos >= 4:
        length = int.from_bytes(buffer[pos:pos + 4], "big")
        if length < 16 or length > MAX_PDU_OCTETS:
            raise ValueError(f"broken PDU length {length}")
        if len(buffer) - pos < length:
            break
        pdus.append(bytes(buffer[pos:pos + length]))
        pos += length
    del buffer[:pos]
    return pdus


def _cstring(value: str, maximum: int) -> bytes:
    """smpplib's C-string: cut to `maximum - 1` characters, latin-1, NUL-terminated."""
    return (value[:maximum - 1] if len(value) >= maximum else value).encode("latin-1") + b"\0"


def _skip_cstring(pdu: bytes, pos: int) -> int:
    return pdu.index(b"\0", pos) + 1
