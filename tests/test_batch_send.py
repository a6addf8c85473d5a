"""The batch send path (issue 6, items 5 and 6) against the real SMSC peer, on both databases:
claims take only queued rows of running campaigns, a batch given to two workers sends each row
once, one row's unexpected error fails that row alone, a submit left unanswered is `unknown`
(never re-queued), and the statements per notification stay bounded."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlmodel import select

from notifier.db import get_engine, session_scope
from notifier.dispatch.delivery import claim_batch, deliver_batch
from notifier.dispatch.recording import BatchReport, Send, record_outcomes
from notifier.dispatch.runtime import Runtime, make_runtime
from notifier.models import Campaign, DeliveryEvent, MessagePart, Notification
from notifier.peers.smsc import SmscPeer
from channels.base import OutgoingMessage
from channels.smpp import PartiallySentError
from tests.conftest import make_settings
from tests.factories import add_account, add_notification

DEADLINE_SECONDS = 20.0


def _number(index: int) -> str:
    return f"+849123{index:05d}"  # never ends in the peer's failing suffix "99" for index < 99


def _add_rows(url: str, count: int, *, state: str = "queued", campaign_state: str = "running") -> list[int]:
    ids = []
    with session_scope(url) as session:
        for index in range(count):
            account = add_account(session, f"B{state}{campaign_state}{index}", msisdn=_number(index))
            notification = add_notification(session, account, state=state, destination=_number(index))
            session.get(Campaign, notification.campaign_id).state = campaign_state
            ids.append(notification.id)
    return ids


@pytest.fixture
def runtime_for(database_url: str, smsc: SmscPeer) -> Iterator:
    """Runtimes on the test database and SMSC (several play several workers); closed afterwards."""
    opened: list[Runtime] = []

    def build(**smpp: object) -> Runtime:
        settings = make_settings(database_url, smsc=smsc)
        if smpp:
            settings = settings.model_copy(update={"smpp": settings.smpp.model_copy(update=smpp)})
        runtime = make_runtime(settings)
        opened.append(runtime)
        return runtime

    yield build
    for runtime in opened:
        runtime.close()


def _states(url: str, ids: list[int]) -> dict[int, str]:
    with session_scope(url) as session:
        rows = session.exec(select(Notification.id, Notification.state).where(Notification.id.in_(ids))).all()
    return dict(rows)


def _wait_for_messages(smsc: SmscPeer, count: int) -> list[dict]:
    """The messages the SMSC reassembled (every part of each), once `count` are complete."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        messages = [m for m in smsc.messages() if m["parts"] == len(set(m["message_ids"])) and "CB-" in m["text"]]
        if len(messages) >= count:
            return messages
        time.sleep(0.05)
    return smsc.messages()


def _once_each(smsc: SmscPeer, count: int) -> Counter:
    """Messages per destination at the peer, after `count` arrived and a moment for a duplicate."""
    _wait_for_messages(smsc, count)
    time.sleep(0.5)  # a duplicate, if any, would arrive right behind
    return Counter(message["destination"] for message in smsc.messages())


def test_a_batch_claims_only_queued_rows_of_running_campaigns(database_url: str, smsc: SmscPeer, runtime_for) -> None:
    runtime = runtime_for()
    queued = _add_rows(database_url, 3)
    already_sent = _add_rows(database_url, 1, state="sent")
    paused = _add_rows(database_url, 1, campaign_state="paused")
    cancelled = _add_rows(database_url, 1, campaign_state="cancelled")
    report = deliver_batch(runtime, queued + already_sent + paused + cancelled + [10**9])
    assert [report.outcomes[nid] for nid in queued] == ["sent"] * 3
    assert report.outcomes[already_sent[0]] == "skipped"
    assert report.outcomes[paused[0]] == report.outcomes[cancelled[0]] == "held"
    assert report.outcomes[10**9] == "missing"
    states = _states(database_url, queued + paused + cancelled)
    assert {states[nid] for nid in queued} <= {"sent", "delivered"}
    assert states[paused[0]] == states[cancelled[0]] == "queued"
    per_destination = _once_each(smsc, 3)
    assert sum(per_destination.values()) == 3 and set(per_destination.values()) == {1}


