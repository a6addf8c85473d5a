"""SmppChannel against the real loopback SMSC (smpp34 in its own process): no mocks."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from channels.base import OutgoingMessage, Receipt
from channels.smpp import PartiallySentError, SmppChannel
from channels.smpp_receipts import message_id_alternatives, normalise_message_id
from notifier.errors import PermanentChannelError, TransientChannelError
from notifier.peers.smsc import SmscPeer
from notifier.settings import SmppSettings
from tests.waiting import wait_until

WARNING_TEXT = (
    "Kính gửi Quý khách Nguyễn Văn Ánh: thiết bị dùng đường truyền của Quý khách có dấu hiệu nhiễm "
    "mã độc Mirai. Vui lòng đổi mật khẩu mặc định của modem, camera và cập nhật phần mềm. "
    "Hotline 18001091."
)
SUBSCRIBER = "+84912345678"


class Receipts:
    """A thread-safe ReceiptSink that tests can poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Receipt] = []

    def __call__(self, receipt: Receipt) -> None:
        with self._lock:
            self._items.append(receipt)

    def all(self) -> list[Receipt]:
        with self._lock:
            return list(self._items)

    def by_id(self) -> dict[str, Receipt]:
        return {receipt.provider_message_id: receipt for receipt in self.all()}


def message(body: str = "Canh bao an toan thong tin", destination: str = SUBSCRIBER,
            n: int = 1) -> OutgoingMessage:
    return OutgoingMessage(notification_id=n, destination=destination, body=body,
                           reference=f"notification-{n}")


@pytest.fixture
def start_peer(tmp_path: Path) -> Iterator[Callable[..., SmscPeer]]:
    started: list[SmscPeer] = []

    def start(**options: object) -> SmscPeer:
        peer = SmscPeer(tmp_path / f"smsc-{len(started)}.jsonl", **options)  # type: ignore[arg-type]
        started.append(peer)
        return peer.start()

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def open_channel() -> Iterator[Callable[..., SmppChannel]]:
    opened: list[SmppChannel] = []

    def open_(peer: SmscPeer, sink: Receipts | None = None, **settings: object) -> SmppChannel:
        options: dict[str, object] = {"port": peer.port, "submit_timeout_seconds": 5.0,
                                      "connect_timeout_seconds": 2.0, **settings}
        channel = SmppChannel(SmppSettings(**options), on_receipt=sink)  # type: ignore[arg-type]
        opened.append(channel)
        channel.start()
        return channel

    yield open_
    for channel in opened:
        channel.close()


def test_long_vietnamese_warning_goes_out_as_three_ucs2_parts(start_peer, open_channel) -> None:
    peer = start_peer()
    channel = open_channel(peer)

    result = channel.send(message(WARNING_TEXT))

    assert (result.parts, result.encoding, result.provider_status) == (3, "UCS-2", "ESME_ROK")
    wait_until(lambda: len(peer.submits()) == 3, "3 submits logged")  # the peer logs after it answers
    submits = peer.submits()
    assert len(submits) == 3
    assert {(s["data_coding"], s["esm_class"], s["registered_delivery"]) for s in submits} == {(8, 0x40, 1)}
    assert {(s["destination_addr"], s["source_addr"]) for s in submits} == {("84912345678", "NHAMANG")}
    headers = [bytes.fromhex(s["short_message_hex"])[:6] for s in submits]
    assert len({header[3] for header in headers}) == 1  # one UDH reference
    assert sorted((header[4], header[5]) for header in headers) == [(3, 1), (3, 2), (3, 3)]
    [received] = peer.messages()
    assert received["text"] == WARNING_TEXT
    assert received["parts"] == 3
    assert result.provider_message_ids == [normalise_message_id(mid) for mid in received["message_ids"]]


