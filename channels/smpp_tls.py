"""TLS to the SMSC for the SMPP channel, safe with one reading and several writing threads.

smpplib can wrap its socket in an `ssl.SSLSocket`, but the channel reads on one thread while
senders write on others, and OpenSSL does not allow one SSL object to be used by two threads at
once (`SSL_read` may itself write, e.g. a TLS 1.3 key update). So the TCP socket stays a plain
socket and TLS runs on an `ssl.SSLObject` over memory buffers: every TLS operation happens under
one lock, and only the TCP reads and writes (which the kernel serialises) happen outside it. The
reader still waits on the TCP socket with `select`; `pending()` tells it when decrypted bytes are
already waiting so it does not sleep on them.

`TlsSocket` offers the socket methods smpplib and the channel use (`connect`, `send`, `sendall`,
`recv`, `settimeout`, `fileno`, `shutdown`, `close`, `setsockopt`).
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

_RECV_OCTETS = 1 << 16


def client_context(*, ca_file: Path | None, verify: bool) -> ssl.SSLContext:
    """TLS 1.2 or later; certificate and host name checked against `ca_file` (or the system's CAs)
    unless `verify` is off (a lab SMSC only: anyone on the path could then pose as the SMSC)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class TlsSocket:
    """A TCP socket speaking TLS through an `ssl.SSLObject`; thread-safe for one reader + writers."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str, timeout: float) -> None:
        self._raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._raw.settimeout(timeout)
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._lock = threading.Lock()  # every SSLObject call, and the write that follows it

    def connect(self, address: tuple[str, int]) -> None:
        """TCP connect, then the TLS handshake (certificate checked here: `ssl.SSLError` if bad)."""
        self._raw.connect(address)
        while True:
            with self._lock:
                try:
                    self._tls.do_handshake()
                    self._flush_locked()
                    return
                except ssl.SSLWantReadError:
                    self._flush_locked()
            self._feed()

    def sendall(self, data: bytes) -> None:
        with self._lock:
            self._tls.write(data)
            self._flush_locked()  # under the lock: records leave in the order they were made

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        """Up to `size` decrypted octets: every whole TLS record already received (one `read`
        returns one record's data), waiting for the network only when none is; b"" at the end."""
        while True:
            chunks: list[bytes] = []
            with self._lock:
                wanted = size
                try:
                    while wanted > 0:
                        chunk = self._tls.read(wanted)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        wanted -= len(chunk)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    if not chunks:
                        return b""
                self._flush_locked()
            if chunks:
                return b"".join(chunks)
            if not self._feed():
                return b""

    def pending(self) -> int:
        """Octets already received that a `recv` would read without waiting for the network:
        decrypted ones, or records still encrypted in the buffer (select cannot see either)."""
        with self._lock:
            return self._tls.pending() + self._incoming.pending

    def _feed(self) -> bool:
        """Read from TCP into the TLS buffer; False at end of stream."""
        data = self._raw.recv(_RECV_OCTETS)
        if not data:
            return False
        with self._lock:
            self._incoming.write(data)
        return True

    def _flush_locked(self) -> None:
        out = self._outgoing.read()
        if out:
            self._raw.sendall(out)

    def settimeout(self, timeout: float | None) -> None:
        self._raw.settimeout(timeout)

    def setsockopt(self, *args: int) -> None:
        self._raw.setsockopt(*args)

    def fileno(self) -> int:
        return self._raw.fileno()

    def shutdown(self, how: int) -> None:
        self._raw.shutdown(how)

    def close(self) -> None:
        self._raw.close()