def test_a_campaign_paused_after_loading_is_not_claimed(database_url: str, smsc: SmscPeer, runtime_for) -> None:
    runtime = runtime_for()
    [nid] = _add_rows(database_url, 1)
    send = Send(nid, 0, "sms", 1, OutgoingMessage(notification_id=nid, destination=_number(0), body="x"), 1)
    with session_scope(database_url) as session:
        session.get(Campaign, session.get(Notification, nid).campaign_id).state = "paused"
    assert claim_batch(runtime, [send]) == []
    assert _states(database_url, [nid]) == {nid: "queued"}


def test_each_row_is_sent_once_when_two_workers_get_the_same_batch(
    database_url: str, smsc: SmscPeer, runtime_for
) -> None:
    ids = _add_rows(database_url, 40)
    workers = [runtime_for(), runtime_for()]
    for worker in workers:
        worker.channel("sms").check()  # both bound before the race starts
    barrier = threading.Barrier(len(workers))
    reports = []

    def work(runtime: Runtime) -> None:
        barrier.wait()
        reports.append(deliver_batch(runtime, list(reversed(ids)) if reports else ids))

    threads = [threading.Thread(target=work, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_SECONDS)
    sent = Counter(outcome for report in reports for nid, outcome in report.outcomes.items())
    assert sent["sent"] == 40 and sent["skipped"] == 40
    per_destination = _once_each(smsc, 40)
    assert len(per_destination) == 40 and set(per_destination.values()) == {1}
    with session_scope(database_url) as session:
        claims = session.exec(select(DeliveryEvent.notification_id).where(
            DeliveryEvent.notification_id.in_(ids), DeliveryEvent.to_state == "sending")).all()
    assert sorted(claims) == sorted(ids)


def test_an_exception_rendering_one_row_fails_that_row_only(database_url: str, smsc: SmscPeer, runtime_for) -> None:
    runtime = runtime_for()
    ids = _add_rows(database_url, 3)
    broken = ids[1]
    with session_scope(database_url) as session:
        row = session.get(Notification, broken)
        context = json.loads(row.context)
        context["last_seen"] = context["events"][0]["seen_at"] = "9999-12-31T23:59:59+00:00"  # +7 h overflows
        row.context = json.dumps(context)
    report = deliver_batch(runtime, ids)
    assert report.outcomes == {ids[0]: "sent", broken: "failed", ids[2]: "sent"}
    assert not report.retry
    with session_scope(database_url) as session:
        row = session.get(Notification, broken)
        assert row.state == "failed" and row.reason.startswith("unexpected OverflowError")
        events = session.exec(select(DeliveryEvent.from_state, DeliveryEvent.to_state)
                              .where(DeliveryEvent.notification_id == broken)).all()
    assert list(events) == [("queued", "failed")]
    assert {state for nid, state in _states(database_url, ids).items() if nid != broken} <= {"sent", "delivered"}
    per_destination = _once_each(smsc, 2)
    assert sorted(per_destination) == sorted(_number(i)[1:] for i in (0, 2))
    assert set(per_destination.values()) == {1}


def test_a_failing_rate_limiter_fails_its_rows_instead_of_leaving_them_queued(
    database_url: str, smsc: SmscPeer, runtime_for
) -> None:
    runtime = runtime_for()
    ids = _add_rows(database_url, 2)

    class ZeroRate:
        def acquire(self, tokens: float = 1.0) -> float:
            return tokens / 0  # a rate of 0 that slipped through

    runtime.limiter = lambda name: ZeroRate()  # type: ignore[method-assign]
    report = deliver_batch(runtime, ids)
    assert set(report.outcomes.values()) == {"failed"}
    with session_scope(database_url) as session:
        reasons = session.exec(select(Notification.reason).where(Notification.id.in_(ids))).all()
    assert all(reason.startswith("unexpected ZeroDivisionError") for reason in reasons)
    assert smsc.submits() == []


def test_a_submit_without_answer_is_unknown_and_never_queued_again(
    database_url: str, smsc: SmscPeer, runtime_for
) -> None:
    runtime = runtime_for(submit_timeout_seconds=1.0)
    ids = _add_rows(database_url, 3)
    runtime.channel("sms").check()
    os.kill(smsc.pid, signal.SIGSTOP)  # a hung SMSC: the kernel still takes our writes
    try:
        report = deliver_batch(runtime, ids)
    finally:
        os.kill(smsc.pid, signal.SIGCONT)
    assert report.outcomes == {nid: "unknown" for nid in ids}
    assert not report.retry
    assert set(_states(database_url, ids).values()) == {"unknown"}
    per_destination = _once_each(smsc, 3)  # the SMSC did take them: resending would double them
    assert len(per_destination) == 3 and set(per_destination.values()) == {1}


def test_statements_per_notification_are_bounded(database_url: str, smsc: SmscPeer, runtime_for) -> None:
    runtime = runtime_for()
    ids = _add_rows(database_url, 200)
    runtime.channel("sms").check()
    engine = get_engine(database_url)
    me = threading.get_ident()
    counts = Counter()

    def on_statement(*_: object) -> None:
        if threading.get_ident() == me:  # not the receipt threads
            counts["statements"] += 1

    def on_commit(*_: object) -> None:
        if threading.get_ident() == me:
            counts["commits"] += 1

    sa.event.listen(engine, "before_cursor_execute", on_statement)
    sa.event.listen(engine, "commit", on_commit)
    try:
        for start in range(0, 200, 100):
            report = deliver_batch(runtime, ids[start : start + 100])
            assert set(report.outcomes.values()) == {"sent"}
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_statement)
        sa.event.remove(engine, "commit", on_commit)
    # ~10 statements and 3 transactions per batch of 100 today; the single-row path took 31 and 6 per row.
    assert counts["statements"] / 200 <= 0.5
    assert counts["commits"] / 200 <= 0.1
    per_destination = _once_each(smsc, 200)
    assert len(per_destination) == 200 and set(per_destination.values()) == {1}


