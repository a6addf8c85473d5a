"""What operators see: the lists of feeds and campaigns, a run that stops with one line when a
route (SMSC, mail relay) cannot be reached, and the loopback peers they can start themselves.

Routes are real: closed ports, the smpp34 SMSC process, the aiosmtpd relay, and a TCP forwarder
in front of the SMSC that the test cuts to play a route that goes away mid-run.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select
from typer.testing import CliRunner, Result

from channels.base import OutgoingMessage
from channels.email import EmailChannel
from channels.smpp import SmppChannel
from cli import app
from notifier.campaigns import list_campaigns
from notifier.db import get_engine, session_scope
from notifier.demo_data import load_uniform_campaign
from notifier.models import Campaign, DeliveryEvent, Feed, Notification
from notifier.peers import LOOPBACK, free_port, wait_for_port
from notifier.peers.smsc import SmscPeer
from notifier.peers.smtp_sink import SmtpSink
from notifier.dispatch.routes import RouteWatch
from notifier.dispatch.runtime import make_runtime
from notifier.settings import Settings, SmppSettings, SmtpSettings, reset_settings
from tests.factories import add_account
from tests.peer_counts import assert_one_sms_each

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 8
WAIT_SECONDS = 60.0
runner = CliRunner()


def _cli(env: dict[str, str], *args: str) -> Result:
    """Run the CLI in-process with these `NOTIFIER_*` settings (and none cached from before)."""
    reset_settings()
    try:
        return runner.invoke(app, list(args), env=env)
    finally:
        reset_settings()


def _env(database_url: str, *, smpp_port: int = 1, smtp_port: int = 1, **dispatch: object) -> dict[str, str]:
    env = {"NOTIFIER_DATABASE_URL": database_url, "NOTIFIER_SMPP__PORT": str(smpp_port),
           "NOTIFIER_SMPP__SYSTEM_ID": "notifier-test", "NOTIFIER_SMTP__PORT": str(smtp_port),
           "NOTIFIER_SMPP__CONNECT_TIMEOUT_SECONDS": "2", "NOTIFIER_SMTP__TIMEOUT_SECONDS": "2"}
    defaults = {"receipt_wait_seconds": 5, "sms_per_second": 1000, "email_per_second": 1000}
    env.update({f"NOTIFIER_DISPATCH__{key.upper()}": str(value) for key, value in {**defaults, **dispatch}.items()})
    return env


# --- feed list, campaign list -----------------------------------------------------------------


def _add_feed(session, filename: str, imported_at: datetime, **counts: int) -> Feed:  # type: ignore[no-untyped-def]
    feed = Feed(format="shadowserver", report_type="event4_sinkhole_http", kind="infected_device",
                source="Shadowserver", filename=filename, file_sha256=hashlib.sha256(filename.encode()).hexdigest(),
                imported_at=imported_at, **counts)
    session.add(feed)
    session.flush()
    return feed


def _add_campaign(session, feed: Feed, created_at: datetime, states: dict[str, list[str]],  # type: ignore[no-untyped-def]
                  *, state: str = "running") -> Campaign:
    """A campaign whose notifications are in `states` ({"sms": ["delivered", "failed"], …})."""
    campaign = Campaign(feed_id=feed.id, name=f"infected_device – feed {feed.id}", template="infected_device",
                        channels=",".join(states), state=state, created_at=created_at)
    session.add(campaign)
    session.flush()
    for channel, row_states in states.items():
        for n, row_state in enumerate(row_states):
            account = add_account(session, f"C{campaign.id}-{channel}-{n}", msisdn=None)
            session.add(Notification(campaign_id=campaign.id, account_id=account.id, channel=channel,
                                     state=row_state, destination=None))
    session.flush()
    return campaign


@pytest.fixture
def listed(database_url: str) -> dict[str, int]:
    """Two feeds and three campaigns, created out of order so newest-first is visible."""
    older, newer = datetime(2026, 11, 18, 1, 24, tzinfo=UTC), datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    with session_scope(database_url) as session:
        first = _add_feed(session, "2026-11-18-event4_sinkhole_http-vn.csv", older,
                          accepted=6, rejected=1, matched=4, unmatched=1, ambiguous=1)
        second = _add_feed(session, "2026-11-20-event4_sinkhole_http-vn.csv", newer,
                           accepted=3, rejected=0, matched=3, unmatched=0, ambiguous=0)
        done = _add_campaign(session, first, older + timedelta(hours=1),
                             {"sms": ["delivered", "delivered", "failed"], "email": ["suppressed"]}, state="done")
        running = _add_campaign(session, second, newer + timedelta(hours=1),
                                {"sms": ["queued", "sent", "unknown"]})
        paused = _add_campaign(session, first, older + timedelta(hours=2), {"email": ["planned"]}, state="paused")
        return {"first": first.id, "second": second.id, "done": done.id, "running": running.id,
                "paused": paused.id}


def test_feed_list_newest_first_with_counts_and_campaigns(database_url: str, listed: dict[str, int],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(database_url)
    result = _cli(env, "feed", "list", "--json")
    assert result.exit_code == 0, result.output
    feeds = json.loads(result.stdout)

    assert [feed["id"] for feed in feeds] == [listed["second"], listed["first"]]
    first = feeds[1]
    assert first["imported_at"] == "2026-11-18T01:24:00+00:00"
    assert {k: first[k] for k in ("format", "report_type", "kind", "source", "filename")} == {
        "format": "shadowserver", "report_type": "event4_sinkhole_http", "kind": "infected_device",
        "source": "Shadowserver", "filename": "2026-11-18-event4_sinkhole_http-vn.csv"}
    assert [first[k] for k in ("accepted", "rejected", "matched", "unmatched", "ambiguous")] == [6, 1, 4, 1, 1]
    assert first["campaigns"] == [listed["done"], listed["paused"]]
    assert feeds[0]["campaigns"] == [listed["running"]]

    import cli

    monkeypatch.setattr(cli.out, "width", 250)  # a wide terminal: no column cut short
    table = _cli(env, "feed", "list")
    assert table.exit_code == 0, table.output
    assert "18/11/2026 08:24" in table.stdout  # imported_at, local time
    assert "2026-11-18T01:24" not in table.stdout
    assert "2026-11-20-event4_sinkhole_http-vn.csv" in table.stdout


def test_campaign_list_counts_every_state_newest_first(database_url: str, listed: dict[str, int]) -> None:
    result = _cli(_env(database_url), "campaign", "list", "--json")
    assert result.exit_code == 0, result.output
    campaigns = json.loads(result.stdout)

    assert [c["id"] for c in campaigns] == [listed["running"], listed["paused"], listed["done"]]
    done = campaigns[2]
    assert (done["feed_id"], done["template"], done["channels"], done["state"]) == (
        listed["first"], "infected_device", ["sms", "email"], "done")
    assert done["created_at"] == "2026-11-18T02:24:00+00:00"
    assert done["total"] == 4
    assert {k: v for k, v in done["counts"].items() if v} == {"delivered": 2, "failed": 1, "suppressed": 1}
    assert set(done["counts"]) >= {"planned", "queued", "sent", "delivered", "failed", "suppressed", "unknown"}
    assert {k: v for k, v in campaigns[0]["counts"].items() if v} == {"queued": 1, "sent": 1, "unknown": 1}

    only_paused = _cli(_env(database_url), "campaign", "list", "--state", "paused", "--json")
    assert [c["id"] for c in json.loads(only_paused.stdout)] == [listed["paused"]]


def test_campaign_list_counts_with_one_grouped_query(database_url: str, listed: dict[str, int]) -> None:
    """Three campaigns or thirty: the same number of statements (no query per campaign)."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    def listing_statements() -> int:
        statements.clear()
        with session_scope(database_url) as session:
            list_campaigns(session)
        return len([s for s in statements if s.lstrip().upper().startswith("SELECT")])

    engine = get_engine(database_url)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with_three = listing_statements()
        with session_scope(database_url) as session:
            feed = session.get(Feed, listed["second"])
            for n in range(27):
                _add_campaign(session, feed, datetime(2026, 11, 21, tzinfo=UTC) + timedelta(minutes=n),
                              {"sms": ["delivered"]})
        assert listing_statements() == with_three == 2
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def test_empty_lists_say_what_to_do_next(database_url: str) -> None:
    env = _env(database_url)
    feeds, campaigns = _cli(env, "feed", "list"), _cli(env, "campaign", "list")

    assert feeds.exit_code == campaigns.exit_code == 0
    assert "no feeds yet (import one with `notifier feed import FILE --format F`)" in feeds.stderr
    assert "no campaigns yet" in campaigns.stderr and "notifier campaign create" in campaigns.stderr
    assert "no campaign is paused" in _cli(env, "campaign", "list", "--state", "paused").stderr
    assert json.loads(_cli(env, "feed", "list", "--json").stdout) == []
    assert json.loads(_cli(env, "campaign", "list", "--json").stdout) == []


