"""Queries that run every second read only what they need, on both backends, whatever the history.

`campaign status` (polled by `campaign run`) counts resends after `unknown` from their own partial
index, `ix_delivery_event_resent`, instead of joining every delivery event of the campaign; every
process's maintenance finds `queued`, `sending` and `unknown` rows through `ix_notification_in_flight`
instead of reading every campaign's notifications; every feed import learns the prefix lengths in use
from `ix_ip_assignment_prefix` (network rows only) instead of the cover index. Each test builds many
settled rows and a few in flight, and reads the plan each database actually runs — on PostgreSQL
after psycopg has prepared the statement (a generic plan cannot use a partial index whose condition
it cannot prove, which is why the queries write the states as literals).
"""

from __future__ import annotations

import sqlalchemy as sa

from notifier.db import session_scope
from notifier.dispatch.recovery import mark_orphans_unknown
from notifier.dispatch.runtime import process_owner
from notifier.dispatch.unknown import resent_after_unknown

NOTIFICATIONS = 2_000
RESENT = 3
SENDING = 5  # rows a live sender (this process) holds: maintenance looks at them and leaves them
EXECUTIONS_TO_PREPARE = 12  # above psycopg's prepare_threshold (5) and PostgreSQL's 5 custom plans


def _campaign_with_events(connection: sa.Connection) -> int:
    connection.execute(sa.text(
        "INSERT INTO account (account_ref, full_name, language, status, sms_opt_out, email_opt_out, voice_opt_out, "
        "created_at, updated_at) VALUES ('PLAN1', 'Kiểm Thử', 'vi', 'active', false, false, false, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    campaign_id = connection.execute(sa.text(
        "INSERT INTO campaign (name, template, channels, state, created_at) "
        "VALUES ('plan', 'infected_device', 'sms', 'running', CURRENT_TIMESTAMP) RETURNING id")).scalar_one()
    account_id = connection.execute(sa.text("SELECT id FROM account")).scalar_one()
    connection.execute(sa.text(
        "INSERT INTO notification (campaign_id, account_id, channel, step, state, context, attempts, created_at, "
        "updated_at, claimed_by, claimed_at) VALUES (:campaign, :account, :channel, 0, :state, '{}', 1, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :owner, CURRENT_TIMESTAMP)"),
        [{"campaign": campaign_id, "account": account_id, "channel": f"c{n}", "owner": process_owner(),
          "state": "sending" if n < SENDING else "delivered"} for n in range(NOTIFICATIONS)])
    ids = connection.execute(sa.text("SELECT id FROM notification ORDER BY id")).scalars().all()
    moves = [("planned", "queued"), ("queued", "sending"), ("sending", "sent"), ("sent", "delivered")]
    connection.execute(sa.text(
        "INSERT INTO delivery_event (notification_id, at, from_state, to_state, source) "
        "VALUES (:nid, CURRENT_TIMESTAMP, :from_state, :to_state, 'worker')"),
        [{"nid": nid, "from_state": a, "to_state": b} for nid in ids for a, b in moves]
        + [{"nid": nid, "from_state": "unknown", "to_state": "queued"} for nid in ids[:RESENT]]
        + [{"nid": nid, "from_state": "unknown", "to_state": "sent"} for nid in ids[RESENT:2 * RESENT]])
    connection.execute(sa.text("ANALYZE"))
    return int(campaign_id)


