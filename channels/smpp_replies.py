"""Subscribers' replies (mobile-originated `deliver_sm`): decoding and reassembly of long replies.

A reply is any deliver_sm that is not a delivery receipt (`esm_class & 0x3C == 0`). A long reply
comes as several deliver_sm, each with a concatenation UDH (8-bit or 16-bit reference); the network
may hand them over out of order and minutes apart, or lose one. `Reassembler` joins them in memory
on the receipt writer thread (never on the reader), bounded in count: an incomplete reply is given
up after `timeout` seconds, or when too many are waiting, and what arrived is stored then (with
`parts < parts_expected`), so nothing the subscriber wrote is silently dropped.

Each part keeps the `answer` token its deliver_sm_resp needs: the writer answers the parts of a
reply only once the reply is stored, so an SMSC keeps (and hands over again) any part we did not
store — the same rule as for receipts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notifier.sms import concat_header, decode_parts

ESM_CLASS_UDHI = 0x40
DATA_CODING_GSM7, DATA_CODING_ASCII, DATA_CODING_LATIN1, DATA_CODING_UCS2 = 0x00, 0x01, 0x03, 0x08
MAX_INCOMPLETE_REPLIES = 1000  # replies waiting for a part, at most (the oldest is stored as it is)


@dataclass(frozen=True)
class ReplyPart:
    """One deliver_sm of a subscriber's reply, as read on the reader thread (no database)."""

    source: str  # the address as the SMSC sent it ("84912345678", "0912345678"); the store normalises
    destination: str  # our number / short code the subscriber wrote to
    data_coding: int
    short_message: bytes  # UDH included when `concat` is set
    concat: tuple[int, int, int] | None  # (reference, total, seq) from the UDH
    received_at: datetime
    answer: Any = None  # what the writer needs to send this part's deliver_sm_resp


@dataclass
class Reply:
    """A subscriber's message, whole or as much of it as arrived."""

    source: str
    destination: str
    text: str
    data_coding: int
    parts: int  # how many parts arrived
    parts_expected: int
    received_at: datetime  # when its last part arrived
    answers: list[Any] = field(default_factory=list)  # the deliver_sm_resp tokens of its parts


def reply_part(pdu: Any, answer: Any = None) -> ReplyPart:
    """Read a non-receipt deliver_sm (smpp_wire's DeliverSm or smpplib's PDU object)."""
    short_message = bytes(getattr(pdu, "short_message", None) or getattr(pdu, "message_payload", None) or b"")
    esm_class = int(getattr(pdu, "esm_class", 0) or 0)
    concat = concat_header(short_message) if esm_class & ESM_CLASS_UDHI else None
    if concat is not None and (concat[1] < 2 or not 1 <= concat[2] <= concat[1]):
        concat = None  # "part 1 of 1" or a seq out of range: read it as one message
    return ReplyPart(source=_text(getattr(pdu, "source_addr", b"")),
                     destination=_text(getattr(pdu, "destination_addr", b"")),
                     data_coding=int(getattr(pdu, "data_coding", 0) or 0), short_message=short_message,
                     concat=concat, received_at=datetime.now(UTC), answer=answer)


def decode_reply(parts: list[ReplyPart]) -> str:
    """The text of the parts (in UDH order), decoded by data_coding: GSM-7 (unpacked septets),
    UCS-2, Latin-1 / IA5. Broken UCS-2 (an odd length, a lone surrogate) reads with U+FFFD
    instead of losing the message."""
    if not parts:
        return ""
    coding = parts[0].data_coding
    has_udh = any(part.concat is not None for part in parts)
    messages = [part.short_message for part in parts]
    if coding in (DATA_CODING_GSM7, DATA_CODING_UCS2):
        try:
            return decode_parts(messages, coding, esm_class=ESM_CLASS_UDHI if has_udh else 0)
        except UnicodeDecodeError:
            pass
    ordered = sorted(parts, key=lambda part: part.concat[2] if part.concat else 0)
    payload = b"".join(part.short_message[1 + part.short_message[0]:] if part.concat and part.short_message
                       else part.short_message for part in ordered)
    if coding == DATA_CODING_UCS2:
        dangling = "\N{REPLACEMENT CHARACTER}" if len(payload) % 2 else ""  # half a code unit
        return payload[: len(payload) // 2 * 2].decode("utf-16-be", errors="replace") + dangling
    return payload.decode("latin-1")


class Reassembler:
    """Joins the parts of long replies; bounded, and gives up on a reply after `timeout` seconds.

    Keyed by (source, destination, reference, total): 8-bit references repeat, so a part whose
    seq is already held replaces it (an SMSC sending it again after a lost session) rather than
    mixing two replies. Not thread-safe: only the writer thread uses it.
    """

    def __init__(self, timeout: float, *, capacity: int = MAX_INCOMPLETE_REPLIES,
                 clock: Any = time.monotonic) -> None:
        self._timeout = timeout
        self._capacity = capacity
        self._clock = clock
        self._waiting: OrderedDict[tuple[str, str, int, int], tuple[float, dict[int, ReplyPart]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, part: ReplyPart) -> list[Reply]:
        """The replies this part completes (or pushes out when full); usually none or one."""
        if part.concat is None:
            return [_reply([part], expected=1)]
        reference, total, seq = part.concat
        key = (part.source, part.destination, reference, total)
        started, parts = self._waiting.pop(key, (self._clock(), {}))
        parts[seq] = part
        if len(parts) == total:
            return [_reply(list(parts.values()), expected=total)]
        self._waiting[key] = (started, parts)
        done = []
        while len(self._waiting) > self._capacity:
            _, (_, oldest) = self._waiting.popitem(last=False)
            done.append(_reply(list(oldest.values()), expected=next(iter(oldest.values())).concat[1]))  # type: ignore[index]
        return done

    def expired(self) -> list[Reply]:
        """Replies still missing a part after the timeout: stored with what arrived."""
        now = self._clock()
        done = []
        for key in [key for key, (started, _) in self._waiting.items() if now - started >= self._timeout]:
            _, parts = self._waiting.pop(key)
            done.append(_reply(list(parts.values()), expected=key[3]))
        return done

    def drop(self) -> int:
        """Forget every incomplete reply without answering it (the channel is closing: the SMSC
        hands the unanswered parts over again on the next bind). Returns how many were dropped."""
        count = len(self._waiting)
        self._waiting.clear()
        return count


def _reply(parts: list[ReplyPart], *, expected: int) -> Reply:
    ordered = sorted(parts, key=lambda part: part.concat[2] if part.concat else 0)
    first = ordered[0]
    return Reply(source=first.source, destination=first.destination, text=decode_reply(ordered),
                 data_coding=first.data_coding, parts=len(ordered), parts_expected=expected,
                 received_at=max(part.received_at for part in ordered),
                 answers=[part.answer for part in ordered])


def _text(value: bytes | str | None) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")