def test_campaign_list_refuses_an_unknown_state(sqlite_url: str) -> None:
    result = _cli(_env(sqlite_url), "campaign", "list", "--state", "sleeping")

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: unknown campaign state 'sleeping' (known: planned, running, paused, done, cancelled)"]


# --- campaign run when a route cannot be reached ----------------------------------------------


def _rows(database_url: str) -> tuple[list[tuple[int, str, int]], int, str]:
    """(id, state, attempts) of every notification, the number of delivery events, the campaign state."""
    with session_scope(database_url) as session:
        rows = [(n.id, n.state, n.attempts) for n in session.exec(select(Notification).order_by(Notification.id))]
        events = len(session.exec(select(DeliveryEvent.id)).all())
        state = session.exec(select(Campaign.state)).one()
    return rows, events, state


def _assert_each_sent_once(smsc: SmscPeer, smtp: SmtpSink, accounts: int) -> None:
    """Counted at the peers: one complete SMS and one e-mail per subscriber, none twice."""
    assert_one_sms_each(smsc, accounts)
    per_address = collections.Counter(str(mail.message["To"]) for mail in smtp.wait_for(accounts, WAIT_SECONDS))
    assert len(per_address) == accounts and set(per_address.values()) == {1}, per_address


def test_unreachable_smsc_stops_the_run_with_one_line_then_a_rerun_sends_once(
    database_url: str, tmp_path: Path
) -> None:
    campaign_id = load_uniform_campaign(database_url, tmp_path / "inputs", accounts=ACCOUNTS, channels=["sms", "email"])
    smsc_port, smtp_port = free_port(), free_port()  # nothing listens there yet
    env = _env(database_url, smpp_port=smsc_port, smtp_port=smtp_port)
    before = _rows(database_url)

    refused = _cli(env, "campaign", "run", str(campaign_id))

    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"error: cannot reach the SMSC at 127.0.0.1:{smsc_port} (connection refused) or the mail relay at "
        f"127.0.0.1:{smtp_port} (connection refused); nothing was sent. Check NOTIFIER_SMPP__HOST/PORT, "
        "NOTIFIER_SMTP__HOST/PORT or start them (`notifier peers smsc`, `notifier peers smtp`)."]
    assert _rows(database_url) == before  # every row still planned, no event, campaign not started
    assert {state for _, state, _ in before[0]} == {"planned"} and before[2] == "planned"

    with SmscPeer(tmp_path / "smsc.jsonl", port=smsc_port) as smsc, SmtpSink(port=smtp_port) as smtp:
        sent = _cli(env, "campaign", "run", str(campaign_id), "--json")
        assert sent.exit_code == 0, sent.output
        assert json.loads(sent.stdout)["by_channel"] == {"sms": {"delivered": ACCOUNTS},
                                                         "email": {"delivered": ACCOUNTS}}
        _assert_each_sent_once(smsc, smtp, ACCOUNTS)