def test_the_resent_count_reads_the_partial_index_on_postgresql(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        campaign_id = _campaign_with_events(session.connection())
        for _ in range(EXECUTIONS_TO_PREPARE):
            assert resent_after_unknown(session, campaign_id) == RESENT
        plan = _prepared_plan(session, "%count(%FROM delivery_event%", f"({campaign_id})")
    assert "ix_delivery_event_resent" in plan and "Seq Scan on delivery_event" not in plan, plan


def test_maintenance_finds_rows_in_flight_through_their_index_on_postgresql(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        _campaign_with_events(session.connection())
        for _ in range(EXECUTIONS_TO_PREPARE):
            assert mark_orphans_unknown(session, lease_seconds=3600) == 0  # their sender (this process) lives
        plan = _prepared_plan(session, "%FROM notification%'sending'%", "")
    assert "ix_notification_in_flight" in plan and "Seq Scan on notification" not in plan, plan


def _prepared_plan(session: sa.orm.Session, pattern: str, arguments: str) -> str:
    """The plan PostgreSQL runs for the statement psycopg prepared (generic or custom)."""
    connection = session.connection()
    prepared = connection.execute(sa.text("SELECT name FROM pg_prepared_statements WHERE statement ILIKE :pattern"),
                                  {"pattern": pattern}).scalars().all()
    assert prepared, "psycopg did not prepare the statement: the test would prove nothing"
    with connection.connection.dbapi_connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN EXECUTE {prepared[0]}{arguments}", prepare=False)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_resent_count_reads_the_partial_index_on_sqlite(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        campaign_id = _campaign_with_events(session.connection())
        assert resent_after_unknown(session, campaign_id) == RESENT
        statement = _captured(session, lambda: resent_after_unknown(session, campaign_id), "count(")
        plan = _sqlite_plan(session, statement.replace("?", str(campaign_id)))
    assert "ix_delivery_event_resent" in plan, plan


def test_maintenance_finds_rows_in_flight_through_their_index_on_sqlite(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        _campaign_with_events(session.connection())
        statement = _captured(session, lambda: mark_orphans_unknown(session, lease_seconds=3600), "'sending'")
        plan = _sqlite_plan(session, statement)
    assert "ix_notification_in_flight" in plan, plan


def _sqlite_plan(session: sa.orm.Session, statement: str) -> str:
    return " ".join(str(row[-1]) for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))


def _captured(session: sa.orm.Session, run: object, marker: str) -> str:
    """The last statement containing `marker` that `run()` executed."""
    captured: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if marker in statement:
            captured.append(statement)

    engine = session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        run()  # type: ignore[operator]
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert captured, f"no statement with {marker!r} ran"
    return captured[-1]


def test_only_in_flight_states_are_written_as_literals() -> None:
    """`in_flight` is for the states the partial index holds: another state would read the table."""
    import pytest

    from notifier.dispatch.outbox import in_flight

    assert "'sending'" in str(in_flight("sending"))
    with pytest.raises(ValueError, match="not an in-flight state"):
        in_flight("delivered")


def test_the_prefix_lengths_to_probe_come_from_the_network_rows_alone(database_url: str) -> None:
    """Every feed import asks which prefix lengths are in use: the answer is read from the partial
    index of network rows, not from the cover index's entry for every single address."""
    from datetime import UTC, datetime

    from notifier.identifiers import ip_key
    from notifier.identity.matching import prefix_lengths
    from notifier.models import IpAssignment

    start = datetime(2026, 11, 1, tzinfo=UTC)
    addresses = [f"14.160.{n // 256}.{n % 256}" for n in range(NOTIFICATIONS)]
    rows = [{"account_id": 1, "network": address, "range_start": ip_key(address), "prefix_len": 128,
             "started_at": start, "covers_until": start, "source": "sessions-csv"} for address in addresses]
    rows += [{"account_id": 2, "network": network, "range_start": ip_key(address), "prefix_len": length,
              "started_at": start, "covers_until": start, "source": "static-csv"}
             for network, address, length in [("113.160.0.0/24", "113.160.0.0", 120),
                                               ("113.161.0.0/24", "113.161.0.0", 120),
                                               ("2402:800:6310::/56", "2402:800:6310::", 56)]]
    with session_scope(database_url) as session:
        session.execute(sa.insert(IpAssignment.__table__), [{**row, "range_end": row["range_start"]} for row in rows])
        session.execute(sa.text("ANALYZE"))
        assert prefix_lengths(session) == [128, 120, 56]
        statement = _captured(session, lambda: prefix_lengths(session), "prefix_len")
        plan = _sqlite_plan(session, statement) if database_url.startswith("sqlite") else "\n".join(
            session.connection().exec_driver_sql(f"EXPLAIN {statement}").scalars())
    assert "ix_ip_assignment_prefix" in plan and "ix_ip_assignment_cover" not in plan, plan


def test_single_addresses_are_probed_when_only_networks_are_stored(database_url: str) -> None:
    from datetime import UTC, datetime

    from notifier.identifiers import ip_key
    from notifier.identity.matching import prefix_lengths
    from notifier.models import IpAssignment

    start = datetime(2026, 11, 1, tzinfo=UTC)
    with session_scope(database_url) as session:
        assert prefix_lengths(session) == [128]
        session.execute(sa.insert(IpAssignment.__table__), [{
            "account_id": 2, "network": "113.160.0.0/24", "range_start": ip_key("113.160.0.0"),
            "range_end": ip_key("113.160.0.255"), "prefix_len": 120, "started_at": start, "covers_until": start,
            "source": "static-csv"}])
        assert prefix_lengths(session) == [128, 120]
