"""`campaign status` counts resends after `unknown` from their own partial index, on both backends.

The count runs on every poll of `campaign run`. It used to join every delivery event of the
campaign (four or more per notification); `ix_delivery_event_resent` holds only `unknown → queued`
events. The test builds a campaign with many ordinary events and a few resends, checks the count,
and reads the plan each database actually runs — on PostgreSQL after psycopg has prepared the
statement (a generic plan cannot use a partial index whose condition it cannot prove, which is why
the query writes the states as literals).
"""

from __future__ import annotations

import sqlalchemy as sa

from notifier.db import session_scope
from notifier.dispatch.unknown import resent_after_unknown

NOTIFICATIONS = 2_000
RESENT = 3
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
        "updated_at) VALUES (:campaign, :account, :channel, 0, 'delivered', '{}', 1, CURRENT_TIMESTAMP, "
        "CURRENT_TIMESTAMP)"),
        [{"campaign": campaign_id, "account": account_id, "channel": f"c{n}"} for n in range(NOTIFICATIONS)])
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
        connection = session.connection()
        prepared = connection.execute(sa.text(
            "SELECT name FROM pg_prepared_statements WHERE statement ILIKE '%count(%' "
            "AND statement ILIKE '%FROM delivery_event%'")).scalars().all()
        assert prepared, "psycopg did not prepare the count: the test would prove nothing"
        with connection.connection.dbapi_connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN EXECUTE {prepared[0]}({campaign_id})", prepare=False)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "ix_delivery_event_resent" in plan and "Seq Scan on delivery_event" not in plan, plan


def test_the_resent_count_reads_the_partial_index_on_sqlite(sqlite_url: str) -> None:
    with session_scope(sqlite_url) as session:
        campaign_id = _campaign_with_events(session.connection())
        assert resent_after_unknown(session, campaign_id) == RESENT
        compiled = _compiled_count(session, campaign_id)
        plan = " ".join(str(row[-1]) for row in session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "ix_delivery_event_resent" in plan, plan


def _compiled_count(session: sa.orm.Session, campaign_id: int) -> str:
    """The product's count query as SQLite runs it, values inlined."""
    captured: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if "delivery_event" in statement and "count(" in statement:
            captured.append(statement.replace("?", str(campaign_id)))

    engine = session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        resent_after_unknown(session, campaign_id)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert captured, "the count did not run"
    return captured[-1]