def test_unreachable_mail_relay_alone_is_named_with_its_settings(sqlite_url: str, tmp_path: Path) -> None:
    campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "inputs", accounts=2, channels=["email"])
    port = free_port()

    refused = _cli(_env(sqlite_url, smtp_port=port), "campaign", "run", str(campaign_id), "--json")

    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"error: cannot reach the mail relay at 127.0.0.1:{port} (connection refused); nothing was sent. "
        "Check NOTIFIER_SMTP__HOST/PORT or start it (`notifier peers smtp`)."]


class CuttableRoute:
    """A TCP forwarder on 127.0.0.1 in front of a peer. `cut()` drops every connection and stops
    listening: the route is gone while the peer keeps its state (an SMSC keeps the receipts of a
    session that died for the next bind); `restore()` listens on the same port again."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        listener = socket.create_server((LOOPBACK, self.port))  # SO_REUSEADDR: the same port again
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        wait_for_port(self.port)

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection((LOOPBACK, self._target))
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            try:
                target.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture
def cuttable_smsc(tmp_path: Path) -> Iterator[tuple[SmscPeer, CuttableRoute]]:
    with SmscPeer(tmp_path / "smsc.jsonl") as smsc:
        route = CuttableRoute(smsc.port)
        route.restore()
        try:
            yield smsc, route
        finally:
            route.cut()


def _run_process(campaign_id: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli", "campaign", "run", str(campaign_id)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=PROJECT_ROOT)


def test_route_lost_past_the_outage_limit_stops_with_one_line_and_nothing_is_sent_twice(
    sqlite_url: str, tmp_path: Path, cuttable_smsc: tuple[SmscPeer, CuttableRoute]
) -> None:
    """An outage is a pause up to `route_outage_max_seconds` (here 2 s; 24 h by default, see
    tests/test_dispatch_faults.py for a route that comes back): past it, one line, exit 2."""
    smsc, route = cuttable_smsc
    accounts = 12
    campaign_id = load_uniform_campaign(sqlite_url, tmp_path / "inputs", accounts=accounts, channels=["sms", "email"])
    with SmtpSink() as smtp:
        env = _env(sqlite_url, smpp_port=route.port, smtp_port=smtp.port, sms_per_second=6,
                   route_outage_max_seconds=2, unknown_resend_after_seconds=20)
        first = _run_process(campaign_id, env)
        deadline = time.monotonic() + WAIT_SECONDS
        while len(smsc.messages()) < 3:  # a few SMS out, most still to go
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the campaign did not start sending"
            time.sleep(0.02)
        route.cut()
        _, stderr = first.communicate(timeout=WAIT_SECONDS)

        assert first.returncode == 2, stderr
        lines = stderr.splitlines()
        assert lines[-1].startswith(f"error: cannot reach the SMSC at 127.0.0.1:{route.port} (connection refused)"
                                    f" for 2s; campaign {campaign_id} paused with "), stderr
        assert lines[-1].endswith(f"not sent yet (`notifier campaign run {campaign_id}` sends them). Check "
                                  "NOTIFIER_SMPP__HOST/PORT or start it (`notifier peers smsc`).")
        rows, _, state = _rows(sqlite_url)
        waiting = [row for row in rows if row[1] in ("queued", "unknown")]
        assert state == "paused" and len(waiting) >= 3
        assert not [row for row in rows if row[1] == "failed"]
        assert len([line for line in lines if " WARNING " in line]) < len(waiting)  # not one per message

        route.restore()
        second = _run_process(campaign_id, env)
        stdout, stderr = second.communicate(timeout=WAIT_SECONDS * 2)
        assert second.returncode == 0, stderr
        rows, _, state = _rows(sqlite_url)
        assert state == "done"
        assert collections.Counter(row[1] for row in rows) == {"delivered": 2 * accounts}
        _assert_each_sent_once(smsc, smtp, accounts)


def test_an_outage_is_one_log_line_when_it_starts_and_one_when_it_ends(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    runtime = make_runtime(Settings(database_url=sqlite_url, smpp=SmppSettings(port=port, system_id="notifier-test",
                                                                                connect_timeout_seconds=2.0)))
    try:
        watch = RouteWatch(runtime, ["sms"])
        with caplog.at_level(logging.INFO, logger="notifier.dispatch.routes"):
            assert [watch.poll() for _ in range(5)] == [[]] * 5
            assert list(watch.outages) == ["sms"]
            with SmscPeer(tmp_path / "smsc.jsonl", port=port):
                deadline = time.monotonic() + WAIT_SECONDS
                while not watch.poll():
                    assert time.monotonic() < deadline, "the SMSC came back but the watch did not notice"
                    time.sleep(0.1)
                assert watch.outages == {}
    finally:
        runtime.close()

    lines = [record.getMessage() for record in caplog.records if record.name == "notifier.dispatch.routes"]
    assert lines[0] == f"[channel:sms] cannot reach the SMSC at 127.0.0.1:{port} (connection refused); " \
                       "its messages wait until it answers"
    assert len(lines) == 2 and lines[1].startswith(f"[channel:sms] the SMSC at 127.0.0.1:{port} answers again")


# --- notifier peers ---------------------------------------------------------------------------


def _start_peer(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start `notifier peers …` and return it with the line it printed once listening."""
    process = subprocess.Popen([sys.executable, "-m", "cli", "peers", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                               env={k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")})
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "listening on" in line, line + process.communicate(timeout=10)[1]
    return process, line


def _stop(process: subprocess.Popen[str], signum: int) -> int:
    os.kill(process.pid, signum)
    try:
        process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode


def test_peers_smsc_serves_in_the_foreground_until_sigterm(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "submits.jsonl"
    process, line = _start_peer("smsc", "--port", str(port), "--log", str(log))
    try:
        assert f"listening on 127.0.0.1:{port}" in line and "Ctrl-C" in line
        channel = SmppChannel(SmppSettings(port=port, system_id="notifier-test", connect_timeout_seconds=2.0))
        channel.start()
        try:
            result = channel.send(OutgoingMessage(notification_id=1, destination="+84912345678",
                                                  body="Canh bao an toan thong tin", reference="notification-1"))
        finally:
            channel.close()
        [submit] = [json.loads(text) for text in log.read_text(encoding="utf-8").splitlines()]
        assert submit["destination_addr"] == "84912345678" and result.parts == 1
    finally:
        returncode = _stop(process, signal.SIGTERM)
    assert returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_peers_smtp_serves_in_the_foreground_until_a_signal(tmp_path: Path, signum: int) -> None:
    port, store = free_port(), tmp_path / "mail.jsonl"
    process, line = _start_peer("smtp", "--port", str(port), "--store", str(store))
    try:
        assert f"listening on 127.0.0.1:{port}" in line
        channel = EmailChannel(SmtpSettings(port=port, timeout_seconds=5))
        try:
            channel.send(OutgoingMessage(notification_id=7, destination="nguyen.van.a@example.vn",
                                         body="Kính gửi Quý khách", subject="Cảnh báo an toàn thông tin",
                                         reference="notification-7"))
        finally:
            channel.close()
        [record] = [json.loads(text) for text in store.read_text(encoding="utf-8").splitlines()]
        assert record["envelope_to"] == ["nguyen.van.a@example.vn"]
        assert record["subject"] == "Cảnh báo an toàn thông tin"
    finally:
        returncode = _stop(process, signum)
    assert returncode == 0


def test_a_peer_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        result = _cli({}, "peers", "smtp", "--port", str(port), "--store", str(tmp_path / "mail.jsonl"))

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(is a peer already running there? choose another --port)"]