def test_receipts_arrive_with_matching_ids(start_peer, open_channel) -> None:
    peer = start_peer()
    receipts = Receipts()
    channel = open_channel(peer, receipts)

    result = channel.send(message(WARNING_TEXT))

    wait_until(lambda: set(receipts.by_id()) >= set(result.provider_message_ids), "3 receipts")
    for part_id in result.provider_message_ids:
        receipt = receipts.by_id()[part_id]
        assert (receipt.channel, receipt.status, receipt.raw_status, receipt.error_code) == (
            "sms", "delivered", "DELIVRD", "000")
        assert receipt.destination == SUBSCRIBER
        assert receipt.done_at is not None and receipt.done_at.utcoffset() is not None


@pytest.mark.parametrize("bind_mode", ["transceiver", "transmitter_receiver"])
def test_closing_the_channel_ends_its_reader_and_writer_at_once(start_peer, open_channel, monkeypatch,
                                                                bind_mode) -> None:
    """`close` wakes the reader out of its select and the receipt writer out of its wait: with both
    waits made 30 s long, a close that only set a flag would leave the threads running past its
    joins (each waits the connect timeout + 1 s)."""
    import channels.smpp as smpp_module
    import channels.smpp_inbound as inbound_module

    monkeypatch.setattr(smpp_module, "_POLL_SECONDS", 30.0)
    monkeypatch.setattr(inbound_module, "IDLE_WAIT_SECONDS", 30.0)
    peer = start_peer(relay=bind_mode != "transceiver")
    receipts = Receipts()
    channel = open_channel(peer, receipts, bind_mode=bind_mode)
    result = channel.send(message())
    wait_until(lambda: set(receipts.by_id()) == set(result.provider_message_ids), "the receipt")
    reader, writer = channel._reader, channel._writer._thread  # type: ignore[union-attr]

    channel.close()

    assert reader is not None and not reader.is_alive()
    assert writer is not None and not writer.is_alive()


