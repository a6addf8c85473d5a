"""The hot-path PDU codec (channels/smpp_wire.py) writes and reads exactly what smpplib does."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st
from smpplib import smpp
from smpplib.client import Client

from channels import smpp_wire

_CLIENT = Client("127.0.0.1", 1)  # only a sequence source for smpplib's PDU objects; never connects
_ADDRESS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=25)
_OCTET = st.integers(min_value=0, max_value=255)


@settings(max_examples=300, deadline=None)
@given(source=_ADDRESS, destination=_ADDRESS, ton=_OCTET, npi=_OCTET, esm_class=_OCTET, data_coding=_OCTET,
       registered=_OCTET, short_message=st.binary(max_size=140), sequence=st.integers(1, 0x7FFFFFFF))
def test_submit_sm_is_byte_for_byte_smpplibs(source: str, destination: str, ton: int, npi: int, esm_class: int,
                                              data_coding: int, registered: int, short_message: bytes,
                                              sequence: int) -> None:
    fields = {"source_addr_ton": ton, "source_addr_npi": npi, "source_addr": source, "dest_addr_ton": npi,
              "dest_addr_npi": ton, "destination_addr": destination, "esm_class": esm_class,
              "data_coding": data_coding, "registered_delivery": registered}
    reference = smpp.make_pdu("submit_sm", client=_CLIENT, short_message=short_message, **fields)
    reference.sequence = sequence
    assert smpp_wire.SubmitTemplate.build(**fields).pdu(sequence, short_message) == reference.generate()


@pytest.mark.parametrize("status", [0, 0x14, 0x58, 0x0B])
def test_deliver_sm_resp_is_smpplibs(status: int) -> None:
    reference = smpp.make_pdu("deliver_sm_resp", client=_CLIENT, status=status)
    reference.sequence = 4242
    assert smpp_wire.deliver_sm_resp(4242, status) == reference.generate()


@pytest.mark.parametrize("body", [b"", b"0a1b2c\0", b"\0"])
def test_submit_sm_resp_message_id_reads_like_smpplib(body: bytes) -> None:
    raw = struct.pack(">LLLL", 16 + len(body), smpp_wire.SUBMIT_SM_RESP, 0, 9) + body
    assert smpp_wire.submit_sm_resp_message_id(raw) == smpp.parse_pdu(raw, client=_CLIENT).message_id


def _deliver_sm(short_message: bytes, tlvs: bytes, *, source: bytes = b"84912345678", status: int = 0) -> bytes:
    body = (b"\0" + bytes((1, 1)) + source + b"\0" + bytes((5, 0)) + b"VNPT\0" + bytes((0x04, 0, 0)) + b"\0\0"
            + bytes((0, 0, 0, 0, len(short_message))) + short_message + tlvs)
    return struct.pack(">LLLL", 16 + len(body), smpp_wire.DELIVER_SM, status, 77) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


@settings(max_examples=200, deadline=None)
@given(text=st.binary(max_size=160), receipted=st.one_of(st.none(), st.binary(min_size=1, max_size=20)),
       state=st.one_of(st.none(), st.integers(0, 255)), extra=st.booleans())
def test_a_receipt_reads_like_smpplib(text: bytes, receipted: bytes | None, state: int | None, extra: bool) -> None:
    tlvs = b""
    if extra:
        tlvs += _tlv(0x0423, b"\x03\x00\x00")  # network_error_code: skipped
    if receipted is not None:
        tlvs += _tlv(0x001E, receipted.replace(b"\0", b"x") + b"\0")
    if state is not None:
        tlvs += _tlv(0x0427, bytes((state,)))
    raw = _deliver_sm(text, tlvs)
    ours = smpp_wire.parse_deliver_sm(raw)
    theirs = smpp.parse_pdu(raw, client=_CLIENT, allow_unknown_opt_params=True)
    assert ours is not None
    assert (ours.sequence, ours.esm_class, ours.source_addr, ours.short_message, ours.receipted_message_id,
            ours.message_state) == (theirs.sequence, theirs.esm_class, theirs.source_addr, theirs.short_message,
                                    theirs.receipted_message_id, theirs.message_state)


def test_unusual_deliver_sm_is_left_to_smpplib() -> None:
    good = _deliver_sm(b"id:1 stat:DELIVRD", b"")
    assert smpp_wire.parse_deliver_sm(good) is not None
    assert smpp_wire.parse_deliver_sm(good[:-3]) is None  # truncated short_message
    assert smpp_wire.parse_deliver_sm(_deliver_sm(b"x", b"", status=8)) is None
    assert smpp_wire.parse_deliver_sm(_deliver_sm(b"", _tlv(0x0424, b"payload"))) is None  # message_payload
    assert smpp_wire.parse_deliver_sm(_deliver_sm(b"x", _tlv(0x0427, b"\x02") * 2)) is None


def test_split_keeps_a_partial_pdu_and_refuses_a_broken_length() -> None:
    first, second = _deliver_sm(b"a", b""), _deliver_sm(b"bb", b"")
    buffer = bytearray(first + second[:10])
    assert smpp_wire.split_pdus(buffer) == [first]
    buffer += second[10:]
    assert smpp_wire.split_pdus(buffer) == [second]
    assert buffer == bytearray()
    with pytest.raises(ValueError):
        smpp_wire.split_pdus(bytearray(struct.pack(">L", 3) + b"\0" * 12))
