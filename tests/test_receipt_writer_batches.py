"""How the SMPP receipt writer gathers a batch: everything already queued goes in one store, up to
RECEIPT_BATCH; a stopping writer takes what is queued without waiting."""

from __future__ import annotations

from channels.base import Receipt
from channels.smpp_inbound import RECEIPT_BATCH, Inbound, ReceiptWriter


def _receipt(number: int) -> Inbound:
    return Inbound(Receipt(channel="sms", provider_message_id=f"{number:x}", status="delivered",
                           raw_status="DELIVRD"), client=None, sequence=number)


def _writer() -> ReceiptWriter:
    return ReceiptWriter(lambda receipt: None, system_id="test", current_client=lambda: None,
                         capacity=RECEIPT_BATCH * 2)


def test_receipts_already_queued_are_one_batch_in_order() -> None:
    writer = _writer()
    for number in range(7):
        assert writer.offer(_receipt(number))
    batch = writer._take()
    assert [item.sequence for item in batch] == list(range(7))
    assert writer._take() == []


def test_a_batch_holds_at_most_receipt_batch_and_the_rest_comes_next() -> None:
    writer = _writer()
    for number in range(RECEIPT_BATCH + 5):
        writer.offer(_receipt(number))
    first, second = writer._take(), writer._take()
    assert len(first) == RECEIPT_BATCH
    assert [item.sequence for item in second] == list(range(RECEIPT_BATCH, RECEIPT_BATCH + 5))


def test_a_stopping_writer_takes_what_is_queued() -> None:
    writer = _writer()
    for number in range(3):
        writer.offer(_receipt(number))
    writer._stop.set()
    assert [item.sequence for item in writer._take()] == [0, 1, 2]
    assert writer._take() == []