class _HeldSink(Receipts):
    """A sink whose first store waits until the test lets it go: receipts pile up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.holding = threading.Event(), threading.Event()
        self.held = 0

    def store(self, batch: list[Receipt]) -> None:
        if not self.holding.is_set():
            self.held = len(batch)
            self.holding.set()
            self.release.wait(60)
        for receipt in batch:
            self(receipt)


def test_receipts_queued_when_the_channel_closes_are_stored(start_peer, open_channel) -> None:
    """Receipts the reader queued while the writer was busy storing are stored by `close`, not
    dropped: the writer drains its queue before it ends (nothing to wait for once the reader has
    stopped)."""
    peer = start_peer()
    sink = _HeldSink()
    channel = open_channel(peer, sink)
    ids = list(channel.send(message(n=0)).provider_message_ids)
    sink.holding.wait(60)  # the writer is inside its first store: the next receipts queue up
    ids += [part for n in range(1, 5) for part in channel.send(message(n=n)).provider_message_ids]
    queue = channel._writer._queue  # type: ignore[union-attr]
    wait_until(lambda: sink.holding.is_set() and sink.held + queue.qsize() == len(ids),
               "every receipt held or queued")
    assert queue.qsize() > 0  # some wait in the queue when the close begins
    closing = threading.Thread(target=channel.close)
    closing.start()
    wait_until(channel._writer._stop.is_set, "the writer told to stop")  # type: ignore[union-attr]
    sink.release.set()  # only now does the writer come back for the queued receipts
    closing.join(60)

    assert not closing.is_alive()
    assert set(sink.by_id()) == set(ids)


def test_decimal_receipt_ids_match_through_alternative_ids(start_peer, open_channel) -> None:
    peer = start_peer(receipt_id_format="decimal")
    receipts = Receipts()
    channel = open_channel(peer, receipts)

    result = channel.send(message())

    [part_id] = result.provider_message_ids
    wait_until(lambda: len(receipts.all()) == 1, "the receipt")
    [receipt] = receipts.all()
    assert receipt.provider_message_id == str(int(part_id, 16))
    assert part_id in receipt.alternative_ids
    assert receipt.status == "delivered"


def test_failed_delivery_is_reported_undelivered(start_peer, open_channel) -> None:
    peer = start_peer(fail_suffix="99")
    receipts = Receipts()
    channel = open_channel(peer, receipts)

    result = channel.send(message(destination="+84912345699"))

    wait_until(lambda: len(receipts.all()) == 1, "the receipt")
    [receipt] = receipts.all()
    assert receipt.provider_message_id == result.provider_message_ids[0]
    assert (receipt.status, receipt.raw_status, receipt.error_code) == ("undelivered", "UNDELIV", "001")


def test_receipts_for_a_closed_session_reach_the_next_bind(start_peer, open_channel) -> None:
    peer = start_peer(receipt_delay=1.5)
    first_receipts, other_receipts, next_receipts = Receipts(), Receipts(), Receipts()
    first = open_channel(peer, first_receipts, system_id="notifier")

    result = first.send(message(WARNING_TEXT))
    first.close()  # before the SMSC sends any receipt
    other = open_channel(peer, other_receipts, system_id="someone-else")
    open_channel(peer, next_receipts, system_id="notifier")

    wait_until(lambda: set(next_receipts.by_id()) == set(result.provider_message_ids), "stored receipts")
    assert first_receipts.all() == []
    assert other.is_bound and other_receipts.all() == []


def test_receipt_the_sink_could_not_store_is_redelivered_after_rebind(start_peer, open_channel) -> None:
    peer = start_peer()
    refused: list[Receipt] = []

    def failing_sink(receipt: Receipt) -> None:
        refused.append(receipt)
        raise RuntimeError("database is down")

    first = open_channel(peer, failing_sink)  # type: ignore[arg-type]
    result = first.send(message())
    wait_until(lambda: len(refused) == 1, "the refused receipt")
    first.close()
    receipts = Receipts()
    open_channel(peer, receipts)

    wait_until(lambda: set(receipts.by_id()) == set(result.provider_message_ids), "the redelivered receipt")


def test_concurrent_senders_share_one_session(start_peer, open_channel) -> None:
    peer = start_peer()
    receipts = Receipts()
    channel = open_channel(peer, receipts)
    messages = [message(f"Canh bao so {n}", destination=f"+8491200{n:04d}", n=n) for n in range(200)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(channel.send, messages))

    ids = [part_id for result in results for part_id in result.provider_message_ids]
    assert len(ids) == len(set(ids)) == 200
    wait_until(lambda: len(peer.submits()) == 200, "200 submits logged")  # the peer logs after it answers
    assert sorted(normalise_message_id(s["message_id"]) for s in peer.submits()) == sorted(ids)
    wait_until(lambda: set(receipts.by_id()) == set(ids), "200 receipts")


def test_reconnects_after_the_smsc_restarts(start_peer, open_channel) -> None:
    peer = start_peer()
    channel = open_channel(peer)
    before = channel.send(message(n=1))

    peer.stop()
    with pytest.raises(TransientChannelError):
        channel.send(message(n=2))
    peer.start()  # same port

    wait_until(lambda: channel.is_bound, "the rebind")
    after = channel.send(message(n=3))
    assert after.provider_message_ids and after.provider_message_ids != before.provider_message_ids


def test_idle_session_is_kept_alive_by_enquire_link(start_peer, open_channel, caplog) -> None:
    peer = start_peer()
    channel = open_channel(peer, enquire_link_seconds=0.2)

    time.sleep(1.0)  # idle for five enquire_link periods: the watchdog drops a link that stays silent

    assert channel.is_bound
    assert "connection lost" not in caplog.text
    assert channel.send(message()).parts == 1


def test_silent_smsc_is_detected_and_replaced(start_peer, open_channel, caplog) -> None:
    peer = start_peer()
    channel = open_channel(peer, enquire_link_seconds=0.2)
    assert peer.pid is not None

    os.kill(peer.pid, signal.SIGSTOP)  # TCP stays up, but nothing answers
    try:
        wait_until(lambda: "no PDU from the SMSC" in caplog.text, "the watchdog")
    finally:
        os.kill(peer.pid, signal.SIGCONT)

    wait_until(lambda: channel.is_bound, "the rebind")
    assert channel.send(message()).parts == 1


def test_smsc_rejection_of_the_destination_is_permanent(start_peer, open_channel) -> None:
    channel = open_channel(start_peer(reject={"13": 0x0B}))

    with pytest.raises(PermanentChannelError) as refused:
        channel.send(message(destination="+84912345613"))

    assert refused.value.provider_status == "0x0000000b"
    assert channel.send(message()).parts == 1  # the session survives an error PDU


def test_throttling_is_transient_and_keeps_the_accepted_parts(start_peer, open_channel) -> None:
    peer = start_peer(reject_after=1)
    channel = open_channel(peer)

    with pytest.raises(PartiallySentError) as partial:
        channel.send(message(WARNING_TEXT))
    with pytest.raises(TransientChannelError) as throttled:
        channel.send(message())

    [accepted] = [s for s in peer.submits() if s["message_id"]]
    assert partial.value.accepted_ids == [normalise_message_id(accepted["message_id"])]
    assert partial.value.provider_status == throttled.value.provider_status == "0x00000058"
    assert not isinstance(throttled.value, PartiallySentError)
    assert partial.value.retryable  # the whole message may go again later


def test_invalid_destination_is_permanent(start_peer, open_channel) -> None:
    channel = open_channel(start_peer())
    with pytest.raises(PermanentChannelError):
        channel.send(message(destination="+84 91 abc"))


@pytest.mark.parametrize(
    ("raw", "normalised", "alternatives"),
    [
        (b"0000A1F3\x00", "a1f3", ("41459",)),
        ("41459", "41459", ("a1f3", "267353")),
        (" 000 ", "0", ()),
        ("msg-7", "msg-7", ()),
    ],
)
def test_message_id_normalisation(raw: str | bytes, normalised: str, alternatives: tuple[str, ...]) -> None:
    assert normalise_message_id(raw) == normalised
    assert message_id_alternatives(raw) == alternatives


# --- bind modes, sender address, TLS, error PDUs (issue 8, item 1) -----------------------------


def test_transmitter_and_receiver_binds_send_and_hear_receipts(start_peer, open_channel) -> None:
    peer = start_peer(relay=True)
    receipts = Receipts()
    channel = open_channel(peer, receipts, bind_mode="transmitter_receiver", system_type="VMA")

    result = channel.send(message(WARNING_TEXT))

    wait_until(lambda: set(receipts.by_id()) == set(result.provider_message_ids), "3 receipts on the receiver")
    binds = [(bind["command"], bind["system_id"], bind["system_type"]) for bind in peer.binds()]
    assert binds == [("bind_transmitter", "notifier", "VMA"), ("bind_receiver", "notifier", "VMA")]


def test_transceiver_bind_sends_the_configured_system_type(start_peer, open_channel) -> None:
    peer = start_peer(relay=True)
    open_channel(peer, system_type="OTA")
    assert [(b["command"], b["system_type"]) for b in peer.binds()] == [("bind_transceiver", "OTA")]


@pytest.mark.parametrize(("source", "ton", "npi"), [("NHAMANG", 5, 0), ("84912000000", 1, 1), ("8088", 3, 0)])
def test_the_smsc_receives_the_configured_sender_type(start_peer, open_channel, source, ton, npi) -> None:
    peer = start_peer()
    channel = open_channel(peer, source_addr=source, source_addr_ton=ton, source_addr_npi=npi)

    channel.send(message())

    wait_until(lambda: len(peer.submits()) == 1, "the submit")
    [submit] = peer.submits()
    assert (submit["source_addr"], submit["source_addr_ton"], submit["source_addr_npi"]) == (source, ton, npi)
    assert (submit["dest_addr_ton"], submit["dest_addr_npi"]) == (1, 1)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    import subprocess

    cert, key = tmp_path / "smsc-cert.pem", tmp_path / "smsc-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_to_the_smsc_sends_and_hears_receipts(start_peer, open_channel, certificate) -> None:
    cert, key = certificate
    peer = start_peer(tls_cert=cert, tls_key=key)
    receipts = Receipts()
    channel = open_channel(peer, receipts, tls=True, tls_ca_file=cert, bind_mode="transmitter_receiver")

    results = [channel.send(message(WARNING_TEXT, n=1)), channel.send(message(n=2))]

    ids = {part for result in results for part in result.provider_message_ids}
    wait_until(lambda: set(receipts.by_id()) == ids, "4 receipts over TLS")
    assert [received["text"] for received in peer.messages()] == [WARNING_TEXT, "Canh bao an toan thong tin"]
    assert {bind["tls"] for bind in peer.binds()} == {True}


def test_tls_refuses_an_smsc_whose_certificate_is_not_trusted(start_peer, open_channel, certificate) -> None:
    cert, key = certificate
    peer = start_peer(tls_cert=cert, tls_key=key)
    channel = open_channel(peer, tls=True)  # the system CAs: the self-signed certificate is not among them

    with pytest.raises(TransientChannelError, match="(?i)certificate"):
        channel.send(message())
    assert not channel.is_bound
    assert peer.submits() == [] and peer.binds() == []


def test_error_pdus_do_not_stop_the_reader(start_peer, open_channel, caplog) -> None:
    import struct

    peer = start_peer(relay=True)
    receipts = Receipts()
    channel = open_channel(peer, receipts)
    channel.send(message(n=1))

    generic_nack = struct.pack(">LLLL", 16, 0x80000000, 0x00000003, 0x7FFF0001)  # for no submit of ours
    unknown_command = struct.pack(">LLLL", 20, 0x00000099, 0, 0x7FFF0002) + b"\0\0\0\0"
    assert peer.inject(generic_nack + unknown_command) == 1

    second = channel.send(message(n=2))
    wait_until(lambda: second.provider_message_ids[0] in receipts.by_id(), "the second receipt")
    assert channel.is_bound and "connection lost" not in caplog.text


def test_a_dropped_connection_loses_nothing_and_sending_resumes_after_rebind(start_peer, open_channel) -> None:
    peer = start_peer(receipt_delay=1.0)
    receipts = Receipts()
    channel = open_channel(peer, receipts)
    before = channel.send(message(WARNING_TEXT, n=1))  # receipts due in 1 s

    peer.kill()  # the SMSC drops every connection; its journal keeps the receipts not yet sent
    peer.start()

    wait_until(lambda: channel.is_bound, "the rebind")
    after = channel.send(message(n=2))
    expected = set(before.provider_message_ids) | set(after.provider_message_ids)
    wait_until(lambda: set(receipts.by_id()) == expected, "every receipt, before and after the drop")


def test_the_peer_log_reader_leaves_a_line_still_being_written(tmp_path: Path) -> None:
    """Tests count at the SMSC while it writes: a half-written last line is read next time, not a crash."""
    log = tmp_path / "smsc.jsonl"
    log.write_text('{"destination_addr": "84910000001", "message_id": "0A"}\n{"destination_addr": "849100', encoding="utf-8")
    peer = SmscPeer(log)
    assert [submit["message_id"] for submit in peer.submits()] == ["0A"]
    with log.open("a", encoding="utf-8") as handle:
        handle.write('00002", "message_id": "0B"}\n')
    assert [submit["message_id"] for submit in peer.submits()] == ["0A", "0B"]
