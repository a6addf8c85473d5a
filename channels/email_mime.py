"""The bytes of one warning e-mail, built directly for its one fixed shape.

Why not `email.message.EmailMessage`: under `policy.SMTP` the standard library parses every header
into a token tree and refolds it when the message is flattened — about 3 ms of CPU per e-mail,
most of an e-mail's cost, for a message whose shape never changes. Our e-mails are always the
same: a handful of headers, then text/plain alone or multipart/alternative (text/plain +
text/html), UTF-8, base64. So `MessageComposer` prepares once per channel what every e-mail shares
(the encoded From, the MIME skeleton and its boundary), encodes a subject once per distinct subject,
and per e-mail only fills in To, Date, Message-ID and the two bodies (UTF-8 → base64 in C).

The output follows RFC 5322 / 2045–2047: CRLF line ends, no line over 76 characters, non-ASCII
header text as RFC 2047 `=?utf-8?b?…?=` encoded-words of whole characters, bodies base64 so the
message is 7-bit clean whatever the relay supports. An address that is not ASCII is written as
UTF-8 (RFC 6532) and needs a relay with SMTPUTF8 (the channel checks). The standard library
parses the result back to the same subject, sender, text and HTML
(`tests/test_email_channel.py`).
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from channels.base import OutgoingMessage
from notifier.errors import PermanentChannelError

MAX_LINE = 76  # RFC 2047's limit for a line holding encoded-words; RFC 5322 recommends 78
CRLF = "\r\n"
_WORD_PREFIX, _WORD_SUFFIX = "=?utf-8?b?", "?="
_WORD_OVERHEAD = len(_WORD_PREFIX) + len(_WORD_SUFFIX)
# A display name made only of these (and single spaces) needs neither quotes nor encoding.
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
# RFC 5322 atext plus "." (dot-atom-text), minus "=" which we use as the escape character.
_ID_SAFE = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/?^_`{|}~.")
# What may not appear in an address written between < > (or in a header at all): line breaks
# would let a value start a header of its own.
_NOT_IN_ADDRESS = frozenset(chr(code) for code in range(0x21)) | {"<", ">", "\x7f"}
SUBJECTS_CACHED = 256  # distinct subjects remembered (a campaign has a few: one per language/threat)


@dataclass(frozen=True)
class ComposedEmail:
    """One e-mail ready for SMTP DATA: the message (CRLF line ends, ending with CRLF, dot-stuffed —
    with today's shape no line starts with "."), its Message-ID without <>, and whether an
    address needs the relay's SMTPUTF8."""

    data: bytes
    message_id: str
    international: bool


class MessageComposer:
    """Builds the e-mails of one sender (one `SmtpSettings`); safe to share between threads."""

    def __init__(self, sender: str, sender_name: str) -> None:
        self.sender = sender
        # A sender that cannot be written fails each e-mail (as the relay's refusal of it would),
        # not the channel's construction: rows end `failed` with a reason, never stuck.
        self._sender_problem: PermanentChannelError | None = None
        self._from = ""
        try:
            _check_address(sender, what="sender address")
            self._from = address_header("From", sender_name, sender)
        except PermanentChannelError as problem:
            self._sender_problem = problem
        # The boundary holds "_" and ".", which base64 never produces: no body can contain it.
        boundary = f"=_notifier.{secrets.token_hex(12)}"
        part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        self._single = ("MIME-Version: 1.0\r\n" + part.format("plain")).encode("ascii")
        self._multipart = (f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
                           f"\r\n--{boundary}\r\n" + part.format("plain")).encode("ascii")
        self._between = (f"\r\n--{boundary}\r\n" + part.format("html")).encode("ascii")
        self._end = f"\r\n--{boundary}--\r\n".encode("ascii")
        self._date_second = -1
        self._date = ""

    def compose(self, message: OutgoingMessage) -> ComposedEmail:
        """The e-mail for one warning; PermanentChannelError when its address or text cannot be
        written into a message at all (nothing to retry)."""
        if self._sender_problem is not None:
            raise PermanentChannelError(str(self._sender_problem), provider_status="not sent")
        _check_address(message.destination, what="destination")
        message_id = message_id_for(message.reference, self.sender)
        try:
            head = self._head(message, message_id)
            text = body_base64(message.body)
            if message.html is None:
                data = b"".join((head, self._single, text))
            else:
                data = b"".join((head, self._multipart, text, self._between, body_base64(message.html), self._end))
        except UnicodeError as exc:  # a lone surrogate in a template's output, say
            raise PermanentChannelError(f"the e-mail's text cannot be encoded as UTF-8: {exc.reason}",
                                        provider_status="not sent") from exc
        international = not (message.destination.isascii() and self.sender.isascii())
        return ComposedEmail(data=dot_stuffed(data), message_id=message_id.strip("<>"), international=international)

    def _head(self, message: OutgoingMessage, message_id: str) -> bytes:
        """The headers, in the order the standard library wrote them. Auto-Submitted (RFC 3834):
        no vacation replies to our sender."""
        lines = [subject_header(message.subject) if message.subject is not None else "",
                 self._from, f"To: {message.destination}\r\n", f"Date: {self._now()}\r\n",
                 f"Message-ID: {message_id}\r\nAuto-Submitted: auto-generated\r\n"]
        if message.reference:
            lines.append(text_header("X-Notifier-Reference", message.reference))
        return "".join(lines).encode("utf-8")  # UTF-8 only for an international address

    def _now(self) -> str:
        """RFC 5322 date of this second, in UTC (formatted once a second, not once an e-mail)."""
        second = int(time.time())
        if second != self._date_second:  # a race only formats the same second twice
            self._date = format_datetime(datetime.fromtimestamp(second, timezone.utc))
            self._date_second = second
        return self._date


def body_base64(text: str) -> bytes:
    """A text body in canonical form (RFC 2046: CRLF line breaks, ending with one), UTF-8, base64
    in lines of 76 — the same bytes the standard library's `set_content(cte="base64")` makes."""
    canonical = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", CRLF)
    if not canonical.endswith(CRLF):
        canonical += CRLF
    return base64.encodebytes(canonical.encode("utf-8")).replace(b"\n", b"\r\n")


def dot_stuffed(data: bytes) -> bytes:
    """RFC 5321 4.5.2: a line that starts with "." gets another one. Today's shape has none (headers,
    base64 and boundaries never start with a dot), so this is one search over the bytes."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") if b"\r\n." in data else data


@lru_cache(maxsize=SUBJECTS_CACHED)
def subject_header(subject: str) -> str:
    """`Subject: …` folded, encoded once per distinct subject (every e-mail of a campaign shares a few)."""
    return text_header("Subject", subject)


def text_header(name: str, value: str) -> str:
    """An unstructured header line (ending CRLF): the value as it is when it is plain ASCII, folded
    at spaces when long, otherwise RFC 2047 encoded-words."""
    _check_header_text(value, name)
    if _plain(value):
        if len(name) + 2 + len(value) <= MAX_LINE:
            return f"{name}: {value}{CRLF}"
        folded = _fold_plain(f"{name}:", value.split(" "))
        if folded is not None:
            return folded
    return _fold_words(f"{name}:", encoded_words(value, MAX_LINE - len(name) - 2, MAX_LINE - 1))


def address_header(name: str, display_name: str, address: str) -> str:
    """`From: Display Name <address>` (ending CRLF). The name is written as atoms when it can be,
    as a quoted string when it has ASCII specials (commas, quotes…), as encoded-words when it is
    not ASCII or too long for a line; the address goes on its own line when it does not fit."""
    _check_header_text(display_name, name)
    if not display_name:
        return f"{name}: {address}{CRLF}"
    tokens: list[str]
    if _plain(display_name) and set(display_name) <= _ATEXT | {" "}:
        tokens = display_name.split(" ")
    elif _plain(display_name) and len(display_name) + len(name) + 4 <= MAX_LINE:
        tokens = ['"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    else:
        tokens = _phrase_words(display_name, MAX_LINE - len(name) - 2, MAX_LINE - 1)
    return _fold_words(f"{name}:", [*tokens, f"<{address}>"])


def _phrase_words(display_name: str, first_room: int, room: int) -> list[str]:
    """A display name as atoms and encoded-words, never two encoded-words side by side when it
    can be helped: the words that are plain atoms stay as they are, each run of the others becomes
    one encoded-word (split only when a run is longer than one encoded-word can be).

    Why: RFC 2047 drops the space between two adjacent encoded-words, while the standard
    library's address parser keeps it; between an encoded-word and an atom every reader keeps
    the space. So "Nhà mạng - Cảnh báo an toàn thông tin" reads back the same everywhere.
    """
    tokens: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            tokens.extend(encoded_words(" ".join(run), room if tokens else first_room, room))
            run.clear()

    for word in display_name.split(" "):
        if word and set(word) <= _ATEXT:
            flush()
            tokens.append(word)
        else:
            run.append(word)
    flush()
    return tokens


def encoded_words(text: str, first_room: int, room: int) -> list[str]:
    """`text` as RFC 2047 B encoded-words of whole characters: the first at most `first_room`
    characters long, the others at most `room` (each on a folded line of its own)."""
    words: list[str] = []
    chunk: list[bytes] = []
    size = 0
    limit = _payload_bytes(first_room)
    for char in text:
        encoded = char.encode("utf-8")
        if chunk and size + len(encoded) > limit:
            words.append(_WORD_PREFIX + base64.b64encode(b"".join(chunk)).decode("ascii") + _WORD_SUFFIX)
            chunk, size, limit = [], 0, _payload_bytes(room)
        chunk.append(encoded)
        size += len(encoded)
    words.append(_WORD_PREFIX + base64.b64encode(b"".join(chunk)).decode("ascii") + _WORD_SUFFIX)
    return words


def message_id_for(reference: str, sender: str) -> str:
    """`<reference@sender-domain>`, the same on every resend; a random one if there is no reference.

    Characters not allowed in a Message-ID are escaped as `=XX` (and `=` itself), so distinct
    references never share an id.
    """
    domain = sender.rpartition("@")[2] or "localhost"
    if not reference:
        return make_msgid(domain=domain)
    return f"<{_escape_id_left(reference)}@{domain}>"


def _escape_id_left(reference: str) -> str:
    return "".join(
        char if char in _ID_SAFE else "".join(f"={byte:02X}" for byte in char.encode("utf-8"))
        for char in reference
    )


def _payload_bytes(room: int) -> int:
    """How many bytes one encoded-word of at most `room` characters carries (base64: 3 per 4)."""
    return max(3, (room - _WORD_OVERHEAD) // 4 * 3)


def _plain(value: str) -> bool:
    """True when a header value can be written as it is: printable ASCII, no leading, trailing or
    doubled spaces (a parser would not give them back), nothing that reads as an encoded-word."""
    return (value.isascii() and value.isprintable() and "=?" not in value
            and value == value.strip() and "  " not in value)


def _fold_plain(label: str, words: list[str]) -> str | None:
    """`label words…` folded before a space so no line passes MAX_LINE; None when a word is too long."""
    return _fold_words(label, words) if all(len(word) < MAX_LINE for word in words) else None


def _fold_words(label: str, words: list[str]) -> str:
    """`label` then the words separated by single spaces, a line break before a space whenever the
    next word would pass MAX_LINE (unfolding gives the spaces back exactly)."""
    lines = [label]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > MAX_LINE and lines[-1] != label:
            lines.append(" " + word)
        else:
            lines[-1] += " " + word
    return CRLF.join(lines) + CRLF


def _check_header_text(value: str, name: str) -> None:
    if "\r" in value or "\n" in value:
        raise PermanentChannelError(f"the e-mail's {name} holds a line break", provider_status="not sent")


def _check_address(address: str, *, what: str) -> None:
    """An address must fit between < > in a command and a header: no spaces, controls or brackets.
    The error names the problem, never the address (it is personal data)."""
    if not address or not _NOT_IN_ADDRESS.isdisjoint(address):
        raise PermanentChannelError(f"the {what} is not an address a relay can take (empty, or holds spaces, "
                                    f"control characters or angle brackets)", provider_status="not sent")
