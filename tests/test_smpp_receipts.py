"""Reading a receipt's text: the one-step reading of the standard layout finds what the
field-by-field reading finds, whatever the SMSC's spelling."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from channels.smpp_receipts import _STANDARD_RECEIPT, _fields_one_by_one, receipt_fields

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
