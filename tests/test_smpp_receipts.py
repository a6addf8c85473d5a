"""Reading a receipt's text: the one-step reading of the standard layout finds what the
field-by-field reading finds, whatever the SMSC's spelling."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from channels.smpp_receipts import (
    _STANDARD_RECEIPT, _fields_one_by_one, _other_readings, _readings, normalise_message_id, receipt_fields,
)

_KEYS = ["id", "sub", "dlvrd", "submit date", "done date", "stat", "err"]
_VALUE = st.text(alphabet="0123456789abcdefDELIVRUNDtx:", max_size=12)
_SPACE = st.sampled_from([" ", " ", " ", "  ", "\t", ""])
_TAIL = st.sampled_from(["", " ", " text:Kinh gui", " Text:", "text:x", " stat:UNDELIV text:x", " id:99", "\ttext:a b"])


@settings(max_examples=500, deadline=None)
@given(values=st.lists(_VALUE, min_size=7, max_size=7), spaces=st.lists(_SPACE, min_size=7, max_size=7),
       upper=st.lists(st.booleans(), min_size=7, max_size=7), tail=_TAIL)
def test_the_standard_layout_reads_as_field_by_field(values: list[str], spaces: list[str], upper: list[bool],
                                                     tail: str) -> None:
    text = "".join(f"{space if index else ''}{key.upper() if up else key}:{value}"
                   for index, (key, value, space, up) in enumerate(zip(_KEYS, values, spaces, upper))) + tail
    assert receipt_fields(text) == _fields_one_by_one(text)


def test_the_usual_receipt_takes_the_one_step_reading() -> None:
    text = "id:1a2b3c4d sub:001 dlvrd:001 submit date:2612011010 done date:2612011012 stat:DELIVRD err:000 text:Kinh"
    assert _STANDARD_RECEIPT.match(text) is not None
    assert receipt_fields(text) == {"id": "1a2b3c4d", "sub": "001", "dlvrd": "001", "submit date": "2612011010",
                                    "done date": "2612011012", "stat": "DELIVRD", "err": "000"}


def test_a_field_repeated_after_err_is_read_field_by_field() -> None:
    text = "id:7 sub:001 dlvrd:001 submit date:2612011010 done date:2612011012 stat:DELIVRD err:000 stat:UNDELIV"
    assert _STANDARD_RECEIPT.match(text) is None
    assert receipt_fields(text)["stat"] == "UNDELIV"


def _readings_as_first_written(primary: str) -> tuple[str, ...]:
    """The rule as first written (sets of characters), kept to hold the faster one to it."""
    decimal, hexadecimal = frozenset("0123456789"), frozenset("0123456789abcdef")
    readings = []
    if primary and set(primary) <= decimal:
        readings.append(format(int(primary), "x"))
    if primary and set(primary) <= hexadecimal:
        readings.append(str(int(primary, 16)))
    return tuple(dict.fromkeys(reading for reading in readings if reading != primary))


def _other_readings_as_first_written(raw_ids: list, primary: str) -> tuple[str, ...]:  # type: ignore[type-arg]
    readings = [reading for normalised in dict.fromkeys(normalise_message_id(raw) for raw in raw_ids)
                for reading in (normalised, *_readings_as_first_written(normalised))]
    return tuple(dict.fromkeys(reading for reading in readings if reading and reading != primary))


_ID = st.one_of(st.text(alphabet="0123456789", max_size=12), st.text(alphabet="0123456789abcdefABCDEF", max_size=10),
                st.text(alphabet="0123456789abcdefxyz-_ ²\x00", max_size=10))


@settings(max_examples=1000, deadline=None)
@given(raw_ids=st.lists(st.one_of(_ID, _ID.map(lambda text: text.encode("latin-1"))), min_size=1, max_size=3))
def test_every_reading_of_a_receipts_ids_as_the_rule_was_first_written(raw_ids: list) -> None:  # type: ignore[type-arg]
    """A receipt's id is looked up under each of its readings (hex ↔ decimal, the TLV's and the
    text's): the reader's faster way to list them gives exactly what the plain rule gave."""
    primary = normalise_message_id(raw_ids[0])
    assert _readings(primary) == _readings_as_first_written(primary)
    assert _other_readings(raw_ids, primary) == _other_readings_as_first_written(raw_ids, primary)
