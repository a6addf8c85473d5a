"""Protocol peers that stand in for the operator's SMSC and mail relay on loopback.

Tests and `notifier demo` start them; they speak the real wire protocols (SMPP 3.4, SMTP) and only
ever listen on 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
import time

from notifier.errors import InputError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, *, host: str = LOOPBACK) -> None:
    """Raise InputError when something already listens on host:port (a peer started twice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                             "(is a peer already running there? choose another --port)") from None


def wait_for_port(port: int, *, host: str = LOOPBACK, timeout_seconds: float = 10.0) -> None:
    """Block until something accepts connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_seconds}s") from None
            time.sleep(0.05)


STOP_TIMEOUT_SECONDS = 5.0


def stop_child(process: subprocess.Popen[bytes] | subprocess.Popen[str] | None,
               timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop a peer we started, by its pid: SIGTERM, then SIGKILL if it has not ended in `timeout`."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