class _CountingLimiter:
    """A limiter that grants at once and remembers each grant's size."""

    def __init__(self) -> None:
        self.grants: list[float] = []

    def acquire(self, tokens: float = 1.0) -> float:
        self.grants.append(tokens)
        return 0.0

    def throttled(self) -> None:
        pass

    def current_rate(self) -> float:
        return 1e9


@pytest.mark.parametrize("per_second", [1000.0, 1_000_000.0])
def test_a_chunk_is_granted_before_its_claim_in_one_call(
    database_url: str, smsc: SmscPeer, runtime_for, per_second: float
) -> None:
    """The route's clock is asked once per chunk, before the claim, for the chunk's parts (the
    rows wait `queued`, not `sending`): limits off cost one call per batch, nothing per message."""
    runtime = runtime_for()
    runtime.settings.dispatch.sms_per_second = per_second
    limiter = _CountingLimiter()
    runtime.limiter = lambda name: limiter  # type: ignore[method-assign]
    ids = _add_rows(database_url, 6)
    report = deliver_batch(runtime, ids)
    assert set(report.outcomes.values()) == {"sent"}
    with session_scope(database_url) as session:
        parts = session.exec(select(Notification.parts).where(Notification.id.in_(ids))).all()
    assert limiter.grants == [float(sum(parts))]
    per_destination = _once_each(smsc, 6)
    assert len(per_destination) == 6 and set(per_destination.values()) == {1}


def test_a_later_part_refused_fails_for_good_only_when_the_refusal_is(database_url: str) -> None:
    """The first part of a long SMS accepted, a later one refused: a lasting refusal fails the row
    (its accepted part recorded, so the receipt still matches); a temporary one (a throttling SMSC)
    puts it back in `queued` for the whole message to go again, until the attempts run out."""
    ids = _add_rows(database_url, 3, state="sending")
    refused = [PartiallySentError("1 of 2 part(s) refused", provider_status="0x00000045", accepted_ids=["a1"]),
               PartiallySentError("1 of 2 part(s) refused", provider_status="0x00000058", accepted_ids=["b1"],
                                  retryable=True),
               PartiallySentError("1 of 2 part(s) refused", provider_status="0x00000058", accepted_ids=["c1"],
                                  retryable=True)]
    sends = [Send(nid, 0, "sms", attempt, OutgoingMessage(notification_id=nid, destination=_number(i), body="x"), 2)
             for i, (nid, attempt) in enumerate(zip(ids, (1, 1, 6)))]
    report = BatchReport()
    with session_scope(database_url) as session:
        record_outcomes(session, sends, refused, max_attempts=6, route_down_ms=1000,
                        email_accepted_is_delivery=False, report=report)
    with session_scope(database_url) as session:
        states = [session.get(Notification, nid).state for nid in ids]
        parts = {nid: [p.provider_message_id for p in session.exec(
            select(MessagePart).where(MessagePart.notification_id == nid))] for nid in ids}
    assert states == ["failed", "queued", "failed"]
    assert parts == {ids[0]: ["a1"], ids[1]: [], ids[2]: ["c1"]}
    assert any(ids[1] in retried for retried in report.retry.values())
